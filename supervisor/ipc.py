"""The report channel from a child to the parent: one pipe per child, one report per line.

The schema is here and only here: ``Reporter`` has one method per report kind (the child's
side), and ``KINDS`` names every kind, which the parent's router must handle (a test holds it
to that). The parent needs the leases to release a dead child's messages at once, the running
jobs to kill one that overruns its ``timeout``, and any report at all as proof of life.

A report is a JSON object, except the three that run per message or per receive, which are
lines of space-separated fields whenever no field has a space in it (SQS's ids and receipts
never do): ``received`` (``R <at> <queue>`` then ``<id> <receipt> <count> <sent>`` per
message; JSON on a binding that labels job types), ``deleting`` (``D <id> <run time>``, for
a finished job the shared ``FinishedLog`` has no room for) and ``deleted`` (``F <outcome>``
then ``<id> <run time>`` per message: their delete went through; the parent has their job
types on the leases). JSON's string escaping cost more than the rest of a child's reporting.
Nor is there a float to format: run times are whole microseconds, and a message's age goes
as its SentTimestamp (ms, as SQS wrote it) and the child's wall clock at the receive (``at``,
ms). A finished job goes into the child's ``supervisor.finished.FinishedLog``, not the pipe:
the parent needs to know of it only if the child dies before the delete.

| kind        | fields                                   | parent does                          |
| ----------- | ---------------------------------------- | ------------------------------------ |
| ready       |                                          | counts the child as consuming        |
| received    | q, at; ids, receipts, counts, types, sent (a list each) | leases, counts, ages |
| recv_failed | code, lookup (GetQueueUrl, not a receive) | readiness: the latest receive failed |
| alive       | jobs [[id, started]] (monotonic)         | liveness; hard-timeout clock         |
| progress    | id, pct                                  | liveness (a job that reports lives)  |
| deleting    | id, d (run time, null for a duplicate)   | finished: deleted if the child dies  |
| deleted     | o (succeeded, duplicate), ids, d (run times) | as done, job types from the leases |
| done        | o (outcome), m [[id, run time or null, (type)]] | drops leases, counts outcomes |
| extended    | n, calls                                 | counts visibility extensions         |
| sqs_error   | op, code                                 | counts failed SQS calls              |
| exiting     | reason                                   | expects the exit, and why            |
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from supervisor.finished import FinishedLog
from supervisor.lease import Lease

Report = dict[str, Any]
READ_SIZE = 65536  # a pipe's default capacity: a short read means we have it all
KINDS = (
    "ready",
    "received",
    "recv_failed",
    "alive",
    "progress",
    "deleting",
    "deleted",
    "done",
    "extended",
    "sqs_error",
    "exiting",
)


class Reporter:
    """Child side: one method per kind; safe to call from any thread of the child.
    ``finished`` is the shared log the parent made for this child (None: the pipe only)."""

    def __init__(self, fd: int, finished: FinishedLog | None = None) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._finished = finished

    def ready(self) -> None:
        self._send("ready")

    def received(self, queue_url: str, leases: Sequence[Lease], sent: list[str], at: int) -> None:
        """``sent``: each lease's SentTimestamp (ms, "-" if SQS gave none); ``at``: the
        child's wall clock at the receive, in ms."""
        if not any(lease.job_type for lease in leases):
            fields = ["R", str(at), queue_url]
            for lease, sent_at in zip(leases, sent, strict=True):
                fields += (
                    lease.message_id,
                    lease.receipt_handle,
                    str(lease.receive_count),
                    sent_at,
                )
            if self._write_line(fields):
                return
        self._send(
            "received",
            q=queue_url,
            ids=[lease.message_id for lease in leases],
            receipts=[lease.receipt_handle for lease in leases],
            counts=[lease.receive_count for lease in leases],
            types=[lease.job_type for lease in leases],
            sent=sent,
            at=at,
        )

    def receive_failed(self, code: str, *, lookup: bool = False) -> None:
        self._send("recv_failed", code=code, lookup=lookup)

    def alive(self, jobs: Iterable[tuple[str, float]]) -> None:
        self._send("alive", jobs=[list(job) for job in jobs])

    def progress(self, message_id: str, percent: int) -> None:
        self._send("progress", id=message_id, pct=percent)

    def deleting(self, message_id: str, duration: float | None) -> int | None:
        """A job finished, its delete batched: into the shared log (returns its slot, which
        ``deleted`` frees), or over the pipe if the log has no room (returns None)."""
        us = None if duration is None else round(duration * 1_000_000)  # micros(), inlined
        if self._finished is not None:
            slot = self._finished.add(message_id, us)
            if slot is not None:
                return slot
        if " " in message_id or "\n" in message_id:
            self._send("deleting", id=message_id, d=us)
        else:
            self._write(f"D {message_id} {us}\n".encode())
        return None

    def deleted(
        self, outcome: str, settled: Sequence[tuple[str, float | None, int | None]]
    ) -> None:
        """``done`` for messages each reported by ``deleting`` first: (id, run time, the slot
        ``deleting`` returned)."""
        fields = ["F", outcome]
        for message_id, duration, _ in settled:
            # micros(), inlined: this runs once per message
            fields += (message_id, "None" if duration is None else str(round(duration * 1e6)))
        if not self._write_line(fields):
            ids = [message_id for message_id, _, _ in settled]
            self._send("deleted", o=outcome, ids=ids, d=[micros(d) for _, d, _ in settled])
        # Freed only once the parent has the line: a kill in between leaves both, never neither.
        if self._finished is not None:
            for _, _, slot in settled:
                if slot is not None:
                    self._finished.remove(slot)

    def done(self, outcome: str, settled: Iterable[tuple[Lease, float | None]]) -> None:
        self._send("done", o=outcome, m=[_settled(lease, duration) for lease, duration in settled])

    def extended(self, messages: int, requests: int) -> None:
        self._send("extended", n=messages, calls=requests)

    def sqs_error(self, operation: str, code: str) -> None:
        self._send("sqs_error", op=operation, code=code)

    def exiting(self, reason: str) -> None:
        self._send("exiting", reason=reason)

    def _write_line(self, fields: list[str]) -> bool:
        """Send ``fields`` as one space-separated line; False (nothing sent) if a field has a
        space or a line break in it, so the caller sends JSON instead."""
        line = " ".join(fields)
        if line.count(" ") != len(fields) - 1 or "\n" in line:
            return False
        self._write(f"{line}\n".encode())
        return True

    def _send(self, kind: str, **fields: Any) -> None:
        self._write((_encode({"t": kind, **fields}) + "\n").encode())

    def _write(self, data: bytes) -> None:
        with self._lock:
            written = os.write(self._fd, data)  # whole, unless the pipe was nearly full
            view = memoryview(data)[written:]
            while view:
                written = os.write(self._fd, view)
                view = view[written:]


_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per report
# Our own lines have no whitespace around them: raw_decode skips json.loads's two regex scans.
_decode = json.JSONDecoder().raw_decode


def micros(seconds: float | None) -> int | None:
    """A run time on the wire: whole microseconds (None: the handler did not run)."""
    return None if seconds is None else round(seconds * 1_000_000)


def seconds(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


def _settled(lease: Lease, duration: float | None) -> list[Any]:
    """[id, run time us], and the job type label on a binding that routes by type."""
    if lease.job_type is None:
        return [lease.message_id, micros(duration)]
    return [lease.message_id, micros(duration), lease.job_type]


class ReportReader:
    """Parent side: non-blocking reads of one child's pipe, split into whole reports."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._buffer = b""
        self.closed = False
        self.last_read = False

    def read(self) -> Iterator[Report]:
        """Every complete report available now; sets ``closed`` once the child's end is gone,
        and ``last_read`` to whether this read got anything."""
        self.last_read = False
        while True:
            try:
                chunk = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
            self.last_read = True
            if len(chunk) < READ_SIZE:
                break  # the pipe is empty now: no second read to hear so (an EOF wakes us)
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"D "):
                _, message_id, duration = line.decode().split(" ")
                yield {"t": "deleting", "id": message_id, "d": _int_or_none(duration)}
            elif line.startswith(b"F "):
                _, outcome, *settled = line.decode().split(" ")
                durations = [None if d == "None" else int(d) for d in settled[1::2]]
                yield {"t": "deleted", "o": outcome, "ids": settled[0::2], "d": durations}
            elif line.startswith(b"R "):
                yield _received(line.decode().split(" "))
            elif line:
                yield _decode(line.decode())[0]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _int_or_none(text: str) -> int | None:
    return None if text == "None" else int(text)


def _received(fields: list[str]) -> Report:
    """``R <at> <queue url>`` and then ``<id> <receipt> <count> <sent>`` per lease, as
    columns (the receive counts as text: the parent needs one only to release its message)."""
    return {
        "t": "received",
        "q": fields[2],
        "ids": fields[3::4],
        "receipts": fields[4::4],
        "counts": fields[5::4],
        "types": None,
        "sent": fields[6::4],
        "at": int(fields[1]),
    }
