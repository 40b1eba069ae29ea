"""The embedded job store: one SQLite file shared by the supervisor and all its forked workers.

Safe for many processes writing at once: WAL journal, a 10 s busy timeout, every write one
short `BEGIN IMMEDIATE` transaction (so a writer waits for the lock up front instead of failing
on a read-to-write upgrade), counters incremented in SQL. Each process and thread opens its own
connection on first use; a connection inherited across fork() is never used or closed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supervisor.jobs.stores.base import (
    Clock,
    JobNotFoundError,
    JobStore,
    StoreError,
    started_params,
    utc_now,
)
from supervisor.jobs.stores.model import JobError, JobRecord, JobStatus

BUSY_TIMEOUT_SECONDS = 10.0
PURGE_INTERVAL_SECONDS = 3600.0

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    binding TEXT,
    type TEXT,
    queue TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    progress INTEGER NOT NULL DEFAULT 0,
    progress_note TEXT NOT NULL DEFAULT '',
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    next_attempt_at TEXT,
    host TEXT,
    pid INTEGER,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at);
COMMIT;
"""

# Unqualified columns in DO UPDATE refer to the existing row, so the increment is atomic.
_MARK_STARTED = """
INSERT INTO jobs (id, binding, type, queue, status, attempts, created_at, started_at,
                  host, pid, updated_at)
VALUES (:id, :binding, :type, :queue, :status, 1, :now, :now, :host, :pid, :now)
ON CONFLICT (id) DO UPDATE SET
    attempts = attempts + 1,
    status = excluded.status,
    binding = excluded.binding,
    queue = excluded.queue,
    type = COALESCE(excluded.type, type),
    progress = 0,
    progress_note = '',
    result = NULL,
    started_at = excluded.started_at,
    finished_at = NULL,
    next_attempt_at = NULL,
    host = excluded.host,
    pid = excluded.pid,
    updated_at = excluded.updated_at
RETURNING *
"""


def path_from_url(url: str) -> Path:
    """The file a `sqlite:///relative.db` or `sqlite:////absolute/path.db` URL names.

    SQLAlchemy's convention: `sqlite://` plus an empty host plus `/`, then the path as written.
    """
    rest = url[len("sqlite://") :]
    if not rest.startswith("/"):
        raise StoreError(f"SQLite URL {url!r} has a host; use sqlite:///PATH (no host)")
    path = rest[1:]
    if not path or path == ":memory:":
        raise StoreError(f"SQLite URL {url!r} names no file; use sqlite:///PATH")
    return Path(path)


class SqliteJobStore(JobStore):
    def __init__(
        self, path: str | os.PathLike[str], *, retention_days: int = 30, clock: Clock = utc_now
    ) -> None:
        super().__init__(retention_days=retention_days, clock=clock)
        self._path = Path(os.path.abspath(path))
        self._local = threading.local()  # .conn, and .pid of the process that opened it
        # Connections a forked child inherited: kept referenced so they are never finalised
        # (closed) there, since SQLite forbids touching a connection across fork().
        self._inherited: list[sqlite3.Connection] = []
        self._next_purge = 0.0

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self._path)!r})"

    def create(
        self,
        job_id: str,
        *,
        binding: str | None = None,
        job_type: str | None = None,
        queue: str | None = None,
    ) -> JobRecord:
        now = _encode(self._clock())
        with self._transaction() as conn:
            try:
                row = conn.execute(
                    "INSERT INTO jobs (id, binding, type, queue, status, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (job_id, binding, job_type, queue, JobStatus.QUEUED.value, now, now),
                ).fetchone()
            except sqlite3.IntegrityError:
                raise StoreError(f"job {job_id!r} already exists") from None
        return _record(row)

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
        params = started_params(
            job_id,
            binding=binding,
            queue=queue,
            host=host,
            pid=pid,
            job_type=job_type,
            now=_encode(self._clock()),
        )
        with self._transaction() as conn:
            row = conn.execute(_MARK_STARTED, params).fetchone()
        return _record(row)

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def list(
        self,
        *,
        status: JobStatus | None = None,
        binding: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        if limit < 1:
            return []
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(JobStatus(status).value)
        if binding is not None:
            clauses.append("binding = ?")
            params.append(binding)
        if job_type is not None:
            clauses.append("type = ?")
            params.append(job_type)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [_record(row) for row in rows]

    def close(self) -> None:
        """Close this thread's connection; other threads' close when those threads end."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            local.conn.close()
            del local.conn, local.pid

    def _apply(self, job_id: str, changes: dict[str, Any]) -> None:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        values = [_encode(value) for value in changes.values()]
        with self._transaction() as conn:
            updated = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND status != ?",
                (*values, job_id, JobStatus.SUCCEEDED.value),
            ).rowcount
            if updated:
                return
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise JobNotFoundError(f"no job {job_id!r}")

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if getattr(local, "conn", None) is not None:
                self._inherited.append(local.conn)
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    def _connect(self) -> sqlite3.Connection:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite job store {str(self._path)!r}: {exc}") from exc
        try:
            _prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open SQLite job store {str(self._path)!r}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._purge_if_due(conn)
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"SQLite job store {str(self._path)!r}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite job store {str(self._path)!r}: {exc}") from exc

    def _purge_if_due(self, conn: sqlite3.Connection) -> None:
        """Delete jobs finished longer than the retention ago, at most once an hour."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        cutoff = _encode(self._clock() - self._retention)
        conn.execute("DELETE FROM jobs WHERE finished_at < ?", (cutoff,))


def _prepare(conn: sqlite3.Connection) -> None:
    """Switch to WAL and create the schema, retrying while other processes do the same.

    On a brand-new file SQLite reports that conflict as "database is locked" at once,
    without waiting out the busy timeout, so the wait is ours.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL cannot corrupt the file; a power cut may lose the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.rollback()
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _encode(value: Any) -> Any:
    """A Python value as stored in a column; times as fixed-width UTC ISO text, which sorts."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, JobStatus):
        return value.value
    if isinstance(value, JobError):
        return json.dumps(value.to_dict())
    return value


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        binding=row["binding"],
        type=row["type"],
        queue=row["queue"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        progress=row["progress"],
        progress_note=row["progress_note"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
        error=JobError(**json.loads(row["error"])) if row["error"] is not None else None,
        created_at=datetime.fromisoformat(row["created_at"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
        next_attempt_at=_time(row["next_attempt_at"]),
        host=row["host"],
        pid=row["pid"],
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )
