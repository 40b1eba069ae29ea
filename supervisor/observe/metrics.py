"""The Prometheus metrics contract, owned by the parent.

Children never touch prometheus_client: they report events over their pipe and the parent
counts them in one registry. So counters are summed across children by construction, never
decrease when a child dies or is replaced, and gauges describe only live children, with no
multiprocess directory to clean and no per-pid files to reap.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections import Counter as Counter_
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "sqs_supervisor"
# From 5 ms to 2 h: fine steps where web-ish jobs live, coarse ones for 40-minute renders.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200,
    2400, 3600, 7200,
)  # fmt: skip
AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
OUTCOMES = ("succeeded", "retried", "dead_lettered", "released", "duplicate")
RESTART_REASONS = ("crash", "timeout", "hung", "memory", "max_jobs", "reload")
WORKER_STATES = ("running", "starting", "backoff", "draining")
QUEUE_STATES = ("visible", "in_flight", "delayed")


class BatchHistogram(Histogram):
    """A Histogram that also takes many values at once, as the parent has them: a receive's
    ages, a flush's run times. ``observe`` loops over the buckets and takes a lock per value;
    this finds each value's bucket by bisection and adds to each bucket (and the sum) once.
    It uses prometheus_client's own bucket state, so exposition is untouched
    (tests/test_metrics_batch.py holds it equal to one ``observe`` per value)."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        if not amounts:
            return
        self._raise_if_not_observable()
        bounds = self._upper_bounds
        self._sum.inc(sum(amounts))
        # Each value's bucket found and counted in C: a Python step per bucket, not per value.
        indexes = list(map(bisect_left, repeat(bounds), amounts))
        for index in set(indexes):
            if index < len(bounds):  # NaN falls in no bucket, as with observe()
                self._buckets[index].inc(indexes.count(index))


class Metrics:
    """Every metric of the contract, with methods named after the events that move them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._of_child: dict[tuple[str, str], ChildMetrics] = {}
        r = self.registry

        def name(suffix: str) -> str:
            return f"{PREFIX}_{suffix}"

        self.messages_received = Counter(
            name("messages_received"),
            "Messages received from SQS.",
            ["binding", "queue"],
            registry=r,
        )
        self.messages_processed = Counter(
            name("messages_processed"),
            "Messages settled, by outcome.",
            ["binding", "queue", "outcome"],
            registry=r,
        )
        self.processed_by_type = Counter(
            name("messages_processed_by_type"),
            "Messages settled on bindings with handlers:, by job type (a type the YAML names,"
            " * for its fallback entry, unknown for the rest) and outcome.",
            ["binding", "job_type", "outcome"],
            registry=r,
        )
        self.handler_duration = BatchHistogram(
            name("handler_duration_seconds"),
            "Handler run time.",
            ["binding"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.message_age = BatchHistogram(
            name("message_age_seconds"),
            "Age of a message when received (now - SentTimestamp).",
            ["binding"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.oldest_message_age = Gauge(
            name("oldest_message_age_seconds"),
            "Largest age among messages received in the last poll window (see README).",
            ["queue"],
            registry=r,
        )
        self.queue_messages = Gauge(
            name("queue_messages"),
            "Approximate messages in a queue by state, from GetQueueAttributes.",
            ["queue", "state"],
            registry=r,
        )
        self.inflight = Gauge(
            name("inflight_messages"), "Messages held by live children.", ["binding"], registry=r
        )
        self.slots = Gauge(
            name("slots"),
            "Jobs the live children can run at once (running children x concurrency).",
            ["binding"],
            registry=r,
        )
        self.busy_slots = Gauge(
            name("busy_slots"),
            "Jobs running now, as the children's heartbeats last reported them.",
            ["binding"],
            registry=r,
        )
        self.visibility_extensions = Counter(
            name("visibility_extensions"),
            "Visibility extensions made by heartbeats.",
            ["binding"],
            registry=r,
        )
        self.visibility_requests = Counter(
            name("visibility_extension_requests"),
            "ChangeMessageVisibilityBatch calls made by heartbeats (up to 10 messages each).",
            ["binding"],
            registry=r,
        )
        self.receive_requests = Counter(
            name("receive_requests"),
            "ReceiveMessage calls by result (messages, empty, error).",
            ["binding", "result"],
            registry=r,
        )
        self.sqs_errors = Counter(
            name("sqs_errors"), "Failed SQS calls.", ["operation", "code"], registry=r
        )
        self.worker_restarts = Counter(
            name("worker_restarts"),
            "Children replaced, by reason.",
            ["binding", "reason"],
            registry=r,
        )
        self.workers = Gauge(
            name("workers"), "Child processes by state.", ["binding", "state"], registry=r
        )
        self.worker_memory = Gauge(
            name("worker_resident_memory_bytes"),
            "Resident memory of each live child (slot is stable across restarts).",
            ["binding", "slot"],
            registry=r,
        )

    def declare(self, bindings: Iterable[tuple[str, str]]) -> None:
        """Create every label set up front so rates and alerts see zeros, not gaps."""
        for binding, queue in bindings:
            self.messages_received.labels(binding, queue)
            for outcome in OUTCOMES:
                self.messages_processed.labels(binding, queue, outcome)
            for reason in RESTART_REASONS:
                self.worker_restarts.labels(binding, reason)
            for result in ("messages", "empty", "error"):
                self.receive_requests.labels(binding, result)
            self.visibility_extensions.labels(binding)
            self.visibility_requests.labels(binding)
            self.handler_duration.labels(binding)
            self.message_age.labels(binding)
            self.inflight.labels(binding).set(0)
            self.slots.labels(binding).set(0)
            self.busy_slots.labels(binding).set(0)

    def declare_types(self, binding: str, labels: Iterable[str]) -> None:
        """A routing binding's job-type label sets, up front like ``declare``."""
        for label in labels:
            for outcome in OUTCOMES:
                self.processed_by_type.labels(binding, label, outcome)

    def settled_by_type(self, binding: str, outcome: str, labels: Iterable[str]) -> None:
        for label, count in Counter_(labels).items():
            self._bound(self.processed_by_type, binding, label, outcome).inc(count)

    def settled(
        self, binding: str, queue: str, outcome: str, durations: Iterable[float | None]
    ) -> None:
        self.of_child(binding, queue).settled(outcome, list(durations))

    def of_child(self, binding: str, queue: str) -> ChildMetrics:
        """The metrics a child's reports move, resolved once per binding and queue."""
        found = self._of_child.get((binding, queue))
        if found is None:
            found = self._of_child[binding, queue] = ChildMetrics(self, binding, queue)
        return found

    def _bound(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: these run for every message under load."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def set_workers(self, binding: str, counts: dict[str, int]) -> None:
        for state in WORKER_STATES:
            self.workers.labels(binding, state).set(counts.get(state, 0))

    def forget_binding(self, binding: str, slots: Iterable[int]) -> None:
        """Drop the gauges of a binding removed by a reload (counters stay, as they must)."""
        for state in WORKER_STATES:
            _remove(self.workers, binding, state)
        _remove(self.inflight, binding)
        _remove(self.slots, binding)
        _remove(self.busy_slots, binding)
        for slot in slots:
            _remove(self.worker_memory, binding, str(slot))


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


class ChildMetrics:
    """One binding's (and queue's) metric children, looked up once: the parent moves them for
    every receive and every delete batch of every child, with no label lookup each time."""

    def __init__(self, metrics: Metrics, binding: str, queue: str) -> None:
        self.binding, self.queue = binding, queue
        self._metrics = metrics
        self._receives = {
            True: metrics.receive_requests.labels(binding, "messages"),
            False: metrics.receive_requests.labels(binding, "empty"),
        }
        self._received = metrics.messages_received.labels(binding, queue)
        self._age = metrics.message_age.labels(binding)
        self._duration = metrics.handler_duration.labels(binding)
        self._processed: dict[str, Any] = {}

    def received(self, count: int, ages: list[float]) -> None:
        """A receive and its messages' ages (a negative one, from clock skew, counts as 0)."""
        self._receives[count > 0].inc()
        if count:
            self._received.inc(count)
        if ages and min(ages) < 0:
            ages = [max(0.0, age) for age in ages]
        self._age.observe_many(ages)

    def settled(self, outcome: str, durations: list[float | None]) -> None:
        """Settled messages and their run times (None: it did not run)."""
        ran = durations if None not in durations else [d for d in durations if d is not None]
        self._duration.observe_many(ran)
        processed = self._processed.get(outcome)
        if processed is None:
            processed = self._processed[outcome] = self._metrics.messages_processed.labels(
                self.binding, self.queue, outcome
            )
        processed.inc(len(durations))
