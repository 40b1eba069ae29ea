"""The PostgreSQL job store, for teams whose job table already lives in their database.

psycopg 3. One connection per process, shared by its threads under a lock: a server
backend is a process of its own, and a connection per thread (50 threads x 100 children)
would exhaust `max_connections` long before the database is busy. A connection is opened on
first use and never used across fork(). Every write is one short transaction whose counters
and status guards are evaluated by the server, so concurrent writers lose no update.

Tables `sqs_supervisor_jobs` and `sqs_supervisor_schema` (one row: the schema version) are
created on first use; `_MIGRATIONS` takes an older schema to the newest, one version at a time.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from supervisor.jobs.stores.base import (
    Clock,
    JobNotFoundError,
    JobStore,
    StoreError,
    mask_url,
    redact,
    started_params,
    utc_now,
)
from supervisor.jobs.stores.model import JobError, JobRecord, JobStatus

PURGE_INTERVAL_SECONDS = 3600.0
# Defaults a URL may override. An unreachable host fails in 3 s instead of hanging; a dead
# peer on a live network is noticed within 10 s (keepalives, unacknowledged writes).
CONNECTION_DEFAULTS = {
    "connect_timeout": "3",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "2",
    "tcp_user_timeout": "10000",
    "application_name": "sqs-supervisor",
}
STATEMENT_TIMEOUT = "10s"  # a job waits for its store call: bound lock waits and slow queries
JOBS = "sqs_supervisor_jobs"
# pg_advisory_xact_lock key ("sqssup" in ASCII) held while migrating, so that processes opening
# a new database at once do not race to create the same tables.
_SCHEMA_LOCK = 0x737173737570

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"""CREATE TABLE {JOBS} (
            id text PRIMARY KEY,
            binding text,
            type text,
            queue text,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            progress integer NOT NULL DEFAULT 0,
            progress_note text NOT NULL DEFAULT '',
            result text,
            error text,
            created_at timestamptz NOT NULL,
            started_at timestamptz,
            finished_at timestamptz,
            next_attempt_at timestamptz,
            host text,
            pid integer,
            updated_at timestamptz NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY
        )""",
        # `jobs list` filters on one column and orders by creation; retention scans finished_at.
        f"CREATE INDEX {JOBS}_created_at ON {JOBS} (created_at, seq)",
        f"CREATE INDEX {JOBS}_status ON {JOBS} (status, created_at)",
        f"CREATE INDEX {JOBS}_binding ON {JOBS} (binding, created_at)",
        f"CREATE INDEX {JOBS}_type ON {JOBS} (type, created_at)",
        f"CREATE INDEX {JOBS}_finished_at ON {JOBS} (finished_at)",
    ],
}
SCHEMA_VERSION = max(_MIGRATIONS)

# Results and errors are JSON text, as in the other stores, so any JSON value round-trips
# unchanged (jsonb would reorder keys and reject "\u0000").
_COLUMNS = (
    "id, binding, type, queue, status, attempts, progress, progress_note, result, error,"
    " created_at, started_at, finished_at, next_attempt_at, host, pid, updated_at"
)

# `{JOBS}.x` in DO UPDATE is the existing row, so the increment happens in the server.
_MARK_STARTED = f"""
INSERT INTO {JOBS} AS j (id, binding, type, queue, status, attempts, created_at, started_at,
                         host, pid, updated_at)
VALUES (%(id)s, %(binding)s, %(type)s, %(queue)s, %(status)s, 1, %(now)s, %(now)s,
        %(host)s, %(pid)s, %(now)s)
ON CONFLICT (id) DO UPDATE SET
    attempts = j.attempts + 1,
    status = excluded.status,
    binding = excluded.binding,
    queue = excluded.queue,
    type = COALESCE(excluded.type, j.type),
    progress = 0,
    progress_note = '',
    result = NULL,
    started_at = excluded.started_at,
    finished_at = NULL,
    next_attempt_at = NULL,
    host = excluded.host,
    pid = excluded.pid,
    updated_at = excluded.updated_at
RETURNING {_COLUMNS}
"""

_live_stores: weakref.WeakSet[PostgresJobStore] = weakref.WeakSet()


class PostgresJobStore(JobStore):
    """Jobs in PostgreSQL at a libpq URL (`postgresql://` or `postgres://`)."""

    def __init__(self, url: str, *, retention_days: int = 30, clock: Clock = utc_now) -> None:
        super().__init__(retention_days=retention_days, clock=clock)
        self._url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[DictRow] | None = None
        self._pid: int | None = None
        # Connections a forked child inherited: kept referenced and never touched there.
        self._inherited: list[psycopg.Connection[DictRow]] = []
        self._next_purge = 0.0
        _live_stores.add(self)

    def __repr__(self) -> str:
        return f"PostgresJobStore({mask_url(self._url)!r})"

    def create(
        self,
        job_id: str,
        *,
        binding: str | None = None,
        job_type: str | None = None,
        queue: str | None = None,
    ) -> JobRecord:
        now = self._clock()
        with self._transaction() as conn:
            try:
                with conn.transaction():  # a savepoint: the duplicate leaves the rest intact
                    row = conn.execute(
                        f"INSERT INTO {JOBS} (id, binding, type, queue, status, created_at,"
                        f" updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                        (job_id, binding, job_type, queue, JobStatus.QUEUED.value, now, now),
                    ).fetchone()
            except psycopg.errors.UniqueViolation:
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
            now=self._clock(),
        )
        with self._transaction() as conn:
            row = conn.execute(_MARK_STARTED, params).fetchone()
        return _record(row)

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM {JOBS} WHERE id = %s", (job_id,))
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
        for column, value in (
            ("status", JobStatus(status).value if status is not None else None),
            ("binding", binding),
            ("type", job_type),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM {JOBS} {where} ORDER BY created_at DESC, seq DESC LIMIT %s",
            (*params, limit),
        )
        return [_record(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            elif self._conn is not None:
                self._inherited.append(self._conn)
            self._conn = self._pid = None

    def _apply(self, job_id: str, changes: dict[str, Any]) -> None:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(column)) for column in changes
        )
        update = sql.SQL("UPDATE {} SET {} WHERE id = %s AND status <> %s").format(
            sql.Identifier(JOBS), assignments
        )
        values = [_encode(value) for value in changes.values()]
        with self._transaction() as conn:
            # Under READ COMMITTED a concurrent update makes the server re-check the WHERE on
            # the newest row, so a job that just succeeded is never overwritten.
            updated = conn.execute(update, (*values, job_id, JobStatus.SUCCEEDED.value)).rowcount
            if updated:
                return
            if conn.execute(f"SELECT 1 FROM {JOBS} WHERE id = %s", (job_id,)).fetchone() is None:
                raise JobNotFoundError(f"no job {job_id!r}")

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[DictRow]]:
        """This process's connection, held for one store call; errors become StoreError."""
        with self._lock:
            try:
                yield self._connection()
            except psycopg.Error as exc:
                # libpq's messages span lines ("\n\tIs the server running..."): one log line.
                message = " ".join(redact(str(exc), self._url).split())
                # "from None": the chained original would print the unmasked message.
                raise StoreError(f"PostgreSQL job store {mask_url(self._url)}: {message}") from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[DictRow]]:
        with self._session() as conn, conn.transaction():
            self._purge_if_due(conn)
            yield conn

    def _query(self, query: str, params: tuple[Any, ...]) -> list[DictRow]:
        with self._session() as conn:
            return conn.execute(query, params).fetchall()

    def _connection(self) -> psycopg.Connection[DictRow]:
        if self._conn is not None and self._pid != os.getpid():
            self._inherited.append(self._conn)
            self._conn = None
        if self._conn is not None and _has_input(self._conn):
            # A connection that broke, or one with something to read while idle (the server
            # closed it: a restart, an idle timeout), is replaced now rather than fail a call.
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _connect(self) -> psycopg.Connection[DictRow]:
        params = CONNECTION_DEFAULTS | conninfo_to_dict(self._url)
        conn = psycopg.connect(**params, autocommit=True, row_factory=dict_row)
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (STATEMENT_TIMEOUT,))
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _forget_connection(self) -> None:
        """In a forked child: the parent's connection and lock are the parent's."""
        self._lock = threading.Lock()
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None

    def _purge_if_due(self, conn: psycopg.Connection[DictRow]) -> None:
        """Delete jobs finished longer than the retention ago, at most once an hour."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        cutoff = self._clock() - self._retention
        conn.execute(f"DELETE FROM {JOBS} WHERE finished_at < %s", (cutoff,))


def _after_fork_in_child() -> None:
    # Runs before any other thread exists in the child, so it may swap locks safely.
    for store in list(_live_stores):
        store._forget_connection()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _schema_version(conn: psycopg.Connection[DictRow]) -> int:
    row = conn.execute("SELECT to_regclass('sqs_supervisor_schema') IS NOT NULL AS ok").fetchone()
    if not row or not row["ok"]:
        return 0
    row = conn.execute("SELECT version FROM sqs_supervisor_schema").fetchone()
    return int(row["version"]) if row else 0


def _migrate(conn: psycopg.Connection[DictRow]) -> None:
    """Bring the schema to SCHEMA_VERSION; a database that already has it costs two reads."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sqs_supervisor_schema"
            " (one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL)"
        )
        current = _schema_version(conn)  # again: another process may have migrated meanwhile
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the job store's schema is version {current}, newer than this sqs-supervisor's"
                f" {SCHEMA_VERSION}: upgrade sqs-supervisor"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO sqs_supervisor_schema (version) VALUES (%s)"
            " ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )


def _has_input(conn: psycopg.Connection[DictRow]) -> bool:
    if conn.closed:
        return True
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


def _encode(value: Any) -> Any:
    if isinstance(value, JobStatus):
        return value.value
    if isinstance(value, JobError):
        return json.dumps(value.to_dict())
    return value


def _time(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _record(row: DictRow | None) -> JobRecord:
    assert row is not None, "RETURNING gives one row"
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
        created_at=row["created_at"].astimezone(UTC),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
        next_attempt_at=_time(row["next_attempt_at"]),
        host=row["host"],
        pid=row["pid"],
        updated_at=row["updated_at"].astimezone(UTC),
    )
