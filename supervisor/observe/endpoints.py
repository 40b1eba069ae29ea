"""The parent's one HTTP port: /metrics, /healthz, /readyz (and /jobs/{id} when enabled).

Served from the arbiter's select loop, not a thread, so the parent stays single-threaded and
safe to fork. A request must arrive within a couple of seconds (slow clients are cut off) so a
stuck scraper cannot stall the loop for long.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("sqs_supervisor.http")

REQUEST_TIMEOUT = 2.0


@dataclass
class Verdict:
    """A health answer: 200 when ``ok``, else 503 with the problems by binding."""

    ok: bool
    problems: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unavailable", "problems": self.problems}


Route = Callable[[BaseHTTPRequestHandler], tuple[int, str, bytes]]


class Endpoints:
    """Owns the listening socket; ``handle_one`` serves a single ready connection."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        liveness: Callable[[], Verdict],
        readiness: Callable[[], Verdict],
    ) -> None:
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.routes: dict[str, Route] = {
            "/metrics": self._metrics,
            "/healthz": lambda _: _verdict(self.liveness()),
            "/readyz": lambda _: _verdict(self.readiness()),
        }
        self.prefix_routes: dict[str, Route] = {}
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT
            server_version = "sqs-supervisor"

            def do_GET(self) -> None:
                endpoints.dispatch(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        class Server(HTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = Server((host, port), Handler)
        self.server.timeout = 0
        self.port = self.server.server_address[1]

    def fileno(self) -> int:
        return self.server.fileno()

    def handle_one(self) -> None:
        self.server.handle_request()

    def close(self) -> None:
        self.server.server_close()

    def dispatch(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            route = next(
                (r for prefix, r in self.prefix_routes.items() if path.startswith(prefix)), None
            )
        if route is None:
            status, content_type, body = 404, "text/plain", b"not found\n"
        else:
            try:
                status, content_type, body = route(request)
            except Exception:
                log.exception("error serving %s", path)
                status, content_type, body = 500, "text/plain", b"internal error\n"
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def _metrics(self, request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return 200, content_type, encoder(self.registry)


def job_route(lookup: Callable[[str], dict[str, Any] | None], token: str) -> Route:
    """``GET /jobs/{id}`` with ``Authorization: Bearer <token>``: 401 without, 404 if unknown."""
    expected = f"Bearer {token}".encode()

    def route(request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return 401, "application/json", b'{"error": "unauthorized"}\n'
        job_id = request.path.split("?", 1)[0].removeprefix("/jobs/")
        record = lookup(job_id) if job_id and "/" not in job_id else None
        if record is None:
            return 404, "application/json", b'{"error": "no such job"}\n'
        return 200, "application/json", (json.dumps(record) + "\n").encode()

    return route


def _verdict(verdict: Verdict) -> tuple[int, str, bytes]:
    body = (json.dumps(verdict.body()) + "\n").encode()
    return (200 if verdict.ok else 503), "application/json", body
