"""``Worker.run_once`` driven directly, with an in-memory SQS: one receive, every outcome.

The real paths (fetch, process, settle, leases) run; only the SQS client is a fake, so what is
tested is which calls the child makes and what it tells the parent, one iteration at a time.
Over the wire, the same behaviour is tested against the local SQS in tests/test_engine*.py.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from supervisor import PermanentError
from supervisor.child.worker import Worker
from supervisor.config import Binding, SqsSettings
from supervisor.ipc import Reporter, ReportReader

QUEUE_URL = "http://sqs.local/000000000000/jobs"


class MemorySqs:
    """Holds the messages to hand out and records every settle call the child makes."""

    def __init__(self, bodies: dict[str, str]) -> None:
        self.inbox = [
            {
                "MessageId": message_id,
                "ReceiptHandle": f"receipt-{message_id}",
                "Body": body,
                "Attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": str(int(time.time() * 1000)),
                },
            }
            for message_id, body in bodies.items()
        ]
        self.asked: list[int] = []
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        self.sent: list[tuple[str, str, dict]] = []

    def queue_url(self, name: str) -> str:
        return QUEUE_URL if name == "jobs" else f"http://sqs.local/000000000000/{name}"

    def receive(self, url, *, max_messages, wait_seconds, visibility_timeout):
        self.asked.append(max_messages)
        self.visibility_asked = visibility_timeout
        batch, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        return batch

    def delete_batch(self, url, entries):
        self.deleted += [e.key for e in entries]
        return {}

    def change_visibility_batch(self, url, entries):
        self.visibility += [(e.key, e.visibility_timeout) for e in entries]
        return {}

    def send(self, url, body, *, attributes=None, group_id=None, dedup_id=None):
        self.sent.append((url, body, dict(attributes or {})))
        return "dlq-id"


def in_memory_worker(binding: Binding, handler, sqs: MemorySqs, report_fd: int) -> Worker:
    """A child's Worker, initialized against ``sqs``, reporting into ``report_fd``."""
    worker = Worker(
        binding,
        handler,
        Reporter(report_fd),
        SqsSettings(),
        parent_pid=os.getppid(),
        sqs_factory=lambda settings, **options: sqs,
    )
    worker.initialize()
    return worker


def handler(message, ctx):
    action = message.json()["do"]
    if action == "fail":
        raise RuntimeError("upstream said no")
    if action == "poison":
        raise PermanentError("cannot ever work")
    ctx.progress(50, "halfway")
    return {"done": True}


@pytest.fixture
def child():
    read_fd, write_fd = os.pipe()
    sqs = MemorySqs(
        {
            "ok-1": json.dumps({"do": "ok"}),
            "fail": json.dumps({"do": "fail"}),
            "poison": json.dumps({"do": "poison"}),
            "ok-2": json.dumps({"do": "ok"}),
        }
    )
    binding = Binding(
        name="jobs",
        queue="jobs",
        handler="m:f",
        wait_time_seconds=0,
        retry={"base_seconds": 30, "max_seconds": 30},
        dead_letter={"queue": "jobs-dlq"},
    )
    worker = in_memory_worker(binding, handler, sqs, write_fd)
    try:
        yield worker, sqs, ReportReader(read_fd)
    finally:
        worker.shutdown()
        os.close(write_fd)


def test_one_iteration_settles_every_message_of_the_receive(child):
    worker, sqs, reports = child

    worker.run_once()

    assert sqs.asked == [10]
    assert sqs.visibility_asked == 30  # receive_visibility_timeout, not the binding's 300
    assert sorted(sqs.deleted) == ["ok-1", "ok-2", "poison"]  # poison: after the DLQ send
    [(key, delay)] = sqs.visibility
    assert key == "fail" and 24 <= delay <= 30  # 30 s base, up to 20 % jitter
    [(dlq_url, body, attributes)] = sqs.sent
    assert dlq_url.endswith("/jobs-dlq") and json.loads(body) == {"do": "poison"}
    assert attributes["SqsSupervisorError"] == "PermanentError: cannot ever work"
    assert len(worker.leases) == 0

    sent = [r for r in reports.read() if r["t"] != "alive"]
    kinds = [r["t"] for r in sent]
    assert kinds[:2] == ["ready", "received"]
    assert sent[1]["ids"] == ["ok-1", "fail", "poison", "ok-2"]
    outcomes = {m[0]: r["o"] for r in sent if r["t"] == "done" for m in r["m"]}
    outcomes |= {i: r["o"] for r in sent if r["t"] == "deleted" for i in r["ids"]}
    assert outcomes == {
        "ok-1": "succeeded",
        "fail": "retried",
        "poison": "dead_lettered",
        "ok-2": "succeeded",
    }
    assert [r["id"] for r in sent if r["t"] == "progress"] == ["ok-1", "ok-2"]


def test_an_empty_receive_is_reported_and_settles_nothing(child):
    worker, sqs, reports = child
    sqs.inbox = []

    worker.run_once()

    assert (sqs.deleted, sqs.visibility) == ([], [])
    received = [r for r in reports.read() if r["t"] == "received"]
    assert [(r["q"], r["ids"], r["sent"]) for r in received] == [(QUEUE_URL, [], [])]
