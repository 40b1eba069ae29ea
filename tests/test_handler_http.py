"""handlers.http:post against a real HTTP server on loopback, then through a real supervisor."""

from __future__ import annotations

import base64
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import handlers.http as http_handler
from handlers.http import HttpUnavailable, MissingSecret, post, validate_options
from supervisor import Context, Message, PermanentError, RetryLater
from support import make_queue, queue_counts, send_bodies, wait_until, write_config


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    client_port: int


Answer = tuple[int, dict[str, str], bytes]


class Endpoint:
    """An HTTP server on 127.0.0.1 that records every request and answers via ``respond``."""

    def __init__(self, respond: Callable[[Received], Answer]) -> None:
        self.received: list[Received] = []
        self.release = threading.Event()  # lets a deliberately slow answer finish at teardown
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be seen

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Received(
                    self.path,
                    dict(self.headers.items()),
                    body,
                    time.monotonic(),
                    self.client_address[1],
                )
                endpoint.received.append(request)
                status, headers, payload = respond(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and hung up (the timeout tests) is no news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Callable[[Callable[[Received], Answer]], Endpoint]]:
    started: list[Endpoint] = []

    def start(respond: Callable[[Received], Answer]) -> Endpoint:
        started.append(Endpoint(respond))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def answer(status: int, body: bytes = b"", **headers: str) -> Callable[[Received], Answer]:
    return lambda request: (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def message(body: str = '{"topic": "tides"}', **message_attributes: Any) -> Message:
    return Message(
        message_id="0c1a-42",
        receipt_handle="receipt",
        body=body,
        queue_url="http://sqs.local/000000000000/video-jobs",
        attributes={
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1714566896789",
            "ApproximateFirstReceiveTimestamp": "1714566897000",
        },
        message_attributes=message_attributes,
    )


def context(**options: Any) -> Context:
    return Context(
        binding="video",
        queue_url="http://sqs.local/000000000000/video-jobs",
        attempt=2,
        logger=logging.getLogger("test.http"),
        options=options,
        deadline=time.monotonic() + 60,
    )


# -- what is sent -------------------------------------------------------------------------------


def test_the_body_goes_as_sent_with_metadata_headers_and_a_json_answer_is_the_result(endpoint):
    server = endpoint(answer(200, b'{"ok": true, "n": 3}', Content_Type="application/json"))
    body = '{"title": "Tides — über", "n": 1}\n'
    msg = message(body, JobId="job-7", Trace="abc", Priority=5, Blob=b"\x00\x01")

    result = post(msg, context(url=f"{server.url}/jobs", headers={"X-Team": "video"}))

    assert result == {"ok": True, "n": 3}
    [request] = server.received
    assert request.path == "/jobs"
    assert request.body == body.encode()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-team"] == "video"
    assert headers["x-sqs-message-id"] == "0c1a-42"
    assert headers["x-sqs-queue"] == "video-jobs"
    assert headers["x-sqs-receive-count"] == "2"
    assert headers["x-sqs-sent-at"] == "2024-05-01T12:34:56.789Z"
    assert headers["x-sqs-first-received-at"] == "2024-05-01T12:34:57.000Z"
    assert headers["x-sqs-job-id"] == "job-7"
    assert headers["x-sqs-attr-trace"] == "abc"
    assert headers["x-sqs-attr-priority"] == "5"
    assert "x-sqs-attr-blob" not in headers, "binary attributes are skipped"
    assert "authorization" not in headers


def test_content_type_is_configurable_and_odd_attribute_values_are_percent_encoded(endpoint):
    server = endpoint(answer(204))

    result = post(
        message("plain text", Note="line one\nline two ü"),
        context(url=server.url, content_type="text/plain"),
    )

    assert result is None
    headers = {k.lower(): v for k, v in server.received[0].headers.items()}
    assert headers["content-type"] == "text/plain"
    assert headers["x-sqs-attr-note"] == "line one%0Aline two %C3%BC"


def test_a_2xx_answer_that_is_not_json_gives_no_result(endpoint):
    server = endpoint(answer(200, b"<html>ok</html>", Content_Type="text/html"))
    assert post(message(), context(url=server.url)) is None


def test_a_2xx_answer_cut_short_still_counts_as_delivered(endpoint):
    server = endpoint(
        answer(
            200,
            b'{"ok": tr',
            Content_Type="application/json",
            Content_Length="1000",
            Connection="close",
        )
    )

    assert post(message(), context(url=server.url)) is None, "no retry: it was accepted"


def test_a_json_answer_over_the_cap_is_not_kept(endpoint, monkeypatch):
    monkeypatch.setattr(http_handler, "MAX_RESULT_BYTES", 100)
    big = json.dumps({"blob": "x" * 500}).encode()
    server = endpoint(answer(200, big, Content_Type="application/json"))
    assert post(message(), context(url=server.url)) is None


def test_bearer_token_comes_from_the_named_environment_variable(endpoint, monkeypatch):
    monkeypatch.setenv("JOBS_TOKEN", "s3cr3t-token")
    server = endpoint(answer(200))

    post(message(), context(url=server.url, auth={"bearer_token_env": "JOBS_TOKEN"}))

    assert server.received[0].headers["Authorization"] == "Bearer s3cr3t-token"


def test_basic_auth_comes_from_the_named_environment_variables(endpoint, monkeypatch):
    monkeypatch.setenv("JOBS_USER", "worker")
    monkeypatch.setenv("JOBS_PASSWORD", "pa:ss wörd")
    server = endpoint(answer(200))
    auth = {"basic_user_env": "JOBS_USER", "basic_password_env": "JOBS_PASSWORD"}

    post(message(), context(url=server.url, auth=auth))

    scheme, encoded = server.received[0].headers["Authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "worker:pa:ss wörd"


def test_a_missing_secret_is_retried_and_logged_by_name_without_sending(
    endpoint, monkeypatch, caplog
):
    monkeypatch.setenv("JOBS_USER", "worker-user-value")
    monkeypatch.delenv("JOBS_PASSWORD", raising=False)
    server = endpoint(answer(200))
    auth = {"basic_user_env": "JOBS_USER", "basic_password_env": "JOBS_PASSWORD"}

    with pytest.raises(MissingSecret, match="JOBS_PASSWORD") as caught:
        post(message(), context(url=server.url, auth=auth))

    assert not isinstance(caught.value, PermanentError | RetryLater), "a deployment error: retry"
    assert server.received == []
    assert "JOBS_PASSWORD" in caplog.text
    assert "worker-user-value" not in caplog.text + str(caught.value)


# -- what the answer means ------------------------------------------------------------------------


def test_429_with_retry_after_seconds_asks_for_that_delay(endpoint):
    server = endpoint(answer(429, b"slow down", Retry_After="3"))

    with pytest.raises(RetryLater) as caught:
        post(message(), context(url=server.url))

    assert caught.value.delay_seconds == 3
    assert "429" in str(caught.value)


def test_503_with_retry_after_as_an_http_date_asks_for_the_time_until_then(endpoint):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    server = endpoint(answer(503, Retry_After=when))

    with pytest.raises(RetryLater) as caught:
        post(message(), context(url=server.url))

    assert 115 <= caught.value.delay_seconds <= 120


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_statuses_without_retry_after_use_the_normal_backoff(endpoint, status):
    server = endpoint(answer(status, b"upstream trouble"))

    with pytest.raises(HttpUnavailable, match=f"{status}.*upstream trouble") as caught:
        post(message(), context(url=server.url))

    assert not isinstance(caught.value, PermanentError | RetryLater)


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_are_permanent_with_the_status_and_the_start_of_the_answer(endpoint, status):
    server = endpoint(answer(status, b'{"error": "bad topic"}' + b"x" * 5000))

    with pytest.raises(PermanentError) as caught:
        post(message(), context(url=server.url))

    text = str(caught.value)
    assert str(status) in text and '{"error": "bad topic"}' in text
    assert len(text) < 300, "only the first ~200 characters of the answer"


def test_a_redirect_is_not_followed_and_is_retried(endpoint):
    server = endpoint(answer(302, Location="https://elsewhere/jobs"))

    with pytest.raises(HttpUnavailable, match="elsewhere"):
        post(message(), context(url=server.url))

    assert len(server.received) == 1


def test_connection_refused_is_retried():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there

    with pytest.raises(HttpUnavailable, match="failed"):
        post(message(), context(url=f"http://127.0.0.1:{port}/jobs"))


def test_a_read_timeout_is_retried(endpoint):
    def slow(request: Received) -> Answer:
        server.release.wait(10)
        return 200, {}, b""

    server = endpoint(slow)
    started = time.monotonic()

    with pytest.raises(HttpUnavailable, match="timed out"):
        post(message(), context(url=server.url, timeout=0.5))

    assert time.monotonic() - started < 3


def test_one_pooled_connection_carries_successive_messages(endpoint):
    server = endpoint(answer(200, b"accepted", Content_Type="text/plain"))

    for _ in range(3):
        post(message(), context(url=server.url))

    assert len({request.client_port for request in server.received}) == 1


def test_each_process_gets_its_own_session(monkeypatch):
    first = http_handler._http()
    assert http_handler._http() is first
    monkeypatch.setattr(http_handler, "_session_pid", -1)  # as if made before a fork
    assert http_handler._http() is not first


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "url is required"),
        ({"urll": "http://x"}, "unknown option 'urll' (did you mean 'url'?)"),
        ({"url": "ftp://x/y"}, "http:// or https://"),
        ({"url": "https://"}, "http:// or https://"),
        ({"url": "https://user:pw@x/y"}, "must not contain credentials"),
        ({"url": "http://x", "timeout": 0}, "timeout must be a positive number"),
        ({"url": "http://x", "timeout": "60"}, "timeout must be a positive number"),
        ({"url": "http://x", "headers": ["X-A: 1"]}, "headers must be a mapping"),
        ({"url": "http://x", "headers": {"Bad Name": "1"}}, "not a valid header name"),
        ({"url": "http://x", "headers": {"X-A": "1\r\nX-B: 2"}}, "printable ASCII"),
        (
            {"url": "http://x", "auth": {"bearer_token": "T"}},
            "unknown option 'auth.bearer_token' (did you mean 'auth.bearer_token_env'?)",
        ),
        ({"url": "http://x", "auth": {"basic_user_env": "U"}}, "basic_password_env"),
        ({"url": "http://x", "auth": {"bearer_token_env": "Bearer abc"}}, "environment variable"),
    ],
)
def test_validate_options_names_the_problem(options, problem):
    with pytest.raises(ValueError) as caught:
        validate_options(options)
    assert problem in str(caught.value)


def test_validate_options_accepts_a_full_binding_and_is_attached_to_the_handler():
    validate_options(
        {
            "url": "https://api.internal/jobs?v=2",
            "content_type": "application/cloudevents+json",
            "timeout": 30,
            "connect_timeout": 2.5,
            "headers": {"X-Team": "video", "X-Version": 2},
            "auth": {"bearer_token_env": "JOBS_TOKEN"},
        }
    )
    assert post.validate_options is validate_options


# -- end to end -----------------------------------------------------------------------------------


def test_http_outcomes_through_a_real_supervisor(sqs, tmp_path, endpoint, start_supervisor):
    """200 deletes, 400 dead-letters after one try, 503 retries, 429 honours Retry-After."""
    seen: dict[str, int] = {}

    def respond(request: Received) -> Answer:
        kind = json.loads(request.body)["kind"]
        seen[kind] = seen.get(kind, 0) + 1
        if kind == "bad":
            return 400, {}, b"bad request: no topic"
        if kind == "flaky" and seen[kind] <= 2:
            return 503, {}, b"try again"
        if kind == "throttled" and seen[kind] == 1:
            return 429, {"Retry-After": "3"}, b"slow down"
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'

    server = endpoint(respond)
    url = make_queue(sqs, "calls", visibility=30, dlq="calls-dlq", max_receive=3)
    dlq_url = sqs.get_queue_url(QueueName="calls-dlq")["QueueUrl"]
    send_bodies(sqs, url, [{"kind": k} for k in ("good", "bad", "flaky", "throttled")])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "calls",
                "queue": "calls",
                "handler": "handlers.http:post",
                "processes": 2,
                "wait_time_seconds": 1,
                "retry": {"base_seconds": 1, "max_seconds": 5},
                "dead_letter": {"queue": "calls-dlq", "max_receive_count": 3},
                "options": {"url": f"{server.url}/jobs", "timeout": 10},
            }
        ],
    )

    supervisor = start_supervisor(config)
    wait_until(
        lambda: seen.get("flaky", 0) >= 3 and seen.get("throttled", 0) >= 2,
        40,
        "the flaky and throttled messages to succeed",
    )
    wait_until(
        lambda: queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0},
        10,
        "an empty source queue",
    )
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert seen == {"good": 1, "bad": 1, "flaky": 3, "throttled": 2}
    dead = sqs.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=1)
    [dead_letter] = dead["Messages"]
    assert json.loads(dead_letter["Body"]) == {"kind": "bad"}
    error = dead_letter["MessageAttributes"]["SqsSupervisorError"]["StringValue"]
    assert "400" in error and "no topic" in error
    throttled = [r.at for r in server.received if json.loads(r.body)["kind"] == "throttled"]
    assert throttled[1] - throttled[0] >= 3.0, throttled
    flaky = [r.at for r in server.received if json.loads(r.body)["kind"] == "flaky"]
    assert flaky[1] - flaky[0] >= 0.8, "retried after the backoff, not at once"
