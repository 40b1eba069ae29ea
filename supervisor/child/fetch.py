"""The child's receive side: find the queue, long-poll it, size each fetch, back off on errors.

A child never asks for more messages than it will start before half their visibility timeout
has passed (by a moving average of handler time), so prefetching never starves other children
of long jobs; whatever it holds is a lease the heartbeat keeps and the parent knows about.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from supervisor.child.leases import LeaseKeeper
from supervisor.config import Binding
from supervisor.ipc import Reporter
from supervisor.lease import Lease
from supervisor.message import Message
from supervisor.sqs import SqsClient, SqsError

log = logging.getLogger("sqs_supervisor.worker")

RECEIVE_BACKOFF_MAX = 5.0
# While SQS stays unreachable a child says so once, then once per this many seconds: an
# outage of a pool of 50 children must not write thousands of lines a minute.
ERROR_LOG_INTERVAL = 30.0
# A receive waits for more free slots at most this share of a job's average run time, and at
# most this long: 2 % of a 2 s job is 40 ms of a slot's idle time for a 10-message receive
# (about a tenth of the requests per message, measured, with 2 s jobs and 50 slots).
GATHER_SHARE = 0.02
GATHER_MAX_SECONDS = 0.05


class StopReceiving(BaseException):
    """Aborts a long poll (or an error back-off) when a graceful stop arrives."""


class Fetcher:
    """Receives for one binding; ``interruptible`` tells the stop signal it may abort us."""

    def __init__(
        self,
        binding: Binding,
        sqs: SqsClient,
        reporter: Reporter,
        stopping: Callable[[], bool],
        *,
        type_label: Callable[[Message], str] | None = None,
    ) -> None:
        self.binding = binding
        self.type_label = type_label  # a binding with handlers: labels leases by job type
        self.sqs = sqs
        self.reporter = reporter
        self.stopping = stopping
        self.queue_url = ""
        self.interruptible = False  # True only inside a long poll or an error back-off
        self._avg_duration: float | None = None
        self._errors = 0
        self._next_error_log = 0.0

    def resolve_queue_url(self) -> str | None:
        """GetQueueUrl, retried while the endpoint is unreachable or the queue is missing (a
        child started during an outage, or after its queue was deleted, waits instead of
        crash-looping: `run` itself refuses to start on a queue that does not exist)."""
        while not self.stopping():
            try:
                self.queue_url = self.sqs.queue_url(self.binding.queue)
                self._recovered("looking up the queue")
                return self.queue_url
            except SqsError as exc:
                self.reporter.receive_failed(exc.code, lookup=True)  # not hung; /readyz says why
                self.back_off(exc, "looking up the queue")
        return None

    def note_duration(self, duration: float) -> None:
        """A run finished: feed the moving average that sizes the next fetch."""
        average = self._avg_duration
        self._avg_duration = duration if average is None else 0.7 * average + 0.3 * duration

    def fetch_size(self) -> int:
        """As many messages as will start before half their visibility timeout has passed
        (``concurrency`` of them run at once)."""
        if self._avg_duration is None:
            return self.binding.batch_size
        budget = self.binding.visibility_timeout / 2
        fits = int(budget / max(self._avg_duration, 0.001) * self.binding.concurrency)
        return max(1, min(self.binding.batch_size, fits))

    def gather_window(self) -> float:
        """How long a receive may wait for more slots to free before it asks for the few that
        are. Jobs started by one receive tend to end together; waiting for the rest of them
        keeps receives full (10 messages, not 1-3) without holding any message back. For long
        jobs the wait is a small share of a job's run time, so a slot idles at most that
        share; jobs shorter than a receive's round trip are all done within one run time."""
        average = self._avg_duration
        if average is None:
            return 0.0
        if average < GATHER_MAX_SECONDS:
            return average
        return min(GATHER_MAX_SECONDS, GATHER_SHARE * average)

    def prefetch(self, capacity: int) -> int:
        """Messages a child with ``capacity`` slots may hold beyond them: one receive's worth
        when all of it would start within ``GATHER_MAX_SECONDS`` on average (short jobs get
        full receives, 10 with 8 slots), else none (long jobs: a held message would wait
        seconds for a slot another child may have free)."""
        if self._avg_duration is None:
            return 0
        batch = self.binding.batch_size
        starts_soon = self._avg_duration * batch / capacity <= GATHER_MAX_SECONDS
        return batch if starts_soon else 0

    def receive(self, leases: LeaseKeeper, limit: int = 10) -> list[Message]:
        """One long poll for at most ``limit`` messages; each becomes a lease, reported to the
        parent."""
        if self.stopping():
            return []
        self.interruptible = True
        try:
            if self.stopping():  # a stop that arrived before the flag was up
                return []
            raw = self.sqs.receive(
                self.queue_url,
                max_messages=min(limit, self.fetch_size()),
                wait_seconds=self.binding.wait_time_seconds,
                visibility_timeout=self.binding.initial_visibility,
            )
        except SqsError as exc:
            self.interruptible = False
            self.reporter.receive_failed(exc.code)
            self.back_off(exc)
            return []
        except StopReceiving:
            return []
        finally:
            self.interruptible = False
        self._recovered("receive")
        now, wall = time.monotonic(), time.time()
        messages = [Message.from_sqs(item, self.queue_url) for item in raw]
        visibility = self.binding.initial_visibility
        # Positional arguments: keywords cost about 1k instructions per message here.
        url, expires_at = self.queue_url, now + visibility
        held = [
            Lease(m.message_id, m.receipt_handle, url, m.receive_count, now, expires_at, visibility)
            for m in messages
        ]
        if self.type_label is not None:
            for lease, message in zip(held, messages, strict=True):
                lease.job_type = self.type_label(message)
        leases.add(held)
        sent = [m.attributes.get("SentTimestamp", "-") for m in messages]
        self.reporter.received(self.queue_url, held, sent, int(wall * 1000))
        return messages

    def wait(self, waiting: Callable[[], object]) -> None:
        """Block in ``waiting`` (for a free slot), as interruptible by a stop as a long poll."""
        self.interruptible = True
        try:
            if not self.stopping():
                waiting()
        except StopReceiving:
            pass
        finally:
            self.interruptible = False

    def back_off(self, exc: SqsError, doing: str = "receive") -> None:
        self._errors += 1
        # Capped low so that a consumer is back within seconds of the endpoint's return.
        delay = min(RECEIVE_BACKOFF_MAX, 2 ** (self._errors - 1)) * (0.5 + random.random() / 2)
        now = time.monotonic()
        if self._errors == 1 or now >= self._next_error_log:
            self._next_error_log = now + ERROR_LOG_INTERVAL
            log.warning(
                "%s failed (%s); retrying every few seconds%s",
                doing,
                exc,
                f" ({self._errors} failures in a row)" if self._errors > 1 else "",
            )
        self.wait(lambda: time.sleep(delay))

    def _recovered(self, doing: str) -> None:
        if self._errors:
            log.info("%s works again after %d failure(s)", doing, self._errors)
            self._errors = 0
