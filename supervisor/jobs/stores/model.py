"""What the store keeps for each job, and the JSON shape users see when they poll it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"


@dataclass(frozen=True)
class JobError:
    """Why an attempt failed. `traceback` is only the tail (callers keep it to about 2 KB)."""

    type: str
    message: str
    traceback: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One job as last written; all times are timezone-aware UTC."""

    id: str
    binding: str | None = None
    type: str | None = None
    queue: str | None = None
    status: JobStatus
    attempts: int = 0
    progress: int = 0
    progress_note: str = ""
    result: Any = None
    error: JobError | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON types (ISO-8601 times), for `jobs show` and `/jobs/{id}`."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, JobError):
                value = value.to_dict()
            elif isinstance(value, JobStatus):
                value = value.value
            out[field.name] = value
        return out
