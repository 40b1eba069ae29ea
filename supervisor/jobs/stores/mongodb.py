"""The MongoDB job store, for fleets of supervisors on several hosts.

One document per job in the `jobs` collection, `_id` = job id. Finished jobs expire through a
TTL index on `finished_at`. A pymongo client must not cross fork(), so each process creates
its own on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from supervisor.jobs.stores.base import (
    Clock,
    JobNotFoundError,
    JobStore,
    StoreError,
    mask_url,
    redact,
    utc_now,
)
from supervisor.jobs.stores.model import JobError, JobRecord, JobStatus

DEFAULT_DATABASE = "sqs_supervisor"
COLLECTION = "jobs"
SERVER_SELECTION_TIMEOUT_MS = 5000
_INDEX_OPTIONS_CONFLICT = 85

Document = dict[str, Any]
ClientFactory = Callable[[str], "MongoClient[Document]"]


def connect(url: str) -> MongoClient[Document]:
    """A client that gives up on an unreachable server after 5 s instead of 30."""
    return MongoClient(
        url,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        tz_aware=True,
        appname="sqs-supervisor",
    )


class MongoJobStore(JobStore):
    """Jobs in MongoDB; the database is the URL's path, `sqs_supervisor` if it has none.

    `client_factory` builds the client from the URL; tests pass one returning a mongomock
    client. Relies on MongoDB >= 4.2, which retries an upsert on `_id` that lost a race with
    another upsert of the same id instead of failing with a duplicate key.
    """

    def __init__(
        self,
        url: str,
        retention_days: int = 30,
        *,
        client_factory: ClientFactory = connect,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(retention_days=retention_days, clock=clock)
        self._url = url
        self._client_factory = client_factory
        self._pid: int | None = None
        self._client: MongoClient[Document] | None = None
        self._jobs: Collection[Document] | None = None
        # Clients a forked child inherited: kept referenced, never used or closed there.
        self._inherited: list[MongoClient[Document]] = []

    def __repr__(self) -> str:
        return f"MongoJobStore({mask_url(self._url)!r})"

    def create(
        self,
        job_id: str,
        *,
        binding: str | None = None,
        job_type: str | None = None,
        queue: str | None = None,
    ) -> JobRecord:
        now = self._clock()
        doc = _new_document(now) | {
            "_id": job_id,
            "binding": binding,
            "type": job_type,
            "queue": queue,
        }
        with self._errors():
            try:
                self._collection().insert_one(doc)
            except DuplicateKeyError:
                raise StoreError(f"job {job_id!r} already exists") from None
        return _record(doc)

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
        now = self._clock()
        changes: Document = {
            "status": JobStatus.PROCESSING.value,
            "binding": binding,
            "queue": queue,
            "progress": 0,
            "progress_note": "",
            "result": None,
            "started_at": now,
            "finished_at": None,
            "next_attempt_at": None,
            "host": host,
            "pid": pid,
            "updated_at": now,
        }
        if job_type is not None:
            changes["type"] = job_type
        on_insert = {
            field: value
            for field, value in _new_document(now).items()
            if field not in changes and field != "attempts"
        }
        with self._errors():
            doc = self._collection().find_one_and_update(
                {"_id": job_id},
                {"$inc": {"attempts": 1}, "$set": changes, "$setOnInsert": on_insert},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        return _record(doc)

    def get(self, job_id: str) -> JobRecord | None:
        with self._errors():
            doc = self._collection().find_one({"_id": job_id})
        return _record(doc) if doc is not None else None

    def list(
        self,
        *,
        status: JobStatus | None = None,
        binding: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        if limit < 1:
            return []  # pymongo reads limit 0 as "no limit"
        query: Document = {}
        if status is not None:
            query["status"] = JobStatus(status).value
        if binding is not None:
            query["binding"] = binding
        if job_type is not None:
            query["type"] = job_type
        with self._errors():
            cursor = self._collection().find(query)
            docs = cursor.sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
            return [_record(doc) for doc in docs]

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        elif self._client is not None:
            self._inherited.append(self._client)
        self._client = self._jobs = self._pid = None

    def _apply(self, job_id: str, changes: dict[str, Any]) -> None:
        update = {field: _encode(value) for field, value in changes.items()}
        with self._errors():
            jobs = self._collection()
            matched = jobs.update_one(
                {"_id": job_id, "status": {"$ne": JobStatus.SUCCEEDED.value}}, {"$set": update}
            ).matched_count
            if not matched and jobs.count_documents({"_id": job_id}, limit=1) == 0:
                raise JobNotFoundError(f"no job {job_id!r}")

    def _collection(self) -> Collection[Document]:
        if self._jobs is not None and self._pid == os.getpid():
            return self._jobs
        if self._client is not None:
            self._inherited.append(self._client)
            self._client = None
        client = self._client_factory(self._url)
        jobs = client.get_default_database(DEFAULT_DATABASE)[COLLECTION]
        try:
            _ensure_indexes(jobs, int(self._retention.total_seconds()))
        except BaseException:
            client.close()
            raise
        self._client, self._jobs, self._pid = client, jobs, os.getpid()
        return jobs

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except PyMongoError as exc:
            message = redact(str(exc), self._url)
            # "from None": the chained original would print the unmasked message.
            raise StoreError(f"MongoDB job store {mask_url(self._url)}: {message}") from None


def _ensure_indexes(jobs: Collection[Document], ttl_seconds: int) -> None:
    jobs.create_indexes(
        [IndexModel([(field, ASCENDING)]) for field in ("status", "created_at", "binding")]
    )
    try:
        jobs.create_index([("finished_at", ASCENDING)], expireAfterSeconds=ttl_seconds)
    except OperationFailure as exc:
        if exc.code != _INDEX_OPTIONS_CONFLICT:
            raise
        # retention_days changed since the index was built: change it in place.
        jobs.database.command(
            "collMod",
            jobs.name,
            index={"keyPattern": {"finished_at": 1}, "expireAfterSeconds": ttl_seconds},
        )


def _new_document(now: datetime) -> Document:
    return {
        "binding": None,
        "type": None,
        "queue": None,
        "status": JobStatus.QUEUED.value,
        "attempts": 0,
        "progress": 0,
        "progress_note": "",
        "result": None,
        "error": None,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
        "next_attempt_at": None,
        "host": None,
        "pid": None,
        "updated_at": now,
    }


def _encode(value: Any) -> Any:
    if isinstance(value, JobStatus):
        return value.value
    if isinstance(value, JobError):
        return value.to_dict()
    return value


def _utc(value: datetime | None) -> datetime | None:
    # BSON dates carry no zone: clients without tz_aware (mongomock's default) give naive UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _record(doc: Document) -> JobRecord:
    error = doc.get("error")
    return JobRecord(
        id=doc["_id"],
        binding=doc.get("binding"),
        type=doc.get("type"),
        queue=doc.get("queue"),
        status=JobStatus(doc["status"]),
        attempts=doc.get("attempts", 0),
        progress=doc.get("progress", 0),
        progress_note=doc.get("progress_note", ""),
        # Results are stored as JSON text, like the SQLite store, so any JSON value round-trips
        # the same way (BSON would reject keys starting with "$" and integers above 2**63).
        result=json.loads(doc["result"]) if doc.get("result") is not None else None,
        error=JobError(**error) if error else None,
        created_at=_utc(doc["created_at"]),
        started_at=_utc(doc.get("started_at")),
        finished_at=_utc(doc.get("finished_at")),
        next_attempt_at=_utc(doc.get("next_attempt_at")),
        host=doc.get("host"),
        pid=doc.get("pid"),
        updated_at=_utc(doc["updated_at"]),
    )
