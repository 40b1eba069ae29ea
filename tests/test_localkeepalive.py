"""The local endpoint keeps HTTP/1.1 connections open (supervisor/ops/localkeepalive.py): many
calls over one connection each get their own answer, a body the application never reads does
not spill into the next request, and a client that asks to close, speaks HTTP/1.0 or sends a
chunked body is answered and closed as before; a werkzeug outside the tested series is left as
it is, with a note on stderr."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import LoggedSqs

SIGNED = {
    "Content-Type": "application/x-amz-json-1.0",
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=test/20261202/us-east-1/sqs/aws4_request,"
        " SignedHeaders=host, Signature=0"
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedSqs]:
    endpoint = LoggedSqs(tmp_path_factory.mktemp("keepalive") / "stderr.log")
    yield endpoint
    endpoint.stop()


def call(
    connection: http.client.HTTPConnection, action: str, body: dict[str, Any], **headers: str
) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
    connection.request(
        "POST", "/", json.dumps(body), {**SIGNED, "X-Amz-Target": f"AmazonSQS.{action}", **headers}
    )
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")
    assert response.status == 200, answer
    return response, answer


def test_one_connection_carries_many_calls(server: LoggedSqs) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    _, created = call(connection, "CreateQueue", {"QueueName": "kept"})
    sock = connection.sock
    assert sock is not None
    url = created["QueueUrl"]
    for n in range(20):
        response, _ = call(connection, "SendMessage", {"QueueUrl": url, "MessageBody": f"m{n}"})
        assert response.getheader("Connection") is None
        assert not response.will_close
    _, got = call(connection, "ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10})
    _, deleted = call(
        connection,
        "DeleteMessageBatch",
        {
            "QueueUrl": url,
            "Entries": [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                for n, m in enumerate(got["Messages"])
            ],
        },
    )
    assert len(deleted["Successful"]) == 10
    assert connection.sock is sock  # never reopened
    connection.close()


def test_an_unread_body_does_not_spill_into_the_next_request(server: LoggedSqs) -> None:
    """moto's API index ignores a request body: the next request on the connection must
    still be read from its own first line."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/moto-api/", body=b"POST / HTTP/1.1\r\n\r\n" * 50)
    first = connection.getresponse()
    first.read()
    assert first.status == 200 and not first.will_close
    _, listed = call(connection, "ListQueues", {})
    assert "QueueUrls" in listed or listed == {}


@pytest.mark.parametrize(
    "how",
    ["Connection: close", "HTTP/1.0", "chunked body"],
)
def test_a_client_that_closes_is_answered_then_closed(server: LoggedSqs, how: str) -> None:
    version = "HTTP/1.0" if how == "HTTP/1.0" else "HTTP/1.1"
    body = json.dumps({"QueueName": "closing"}).encode()
    head = [
        f"POST / {version}",
        f"Host: 127.0.0.1:{server.port}",
        "X-Amz-Target: AmazonSQS.CreateQueue",
        *(f"{key}: {value}" for key, value in SIGNED.items()),
    ]
    if how == "Connection: close":
        head.append("Connection: close")
    if how == "chunked body":
        head.append("Transfer-Encoding: chunked")
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        received = b""
        while chunk := sock.recv(65536):  # the server closes: recv returns b"" at the end
            received += chunk
    status, _, rest = received.partition(b"\r\n")
    assert status.split()[1] == b"200", received[:300]
    assert b"QueueUrl" in rest
    assert b"connection: close" in rest.lower()


def test_the_log_has_no_errors(server: LoggedSqs) -> None:
    log = Path(server.log).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_an_untested_werkzeug_runs_without_keep_alive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug import serving

    from supervisor.ops import localkeepalive

    monkeypatch.setattr(localkeepalive, "version", lambda name: "3.2.0")
    monkeypatch.setattr(serving, "selectors", "werkzeug's own")
    monkeypatch.setattr(MotoRequestHandler, "send_header", "moto's own")
    localkeepalive.install()
    assert serving.selectors == "werkzeug's own"
    assert MotoRequestHandler.send_header == "moto's own"
    assert capsys.readouterr().err == (
        "note: local endpoint without keep-alive: werkzeug 3.2.0 is untested (tested: 3.1.x)\n"
    )


def test_a_request_it_cannot_parse_after_a_kept_call_is_refused_and_closed(
    server: LoggedSqs,
) -> None:
    """http.server's own error answer (a header line over its 65536 bytes) keeps its
    ``Connection: close`` on a connection that was kept until then."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body = json.dumps({"QueueName": "then-garbage"}).encode()
        head = [
            "POST / HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            "X-Amz-Target: AmazonSQS.CreateQueue",
            *(f"{key}: {value}" for key, value in SIGNED.items()),
            f"Content-Length: {len(body)}",
        ]
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        first = b""
        while b"QueueUrl" not in first:
            first += sock.recv(65536)
        assert b"connection: close" not in first.lower()
        sock.sendall(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.split(b"\r\n", 1)[0].split()[1] == b"431", received[:300]
    assert b"connection: close" in received.lower()
