"""Job-status tracking: one record per SQS message, behind a store chosen by URL.

Accepted URLs:
  sqlite:///relative/path.db    relative to the working directory at open (SQLAlchemy style)
  sqlite:////absolute/path.db   absolute: three slashes, then the path with its leading "/"
  mongodb://...  mongodb+srv://...   database from the URL path, `sqs_supervisor` if none
  postgresql://user:pass@host:5432/db  (or postgres://) any libpq URL; needs the
                                       `sqs-supervisor[postgresql]` extra (psycopg 3)
"""

from __future__ import annotations

from supervisor.jobs.stores.base import JobNotFoundError, JobStore, StoreError, mask_url
from supervisor.jobs.stores.model import JobError, JobRecord, JobStatus
from supervisor.jobs.stores.sqlite import SqliteJobStore, path_from_url

__all__ = [
    "JobError",
    "JobNotFoundError",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "StoreError",
    "open_store",
]

ACCEPTED_URLS = "sqlite:///PATH, mongodb://..., mongodb+srv://... or postgresql://..."


def open_store(url: str, *, retention_days: int = 30) -> JobStore:
    """The store `url` names. Nothing connects until first use, so it is safe before fork()."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return SqliteJobStore(path_from_url(url), retention_days=retention_days)
    if scheme in ("mongodb", "mongodb+srv"):
        # Imported here so that SQLite users never pay for importing pymongo.
        from supervisor.jobs.stores.mongodb import MongoJobStore

        return MongoJobStore(url, retention_days=retention_days)
    if scheme in ("postgresql", "postgres"):
        try:
            from supervisor.jobs.stores.postgresql import PostgresJobStore
        except ImportError as exc:
            raise StoreError(
                f"job store {mask_url(url)!r} needs psycopg 3 ({exc}):"
                " pip install 'sqs-supervisor[postgresql]'"
            ) from None
        return PostgresJobStore(url, retention_days=retention_days)
    raise StoreError(
        f"unsupported job store URL {mask_url(url)!r}: scheme {scheme or '(none)'!r};"
        f" expected {ACCEPTED_URLS}"
    )
