"""The interface every job store implements, and the update rules they all share."""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from urllib.parse import unquote

from supervisor.jobs.stores.model import JobError, JobRecord, JobStatus

Clock = Callable[[], datetime]


class StoreError(Exception):
    """The store could not do what was asked: bad URL, database unreachable, duplicate id."""


class JobNotFoundError(StoreError, KeyError):
    """No job has that id. Also a KeyError, because that is what a missing key is."""

    def __str__(self) -> str:
        # KeyError would print the message quoted, like a dict key.
        return str(self.args[0])


def started_params(
    job_id: str, *, binding: str, queue: str, host: str, pid: int, job_type: str | None, now: Any
) -> dict[str, Any]:
    """The named parameters of the SQL stores' mark_started statement (SQLite, PostgreSQL);
    ``now`` as the store keeps its times."""
    return {
        "id": job_id,
        "binding": binding,
        "type": job_type,
        "queue": queue,
        "status": JobStatus.PROCESSING.value,
        "now": now,
        "host": host,
        "pid": pid,
    }


def utc_now() -> datetime:
    return datetime.now(UTC)


def mask_url(url: str) -> str:
    """`url` with its password, if any, replaced by ***, for error messages and reprs."""
    scheme, user, password, hosts = _split_credentials(url)
    if not password:
        return url
    return f"{scheme}://{user}:***@{hosts}"


def redact(text: str, url: str) -> str:
    """`text` (a driver's error message, say) with `url`'s password masked wherever it appears."""
    text = text.replace(url, mask_url(url))
    password = _split_credentials(url)[2]
    for secret in sorted({password, unquote(password)} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _split_credentials(url: str) -> tuple[str, str, str, str]:
    # The last "@" ends the user info; an unescaped "@" or "/" in a password would fool a
    # stricter parser into printing part of it, and over-masking is the safe mistake.
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return scheme, "", "", rest
    user, _, password = userinfo.partition(":")
    return scheme, user, password, hosts


class JobStore(abc.ABC):
    """Job records keyed by id, written by producers and workers, read by users.

    Once a job has succeeded, every update except `mark_started` is ignored, so a duplicate
    delivery that fails late cannot hide a result the user already has. `mark_started` is
    exempt because the worker calls it only after checking `get()`.
    """

    def __init__(self, *, retention_days: int, clock: Clock) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        self._retention = timedelta(days=retention_days)
        self._clock = clock

    @abc.abstractmethod
    def create(
        self,
        job_id: str,
        *,
        binding: str | None = None,
        job_type: str | None = None,
        queue: str | None = None,
    ) -> JobRecord:
        """Record a job as queued, before its message is sent. StoreError if the id exists."""

    @abc.abstractmethod
    def mark_started(
        self,
        job_id: str,
        *,
        binding: str,
        queue: str,
        host: str,
        pid: int,
        job_type: str | None = None,
    ) -> JobRecord:
        """Count one more attempt and mark it processing, creating the record if missing
        (the message came from a producer that does not use the store)."""

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list(
        self,
        *,
        status: JobStatus | None = None,
        binding: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        """Newest first by created_at, at most `limit` (none if `limit` < 1); each filter
        given (status, binding, job type) must match."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close this process's connections; the store reopens them if used again."""

    @abc.abstractmethod
    def _apply(self, job_id: str, changes: dict[str, Any]) -> None:
        """Write `changes` (field name -> value) unless the job has succeeded.

        Raises JobNotFoundError if there is no such job.
        """

    def mark_send_failed(self, job_id: str, error: JobError) -> None:
        """The producer could not send the message: no "queued" record may outlive that."""
        self._finish(job_id, JobStatus.FAILED, error)

    def mark_progress(self, job_id: str, percent: int, note: str = "") -> None:
        percent = min(max(percent, 0), 100)
        self._apply(
            job_id, {"progress": percent, "progress_note": note, "updated_at": self._clock()}
        )

    def mark_succeeded(self, job_id: str, result: Any) -> None:
        """Store `result` (any JSON-able value) and mark the job done."""
        try:
            result_json = json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"result of job {job_id!r} is not JSON-serialisable: {exc}") from exc
        now = self._clock()
        self._apply(
            job_id,
            {
                "status": JobStatus.SUCCEEDED,
                "result": result_json,
                "error": None,
                "progress": 100,
                "finished_at": now,
                "next_attempt_at": None,
                "updated_at": now,
            },
        )

    def mark_retrying(self, job_id: str, error: JobError, next_attempt_at: datetime) -> None:
        if next_attempt_at.tzinfo is None:
            raise ValueError("next_attempt_at must be timezone-aware")
        self._apply(
            job_id,
            {
                "status": JobStatus.RETRYING,
                "error": error,
                "next_attempt_at": next_attempt_at.astimezone(UTC),
                "updated_at": self._clock(),
            },
        )

    def mark_failed(self, job_id: str, error: JobError) -> None:
        """The handler failed permanently."""
        self._finish(job_id, JobStatus.FAILED, error)

    def mark_dead(self, job_id: str, error: JobError) -> None:
        """The message went to the dead-letter queue."""
        self._finish(job_id, JobStatus.DEAD, error)

    def _finish(self, job_id: str, status: JobStatus, error: JobError) -> None:
        now = self._clock()
        self._apply(
            job_id,
            {
                "status": status,
                "error": error,
                "finished_at": now,
                "next_attempt_at": None,
                "updated_at": now,
            },
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
