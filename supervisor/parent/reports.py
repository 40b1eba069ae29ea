"""What the parent does with each report a child sends (the schema is in ``supervisor.ipc``).

Any report proves the child alive. Every kind in ``ipc.KINDS`` has a method here; a kind
without one is logged once, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import repeat
from operator import sub, truediv
from typing import Any

from supervisor.ipc import KINDS, Report, seconds
from supervisor.observe.metrics import ChildMetrics, Metrics
from supervisor.observe.queuestats import QueueStats
from supervisor.parent.children import Child, ReceiveState
from supervisor.parent.pool import Pool

log = logging.getLogger("sqs_supervisor.arbiter")


class ReportRouter:
    def __init__(
        self,
        pool: Pool,
        metrics: Metrics,
        queue_stats: QueueStats,
        clock: Callable[[], float],
        *,
        announce_ready: Callable[[], None],
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.queue_stats = queue_stats
        self.clock = clock
        self.announce_ready = announce_ready
        self._routes: dict[str, Callable[[Child, Report, float], None]] = {
            kind: getattr(self, f"on_{kind}") for kind in KINDS
        }

    def read(self, child: Child | None) -> bool:
        """Act on every report the child's pipe holds; True once the pipe has closed."""
        if child is None:
            return False
        now = self.clock()
        routes = self._routes
        for report in child.reader.read():
            route = routes.get(report["t"])
            if route is None:
                log.error("child %d sent an unknown report %r", child.pid, report["t"])
                continue
            route(child, report, now)
        if child.reader.last_read:
            child.last_seen = now  # any report at all proves the child alive
        if child.reader.closed:
            self.pool.forget(child)
            return True
        return False

    def _queue(self, child: Child) -> str:
        binding = self.pool.binding(child)
        return binding.queue_name if binding else "-"

    def _counts(self, child: Child) -> ChildMetrics:
        """The metrics the child's reports move, resolved at its first report."""
        if child.metrics is None:
            child.metrics = self.metrics.of_child(child.binding, self._queue(child))
        return child.metrics

    def on_ready(self, child: Child, report: Report, now: float) -> None:
        child.ready = True
        if all(c.ready for c in self.pool.children.values()):
            self.announce_ready()

    def on_received(self, child: Child, report: Report, now: float) -> None:
        state = self.pool.receives.get(child.binding)
        if state is None:
            state = self.pool.receives[child.binding] = ReceiveState()
        state.failing, state.last_ok_at = False, now
        ids, types = report["ids"], report["types"]
        if types:
            child.labels_job_types = True
        labels = types or repeat(None)
        held = zip(report["receipts"], report["counts"], repeat(report["q"]), labels, strict=False)
        child.leases.update(zip(ids, held, strict=True))  # HeldLease tuples, made in C
        ages = _ages(report["at"], report["sent"])
        counts = self._counts(child)
        counts.received(len(ids), ages)
        self.queue_stats.note_received(counts.queue, ages)

    def on_recv_failed(self, child: Child, report: Report, now: float) -> None:
        state = self.pool.receives.setdefault(child.binding, ReceiveState())
        state.failing, state.error = True, report["code"]
        if not report["lookup"]:
            self.metrics.receive_requests.labels(child.binding, "error").inc()

    def on_alive(self, child: Child, report: Report, now: float) -> None:
        # The child's monotonic clock is the system's, so its start times are ours too.
        child.jobs = {message_id: started for message_id, started in report["jobs"]}

    def on_progress(self, child: Child, report: Report, now: float) -> None:
        """A job that reports progress is alive; ``last_seen`` is already updated."""

    def on_deleting(self, child: Child, report: Report, now: float) -> None:
        child.deleting[report["id"]] = seconds(report["d"])

    def on_deleted(self, child: Child, report: Report, now: float) -> None:
        """``done`` for messages the child recorded as finished: their job types are on the
        leases."""
        ids = report["ids"]
        held = list(map(child.leases.pop, ids, repeat(None)))  # _forget, without a loop of ours
        for by_id in (child.jobs, child.deleting):  # deleting: almost always empty
            if by_id:
                for message_id in ids:
                    by_id.pop(message_id, None)
        types = []
        if child.labels_job_types:
            types = [lease[3] for lease in held if lease is not None and lease[3] is not None]
        self._counts(child).settled(report["o"], _seconds(report["d"]))
        if types:
            self.metrics.settled_by_type(child.binding, report["o"], types)

    def on_done(self, child: Child, report: Report, now: float) -> None:
        settled: list[Any] = report["m"]  # [id, duration] or [id, duration, job type]
        for entry in settled:
            _forget(child, entry[0])
        durations = (seconds(entry[1]) for entry in settled)
        self.metrics.settled(child.binding, self._queue(child), report["o"], durations)
        types = [entry[2] for entry in settled if len(entry) > 2]
        if types:
            self.metrics.settled_by_type(child.binding, report["o"], types)

    def on_extended(self, child: Child, report: Report, now: float) -> None:
        self.metrics.visibility_extensions.labels(child.binding).inc(report["n"])
        self.metrics.visibility_requests.labels(child.binding).inc(report["calls"])

    def on_sqs_error(self, child: Child, report: Report, now: float) -> None:
        self.metrics.sqs_errors.labels(report["op"], report["code"]).inc()

    def on_exiting(self, child: Child, report: Report, now: float) -> None:
        child.exit_reason = child.exit_reason or report["reason"]
        child.retiring = True


def _ages(at: int, sent: list[str]) -> list[float]:
    """Seconds from each SentTimestamp (ms, as text; "-" where SQS gave none) to ``at`` (ms).
    In ``map``s, not a loop of ours: this runs for every message."""
    if "-" in sent:
        sent = [sent_at for sent_at in sent if sent_at != "-"]
    return list(map(truediv, map(sub, repeat(at), map(int, sent)), repeat(1000)))


def _seconds(micros: list[int | None]) -> list[float | None]:
    """Run times in seconds from the report's microseconds (None: the job did not run)."""
    if None in micros:
        return [seconds(us) for us in micros]
    return list(map(truediv, micros, repeat(1_000_000)))


def _forget(child: Child, message_id: str) -> None:
    """A settled message: drop its lease, its pending delete and its running job."""
    child.jobs.pop(message_id, None)
    child.leases.pop(message_id, None)
    child.deleting.pop(message_id, None)
