"""Enqueueing jobs: create the job record, then send the message (the web API's side).

The body is an envelope ``{"jobId", "type", "payload", "timestamp"}`` and the job id also
travels in the ``JobId`` message attribute. The record is written before the send (so a fast
worker always finds it) and marked failed if the send fails: there is never a record claiming
"queued" for a message that does not exist.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from supervisor.config import Config, load_config
from supervisor.errors import ConfigError
from supervisor.jobs.stores import JobError, JobStore, open_store
from supervisor.message import JOB_ID_ATTRIBUTE
from supervisor.sqs import MAX_BATCH, SqsClient, SqsError, send_entry

CONFIG_ENV = "SQS_SUPERVISOR_CONFIG"


class EnqueueError(Exception):
    """The message could not be sent; ``job_ids`` are the jobs marked failed because of it."""

    def __init__(self, message: str, job_ids: list[str]) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class Producer:
    """Sends jobs to the queues of a config (by binding name) or to any queue name or URL."""

    def __init__(
        self, config: Config, *, sqs: SqsClient | None = None, store: JobStore | None = None
    ) -> None:
        self.config = config
        self.sqs = sqs or SqsClient(config.sqs)
        if store is None and config.jobs.store:
            store = open_store(config.jobs.store, retention_days=config.jobs.retention_days)
        self.store = store

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Producer:
        return cls(load_config(path, import_handlers=False))

    def enqueue(
        self,
        target: str,
        payload: Any,
        *,
        job_type: str | None = None,
        delay: int = 0,
        group_id: str | None = None,
        dedup_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Record and send one job; returns its id. Raises EnqueueError if the send fails."""
        queue, binding, job_type = self._target(target, job_type)
        job_id = uuid.uuid4().hex
        body = envelope(job_id, job_type, payload)
        self._check_fifo(queue, group_id)
        if self.store is not None:
            self.store.create(job_id, binding=binding, job_type=job_type, queue=queue)
        try:
            self.sqs.send(
                self.sqs.queue_url(queue),
                body,
                attributes={**(attributes or {}), JOB_ID_ATTRIBUTE: job_id},
                group_id=group_id,
                dedup_id=dedup_id or (job_id if queue.endswith(".fifo") else None),
                delay_seconds=delay,
            )
        except SqsError as exc:
            self._send_failed([job_id], exc)
            raise EnqueueError(f"could not enqueue to {queue!r}: {exc}", [job_id]) from exc
        return job_id

    def enqueue_many(
        self,
        target: str,
        payloads: Iterable[Any],
        *,
        job_type: str | None = None,
        group_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Record and send many jobs, ten per SendMessageBatch; returns the job ids in order."""
        queue, binding, job_type = self._target(target, job_type)
        self._check_fifo(queue, group_id)
        fifo = queue.endswith(".fifo")
        items = [(uuid.uuid4().hex, payload) for payload in payloads]
        try:
            url = self.sqs.queue_url(queue)
        except SqsError as exc:
            ids = [job_id for job_id, _ in items]
            self._create(ids, binding, job_type, queue)
            self._send_failed(ids, exc)
            raise EnqueueError(f"could not enqueue to {queue!r}: {exc}", ids) from exc
        failed: list[str] = []
        reasons: list[str] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            self._create([job_id for job_id, _ in chunk], binding, job_type, queue)
            entries = [
                send_entry(
                    job_id,
                    envelope(job_id, job_type, payload),
                    attributes={**(attributes or {}), JOB_ID_ATTRIBUTE: job_id},
                    group_id=group_id,
                    dedup_id=job_id if fifo else None,
                )
                for job_id, payload in chunk
            ]
            try:
                refused = {
                    f["Id"]: f.get("Message", f.get("Code", ""))
                    for f in self.sqs.send_batch(url, entries)
                }
            except SqsError as exc:
                refused = {job_id: str(exc) for job_id, _ in chunk}
            for job_id, reason in refused.items():
                self._send_failed([job_id], SqsError("SendMessageBatch", "Refused", reason))
                failed.append(job_id)
                reasons.append(reason)
        if failed:
            raise EnqueueError(
                f"{len(failed)} of {len(items)} job(s) could not be enqueued to {queue!r}:"
                f" {reasons[0]}",
                failed,
            )
        return [job_id for job_id, _ in items]

    def _target(self, target: str, job_type: str | None) -> tuple[str, str | None, str | None]:
        for binding in self.config.bindings:
            if binding.name == target:
                return binding.queue, binding.name, job_type or binding.name
        return target, None, job_type

    def _check_fifo(self, queue: str, group_id: str | None) -> None:
        if queue.endswith(".fifo") and not group_id:
            raise ValueError(f"{queue!r} is a FIFO queue: pass group_id (ordering is per group)")

    def _create(
        self, job_ids: list[str], binding: str | None, job_type: str | None, queue: str
    ) -> None:
        if self.store is not None:
            for job_id in job_ids:
                self.store.create(job_id, binding=binding, job_type=job_type, queue=queue)

    def _send_failed(self, job_ids: list[str], exc: SqsError) -> None:
        if self.store is not None:
            for job_id in job_ids:
                self.store.mark_send_failed(job_id, JobError("SendFailed", str(exc)))


def envelope(job_id: str, job_type: str | None, payload: Any) -> str:
    return json.dumps(
        {
            "jobId": job_id,
            "type": job_type,
            "payload": payload,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
    )


_default: Producer | None = None


def default_producer() -> Producer:
    """The producer for ``$SQS_SUPERVISOR_CONFIG``, created on first use."""
    global _default
    if _default is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"set {CONFIG_ENV} to your workers.yaml, or use Producer(config)")
        _default = Producer.from_path(path)
    return _default


def enqueue(target: str, payload: Any, **options: Any) -> str:
    return default_producer().enqueue(target, payload, **options)


def enqueue_many(target: str, payloads: Iterable[Any], **options: Any) -> list[str]:
    return default_producer().enqueue_many(target, payloads, **options)
