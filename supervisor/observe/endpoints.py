"""The parent's one HTTP port: /metrics, /healthz, /readyz (and /jobs/{id} when enabled).

Served from the arbiter's select loop, not a thread, so the parent stays single-threaded and
safe to fork. Nothing here ever blocks on a client: the listening socket and every connection
are non-blocking and registered on the arbiter's selector, a request is buffered until its
blank line arrives, and a response the socket cannot take at once is finished as the socket
becomes writable. Idle or trickling clients cost a buffer each, never loop time: each has a
deadline (``reap``), and past ``MAX_CONNECTIONS`` the oldest is dropped.
"""

from __future__ import annotations

import email.parser
import hmac
import http.client
import json
import logging
import selectors
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("sqs_supervisor.http")

REQUEST_SECONDS = 5.0  # from accept to the end of the request's headers
RESPONSE_SECONDS = 10.0  # for the client to read the whole response
MAX_CONNECTIONS = 256
MAX_REQUEST_BYTES = 16 * 1024
# What http.server sent, so responses stay byte-compatible with the earlier server.
SERVER = f"sqs-supervisor Python/{sys.version.split()[0]}"

Register = Callable[..., None]  # (fd, callback, events=EVENT_READ)


@dataclass
class Verdict:
    """A health answer: 200 when ``ok``, else 503 with the problems by binding."""

    ok: bool
    problems: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unavailable", "problems": self.problems}


@dataclass
class Request:
    """A parsed GET: ``path`` is the raw target (query included), headers case-insensitive."""

    method: str
    path: str
    headers: http.client.HTTPMessage


Route = Callable[[Request], tuple[int, str, bytes]]


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    fd: int
    peer: str
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview | None = None  # set once the request is answered


class Endpoints:
    """Owns the listening socket and its connections; ``attach`` joins the arbiter's loop."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        liveness: Callable[[], Verdict],
        readiness: Callable[[], Verdict],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.clock = clock
        self.routes: dict[str, Route] = {
            "/metrics": self._metrics,
            "/healthz": lambda _: _verdict(self.liveness()),
            "/readyz": lambda _: _verdict(self.readiness()),
        }
        self.prefix_routes: dict[str, Route] = {}
        self._connections: dict[int, _Connection] = {}  # by fd, oldest first
        self._register: Register | None = None
        self._unregister: Callable[[int], None] | None = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(socket.SOMAXCONN)  # a burst of connects is not dropped
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]

    def fileno(self) -> int:
        return self.listener.fileno()

    def attach(self, register: Register, unregister: Callable[[int], None]) -> None:
        """Serve from a select loop: ``register(fd, callback, events)`` and ``unregister(fd)``."""
        self._register, self._unregister = register, unregister
        register(self.fileno(), self._accept)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def reap(self, now: float) -> None:
        """Close the connections past their deadline (a housekeeping step of the arbiter)."""
        for conn in [c for c in self._connections.values() if c.deadline <= now]:
            log.debug("closing %s: past its deadline", conn.peer)
            self._close(conn)

    def close(self) -> None:
        """Close everything; the selector may be gone already (the arbiter's teardown)."""
        for conn in self._connections.values():
            conn.sock.close()
        self._connections.clear()
        self.listener.close()

    # -- the loop's callbacks -----------------------------------------------------------------

    def _accept(self) -> None:
        assert self._register is not None
        while True:
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of fds, a connection reset before accept: try later
                log.warning("cannot accept on the HTTP port: %s", exc)
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                oldest = next(iter(self._connections.values()))
                log.debug("closing %s: over %d connections", oldest.peer, MAX_CONNECTIONS)
                self._close(oldest)
            sock.setblocking(False)
            peer = str(address[0]) if address else "-"
            conn = _Connection(sock, sock.fileno(), peer, self.clock() + REQUEST_SECONDS)
            self._connections[conn.fd] = conn
            self._register(conn.fd, lambda conn=conn: self._ready(conn))

    def _ready(self, conn: _Connection) -> None:
        if conn.fd not in self._connections:
            return  # closed by an earlier callback of the same select round
        if conn.outbox is not None:
            self._write(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbox += data
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbox) > MAX_REQUEST_BYTES:
                self._respond(conn, _simple(431, b"request too large\n"))
            return
        if end > MAX_REQUEST_BYTES:
            self._respond(conn, _simple(431, b"request too large\n"))
            return
        self._respond(conn, self._answer(conn, bytes(conn.inbox[:end])))

    def _respond(self, conn: _Connection, response: bytes) -> None:
        assert self._register is not None and self._unregister is not None
        conn.inbox.clear()
        conn.outbox = memoryview(response)
        conn.deadline = self.clock() + RESPONSE_SECONDS
        self._write(conn)
        if conn.fd in self._connections:  # the rest when the socket can take it
            self._unregister(conn.fd)
            self._register(conn.fd, lambda: self._ready(conn), selectors.EVENT_WRITE)

    def _write(self, conn: _Connection) -> None:
        assert conn.outbox is not None
        try:
            sent = conn.sock.send(conn.outbox)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        if not conn.outbox:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        assert self._unregister is not None
        del self._connections[conn.fd]
        self._unregister(conn.fd)
        try:
            # A FIN even if a child forked meanwhile still holds a copy of the descriptor.
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.sock.close()

    # -- requests -----------------------------------------------------------------------------

    def _answer(self, conn: _Connection, head: bytes) -> bytes:
        text = head.decode("iso-8859-1")
        request_line, _, header_block = text.partition("\r\n")
        words = request_line.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            return _simple(400, b"bad request\n")
        method, target, _version = words
        if method not in ("GET", "HEAD"):
            return _simple(501, b"unsupported method\n")
        if target.startswith("//"):  # as http.server did: never read as a network path
            target = "/" + target.lstrip("/")
        headers = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(header_block)
        request = Request(method, target, headers)
        status, content_type, body = self.dispatch(request)
        log.debug('%s "%s" %d %d', conn.peer, request_line, status, len(body))
        return _response(status, content_type, body, head_only=method == "HEAD")

    def dispatch(self, request: Request) -> tuple[int, str, bytes]:
        path = request.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            route = next(
                (r for prefix, r in self.prefix_routes.items() if path.startswith(prefix)), None
            )
        if route is None:
            return 404, "text/plain", b"not found\n"
        try:
            return route(request)
        except Exception:
            log.exception("error serving %s", path)
            return 500, "text/plain", b"internal error\n"

    def _metrics(self, request: Request) -> tuple[int, str, bytes]:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return 200, content_type, encoder(self.registry)


def job_route(lookup: Callable[[str], dict[str, Any] | None], token: str) -> Route:
    """``GET /jobs/{id}`` with ``Authorization: Bearer <token>``: 401 without, 404 if unknown."""
    expected = f"Bearer {token}".encode()

    def route(request: Request) -> tuple[int, str, bytes]:
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


def _simple(status: int, body: bytes) -> bytes:
    return _response(status, "text/plain", body)


def _response(status: int, content_type: str, body: bytes, *, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\n"
        f"Server: {SERVER}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)
