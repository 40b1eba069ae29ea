"""Dead-letter queue operations: move messages back (redrive) and read them (dump).

Redrive prefers SQS's own StartMessageMoveTask. Where the endpoint lacks it (moto answers
HTTP 500), or a count cap or a dry run is asked for (a move task takes everything), it moves
messages itself: receive from the DLQ, SendMessageBatch to the source, and delete from the
DLQ only the messages whose send succeeded, so a failure can duplicate a message but never
lose one. Reading without moving holds what it received and makes it visible again at the
end, so a dump leaves the DLQ as it found it.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.message import ERROR_ATTRIBUTE
from supervisor.sqs import MAX_BATCH, BatchEntry, SqsClient, SqsError

log = logging.getLogger("sqs_supervisor.redrive")

HOLD_SECONDS = 60  # how long a received DLQ message stays ours while we move or read it
RECEIVE_WAIT_SECONDS = 1  # a long poll, so an empty answer means empty (short polls sample)
BATCH_BYTES = 262_144  # SendMessageBatch's total payload cap on every SQS endpoint
FIFO_DEDUP_WINDOW_MS = 5 * 60 * 1000
MOVE_TASK_DONE = {"COMPLETED", "FAILED", "CANCELLED"}


class RedriveError(Exception):
    """A redrive could not finish; ``moved`` messages had already reached the source queue."""

    def __init__(self, message: str, moved: int) -> None:
        super().__init__(message)
        self.moved = moved


@dataclass
class RedriveResult:
    moved: int = 0
    method: str = "receive"  # or "move-task"
    failed: list[str] = field(default_factory=list)  # message ids whose send failed (kept)
    undeleted: list[str] = field(default_factory=list)  # sent but still in the DLQ too
    previews: list[dict[str, Any]] = field(default_factory=list)  # dry run: what would move


def redrive(
    sqs: SqsClient,
    dlq_url: str,
    source_url: str,
    *,
    fifo: bool,
    max_messages: int | None = None,
    dry_run: bool = False,
    mover: SqsClient | None = None,
    poll_seconds: float = 2.0,
) -> RedriveResult:
    """Move messages from a dead-letter queue back to its source queue.

    ``mover`` is the client to try StartMessageMoveTask with (give it no retries: an endpoint
    without the operation answers 500, and retrying that only delays the fallback).
    """
    if dry_run:
        return RedriveResult(previews=list(peek(sqs, dlq_url, max_messages=max_messages)))
    if mover is not None and max_messages is None:
        moved = _try_move_task(sqs, mover, dlq_url, source_url, poll_seconds)
        if moved is not None:
            return RedriveResult(moved=moved, method="move-task")
    return _move_by_receive(sqs, dlq_url, source_url, fifo=fifo, max_messages=max_messages)


def _try_move_task(
    sqs: SqsClient, mover: SqsClient, dlq_url: str, source_url: str, poll_seconds: float
) -> int | None:
    """Run a move task to completion; None if the endpoint will not start one."""
    dlq_arn = sqs.get_attributes(dlq_url, ["QueueArn"])["QueueArn"]
    source_arn = sqs.get_attributes(source_url, ["QueueArn"])["QueueArn"]
    try:
        mover.start_message_move_task(dlq_arn, source_arn)
    except SqsError as exc:
        log.info(
            "StartMessageMoveTask unavailable (%s); moving messages one batch at a time", exc.code
        )
        return None
    while True:
        tasks = sqs.list_message_move_tasks(dlq_arn)
        task = tasks[0] if tasks else {"Status": "COMPLETED"}
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if task["Status"] in MOVE_TASK_DONE:
            if task["Status"] != "COMPLETED":
                reason = task.get("FailureReason", "no reason given")
                raise RedriveError(f"message move task {task['Status'].lower()}: {reason}", moved)
            return moved
        time.sleep(poll_seconds)  # the task runs inside SQS; this only paces the status calls


def _move_by_receive(
    sqs: SqsClient, dlq_url: str, source_url: str, *, fifo: bool, max_messages: int | None
) -> RedriveResult:
    mover = _Mover(sqs, dlq_url, source_url, fifo)
    taken = 0
    try:
        while max_messages is None or taken < max_messages:
            want = MAX_BATCH if max_messages is None else min(MAX_BATCH, max_messages - taken)
            batch = sqs.receive(
                dlq_url,
                max_messages=want,
                wait_seconds=RECEIVE_WAIT_SECONDS,
                visibility_timeout=HOLD_SECONDS,
            )
            fresh = mover.take(batch)
            if not fresh:
                break
            taken += len(fresh)
            for chunk in _chunks_by_size(fresh):
                mover.move(chunk)
    finally:
        mover.release()
    mover.result.failed = list(mover.held)
    return mover.result


class _Mover:
    """Sends received DLQ messages to the source and deletes from the DLQ what was sent.

    Every message received is held (invisible) until it is sent; one not sent stays in the
    DLQ and is made visible again when the run ends, so each is tried once per run. A batch
    the source refuses as a whole (one oversized message is enough) is retried one message
    at a time, and only a run of failures stops the redrive, so one poison message cannot
    block the rest. On a FIFO queue a group stops at its first failure, keeping its order.
    """

    MAX_FAILURES_IN_A_ROW = MAX_BATCH

    def __init__(self, sqs: SqsClient, dlq_url: str, source_url: str, fifo: bool) -> None:
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.source_url = source_url
        self.fifo = fifo
        self.result = RedriveResult()
        self.held: dict[str, BatchEntry] = {}
        self.failed_groups: set[str] = set()
        self.failures_in_a_row = 0

    def take(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hold what was received until it is sent; return the messages not seen before."""
        fresh = [m for m in batch if m["MessageId"] not in self.held]
        for message in batch:  # a repeat means our hold lapsed: keep the newest receipt
            self.held[message["MessageId"]] = _entry(message)
        return fresh

    def move(self, chunk: list[dict[str, Any]]) -> None:
        chunk = [m for m in chunk if not self._blocked(m)]
        if not chunk:
            return
        entries = [_send_entry(str(i), m, self.fifo) for i, m in enumerate(chunk)]
        try:
            failures = self.sqs.send_batch(self.source_url, entries)
        except SqsError as exc:
            if len(chunk) == 1:
                self._failed(chunk[0], exc.code, str(exc))
                return
            for message in chunk:
                self.move([message])
            return
        refused = {f["Id"]: f for f in failures}
        sent = []
        for index, message in enumerate(chunk):
            failure = refused.get(str(index))
            if failure is None:
                sent.append(message)
            else:
                self._failed(message, failure.get("Code", "?"), failure.get("Message", ""))
        if sent:
            self.failures_in_a_row = 0
            self._delete(sent)

    def _blocked(self, message: Mapping[str, Any]) -> bool:
        group = message.get("Attributes", {}).get("MessageGroupId")
        return self.fifo and group in self.failed_groups

    def _failed(self, message: Mapping[str, Any], code: str, reason: str) -> None:
        log.warning(
            "message %s not sent (%s: %s); it stays in the dead-letter queue",
            message["MessageId"],
            code,
            reason,
        )
        group = message.get("Attributes", {}).get("MessageGroupId")
        if self.fifo and group:
            self.failed_groups.add(group)
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= self.MAX_FAILURES_IN_A_ROW:
            raise RedriveError(
                f"the source queue refused {self.failures_in_a_row} messages in a row"
                f" (last: {code}: {reason}); stopping",
                self.result.moved,
            )

    def _delete(self, sent: list[dict[str, Any]]) -> None:
        self.result.moved += len(sent)
        for message in sent:
            del self.held[message["MessageId"]]
        undeleted = self.sqs.delete_batch(self.dlq_url, [_entry(m) for m in sent])
        if undeleted:
            log.warning("%d message(s) reached the source but are still in the DLQ", len(undeleted))
            self.result.undeleted.extend(undeleted)

    def release(self) -> None:
        """Make every message not sent visible again, for the next redrive or a dump."""
        if self.held:
            self.sqs.change_visibility_batch(self.dlq_url, self.held.values())


def _send_entry(key: str, message: Mapping[str, Any], fifo: bool) -> dict[str, Any]:
    """A SendMessageBatch entry that keeps the body and the message attributes as they were."""
    entry: dict[str, Any] = {"Id": key, "MessageBody": message["Body"]}
    if message.get("MessageAttributes"):
        entry["MessageAttributes"] = reencode(message["MessageAttributes"])
    if fifo:
        system = message.get("Attributes", {})
        entry["MessageGroupId"] = system.get("MessageGroupId", "default")
        entry["MessageDeduplicationId"] = _dedup_id(message)
    return entry


def _dedup_id(message: Mapping[str, Any]) -> str:
    """The original deduplication id, unless the source may still remember it.

    A FIFO queue silently drops a send whose deduplication id it saw in the last five
    minutes, and we would then delete the DLQ copy: the message would be lost. So a message
    sent less than five minutes ago (by SentTimestamp, which a DLQ move keeps or makes later)
    gets its DLQ message id instead, which the source has never seen and which still makes a
    repeated redrive of the same message idempotent.
    """
    system = message.get("Attributes", {})
    original = system.get("MessageDeduplicationId")
    sent_ms = int(system.get("SentTimestamp", 0))
    if original and sent_ms and time.time() * 1000 - sent_ms > FIFO_DEDUP_WINDOW_MS:
        return original
    return message["MessageId"]


def reencode(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Received MessageAttributes back into sendable ones, custom types (Number.int) kept."""
    encoded: dict[str, dict[str, Any]] = {}
    for name, value in attributes.items():
        data_type = value["DataType"]
        if data_type.startswith("Binary"):
            encoded[name] = {"DataType": data_type, "BinaryValue": value["BinaryValue"]}
        else:
            encoded[name] = {"DataType": data_type, "StringValue": value["StringValue"]}
    return encoded


def _entry(message: Mapping[str, Any]) -> BatchEntry:
    return BatchEntry(message["MessageId"], message["ReceiptHandle"], 0)


def _chunks_by_size(messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split so no SendMessageBatch exceeds the payload cap (a big message goes alone)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        weight = _payload_bytes(message)
        if chunk and size + weight > BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += weight
    if chunk:
        yield chunk


def _payload_bytes(message: Mapping[str, Any]) -> int:
    total = len(message["Body"].encode())
    for name, value in message.get("MessageAttributes", {}).items():
        total += len(name.encode()) + len(value["DataType"].encode())
        total += len(value.get("BinaryValue", b"")) + len(value.get("StringValue", "").encode())
    return total


# -- reading without moving -------------------------------------------------------------------


def peek(
    sqs: SqsClient,
    url: str,
    *,
    max_messages: int | None = None,
    hold_seconds: int = HOLD_SECONDS,
) -> Iterator[dict[str, Any]]:
    """Yield messages without consuming them; all are made visible again when this ends.

    Each is held (invisible) until the end so it is read once. A FIFO queue returns no more
    of a message group while some of it is held, so a dump of one large group stops short.
    """
    held: dict[str, BatchEntry] = {}
    try:
        while max_messages is None or len(held) < max_messages:
            want = MAX_BATCH if max_messages is None else min(MAX_BATCH, max_messages - len(held))
            batch = sqs.receive(
                url,
                max_messages=want,
                wait_seconds=RECEIVE_WAIT_SECONDS,
                visibility_timeout=hold_seconds,
            )
            fresh = [m for m in batch if m["MessageId"] not in held]
            for message in batch:
                held[message["MessageId"]] = _entry(message)
            if not fresh:
                return
            yield from (describe(m) for m in fresh)
    finally:
        failed = sqs.change_visibility_batch(url, held.values()) if held else []
        if failed:
            log.warning("%d message(s) stay invisible until their hold lapses", len(failed))


REDRIVE_POLICY_REASON = (
    "moved by the source queue's redrive policy: no error recorded (the run crashed, was"
    " killed or timed out, or it was received too often elsewhere)"
)


def describe(message: Mapping[str, Any]) -> dict[str, Any]:
    """A received message as plain JSON: binary attribute values in base64."""
    system = dict(message.get("Attributes", {}))
    sent_ms = int(system.get("SentTimestamp", 0))
    error = message.get("MessageAttributes", {}).get(ERROR_ATTRIBUTE, {}).get("StringValue")
    return {
        "id": message["MessageId"],
        "body": message["Body"],
        "attributes": system,
        "message_attributes": {
            name: _plain_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "receive_count": int(system.get("ApproximateReceiveCount", 0)),
        "sent_timestamp": dt.datetime.fromtimestamp(sent_ms / 1000, dt.UTC).isoformat(
            timespec="milliseconds"
        ),
        # Why it is here: the error the supervisor saw, or, with no such attribute, the source
        # queue's redrive policy moved it (the run crashed, was killed or timed out, or another
        # consumer received it too often).
        "reason": error or REDRIVE_POLICY_REASON,
    }


def _plain_attribute(value: Mapping[str, Any]) -> dict[str, str]:
    if value["DataType"].startswith("Binary"):
        return {
            "type": value["DataType"],
            "value": base64.b64encode(value["BinaryValue"]).decode(),
        }
    return {"type": value["DataType"], "value": value["StringValue"]}
