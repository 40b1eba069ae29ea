"""Queue depth and message age gauges, polled by the parent once per queue per interval.

``queue_messages{queue,state}`` comes from GetQueueAttributes for every bound queue and DLQ.

``oldest_message_age_seconds{queue}``: SQS's API has no age-of-oldest attribute (CloudWatch
has ApproximateAgeOfOldestMessage, used when ``metrics.cloudwatch`` is on and reachable).
Without it the gauge is derived from what the children receive: the largest age (now minus
SentTimestamp) among messages received since the previous poll. When nothing was received
in a window, it is 0 if the queue has no visible messages, else the previous value plus the
time since (a lower bound: the waiting messages are at least getting older). What it can
miss: messages nobody received in the window (delayed ones, ones waiting out a retry delay,
ones held by other consumers) can be older than the gauge says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from supervisor.config import Binding, SqsSettings, queue_name
from supervisor.observe.cloudwatch import CloudWatchAges
from supervisor.observe.metrics import Metrics
from supervisor.sqs import DEPTH_ATTRIBUTES, SqsClient, SqsError

log = logging.getLogger("sqs_supervisor.queuestats")


class QueueStats:
    """Polls queue attributes on an interval and keeps the age derivation's state."""

    def __init__(
        self,
        metrics: Metrics,
        sqs: Callable[[], SqsClient],
        interval: float,
        *,
        cloudwatch: CloudWatchAges | None = None,
    ) -> None:
        self.metrics = metrics
        self._sqs = sqs
        self.interval = interval
        self._cloudwatch = cloudwatch
        self._next_poll = 0.0
        self._round: list[tuple[str, bool]] = []  # queues left to poll this round
        self._last_age_update: dict[str, float] = {}
        self._window_max: dict[str, float] = {}  # queue -> largest age received this window
        self._failing: set[str] = set()

    @classmethod
    def for_settings(
        cls,
        metrics: Metrics,
        sqs: Callable[[], SqsClient],
        interval: float,
        cloudwatch: bool,
        settings: SqsSettings,
    ) -> QueueStats:
        return cls(
            metrics, sqs, interval, cloudwatch=CloudWatchAges(settings) if cloudwatch else None
        )

    def note_received(self, queue: str, ages: Iterable[float]) -> None:
        oldest = max(ages, default=None)
        if oldest is not None:
            self._window_max[queue] = max(self._window_max.get(queue, 0.0), oldest)

    def poll(self, bindings: Iterable[Binding], now: float, *, force: bool = False) -> None:
        """Poll one queue per call: the parent calls this once per loop pass, so an
        unreachable endpoint costs the loop one short call at a time, never a whole round."""
        if not self._round:
            if now < self._next_poll and not force:
                return
            self._next_poll = now + self.interval
            sources = [(b.queue, True) for b in bindings]
            dead_letters = [(b.dead_letter.queue, False) for b in bindings if b.dead_letter]
            self._round = sources + dead_letters
        queue, is_source = self._round.pop(0)
        counts = self._poll_queue(queue)
        if is_source and counts is not None:
            name = queue_name(queue)
            elapsed = now - self._last_age_update.get(name, now)
            self._last_age_update[name] = now
            self._update_age(name, counts["visible"], elapsed)
            self._window_max.pop(name, None)

    def _poll_queue(self, queue: str) -> dict[str, int] | None:
        try:
            sqs = self._sqs()
            attributes = sqs.get_attributes(sqs.queue_url(queue), list(DEPTH_ATTRIBUTES.values()))
        except SqsError as exc:
            if queue not in self._failing:
                log.warning("cannot read attributes of queue %r: %s", queue, exc)
                self._failing.add(queue)
            return None
        self._failing.discard(queue)
        counts = {state: int(attributes.get(name, 0)) for state, name in DEPTH_ATTRIBUTES.items()}
        for state, value in counts.items():
            self.metrics.queue_messages.labels(queue_name(queue), state).set(value)
        return counts

    def _update_age(self, queue: str, visible: int, elapsed: float) -> None:
        gauge = self.metrics.oldest_message_age.labels(queue_name(queue))
        if self._cloudwatch is not None:
            try:
                age = self._cloudwatch.oldest_age(queue_name(queue))
            except SqsError as exc:
                log.warning("CloudWatch unavailable (%s); deriving message age instead", exc)
                self._cloudwatch = None
            else:
                if age is not None:
                    gauge.set(age)
                    return
        if queue in self._window_max:
            gauge.set(self._window_max[queue])
        elif visible == 0:
            gauge.set(0)
        else:
            gauge.inc(elapsed)
