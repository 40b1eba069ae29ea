"""Running the handler on a message (or a batch) and handing the outcome to the settle step.

The handler's exceptions decide the outcome: ``PermanentError`` dead-letters, ``RetryLater``
retries after its own delay, anything else (``SystemExit`` and ``KeyboardInterrupt`` too)
retries with backoff. Only the stop exceptions (``StopWorker``, ``StopReceiving``) pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from supervisor.child.hooks import JobHooks
from supervisor.child.settle import Settler
from supervisor.config import Binding
from supervisor.errors import PermanentError, RetryLater
from supervisor.ipc import Reporter
from supervisor.lease import Lease
from supervisor.message import Context, Message
from supervisor.observe.logs import set_log_context
from supervisor.timeouts import SoftTimeoutAlarm

log = logging.getLogger("sqs_supervisor.worker")

Handled = tuple[str, float | None]  # (outcome, run time; None when the handler did not run)


class RunningJobs:
    """The jobs running now (message id -> monotonic start), for the heartbeat's report.

    The heartbeat reports them under the same lock a job ends under, so an ``alive`` report
    can never claim a job after its ``done``: the parent's hard-timeout clock stays truthful.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._jobs: dict[str, float] = {}

    def report(self, reporter: Reporter) -> None:
        with self.lock:
            reporter.alive(self._jobs.items())

    def __len__(self) -> int:
        return len(self._jobs)

    def track(self, message_id: str) -> _Tracked:
        return _Tracked(self, message_id)


class _Tracked:
    def __init__(self, jobs: RunningJobs, message_id: str) -> None:
        self.jobs, self.message_id = jobs, message_id

    def __enter__(self) -> None:
        with self.jobs.lock:
            self.jobs._jobs[self.message_id] = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        with self.jobs.lock:
            self.jobs._jobs.pop(self.message_id, None)


class Processor:
    """Runs one binding's handler; every run ends in exactly one call to the ``Settler``."""

    def __init__(
        self,
        binding: Binding,
        handler: Callable[..., Any],
        settler: Settler,
        hooks: JobHooks,
        reporter: Reporter,
        alarm: SoftTimeoutAlarm,
    ) -> None:
        self.binding = binding
        self.handler = handler
        self.settler = settler
        self.hooks = hooks
        self.reporter = reporter
        self.alarm = alarm
        self.running = RunningJobs()
        self.handler_log = logging.getLogger(f"sqs_supervisor.handler.{binding.name}")

    def process(self, message: Message, lease: Lease) -> Handled:
        """Run the handler on one message and settle it."""
        set_log_context(message_id=message.message_id)
        try:
            return self._process(message, lease)
        finally:
            set_log_context(message_id=None)

    def _process(self, message: Message, lease: Lease) -> Handled:
        if self.hooks.is_duplicate(message):
            self.settler.duplicate(lease)
            return "duplicate", None
        attempt = self.hooks.started(message) or message.receive_count
        ctx = self._context(attempt, progress=lambda pct, note: self._progress(message, pct, note))
        started = time.monotonic()
        try:
            result = self._call(message, ctx, message.message_id)
        except PermanentError as exc:
            outcome = self.settler.dead_letter(lease, message, exc, time.monotonic() - started)
        except RetryLater as exc:
            outcome = self.settler.retry(
                lease,
                exc,
                time.monotonic() - started,
                attempt,
                message=message,
                at_least=exc.delay_seconds,
            )
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            outcome = self.settler.retry(
                lease, exc, time.monotonic() - started, attempt, message=message
            )
        else:
            self.settler.succeeded(lease, time.monotonic() - started, message, result)
            outcome = "succeeded"
        return outcome, time.monotonic() - started

    def process_batch(self, batch: list[tuple[Message, Lease]]) -> float:
        """``batch: true``: one call with every message; it returns the ids that failed.

        Like Lambda's ReportBatchItemFailures: returned ids are retried, the rest deleted; an
        exception fails them all. On a FIFO queue, a failed message also fails the later
        messages of its group in the batch, so the group's order holds. Returns the run time.
        """
        ctx = self._context(max(m.receive_count for m, _ in batch))
        started = time.monotonic()
        try:
            returned = self._call([m for m, _ in batch], ctx, batch[0][0].message_id)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            failed, error = {m.message_id for m, _ in batch}, exc
        else:
            failed = {str(i) for i in returned or ()}
            unknown = failed - {m.message_id for m, _ in batch}
            if unknown:
                log.warning("batch handler returned ids not in the batch: %s", sorted(unknown))
            error = RuntimeError("reported as failed by the batch handler")
        duration = time.monotonic() - started
        failed_groups: set[str] = set()
        for message, lease in batch:
            group = message.group_id
            if message.message_id in failed or (group is not None and group in failed_groups):
                if group is not None:
                    failed_groups.add(group)
                self.settler.retry(lease, error, duration, message.receive_count)
            else:
                self.settler.succeeded(lease, duration)
        return duration

    def _context(self, attempt: int, progress: Callable[[int, str], None] | None = None) -> Context:
        return Context(
            binding=self.binding.name,
            queue_url=self.settler.queue_url,
            attempt=attempt,
            logger=self.handler_log,
            options=self.binding.options,
            deadline=time.monotonic() + self.binding.timeout,
            _progress_sink=progress,
        )

    def _call(self, argument: Any, ctx: Context, message_id: str) -> Any:
        """Call the handler as a running job, under the soft-timeout alarm."""
        with self.running.track(message_id), self.alarm:
            return self.handler(argument, ctx)

    def _progress(self, message: Message, percent: int, note: str) -> None:
        self.reporter.progress(message.message_id, percent)
        self.hooks.progress(message, percent, note)
