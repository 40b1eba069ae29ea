"""The report channel from a child to the parent: one pipe per child, one JSON object per line.

The schema is here and only here: ``Reporter`` has one method per report kind (the child's
side), and ``KINDS`` names every kind, which the parent's router must handle (a test holds it
to that). The parent needs the leases to release a dead child's messages at once, the running
jobs to kill one that overruns its ``timeout``, and any report at all as proof of life.

| kind        | fields                                   | parent does                          |
| ----------- | ---------------------------------------- | ------------------------------------ |
| ready       |                                          | counts the child as consuming        |
| received    | q, leases [[id, receipt, count, (type)]], ages | records leases, counts, ages |
| recv_failed | code, lookup (GetQueueUrl, not a receive) | readiness: the latest receive failed |
| alive       | jobs [[id, started]] (monotonic)         | liveness; hard-timeout clock         |
| progress    | id, pct                                  | liveness (a job that reports lives)  |
| deleting    | ids, d (run times)                       | finished: deleted if the child dies  |
| done        | o (outcome), m [[id, duration or null, (type)]] | drops leases, counts outcomes |
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

from supervisor.lease import Lease

Report = dict[str, Any]
KINDS = (
    "ready",
    "received",
    "recv_failed",
    "alive",
    "progress",
    "deleting",
    "done",
    "extended",
    "sqs_error",
    "exiting",
)


class Reporter:
    """Child side: one method per kind; safe to call from any thread of the child."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def ready(self) -> None:
        self._send("ready")

    def received(self, queue_url: str, leases: Sequence[Lease], ages: list[float]) -> None:
        self._send("received", q=queue_url, leases=[lease.wire() for lease in leases], ages=ages)

    def receive_failed(self, code: str, *, lookup: bool = False) -> None:
        self._send("recv_failed", code=code, lookup=lookup)

    def alive(self, jobs: Iterable[tuple[str, float]]) -> None:
        self._send("alive", jobs=[list(job) for job in jobs])

    def progress(self, message_id: str, percent: int) -> None:
        self._send("progress", id=message_id, pct=percent)

    def deleting(self, message_ids: list[str], durations: list[float | None]) -> None:
        self._send("deleting", ids=message_ids, d=durations)

    def done(self, outcome: str, settled: Iterable[tuple[Lease, float | None]]) -> None:
        self._send("done", o=outcome, m=[_settled(lease, duration) for lease, duration in settled])

    def extended(self, messages: int, requests: int) -> None:
        self._send("extended", n=messages, calls=requests)

    def sqs_error(self, operation: str, code: str) -> None:
        self._send("sqs_error", op=operation, code=code)

    def exiting(self, reason: str) -> None:
        self._send("exiting", reason=reason)

    def _send(self, kind: str, **fields: Any) -> None:
        data = (_encode({"t": kind, **fields}) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]


_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per report


def _settled(lease: Lease, duration: float | None) -> list[Any]:
    """[id, duration], and the job type label on a binding that routes by type."""
    if lease.job_type is None:
        return [lease.message_id, duration]
    return [lease.message_id, duration, lease.job_type]


class ReportReader:
    """Parent side: non-blocking reads of one child's pipe, split into whole reports."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def read(self) -> Iterator[Report]:
        """Every complete report available now; sets ``closed`` once the child's end is gone."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line:
                yield json.loads(line)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
