"""The worker's side of job tracking: record transitions, throttle progress, never crash on it.

``JobTracker`` is the child's job hooks (``supervisor.child.hooks.JobHooks``) when a store is
configured. A job store that is down must not stop work: every store call here logs a warning
on failure and carries on. Attempts counted by the store are the ones the supervisor really
started, which the retry backoff prefers over SQS's ApproximateReceiveCount (that one also
grows on receives that never ran, such as prefetched messages released at shutdown).
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from supervisor.jobs.stores import JobError, JobStatus, JobStore, StoreError
from supervisor.message import Message

log = logging.getLogger("sqs_supervisor.jobs")

PROGRESS_INTERVAL = 1.0  # at most one progress write per job per second
TRACEBACK_TAIL = 2000


class JobTracker:
    """Records a message's job (its ``JobId``) in the store; messages without one are skipped."""

    def __init__(self, store: JobStore, binding: str, queue: str, pid: int) -> None:
        self.store = store
        self.binding = binding
        self.queue = queue
        self.pid = pid
        self.host = socket.gethostname()
        self._last_progress: dict[str, float] = {}

    def is_duplicate(self, message: Message) -> bool:
        job_id = message.job_id
        if not job_id:
            return False
        try:
            record = self.store.get(job_id)
        except StoreError as exc:
            log.warning("job store unavailable, cannot check for a duplicate: %s", exc)
            return False
        if record is not None and record.status == JobStatus.SUCCEEDED:
            log.info("job %s already succeeded; deleting the duplicate unrun", job_id)
            return True
        return False

    def started(self, message: Message) -> int | None:
        """Mark the job processing; returns the attempts the store has counted, if it answered."""
        job_id = message.job_id
        if not job_id:
            return None
        try:
            record = self.store.mark_started(
                job_id,
                binding=self.binding,
                queue=self.queue,
                host=self.host,
                pid=self.pid,
                job_type=message.job_type,
            )
        except StoreError as exc:
            log.warning("job store unavailable, job %s not marked started: %s", job_id, exc)
            return None
        return record.attempts

    def progress(self, message: Message, percent: int, note: str) -> None:
        job_id = message.job_id
        if not job_id:
            return
        now = time.monotonic()
        if (
            percent < 100
            and now - self._last_progress.get(job_id, -PROGRESS_INTERVAL) < PROGRESS_INTERVAL
        ):
            return
        self._last_progress[job_id] = now
        self._write("progress", self.store.mark_progress, job_id, percent, note)

    def succeeded(self, message: Message, result: Any) -> None:
        job_id = message.job_id
        if not job_id:
            return
        self._last_progress.pop(job_id, None)
        try:
            self.store.mark_succeeded(job_id, result)
        except StoreError as exc:
            if "not JSON-serialisable" not in str(exc):
                log.warning("job store unavailable, job %s not marked succeeded: %s", job_id, exc)
                return
            log.warning("job %s returned a result that is not JSON; storing its repr", job_id)
            self._write(
                "succeeded", self.store.mark_succeeded, job_id, {"repr": repr(result)[:1000]}
            )

    def retrying(self, message: Message, exc: BaseException, delay: int, *, final: bool) -> None:
        job_id = message.job_id
        if not job_id:
            return
        if final:  # our DLQ send failed; SQS's redrive policy moves it on its next receive
            self._write("dead", self.store.mark_dead, job_id, job_error(exc))
            return
        next_at = datetime.now(UTC) + timedelta(seconds=delay)
        self._write("retrying", self.store.mark_retrying, job_id, job_error(exc), next_at)

    def failed(self, message: Message, exc: BaseException) -> None:
        job_id = message.job_id
        if job_id:
            self._write("failed", self.store.mark_failed, job_id, job_error(exc))

    def dead(self, message: Message, exc: BaseException) -> None:
        job_id = message.job_id
        if job_id:
            self._write("dead", self.store.mark_dead, job_id, job_error(exc))

    def _write(self, what: str, call: Any, job_id: str, *args: Any) -> None:
        try:
            call(job_id, *args)
        except StoreError as exc:
            log.warning("job store unavailable, job %s not marked %s: %s", job_id, what, exc)


def job_error(exc: BaseException) -> JobError:
    trace = "".join(traceback.format_exception(exc))
    return JobError(type(exc).__name__, str(exc), trace[-TRACEBACK_TAIL:])
