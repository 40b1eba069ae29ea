"""What the parent does with each report a child sends (the schema is in ``supervisor.ipc``).

Any report proves the child alive. Every kind in ``ipc.KINDS`` has a method here; a kind
without one is logged once, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from supervisor.ipc import KINDS, Report, seconds
from supervisor.lease import Lease
from supervisor.observe.metrics import Metrics
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

    def on_ready(self, child: Child, report: Report, now: float) -> None:
        child.ready = True
        if all(c.ready for c in self.pool.children.values()):
            self.announce_ready()

    def on_received(self, child: Child, report: Report, now: float) -> None:
        state = self.pool.receives.get(child.binding)
        if state is None:
            state = self.pool.receives[child.binding] = ReceiveState()
        state.failing, state.last_ok_at = False, now
        queue_url = report["q"]
        held = child.leases
        for item in report["leases"]:
            held[item[0]] = Lease.from_wire(item, queue_url, now)
        at = report["at"]  # ms, as SentTimestamp
        ages = [(at - int(sent)) / 1000 for sent in report["sent"] if sent != "-"]
        queue = self._queue(child)
        self.metrics.received(child.binding, queue, len(report["leases"]), ages)
        self.queue_stats.note_received(queue, ages)

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
        types: list[str] = []
        jobs, leases, deleting = child.jobs, child.leases, child.deleting
        for message_id in report["ids"]:  # _forget, inlined: this runs once per message
            jobs.pop(message_id, None)
            lease = leases.pop(message_id, None)
            if deleting:  # almost always empty: the child's finished log had room
                deleting.pop(message_id, None)
            if lease is not None and lease.job_type is not None:
                types.append(lease.job_type)
        durations = [None if d is None else d / 1_000_000 for d in report["d"]]
        self.metrics.settled(child.binding, self._queue(child), report["o"], durations)
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


def _forget(child: Child, message_id: str) -> None:
    """A settled message: drop its lease, its pending delete and its running job."""
    child.jobs.pop(message_id, None)
    child.leases.pop(message_id, None)
    child.deleting.pop(message_id, None)
