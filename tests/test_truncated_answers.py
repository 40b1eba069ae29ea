"""An SQS answer cut short on the way is an error, not an empty success.

botocore does not check a body against its Content-Length, so an answer whose connection
dropped mid-body parsed as a success with fields missing: GetQueueUrl raised KeyError (a
starting child crashed), a receive "brought nothing" while SQS had handed out its messages, a
batch delete "had no failures". A cut inside the head loses the Content-Length itself. A real
HTTP server on loopback sends such answers here.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from supervisor.config import SqsSettings
from supervisor.sqs import SqsClient, SqsError

CUT_BODY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
    b'Content-Length: 400\r\n\r\n{"QueueUrl": "http://'
)
# Cut inside the head, before its Content-Length: http.client takes the end of the
# connection for the end of the head, and the body for empty.
CUT_HEAD = b"HTTP/1.1 200 OK\r\nServer: moto\r\nContent-Type: application/x-am"


@pytest.fixture
def cutting_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Answers every request with the cut answer the test names, and hangs up."""
    answer = request.param
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                head, _, body = request.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    body += client.recv(65536)
                client.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()


@pytest.mark.parametrize(
    ("cutting_server", "said"),
    [
        (CUT_BODY, "21 read, but total bytes expected is 400"),
        # The network chaos test met this one: a starting child's GetQueueUrl raised KeyError.
        (CUT_HEAD, "the head ended without a Content-Length"),
    ],
    ids=["cut-body", "cut-head"],
    indirect=["cutting_server"],
)
def test_a_cut_answer_raises_a_clear_error_instead_of_a_missing_field(cutting_server, said):
    sqs = SqsClient(
        SqsSettings(endpoint_url=cutting_server, region="us-east-1"),
        read_timeout=5,
        max_attempts=1,
    )
    with pytest.raises(SqsError) as raised:
        sqs.queue_url("jobs")
    assert raised.value.operation == "GetQueueUrl"
    assert raised.value.code == "IncompleteReadError"
    assert said in str(raised.value)

    with pytest.raises(SqsError, match="IncompleteReadError"):
        sqs.receive(
            f"{cutting_server}/000000000000/jobs",
            max_messages=10,
            wait_seconds=0,
            visibility_timeout=30,
        )
