"""How a child ends each message: deleted, retried after a delay, dead-lettered, or released.

Every received message ends in exactly one of these, and the parent hears of it in a ``done``
report (which drops the parent's copy of the lease):

- succeeded / duplicate: deleted, in batches of up to ten, flushed within
  ``DELETE_FLUSH_SECONDS``; each one is recorded as it finishes (in the log the parent
  shares, ``supervisor.finished``), so if the child dies before its delete the parent deletes
  it instead of releasing it to run again;
- retried: visibility set to the retry delay, so SQS itself holds the retry;
- dead_lettered: sent to the binding's DLQ with the error in attributes, then deleted (a
  PermanentError, or a failure on the last receive ``dead_letter.max_receive_count`` allows);
- released: visibility 0, received but not run here (a stop, a FIFO group after a failure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from supervisor.child.hooks import JobHooks
from supervisor.child.leases import LeaseKeeper
from supervisor.child.retry import retry_delay
from supervisor.config import Binding
from supervisor.errors import PermanentError, RetryLater
from supervisor.ipc import Reporter
from supervisor.lease import Lease
from supervisor.message import ERROR_ATTRIBUTE, ERROR_ATTRIBUTE_PREFIX, Message
from supervisor.sqs import RECEIPT_GONE, SqsClient, SqsError
from supervisor.timeouts import DELETE_FLUSH_SECONDS

log = logging.getLogger("sqs_supervisor.worker")

MAX_ATTRIBUTES = 10  # SQS's limit of message attributes per message


class Settler:
    """Settles one binding's messages for one child; called from the loop and the heartbeat."""

    def __init__(
        self,
        binding: Binding,
        queue_url: str,
        sqs: SqsClient,
        leases: LeaseKeeper,
        reporter: Reporter,
        hooks: JobHooks,
    ) -> None:
        self.binding = binding
        self.queue_url = queue_url
        self.sqs = sqs
        self.leases = leases
        self.reporter = reporter
        self.hooks = hooks
        # Finished (or duplicate) leases waiting for a batched delete, in finishing order.
        self.pending: list[Lease] = []
        self._pending_lock = threading.Lock()  # jobs finish in many threads at once
        # The threads with a flush under way, for ``flush_all``: without them a shutdown could
        # find nothing pending while another thread's delete had not left, release those
        # finished messages, and exit (they would all run again). A thread runs one flush at
        # a time, so a set will do.
        self._flushing: set[int] = set()
        self._flushed = threading.Condition(self._pending_lock)
        self._waiting = 0  # flush_all calls waiting on ``_flushed``: notified only if any

    # -- success: batched deletes -------------------------------------------------------------

    def succeeded(
        self, lease: Lease, duration: float, message: Message | None = None, result: Any = None
    ) -> None:
        """Queue the delete; ``message`` (not given for batch items) is what tracking records."""
        if message is not None:
            self.hooks.succeeded(message, result)
        self._finished(lease, duration, "succeeded")

    def duplicate(self, lease: Lease) -> None:
        self._finished(lease, None, "duplicate")

    def _finished(self, lease: Lease, duration: float | None, outcome: str) -> None:
        """Queue the delete, and record the message as finished first: if this child dies
        before the batched delete, the parent deletes it (it holds the receipt) instead of
        releasing it to run again. The lease itself waits (no object per job for it)."""
        lease.duration, lease.outcome, lease.finished_at = duration, outcome, time.monotonic()
        lease.slot = self.reporter.deleting(lease.message_id, duration)
        with self._pending_lock:
            self.pending.append(lease)

    def flush_deletes(self, *, force: bool = False) -> None:
        """Delete the finished messages: now if ``force``, else once ten wait or the oldest
        has waited ``DELETE_FLUSH_SECONDS`` (the loop, the jobs and the heartbeat all call
        this). Another thread's flush may still be under way when it returns: see
        ``flush_all``."""
        if not force and not self._due(self.pending):  # the common case, without the lock
            return
        me = threading.get_ident()
        with self._pending_lock:
            if not self.pending or (not force and not self._due(self.pending)):
                return
            pending, self.pending = self.pending, []
            self._flushing.add(me)
        try:
            self._delete(pending)
        finally:
            with self._pending_lock:
                self._flushing.discard(me)
                if self._waiting:
                    self._flushed.notify_all()

    def flush_all(self) -> None:
        """At shutdown: delete what is pending, and wait for the deletes other threads have
        under way, so that whatever is still held afterwards was not deleted (and may be
        released). Not for its own thread's: a fast stop may have cut one short there."""
        self.flush_deletes(force=True)
        me = threading.get_ident()
        with self._pending_lock:
            self._waiting += 1
            try:
                self._flushed.wait_for(lambda: self._flushing <= {me})
            finally:
                self._waiting -= 1

    def _delete(self, pending: list[Lease]) -> None:
        errors = self.sqs.delete_batch(self.queue_url, (lease.entry() for lease in pending))
        # A failed delete stays leased (the heartbeat keeps it) and is tried again next flush,
        # unless SQS says the receipt is gone: then retrying can never succeed.
        failed = {key for key, code in errors.items() if code not in RECEIPT_GONE}
        with self._pending_lock:
            self.pending[:0] = [lease for lease in pending if lease.message_id in failed]
        if failed:
            log.warning("could not delete %d processed message(s); will retry", len(failed))
        if len(errors) > len(failed):
            log.warning(
                "%d processed message(s) could not be deleted: the receipt is gone (its"
                " visibility lapsed and another consumer may run it again)",
                len(errors) - len(failed),
            )
        for outcome in ("succeeded", "duplicate"):
            done = [
                (lease.message_id, lease.duration, lease.slot)
                for lease in pending
                if lease.outcome == outcome and lease.message_id not in failed
            ]
            if done:
                self.leases.drop(message_id for message_id, _, _ in done)
                self.reporter.deleted(outcome, done)

    @staticmethod
    def _due(pending: list[Lease]) -> bool:
        """Ten wait, or the oldest (they are in finishing order) has waited long enough. The
        list only grows (a flush swaps in a new one), so this may read it without the lock."""
        if len(pending) >= 10:
            return True
        return bool(pending) and time.monotonic() - pending[0].finished_at >= DELETE_FLUSH_SECONDS

    # -- release, retry, dead-letter ----------------------------------------------------------

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
        self._settled("released", [(lease, None) for lease in leases])

    def retry(
        self,
        lease: Lease,
        exc: BaseException,
        duration: float,
        attempt: int,
        *,
        message: Message | None = None,
        at_least: float = 0.0,
        track: bool = True,
    ) -> str:
        """Give the message its retry delay as visibility; SQS offers it again after that.

        On the last receive the binding's ``dead_letter`` allows (SQS's own receive count, the
        one its redrive policy counts), the message goes to the DLQ now, with its error, instead
        of waiting to be moved there silently on its next receive.
        """
        dead_letter = self.binding.dead_letter
        last = dead_letter is not None and lease.receive_count >= dead_letter.max_receive_count
        if last and message is not None and self._to_dead_letter_queue(lease, message, exc):
            log.error(
                "dead-lettered after %d attempts: %s: %s",
                lease.receive_count,
                type(exc).__name__,
                exc,
                exc_info=_traceback(exc),
            )
            if track:
                self.hooks.dead(message, exc)
            self._settled("dead_lettered", [(lease, duration)])
            return "dead_lettered"
        delay = retry_delay(attempt, self.binding.retry, at_least=at_least)
        self.leases.drop([lease.message_id])
        # One line per retried attempt; its traceback only at DEBUG (the last attempt's, and a
        # PermanentError's, are logged in full).
        log.warning(
            "handler failed (attempt %d), retry in %d s: %s: %s",
            attempt,
            delay,
            type(exc).__name__,
            exc,
        )
        if log.isEnabledFor(logging.DEBUG) and not isinstance(exc, RetryLater):
            log.debug("the failure's traceback", exc_info=_traceback(exc))
        failed = self.sqs.change_visibility_batch(self.queue_url, [lease.entry(delay)])
        if failed:
            log.warning("could not set the retry delay; the message returns after its timeout")
        if message is not None and track:
            self.hooks.retrying(message, exc, delay, final=last)
        self._settled("retried", [(lease, duration)])
        return "retried"

    def dead_letter(
        self, lease: Lease, message: Message, exc: PermanentError, duration: float
    ) -> str:
        """Send to the binding's DLQ with the error, then delete; without a DLQ, retry late."""
        dead_letter = self.binding.dead_letter
        if dead_letter is None:
            log.error(
                "permanent failure but binding %r has no dead_letter queue; retrying instead: %s",
                self.binding.name,
                exc,
            )
            return self.retry(
                lease,
                exc,
                duration,
                lease.receive_count,
                message=message,
                at_least=self.binding.retry.max_seconds,
            )
        if not self._to_dead_letter_queue(lease, message, exc):
            return self.retry(lease, exc, duration, lease.receive_count, message=message)
        log.error(
            "permanent failure, sent to %s: %s: %s",
            dead_letter.queue,
            type(exc).__name__,
            exc,
            exc_info=_traceback(exc),
        )
        self.hooks.failed(message, exc)
        self._settled("dead_lettered", [(lease, duration)])
        return "dead_lettered"

    def _to_dead_letter_queue(self, lease: Lease, message: Message, exc: BaseException) -> bool:
        """Send the message, with why, to the binding's DLQ, then delete it here; False (and
        nothing deleted) if the send failed."""
        assert self.binding.dead_letter is not None
        try:
            self.sqs.send(
                self.sqs.queue_url(self.binding.dead_letter.queue),
                message.body,
                attributes=dead_letter_attributes(message, exc),
                group_id=message.group_id,
                dedup_id=message.message_id if message.group_id else None,
            )
        except SqsError as send_error:
            log.error("could not send to the dead-letter queue (%s); retrying", send_error)
            return False
        failed = self.sqs.delete_batch(self.queue_url, [lease.entry()])
        if failed:
            log.warning("dead-lettered message could not be deleted from the source queue")
        return True

    def _settled(self, outcome: str, settled: Iterable[tuple[Lease, float | None]]) -> None:
        settled = list(settled)
        if not settled:
            return
        self.leases.drop(lease.message_id for lease, _ in settled)
        self.reporter.done(outcome, settled)


def _traceback(exc: BaseException) -> BaseException | None:
    """The exception to log with its traceback: itself, not sys.exc_info(), since a job may
    settle outside its except block; None for one we made ourselves (it has no traceback)."""
    return exc if exc.__traceback__ is not None else None


def dead_letter_attributes(message: Message, exc: BaseException) -> dict[str, Any]:
    """The original attributes plus the error, within SQS's limit of ten."""
    ours = {
        ERROR_ATTRIBUTE: f"{type(exc).__name__}: {exc}"[:1024],
        f"{ERROR_ATTRIBUTE_PREFIX}SourceMessageId": message.message_id,
        f"{ERROR_ATTRIBUTE_PREFIX}ReceiveCount": message.receive_count,
    }
    attributes = dict(message.message_attributes)
    for name, value in ours.items():
        if len(attributes) < MAX_ATTRIBUTES:
            attributes[name] = value
    return attributes
