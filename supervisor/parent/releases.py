"""Releasing a gone child's messages: visible again at once, retried in seconds.

The parent holds every child's leases (receipt handles included) from its reports, so when a
child dies however it dies, its messages are made visible now instead of after their
visibility timeout. A job that exceeded its hard timeout gets its retry delay instead. A
release that fails is retried every couple of seconds until the message would have lapsed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.child.retry import retry_delay
from supervisor.config import Binding
from supervisor.lease import Lease
from supervisor.observe.metrics import Metrics
from supervisor.parent.children import Child
from supervisor.sqs import RECEIPT_GONE, BatchEntry, SqsClient

log = logging.getLogger("sqs_supervisor.arbiter")

RELEASE_RETRY_SECONDS = 2.0


@dataclass
class _Unreleased:
    queue_url: str
    entries: list[BatchEntry]
    give_up_at: float


class Releases:
    def __init__(
        self, sqs: Callable[[], SqsClient], metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        self.sqs = sqs
        self.metrics = metrics
        self.clock = clock
        self._unreleased: list[_Unreleased] = []
        self._next_retry = 0.0

    def release(self, child: Child, binding: Binding | None) -> None:
        """Settle a gone child's messages: finished ones deleted, the rest visible now (a
        timed-out one after its retry delay).

        The child records each job as it finishes, before its batched delete (in its shared
        ``finished`` log, or a ``deleting`` report), so work a killed child had finished is
        deleted here, not run again. A receipt SQS calls gone on that delete means the
        child's own delete went through: succeeded too.
        """
        if not child.leases:
            return
        leases = {i: Lease.from_held(i, held) for i, held in child.leases.items()}
        held = set(leases)
        child.leases.clear()
        finished = child.finished_jobs()
        deleted = self._delete_finished(
            [lease for message_id, lease in leases.items() if message_id in finished]
        )
        by_queue: dict[str, list[BatchEntry]] = {}
        delayed: set[str] = set()
        for message_id, lease in leases.items():
            if message_id in deleted:
                continue
            delay = 0
            if message_id in child.timed_out and binding is not None:
                delay = retry_delay(lease.receive_count, binding.retry)
                delayed.add(message_id)
            by_queue.setdefault(lease.queue_url, []).append(lease.entry(delay))
        give_up_at = self.clock() + (binding.visibility_timeout if binding else 300)
        for queue_url, entries in by_queue.items():
            self._change_visibility(_Unreleased(queue_url, entries, give_up_at))
        queue = binding.queue_name if binding else "-"
        outcomes = {
            "succeeded": deleted,
            "retried": delayed,
            "released": held - delayed - deleted,
        }
        for outcome, ids in outcomes.items():
            if ids:
                durations = [finished.get(i) for i in ids]  # None unless it finished
                self.metrics.settled(child.binding, queue, outcome, durations)
                types = [t for i in ids if (t := leases[i].job_type) is not None]
                if types:
                    self.metrics.settled_by_type(child.binding, outcome, types)
        log.info(
            "released %d message(s) held by child %d%s",
            len(held - deleted),
            child.pid,
            f"; deleted {len(deleted)} it had finished" if deleted else "",
        )

    def _delete_finished(self, finished: list[Lease]) -> set[str]:
        """Delete what the child had finished; returns the ids now gone from the queue (a
        delete that fails otherwise leaves its message to be released and run again)."""
        by_queue: dict[str, list[Lease]] = {}
        for lease in finished:
            by_queue.setdefault(lease.queue_url, []).append(lease)
        deleted: set[str] = set()
        for queue_url, batch in by_queue.items():
            failed = self.sqs().delete_batch(queue_url, [lease.entry() for lease in batch])
            deleted |= {
                lease.message_id
                for lease in batch
                if lease.message_id not in failed or failed[lease.message_id] in RECEIPT_GONE
            }
        return deleted

    def retry(self, now: float, *, force: bool = False) -> None:
        """Try the releases that failed again, until their messages would have lapsed."""
        if not self._unreleased or (now < self._next_retry and not force):
            return
        self._next_retry = now + RELEASE_RETRY_SECONDS
        pending, self._unreleased = self._unreleased, []
        for batch in pending:
            if now < batch.give_up_at:
                self._change_visibility(batch)

    @property
    def pending(self) -> bool:
        return bool(self._unreleased)

    def _change_visibility(self, batch: _Unreleased) -> set[str]:
        """Apply a batch; keep what failed for a retry, except receipts SQS calls gone.
        Returns the keys whose receipt is gone."""
        failed = self.sqs().change_visibility_batch(batch.queue_url, batch.entries)
        gone = {key for key, code in failed.items() if code in RECEIPT_GONE}
        retry = [e for e in batch.entries if e.key in failed and e.key not in gone]
        if retry:
            batch.entries = retry
            self._unreleased.append(batch)
        return gone
