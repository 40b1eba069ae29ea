"""`dlq redrive|dump` and `queues purge`, against the local SQS server over HTTP.

moto answers StartMessageMoveTask with HTTP 500, so every redrive here takes the fallback
(receive, SendMessageBatch, DeleteMessageBatch); the move-task path is driven with a fake.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import SqsSettings, load_config
from supervisor.ops.provision import apply_config
from supervisor.ops.redrive import RedriveError, redrive
from supervisor.sqs import SqsClient
from support import queue_counts, run_cli, wait_until, write_config

HANDLER = "handlers.examples:make_thumbnail"


def make_pair(tmp_path: Path, *, fifo: bool = False, **source: Any) -> Path:
    """A config with one binding `jobs` (and its DLQ), applied to the endpoint."""
    suffix = ".fifo" if fifo else ""
    binding = {
        "name": "jobs",
        "queue": f"jobs{suffix}",
        "handler": HANDLER,
        "dead_letter": {"queue": f"jobs-dlq{suffix}", "max_receive_count": 3},
        **source,
    }
    path = write_config(tmp_path / "w.yaml", [binding])
    apply_config(load_config(path, import_handlers=False), SqsClient(SqsSettings()))
    return path


def url(sqs, name: str) -> str:
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def fill(sqs, queue_url: str, count: int, *, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    """Send ``count`` messages with String, Number and Binary attributes; return what was sent."""
    sent = []
    for first in range(start, start + count, 10):
        entries = []
        for index in range(first, min(first + 10, start + count)):
            entry = {
                "Id": str(index),
                "MessageBody": json.dumps({"n": index}),
                "MessageAttributes": {
                    "tenant": {"DataType": "String", "StringValue": f"t{index % 3}"},
                    "attempt": {"DataType": "Number.int", "StringValue": str(index)},
                    "blob": {"DataType": "Binary", "BinaryValue": bytes([index % 256, 0, 255])},
                },
                **{k: (v(index) if callable(v) else v) for k, v in extra.items()},
            }
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response.get("Failed")
        sent.extend(entries)
    return sent


def drain(sqs, queue_url: str, expected: int) -> list[dict[str, Any]]:
    """Receive (and delete) ``expected`` messages, polling with a deadline."""
    received: dict[str, dict[str, Any]] = {}

    def more() -> bool:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        for message in response.get("Messages", []):
            received[message["MessageId"]] = message
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(received) >= expected

    wait_until(more, 60, f"{expected} messages in {queue_url}", interval=0)
    return list(received.values())


def essence(message: dict[str, Any]) -> tuple[str, tuple[tuple[str, str, Any], ...]]:
    """Body and message attributes, as sent or as received."""
    attributes = message["MessageAttributes"]
    return message.get("MessageBody", message.get("Body")), tuple(
        sorted(
            (name, a["DataType"], a.get("StringValue", a.get("BinaryValue")))
            for name, a in attributes.items()
        )
    )


def test_redrive_moves_every_message_back_intact(sqs, tmp_path, capsys, caplog):
    config = make_pair(tmp_path)
    sent = fill(sqs, url(sqs, "jobs-dlq"), 50)
    with caplog.at_level(logging.INFO, logger="sqs_supervisor.redrive"):
        code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(config), "jobs")
    assert code == 0, out
    assert "moved 50 message(s) from jobs-dlq to jobs" in out
    assert "StartMessageMoveTask unavailable" in caplog.text  # moto: HTTP 500, fell back
    assert queue_counts(sqs, url(sqs, "jobs-dlq")) == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert queue_counts(sqs, url(sqs, "jobs"))["visible"] == 50
    received = drain(sqs, url(sqs, "jobs"), 50)
    assert sorted(map(essence, received)) == sorted(map(essence, sent))


def test_dry_run_moves_nothing_and_leaves_every_message_visible(sqs, tmp_path, capsys):
    config = make_pair(tmp_path)
    fill(sqs, url(sqs, "jobs-dlq"), 20)
    code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(config), "jobs", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "dry run: would move 20 message(s) from jobs-dlq to jobs; nothing moved"
    previews = [json.loads(line) for line in lines[:-1]]
    assert sorted(json.loads(p["body"])["n"] for p in previews) == list(range(20))
    assert queue_counts(sqs, url(sqs, "jobs-dlq")) == {"visible": 20, "in_flight": 0, "delayed": 0}
    assert queue_counts(sqs, url(sqs, "jobs"))["visible"] == 0


def test_max_caps_what_redrive_moves_and_dump_prints(sqs, tmp_path, capsys):
    config = make_pair(tmp_path)
    fill(sqs, url(sqs, "jobs-dlq"), 25)
    code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(config), "jobs", "--max", "7")
    assert code == 0
    assert "moved 7 message(s) from jobs-dlq to jobs" in out
    assert queue_counts(sqs, url(sqs, "jobs"))["visible"] == 7
    assert queue_counts(sqs, url(sqs, "jobs-dlq")) == {"visible": 18, "in_flight": 0, "delayed": 0}

    code, out, _ = run_cli(capsys, "dlq", "dump", "-c", str(config), "jobs", "--max", "3")
    assert code == 0
    assert len(out.splitlines()) == 3
    assert queue_counts(sqs, url(sqs, "jobs-dlq")) == {"visible": 18, "in_flight": 0, "delayed": 0}

    code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(config), "jobs", "--max", "0")
    assert code == 2 and "--max must be at least 1" in out


def test_dump_prints_json_lines_and_leaves_the_dlq_as_it_was(sqs, tmp_path, capsys):
    config = make_pair(tmp_path)
    sent = fill(sqs, url(sqs, "jobs-dlq"), 15)
    code, out, _ = run_cli(capsys, "dlq", "dump", "-c", str(config), "jobs")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 15
    by_body = {r["body"]: r for r in records}
    assert set(by_body) == {e["MessageBody"] for e in sent}
    first = by_body[json.dumps({"n": 4})]
    assert set(first) == {
        "id",
        "body",
        "attributes",
        "message_attributes",
        "receive_count",
        "sent_timestamp",
        "reason",
    }
    assert first["reason"].startswith("moved by the source queue's redrive policy")
    assert first["receive_count"] == 1
    assert first["sent_timestamp"].endswith("+00:00")
    assert first["message_attributes"] == {
        "tenant": {"type": "String", "value": "t1"},
        "attempt": {"type": "Number.int", "value": "4"},
        "blob": {"type": "Binary", "value": base64.b64encode(bytes([4, 0, 255])).decode()},
    }
    assert queue_counts(sqs, url(sqs, "jobs-dlq")) == {"visible": 15, "in_flight": 0, "delayed": 0}
    # Still all there, and visible at once: a second dump sees every message again.
    assert len(run_cli(capsys, "dlq", "dump", "-c", str(config), "jobs")[1].splitlines()) == 15


def test_fifo_redrive_keeps_groups_order_and_is_not_swallowed_by_deduplication(
    sqs, tmp_path, capsys
):
    config = make_pair(tmp_path, fifo=True)
    group = {"MessageGroupId": lambda i: f"g{i % 2}"}
    dedup = {"MessageDeduplicationId": lambda i: f"order-{i % 100}"}
    # The source has just seen these deduplication ids (SQS remembers them for 5 minutes;
    # moto only while the message is still queued, so the originals stay). Reusing them
    # would make the source drop the redriven messages, and we would delete them from the DLQ.
    fill(sqs, url(sqs, "jobs.fifo"), 12, **group, **dedup)
    fill(sqs, url(sqs, "jobs-dlq.fifo"), 12, start=100, **group, **dedup)

    code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(config), "jobs")
    assert code == 0, out
    assert "moved 12 message(s) from jobs-dlq.fifo to jobs.fifo" in out
    assert queue_counts(sqs, url(sqs, "jobs-dlq.fifo"))["visible"] == 0
    assert queue_counts(sqs, url(sqs, "jobs.fifo"))["visible"] == 24
    received = drain(sqs, url(sqs, "jobs.fifo"), 24)
    for name in ("g0", "g1"):
        numbers = [
            json.loads(m["Body"])["n"]
            for m in received
            if m["Attributes"]["MessageGroupId"] == name
        ]
        assert numbers == sorted(numbers) and len(numbers) == 12


def test_a_message_the_source_refuses_stays_in_the_dlq(sqs, tmp_path, capsys):
    config = make_pair(tmp_path, queue_attributes={"MaximumMessageSize": 1024})
    dlq = url(sqs, "jobs-dlq")
    fill(sqs, dlq, 12)
    sqs.send_message(QueueUrl=dlq, MessageBody="x" * 2000)  # too big for the source
    code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(config), "jobs")
    assert code == 1
    assert "moved 12 message(s) from jobs-dlq to jobs" in out
    assert "1 message(s) were not moved and stay in jobs-dlq" in out
    assert queue_counts(sqs, dlq) == {"visible": 1, "in_flight": 0, "delayed": 0}
    assert queue_counts(sqs, url(sqs, "jobs"))["visible"] == 12
    [left] = drain(sqs, dlq, 1)
    assert left["Body"] == "x" * 2000


def test_purge_refuses_without_yes_then_purges_the_chosen_queue(sqs, tmp_path, capsys):
    config = make_pair(tmp_path)
    fill(sqs, url(sqs, "jobs"), 4)
    fill(sqs, url(sqs, "jobs-dlq"), 3)
    code, out, _ = run_cli(capsys, "queues", "purge", "-c", str(config), "jobs")
    assert code == 2
    assert "refusing to purge queue 'jobs' of binding 'jobs' (4 message(s)" in out
    assert "without --yes" in out
    code, out, _ = run_cli(capsys, "queues", "purge", "-c", str(config), "jobs", "--dlq")
    assert code == 2 and "dead-letter queue 'jobs-dlq'" in out
    assert queue_counts(sqs, url(sqs, "jobs"))["visible"] == 4

    code, out, _ = run_cli(capsys, "queues", "purge", "-c", str(config), "jobs", "--dlq", "--yes")
    assert code == 0 and "purged dead-letter queue 'jobs-dlq'" in out
    wait_until(
        lambda: queue_counts(sqs, url(sqs, "jobs-dlq"))["visible"] == 0, 10, "the DLQ purged"
    )
    assert queue_counts(sqs, url(sqs, "jobs"))["visible"] == 4


def test_dlq_verbs_need_a_dead_letter_queue_and_an_existing_one(sqs, tmp_path, capsys):
    bare = write_config(
        tmp_path / "bare.yaml", [{"name": "jobs", "queue": "jobs", "handler": HANDLER}]
    )
    code, out, _ = run_cli(capsys, "dlq", "dump", "-c", str(bare), "jobs")
    assert code == 2 and "binding 'jobs' has no dead_letter queue" in out
    missing = write_config(
        tmp_path / "missing.yaml",
        [{"name": "jobs", "queue": "jobs", "handler": HANDLER, "dead_letter": {"queue": "gone"}}],
    )
    code, out, _ = run_cli(capsys, "dlq", "redrive", "-c", str(missing), "jobs")
    assert code == 1 and "queue 'gone' does not exist" in out


class FakeMoveTaskSqs:
    """Just enough of SqsClient for an endpoint that runs StartMessageMoveTask (like AWS)."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_attributes(self, url: str, names: list[str]) -> dict[str, str]:
        return {"QueueArn": f"arn:aws:sqs:us-east-1:123456789012:{url.rsplit('/', 1)[-1]}"}

    def start_message_move_task(self, source_arn: str, destination_arn: str) -> str:
        self.calls.append(
            ("StartMessageMoveTask", {"SourceArn": source_arn, "DestinationArn": destination_arn})
        )
        return "handle-1"

    def list_message_move_tasks(
        self, source_arn: str, max_results: int = 1
    ) -> list[dict[str, Any]]:
        self.calls.append(("ListMessageMoveTasks", {"SourceArn": source_arn}))
        return [self.statuses.pop(0)]

    def receive(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise AssertionError("the fallback must not run when the move task works")


def test_redrive_uses_the_move_task_where_the_endpoint_has_it():
    fake = FakeMoveTaskSqs(
        [
            {"Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 10},
            {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 42},
        ]
    )
    result = redrive(fake, "q/jobs-dlq", "q/jobs", fifo=False, mover=fake, poll_seconds=0)  # type: ignore[arg-type]
    assert (result.method, result.moved) == ("move-task", 42)
    operation, params = fake.calls[0]
    assert operation == "StartMessageMoveTask"
    assert params == {
        "SourceArn": "arn:aws:sqs:us-east-1:123456789012:jobs-dlq",
        "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:jobs",
    }


def test_a_failed_move_task_is_reported_with_its_reason():
    fake = FakeMoveTaskSqs(
        [{"Status": "FAILED", "ApproximateNumberOfMessagesMoved": 3, "FailureReason": "KMS"}]
    )
    with pytest.raises(RedriveError, match="message move task failed: KMS") as caught:
        redrive(fake, "q/jobs-dlq", "q/jobs", fifo=False, mover=fake, poll_seconds=0)  # type: ignore[arg-type]
    assert caught.value.moved == 3
