"""The local SQS endpoint (supervisor/ops/localserver.py) is atomic under concurrent clients.

moto's server alone is not: concurrent receives, deletes and sends race on a queue's message
list (a message delivered twice, a receive count bumped by a call that then failed with HTTP
500 in the move to the DLQ). These run real clients over HTTP against a server of this
module's own, whose stderr (werkzeug's request log and any traceback) is read back.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from supervisor.ops.local import DUMMY_CREDENTIALS, free_port

# No retries: a 500 must reach the test, not be hidden by boto3's retry of InternalError.
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=4)
SERVER_ERROR = re.compile(r'"[A-Z]+ [^"]*" 5\d\d ')


class Server:
    """One local endpoint with its stderr in a file, for ``errors()``."""

    def __init__(self, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        port = self.url.rsplit(":", 1)[1]
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supervisor.ops.localserver", "-H", "127.0.0.1", "-p", port],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, "the local endpoint did not start"
                time.sleep(0.1)

    def errors(self) -> list[str]:
        """5xx request lines, and the exception line of each traceback, in the server log."""
        lines = self.log.read_text(errors="replace").splitlines()
        found = [line for line in lines if SERVER_ERROR.search(line)]
        for n, line in enumerate(lines):
            if line.startswith("Traceback"):
                rest = (x for x in lines[n + 1 :] if x and not x.startswith(" "))
                found.append(f"Traceback: {next(rest, '?')}")
        return found

    def client(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.url,
            region_name=DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=NO_RETRY,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    endpoint = Server(tmp_path_factory.mktemp("localserver") / "stderr.log")
    yield endpoint
    endpoint.process.kill()
    endpoint.process.wait()


@pytest.fixture
def sqs(server: Server) -> Any:
    request = urllib.request.Request(f"{server.url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    return server.client()


def fill(sqs: Any, url: str, count: int, prefix: str = "m-") -> None:
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": f"{prefix}{i}"} for i in range(start, start + 10)]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def send_each(sqs: Any, url: str, numbers: range, prefix: str) -> None:
    for i in numbers:
        sqs.send_message(QueueUrl=url, MessageBody=f"{prefix}{i}")


def depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


LEASE = 10  # the visibility a receive asks for, as the pool's children ask for the binding's


class Receivers:
    """Threads, each with its own client, receiving from ``url`` until ``stop`` is set, as a
    pool's children do: what succeeds is deleted, what fails (bodies starting ``p-``, when
    ``backoff`` is set) gets a new visibility timeout of ``backoff`` seconds, a retry delay.
    ``deliveries`` holds (body, receiver, request start, response end, receive count)."""

    def __init__(self, server: Server, url: str, count: int, *, backoff: int = 0) -> None:
        self.url = url
        self.backoff = backoff
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.deliveries: list[tuple[str, int, float, float, int]] = []
        self.errors: list[str] = []
        self.refused: list[Any] = []  # failed entries of batch calls
        self.deleted: dict[str, float] = {}  # body: when its (first) delete returned
        self.threads = [
            threading.Thread(target=self.run, args=(n, server.client()), daemon=True)
            for n in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def run(self, n: int, sqs: Any) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                messages = sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=LEASE,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
                ended = time.monotonic()
                with self.lock:
                    for m in messages:
                        count = int(m["Attributes"]["ApproximateReceiveCount"])
                        self.deliveries.append((m["Body"], n, started, ended, count))
                self.settle(n, sqs, messages)
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                with self.lock:
                    self.errors.append(f"{status} {error}")

    def settle(self, n: int, sqs: Any, messages: list[dict[str, Any]]) -> None:
        """Even receivers settle one message a call, odd ones in batches."""
        failed = [m for m in messages if self.backoff and m["Body"].startswith("p-")]
        done = [m for m in messages if m not in failed]
        for chunk in [done] if n % 2 else [[m] for m in done]:
            if not chunk:
                continue
            if len(chunk) == 1:
                sqs.delete_message(QueueUrl=self.url, ReceiptHandle=chunk[0]["ReceiptHandle"])
            else:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ]
                self.refused.extend(
                    sqs.delete_message_batch(QueueUrl=self.url, Entries=entries).get("Failed", [])
                )
            with self.lock:
                for m in chunk:
                    self.deleted.setdefault(m["Body"], time.monotonic())
        for chunk in [failed] if n % 2 else [[m] for m in failed]:
            if not chunk:
                continue
            if len(chunk) == 1:
                sqs.change_message_visibility(
                    QueueUrl=self.url,
                    ReceiptHandle=chunk[0]["ReceiptHandle"],
                    VisibilityTimeout=self.backoff,
                )
            else:
                entries = [
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.backoff,
                    }
                    for i, m in enumerate(chunk)
                ]
                answer = sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
                self.refused.extend(answer.get("Failed", []))

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def test_poison_burst_moves_each_message_to_the_dlq_once_after_exactly_two_receives(
    server: Server, sqs: Any
) -> None:
    """300 poison messages (always fail, retried after a 1 s backoff, to the DLQ after two
    receives) while good ones keep arriving and are deleted. Without the lock, moto's list
    updates raced in about one run of two: deleted messages delivered again, poison gone from
    both queues, receives failing (issue 15 saw HTTP 500 in the DLQ move)."""
    poison, good, visibility = 300, 300, 1
    dlq = sqs.create_queue(QueueName="poison-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = {"deadLetterTargetArn": dlq_arn["QueueArn"], "maxReceiveCount": 2}
    url = sqs.create_queue(
        QueueName="poison",
        Attributes={"VisibilityTimeout": str(visibility), "RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    fill(sqs, url, poison, "p-")
    errors_before = len(server.errors())

    receivers = Receivers(server, url, 12, backoff=visibility)
    producers = [
        threading.Thread(target=send_each, args=(server.client(), url, range(n, good, 3), "g-"))
        for n in range(3)
    ]
    for producer in producers:
        producer.start()
    deadline = time.monotonic() + 25
    while depth(sqs, dlq)[0] < poison and time.monotonic() < deadline:
        time.sleep(0.2)
    for producer in producers:
        producer.join(10)
    while depth(sqs, url) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    receivers.join()

    moved: list[str] = []
    while batch := sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=60
    ).get("Messages"):
        moved.extend(m["Body"] for m in batch)

    by_body: dict[str, list[tuple[int, float, float, int]]] = defaultdict(list)
    for body, n, started, ended, count in receivers.deliveries:
        by_body[body].append((n, started, ended, count))
    for deliveries in by_body.values():
        deliveries.sort(key=lambda d: d[2])
    expected = {f"p-{i}": 2 for i in range(poison)} | {f"g-{i}": 1 for i in range(good)}
    # The second receive cannot have ended sooner than a visibility timeout after the first
    # one started, whatever the clients' latency.
    early = [
        body
        for body, d in by_body.items()
        if len(d) > 1 and any(b[2] - a[1] < visibility - 0.05 for a, b in itertools.pairwise(d))
    ]
    resurrected = [
        body
        for body, d in by_body.items()
        if body in receivers.deleted and d[-1][1] > receivers.deleted[body]
    ]
    problems = {
        "delivered again after its delete returned": resurrected,
        "errors seen by clients (HTTP status first)": receivers.errors,
        "batch entries refused": receivers.refused,
        "5xx or tracebacks in the server log": server.errors()[errors_before:],
        "moved to the DLQ twice": sorted(b for b, n in Counter(moved).items() if n > 1),
        "poison never moved": sorted(set(expected) - set(moved) - {f"g-{i}" for i in range(good)}),
        "good moved to the DLQ": sorted(b for b in moved if b.startswith("g-")),
        "left in the queue (visible, in flight)": [d for d in [depth(sqs, url)] if d != (0, 0)],
        "received a wrong number of times": {
            b: [d[3] for d in by_body.get(b, [])]
            for b, n in expected.items()
            if len(by_body.get(b, [])) != n
        },
        "receive counts not 1, 2, ...": sorted(
            b for b, d in by_body.items() if [x[3] for x in d] != list(range(1, len(d) + 1))
        ),
        "redelivered within a visibility window": early,
    }
    problems = {name: found for name, found in problems.items() if found}
    summary = {name: len(found) for name, found in problems.items()}
    assert problems == {}, f"{summary}: {problems}"


def test_concurrent_receivers_get_each_message_exactly_once(server: Server, sqs: Any) -> None:
    total = 200
    url = sqs.create_queue(QueueName="shared", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    fill(sqs, url, total)
    errors_before = len(server.errors())

    receivers = Receivers(server, url, 4)
    deadline = time.monotonic() + 25
    while len(receivers.deliveries) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # room for a late duplicate to show up
    receivers.join()

    assert receivers.errors == []
    assert receivers.refused == []
    assert server.errors()[errors_before:] == []
    bodies = Counter(body for body, *_ in receivers.deliveries)
    assert [body for body, n in bodies.items() if n > 1] == [], "delivered more than once"
    assert set(bodies) == {f"m-{i}" for i in range(total)}, "lost"
    assert {count for *_, count in receivers.deliveries} == {1}
    assert len({n for _, n, *_ in receivers.deliveries}) > 1, "only one receiver got work"
    assert depth(sqs, url) == (0, 0)


def test_a_long_poll_does_not_block_other_clients(server: Server, sqs: Any) -> None:
    idle = sqs.create_queue(QueueName="idle")["QueueUrl"]
    busy = sqs.create_queue(QueueName="busy")["QueueUrl"]
    polled: list[tuple[float, list[dict[str, Any]]]] = []

    def long_poll() -> None:
        client = server.client()
        response = client.receive_message(QueueUrl=idle, WaitTimeSeconds=5)
        polled.append((time.monotonic(), response.get("Messages", [])))

    pollers = [threading.Thread(target=long_poll, daemon=True) for _ in range(3)]
    for poller in pollers:
        poller.start()
    time.sleep(0.3)  # the long polls are waiting in the server

    started = time.monotonic()
    for i in range(20):
        sqs.send_message(QueueUrl=busy, MessageBody=f"round-{i}")
        messages = sqs.receive_message(QueueUrl=busy, WaitTimeSeconds=1)["Messages"]
        assert [m["Body"] for m in messages] == [f"round-{i}"]
        sqs.delete_message(QueueUrl=busy, ReceiptHandle=messages[0]["ReceiptHandle"])
    rounds = time.monotonic() - started
    assert rounds < 2.0, f"20 rounds took {rounds:.2f} s behind the long polls"
    assert polled == [], "a long poll on an empty queue returned early"

    # A send to the polled queue still wakes one waiter at once.
    sent = time.monotonic()
    sqs.send_message(QueueUrl=idle, MessageBody="wake")
    deadline = sent + 1.5
    while not any(messages for _, messages in polled) and time.monotonic() < deadline:
        time.sleep(0.02)
    woken = [(at, messages) for at, messages in polled if messages]
    assert woken, "the send did not wake a waiting long poll"
    assert woken[0][0] - sent < 1.5
    for poller in pollers:
        poller.join(8)
    assert [m["Body"] for _, messages in polled for m in messages] == ["wake"]
