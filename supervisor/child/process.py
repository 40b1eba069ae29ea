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
from dataclasses import dataclass
from typing import Any

from supervisor.child.hooks import JobHooks
from supervisor.child.settle import Settler
from supervisor.config import Binding
from supervisor.errors import PermanentError, RetryLater
from supervisor.ipc import Reporter
from supervisor.lease import Lease
from supervisor.message import Context, Message
from supervisor.observe.logs import tag_message, untag_message
from supervisor.timeouts import SoftTimeoutAlarm

log = logging.getLogger("sqs_supervisor.worker")

Handled = tuple[str, float | None]  # (outcome, run time; None when the handler did not run)


@dataclass
class Run:
    """One handler run of one message, between ``begin`` and ``end``."""

    message: Message
    lease: Lease
    ctx: Context
    attempt: int
    started: float


class RunningJobs:
    """The jobs running now (message id -> monotonic start), for the heartbeat's report.

    The heartbeat reports them under the same lock a job ends under, so an ``alive`` report
    can never claim a job after its ``done``: the parent's hard-timeout clock stays truthful.
    With many jobs per child, each entry also knows its thread (or task), which the timeouts
    sweep needs to interrupt it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._jobs: dict[str, float] = {}
        self.owners: dict[str, Any] = {}  # message id -> thread ident, or asyncio task
        self.messages: dict[str, Message] = {}

    def report(self, reporter: Reporter) -> None:
        with self.lock:
            reporter.alive(self._jobs.items())

    def snapshot(self) -> list[tuple[str, float]]:
        with self.lock:
            return list(self._jobs.items())

    def __len__(self) -> int:
        return len(self._jobs)

    def enter(self, message: Message, owner: Any = None) -> None:
        with self.lock:
            self._jobs[message.message_id] = time.monotonic()
            self.messages[message.message_id] = message
            if owner is not None:
                self.owners[message.message_id] = owner

    def leave(self, message_id: str, on_leave: Callable[[Any], None] | None = None) -> None:
        with self.lock:
            self._jobs.pop(message_id, None)
            self.messages.pop(message_id, None)
            owner = self.owners.pop(message_id, None)
            if on_leave is not None:
                on_leave(owner)

    def track(self, message: Message) -> _Tracked:
        return _Tracked(self, message)


class _Tracked:
    def __init__(self, jobs: RunningJobs, message: Message) -> None:
        self.jobs, self.message = jobs, message

    def __enter__(self) -> None:
        self.jobs.enter(self.message)

    def __exit__(self, *exc: object) -> None:
        self.jobs.leave(self.message.message_id)


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
        # Without a soft timeout the alarm does nothing: call the handler straight.
        self._run_handler = self._run_under_alarm if alarm.seconds else handler

    def process(self, message: Message, lease: Lease) -> Handled:
        """Run the handler on one message and settle it."""
        token = tag_message(message.message_id)
        try:
            return self._process(message, lease)
        finally:
            untag_message(token)

    def _process(self, message: Message, lease: Lease) -> Handled:
        run = self.begin(message, lease)
        if run is None:
            return "duplicate", None
        running = self.running
        try:
            running.enter(message)
            try:
                result = self._run_handler(message, run.ctx)
            finally:
                running.leave(message.message_id)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return self.end(run, None, exc)
        return self.end(run, result)

    def _run_under_alarm(self, message: Message, ctx: Context) -> Any:
        with self.alarm:
            return self.handler(message, ctx)

    def begin(self, message: Message, lease: Lease) -> Run | None:
        """Before the handler: a duplicate of a job that succeeded is settled unrun (None);
        else the job is marked started and the handler's Context made."""
        if self.hooks.is_duplicate(message):
            self.settler.duplicate(lease)
            return None
        attempt = self.hooks.started(message) or lease.receive_count
        ctx = self._context(attempt, lambda pct, note: self._progress(message, pct, note))
        return Run(message, lease, ctx, attempt, time.monotonic())

    def end(self, run: Run, result: Any = None, error: BaseException | None = None) -> Handled:
        """After the handler: its exception (or none) decides how the message is settled.
        Called positionally on every job: keyword arguments cost CPython more."""
        message, lease, attempt = run.message, run.lease, run.attempt
        duration = time.monotonic() - run.started
        if error is None:
            self.settler.succeeded(lease, duration, message, result)
            return "succeeded", duration  # queued for a batched delete: nothing more to time
        if isinstance(error, PermanentError):
            outcome = self.settler.dead_letter(lease, message, error, duration)
        elif isinstance(error, RetryLater):
            outcome = self.settler.retry(
                lease, error, duration, attempt, message=message, at_least=error.delay_seconds
            )
        else:
            outcome = self.settler.retry(lease, error, duration, attempt, message=message)
        return outcome, time.monotonic() - run.started  # with the settle's own SQS call

    def process_batch(self, batch: list[tuple[Message, Lease]]) -> float:
        """``batch: true``: one call with every message; it returns the ids that failed.

        Like Lambda's ReportBatchItemFailures: returned ids are retried, the rest deleted; an
        exception fails them all. On a FIFO queue, a failed message also fails the later
        messages of its group in the batch, so the group's order holds. Returns the run time.
        """
        ctx = self._context(max(m.receive_count for m, _ in batch))
        started = time.monotonic()
        try:
            returned = self._call([m for m, _ in batch], ctx, batch[0][0])
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
                self.settler.retry(
                    lease, error, duration, message.receive_count, message=message, track=False
                )
            else:
                self.settler.succeeded(lease, duration)
        return duration

    def _context(self, attempt: int, progress: Callable[[int, str], None] | None = None) -> Context:
        # Positional, in the fields' order: keywords cost about 3k instructions per job here.
        binding = self.binding
        deadline = time.monotonic() + binding.timeout
        return Context(
            binding.name, self.settler.queue_url, attempt, self.handler_log, binding.options,
            deadline, progress,
        )  # fmt: skip

    def _call(self, argument: Any, ctx: Context, first: Message) -> Any:
        """Call the handler as a running job, under the soft-timeout alarm."""
        with self.running.track(first), self.alarm:
            return self.handler(argument, ctx)

    def _progress(self, message: Message, percent: int, note: str) -> None:
        self.reporter.progress(message.message_id, percent)
        self.hooks.progress(message, percent, note)
