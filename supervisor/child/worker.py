"""The child: long-poll one queue, run the handler, settle each message, report to the parent.

One handler call at a time per child; concurrency comes from the number of children. Each
received message ends in exactly one of: deleted (succeeded), visibility set to the retry
delay (failed), sent to the dead-letter queue then deleted (dead_lettered), or made visible at
once (released). Until then it is a lease, extended by the heartbeat and known to the parent.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from supervisor.child.leases import Lease, LeaseKeeper
from supervisor.child.retry import retry_delay
from supervisor.config import Binding, JobsSettings, SqsSettings
from supervisor.errors import (
    EXIT_OK,
    EXIT_WORKER_BOOT,
    PermanentError,
    RetryLater,
    SoftTimeout,
    StopWorker,
)
from supervisor.ipc import Reporter
from supervisor.jobs.tracking import JobTracker
from supervisor.message import Context, Message
from supervisor.observe.logs import set_log_context
from supervisor.sqs import RECEIPT_GONE, SqsClient, SqsError

log = logging.getLogger("sqs_supervisor.worker")

RECEIVE_BACKOFF_MAX = 5.0
DELETE_FLUSH_SECONDS = 0.5  # a finished message waits at most this long for a batched delete
MAX_ATTRIBUTES = 10  # SQS's limit of message attributes per message
ERROR_ATTRIBUTE_PREFIX = "SqsSupervisor"


class StopReceiving(BaseException):
    """Aborts a long poll (or an error back-off) when a graceful stop arrives."""


@dataclass
class Settlement:
    outcome: str
    message_id: str
    duration: float | None = None


@dataclass
class _Pending:
    """A message whose handler is done (or that is a duplicate), waiting for a batched delete."""

    lease: Lease
    duration: float | None
    outcome: str = "succeeded"
    finished_at: float = field(default_factory=time.monotonic)


class Worker:
    """One child process's loop: ``initialize``, ``run_once`` until stopped, ``shutdown``."""

    def __init__(
        self,
        binding: Binding,
        handler: Callable[..., Any],
        reporter: Reporter,
        sqs_settings: SqsSettings,
        *,
        parent_pid: int,
        jobs: JobsSettings | None = None,
    ) -> None:
        self.binding = binding
        self.jobs = jobs or JobsSettings()
        self.handler_log = logging.getLogger(f"sqs_supervisor.handler.{binding.name}")
        self.tracker: JobTracker | None = None
        self.handler = handler
        self.reporter = reporter
        self.sqs_settings = sqs_settings
        self.parent_pid = parent_pid
        self.stopping = False
        self.exit_reason: str | None = None
        self.jobs_done = 0
        self.job_limit = _jittered_limit(binding.max_jobs_per_child)
        self._interruptible = False  # True only inside a long poll or an error back-off
        self._in_handler = False
        self._job_lock = threading.Lock()
        self.current_job: tuple[str, float] | None = None  # (message id, monotonic start)
        self._fast_stop_armed = True
        self._avg_duration: float | None = None
        self._receive_errors = 0
        self._pending: list[_Pending] = []
        self.sqs: SqsClient
        self.leases: LeaseKeeper | None = None
        self.queue_url = ""

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        try:
            self.initialize()
        except SqsError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_WORKER_BOOT
        if self.leases is None:
            return EXIT_OK  # told to stop while still waiting for the endpoint
        try:
            while not self.stopping:
                self.run_once()
        except StopWorker:
            log.info("fast stop: releasing %d held message(s)", len(self.leases))
        finally:
            self._fast_stop_armed = False
            self.shutdown()
        return EXIT_OK

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_graceful)
        signal.signal(signal.SIGQUIT, self._on_fast)
        signal.signal(signal.SIGALRM, self._on_soft_timeout)
        # The parent owns these: a terminal's Ctrl-C or hangup reaches the whole group.
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)

    def initialize(self) -> None:
        self.sqs = SqsClient(
            self.sqs_settings,
            read_timeout=self.binding.wait_time_seconds + 10,
            on_error=lambda exc: self.reporter.send("sqs_error", op=exc.operation, code=exc.code),
        )
        queue_url = self._resolve_queue_url()
        if queue_url is None:
            return
        self.queue_url = queue_url
        self.leases = LeaseKeeper(
            self.sqs,
            self.binding.visibility_timeout,
            on_extended=lambda n, calls: self.reporter.send("extended", n=n, calls=calls),
            on_tick=self._tick,
        )
        if self.jobs.store:
            from supervisor.jobs.stores import open_store

            store = open_store(self.jobs.store, retention_days=self.jobs.retention_days)
            self.tracker = JobTracker(
                store, self.binding.name, self.binding.queue_name, os.getpid()
            )
        self.leases.start()
        self.reporter.send("ready")

    def _resolve_queue_url(self) -> str | None:
        """GetQueueUrl, retried while the endpoint is unreachable (a child started during an
        outage waits instead of crash-looping); only a queue that does not exist is fatal."""
        while not self.stopping:
            try:
                return self.sqs.queue_url(self.binding.queue)
            except SqsError as exc:
                if exc.queue_missing:
                    raise
                self.reporter.send("alive", job=None)  # waiting, not hung
                self._back_off(exc, "looking up the queue")
        return None

    def shutdown(self) -> None:
        """Settle what can be settled, release the rest, stop the heartbeat."""
        if self.leases is None:
            return
        self.flush_deletes(force=True)
        self.release(self.leases.take(lease.message_id for lease in self.leases.held()))
        self.leases.stop()
        if self.exit_reason:
            self.reporter.send("exiting", reason=self.exit_reason)

    # -- one iteration ------------------------------------------------------------------------

    def run_once(self) -> None:
        messages = self.receive()
        if self.binding.batch:
            self.process_batch(messages)
            self.flush_deletes(force=True)
            return
        failed_groups: set[str] = set()
        for index, message in enumerate(messages):
            if self.stopping:
                self.release(self.leases.take(m.message_id for m in messages[index:]))
                break
            if message.group_id is not None and message.group_id in failed_groups:
                # Keep FIFO order: nothing of this group runs after its failed message.
                self.release(self.leases.take([message.message_id]))
                continue
            lease = self.leases.claim(message.message_id)
            if lease is None:
                continue  # released by the heartbeat when a stop arrived
            outcome = self.process(message, lease)
            if outcome == "failed" and message.group_id is not None:
                failed_groups.add(message.group_id)
            self.flush_deletes()
        self.flush_deletes(force=True)

    def fetch_size(self) -> int:
        """As many messages as will start before half their visibility timeout has passed."""
        if self._avg_duration is None:
            return self.binding.batch_size
        budget = self.binding.visibility_timeout / 2
        fits = int(budget / max(self._avg_duration, 0.001))
        return max(1, min(self.binding.batch_size, fits))

    def receive(self) -> list[Message]:
        if self.stopping:
            return []
        self._interruptible = True
        try:
            if self.stopping:  # a stop that arrived before the flag was up
                return []
            raw = self.sqs.receive(
                self.queue_url,
                max_messages=self.fetch_size(),
                wait_seconds=self.binding.wait_time_seconds,
                visibility_timeout=self.binding.visibility_timeout,
            )
        except SqsError as exc:
            self._interruptible = False
            self.reporter.send("received", ok=False, n=0)
            self._back_off(exc)
            return []
        except StopReceiving:
            return []
        finally:
            self._interruptible = False
        self._receive_errors = 0
        now, wall = time.monotonic(), time.time()
        messages = [Message.from_sqs(item, self.queue_url) for item in raw]
        leases = [self._new_lease(m, now) for m in messages]
        self.leases.add(leases)
        self.reporter.send(
            "received",
            ok=True,
            n=len(messages),
            leases=[[m.message_id, m.receipt_handle, m.receive_count] for m in messages],
            q=self.queue_url,
            ages=[
                wall - int(m.attributes["SentTimestamp"]) / 1000
                for m in messages
                if "SentTimestamp" in m.attributes
            ],
        )
        return messages

    def process(self, message: Message, lease: Lease) -> str:
        """Run the handler on one message and settle it; returns the outcome."""
        set_log_context(message_id=message.message_id)
        try:
            return self._process(message, lease)
        finally:
            set_log_context(message_id=None)

    def _process(self, message: Message, lease: Lease) -> str:
        job_id = message.job_id if self.tracker else None
        attempt = message.receive_count
        if job_id and self.tracker:
            if self.tracker.already_succeeded(job_id):
                log.info("job %s already succeeded; deleting the duplicate unrun", job_id)
                self._pending.append(_Pending(lease, None, "duplicate"))
                return "duplicate"
            attempt = self.tracker.started(job_id, message.job_type) or attempt
        ctx = Context(
            binding=self.binding.name,
            queue_url=self.queue_url,
            attempt=attempt,
            logger=self.handler_log,
            options=self.binding.options,
            deadline=time.monotonic() + self.binding.timeout,
            _progress_sink=lambda pct, note: self._progress(message.message_id, job_id, pct, note),
        )
        started = time.monotonic()
        try:
            result = self._call_handler(message, ctx, message.message_id)
        except PermanentError as exc:
            outcome = self._dead_letter(lease, message, exc, time.monotonic() - started)
            if job_id and self.tracker and outcome == "dead_lettered":
                self.tracker.failed(job_id, exc)
        except RetryLater as exc:
            outcome = self._retry(
                lease, exc, time.monotonic() - started, attempt, job_id, exc.delay_seconds
            )
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            outcome = self._retry(lease, exc, time.monotonic() - started, attempt, job_id)
        else:
            if job_id and self.tracker:
                self.tracker.succeeded(job_id, result)
            self._pending.append(_Pending(lease, time.monotonic() - started))
            outcome = "succeeded"
        self._ran(time.monotonic() - started)
        return outcome

    def process_batch(self, messages: list[Message]) -> None:
        """``batch: true``: one call with every message; it returns the ids that failed.

        Like Lambda's ReportBatchItemFailures: returned ids are retried, the rest deleted; an
        exception fails them all. On a FIFO queue, a failed message also fails the later
        messages of its group in the batch, so the group's order holds.
        """
        claimed = [(m, self.leases.claim(m.message_id)) for m in messages]
        batch = [(m, lease) for m, lease in claimed if lease is not None]
        if not batch:
            return
        ctx = Context(
            binding=self.binding.name,
            queue_url=self.queue_url,
            attempt=max(m.receive_count for m, _ in batch),
            logger=self.handler_log,
            options=self.binding.options,
            deadline=time.monotonic() + self.binding.timeout,
        )
        started = time.monotonic()
        try:
            returned = self._call_handler([m for m, _ in batch], ctx, batch[0][0].message_id)
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
                self._retry(lease, error, duration, message.receive_count)
            else:
                self._pending.append(_Pending(lease, duration))
        self._ran(duration)

    def _call_handler(self, argument: Any, ctx: Context, message_id: str) -> Any:
        """Call the handler; with ``soft_timeout``, SIGALRM raises SoftTimeout inside it.

        The running job is published for the heartbeat, which tells the parent once a tick
        (the parent kills a job past its timeout): one report per tick instead of one per
        message keeps the cost of fast handlers low.
        """
        soft = self.binding.soft_timeout
        with self._job_lock:
            self.current_job = (message_id, time.monotonic())
        self._in_handler = True
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            return self.handler(argument, ctx)
        finally:
            if soft:
                signal.setitimer(signal.ITIMER_REAL, 0)
            self._in_handler = False
            with self._job_lock:
                self.current_job = None

    def _ran(self, duration: float) -> None:
        """Bookkeeping after each run: the duration average that sizes fetches, recycling."""
        self._avg_duration = (
            duration if self._avg_duration is None else 0.7 * self._avg_duration + 0.3 * duration
        )
        self.jobs_done += 1
        if self.job_limit and self.jobs_done >= self.job_limit and not self.stopping:
            log.info("recycling after %d jobs (max_jobs_per_child)", self.jobs_done)
            self.stopping, self.exit_reason = True, "max_jobs"

    def _progress(self, message_id: str, job_id: str | None, percent: int, note: str) -> None:
        self.reporter.send("progress", id=message_id, pct=percent)
        if job_id and self.tracker:
            self.tracker.progress(job_id, percent, note)

    # -- settling -----------------------------------------------------------------------------

    def flush_deletes(self, *, force: bool = False) -> None:
        if not self._pending:
            return
        oldest = min(p.finished_at for p in self._pending)
        if (
            not force
            and len(self._pending) < 10
            and time.monotonic() - oldest < DELETE_FLUSH_SECONDS
        ):
            return
        pending, self._pending = self._pending, []
        # Told first, so that if this child dies mid-call the parent can tell a delete that
        # went through (the receipt is gone when it tries to release) from one that didn't.
        self.reporter.send("deleting", ids=[p.lease.message_id for p in pending])
        errors = self.sqs.delete_batch(self.queue_url, (p.lease.entry() for p in pending))
        # A failed delete stays leased (the heartbeat keeps it) and is tried again next flush,
        # unless SQS says the receipt is gone: then retrying can never succeed.
        failed = {key for key, code in errors.items() if code not in RECEIPT_GONE}
        self._pending = [p for p in pending if p.lease.message_id in failed]
        if failed:
            log.warning("could not delete %d processed message(s); will retry", len(failed))
        if len(errors) > len(failed):
            log.warning(
                "%d processed message(s) could not be deleted: the receipt is gone (its"
                " visibility lapsed and another consumer may run it again)",
                len(errors) - len(failed),
            )
        for outcome in ("succeeded", "duplicate"):
            done = [p for p in pending if p.outcome == outcome and p.lease.message_id not in failed]
            self._settled(
                outcome, [Settlement(outcome, p.lease.message_id, p.duration) for p in done]
            )

    def release(self, leases: list[Lease]) -> None:
        """Make messages visible again now: they were received but will not be run here."""
        if not leases:
            return
        failed = set(
            self.sqs.change_visibility_batch(self.queue_url, (lease.entry(0) for lease in leases))
        )
        if failed:
            log.warning(
                "could not release %d message(s); they return after their timeout", len(failed)
            )
        self._settled("released", [Settlement("released", lease.message_id) for lease in leases])

    def _retry(
        self,
        lease: Lease,
        exc: BaseException,
        duration: float,
        attempt: int,
        job_id: str | None = None,
        at_least: float = 0.0,
    ) -> str:
        delay = retry_delay(attempt, self.binding.retry, at_least=at_least)
        self.leases.drop([lease.message_id])
        log.warning(
            "handler failed (attempt %d), retry in %d s: %s: %s",
            attempt,
            delay,
            type(exc).__name__,
            exc,
            exc_info=not isinstance(exc, RetryLater),
        )
        failed = self.sqs.change_visibility_batch(self.queue_url, [lease.entry(delay)])
        if failed:
            log.warning("could not set the retry delay; the message returns after its timeout")
        if job_id and self.tracker:
            dead_letter = self.binding.dead_letter
            if dead_letter and lease.receive_count >= dead_letter.max_receive_count:
                # SQS's redrive policy moves it to the DLQ on its next receive.
                self.tracker.dead(job_id, exc)
            else:
                self.tracker.retrying(job_id, exc, delay)
        self._settled("failed", [Settlement("failed", lease.message_id, duration)])
        return "failed"

    def _dead_letter(
        self, lease: Lease, message: Message, exc: PermanentError, duration: float
    ) -> str:
        dead_letter = self.binding.dead_letter
        if dead_letter is None:
            log.error(
                "permanent failure but binding %r has no dead_letter queue; retrying instead: %s",
                self.binding.name,
                exc,
            )
            return self._retry(
                lease, exc, duration, lease.receive_count, at_least=self.binding.retry.max_seconds
            )
        try:
            self.sqs.send(
                self.sqs.queue_url(dead_letter.queue),
                message.body,
                attributes=_dead_letter_attributes(message, exc),
                group_id=message.group_id,
                dedup_id=message.message_id if message.group_id else None,
            )
        except SqsError as send_error:
            log.error("could not send to the dead-letter queue (%s); retrying", send_error)
            return self._retry(lease, exc, duration, lease.receive_count)
        log.error(
            "permanent failure, sent to %s: %s: %s", dead_letter.queue, type(exc).__name__, exc
        )
        failed = self.sqs.delete_batch(self.queue_url, [lease.entry()])
        if failed:
            log.warning("dead-lettered message could not be deleted from the source queue")
        self.leases.drop([lease.message_id])
        self._settled("dead_lettered", [Settlement("dead_lettered", lease.message_id, duration)])
        return "dead_lettered"

    def _settled(self, outcome: str, settlements: list[Settlement]) -> None:
        if not settlements:
            return
        self.leases.drop(s.message_id for s in settlements)
        self.reporter.send("done", o=outcome, m=[[s.message_id, s.duration] for s in settlements])

    # -- helpers ------------------------------------------------------------------------------

    def _new_lease(self, message: Message, now: float) -> Lease:
        return Lease(
            message_id=message.message_id,
            receipt_handle=message.receipt_handle,
            queue_url=self.queue_url,
            received_at=now,
            expires_at=now + self.binding.visibility_timeout,
            receive_count=message.receive_count,
        )

    def _back_off(self, exc: SqsError, doing: str = "receive") -> None:
        self._receive_errors += 1
        # Capped low so that a consumer is back within seconds of the endpoint's return.
        delay = min(RECEIVE_BACKOFF_MAX, 2 ** (self._receive_errors - 1)) * (
            0.5 + random.random() / 2
        )
        log.warning("%s failed (%s); retrying in %.1f s", doing, exc, delay)
        self._interruptible = True
        try:
            if not self.stopping:
                time.sleep(delay)
        except StopReceiving:
            pass
        finally:
            self._interruptible = False

    def _tick(self) -> None:
        """Heartbeat thread: prove liveness; release prefetched work on a stop; watch the parent."""
        if os.getppid() != self.parent_pid:
            log.error("parent %d is gone; stopping", self.parent_pid)
            os.kill(os.getpid(), signal.SIGQUIT)
            return
        if self.stopping:
            self.release(self.leases.take_unstarted())
        # Under the lock, so this report can never arrive after the job's "done".
        with self._job_lock:
            self.reporter.send("alive", job=self.current_job)

    def _on_graceful(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.leases is not None:
            self.leases.wake()
        if self._interruptible:
            raise StopReceiving

    def _on_soft_timeout(self, signum: int, frame: FrameType | None) -> None:
        if self._in_handler:
            raise SoftTimeout(f"soft timeout of {self.binding.soft_timeout:g} s exceeded")

    def _on_fast(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self._fast_stop_armed:
            self._fast_stop_armed = False
            raise StopWorker


def _dead_letter_attributes(message: Message, exc: BaseException) -> dict[str, Any]:
    """The original attributes plus the error, within SQS's limit of ten."""
    ours = {
        f"{ERROR_ATTRIBUTE_PREFIX}Error": f"{type(exc).__name__}: {exc}"[:1024],
        f"{ERROR_ATTRIBUTE_PREFIX}SourceMessageId": message.message_id,
        f"{ERROR_ATTRIBUTE_PREFIX}ReceiveCount": message.receive_count,
    }
    attributes = dict(message.message_attributes)
    for name, value in ours.items():
        if len(attributes) < MAX_ATTRIBUTES:
            attributes[name] = value
    return attributes


def _jittered_limit(limit: int) -> int:
    """Spread recycling: each child stops somewhere in [limit, limit * 1.25]."""
    return limit + random.randint(0, limit // 4) if limit else 0
