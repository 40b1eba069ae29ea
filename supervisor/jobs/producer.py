"""Enqueueing jobs: create the job record, then send the message (the web API's side).

The body is an envelope ``{"jobId", "type", "payload", "timestamp"}`` and the job id also
travels in the ``JobId`` message attribute. The record is written before the send (so a fast
worker always finds it) and marked failed if the send fails: there is never a record claiming
"queued" for a message that does not exist. ``enqueue_many`` packs batches by SQS's size limits
as well as its count, so one oversized payload fails alone instead of taking its batch along.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from supervisor.config import Config, load_config
from supervisor.errors import ConfigError
from supervisor.jobs.stores import JobError, JobStore, open_store
from supervisor.message import JOB_ID_ATTRIBUTE
from supervisor.sqs import (
    MAX_BATCH,
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    SqsClient,
    SqsError,
    message_size,
    send_entry,
)

CONFIG_ENV = "SQS_SUPERVISOR_CONFIG"


class EnqueueError(Exception):
    """The message could not be sent; ``job_ids`` are the jobs marked failed because of it,
    ``sent_ids`` those of the same call that were enqueued all the same (``enqueue_many``)."""

    def __init__(self, message: str, job_ids: list[str], sent_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.job_ids = job_ids
        self.sent_ids = sent_ids or []


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
            self._send_failed([job_id], str(exc))
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
        """Record and send many jobs, in SendMessageBatch calls of up to ten messages and 1 MiB;
        returns the job ids in order. Raises EnqueueError naming those that were not sent."""
        queue, binding, job_type = self._target(target, job_type)
        self._check_fifo(queue, group_id)
        fifo = queue.endswith(".fifo")
        entries = [
            self._entry(uuid.uuid4().hex, job_type, payload, attributes, group_id, fifo)
            for payload in payloads
        ]
        ids = [entry["Id"] for entry in entries]
        try:
            url = self.sqs.queue_url(queue)
        except SqsError as exc:
            self._create(ids, binding, job_type, queue)
            self._send_failed(ids, str(exc))
            raise EnqueueError(f"could not enqueue to {queue!r}: {exc}", ids) from exc
        refused: dict[str, str] = {}
        for batch in _batches(entries):
            self._create([entry["Id"] for entry in batch], binding, job_type, queue)
            for job_id, reason in self._send_batch(url, batch).items():
                self._send_failed([job_id], reason)
                refused[job_id] = reason
        if refused:
            failed = [job_id for job_id in ids if job_id in refused]
            raise EnqueueError(
                f"{len(failed)} of {len(ids)} job(s) could not be enqueued to {queue!r}:"
                f" {refused[failed[0]]}",
                failed,
                [job_id for job_id in ids if job_id not in refused],
            )
        return ids

    def _entry(
        self,
        job_id: str,
        job_type: str | None,
        payload: Any,
        attributes: Mapping[str, Any] | None,
        group_id: str | None,
        fifo: bool,
    ) -> dict[str, Any]:
        return send_entry(
            job_id,
            envelope(job_id, job_type, payload),
            attributes={**(attributes or {}), JOB_ID_ATTRIBUTE: job_id},
            group_id=group_id,
            dedup_id=job_id if fifo else None,
        )

    def _send_batch(self, url: str, batch: list[dict[str, Any]]) -> dict[str, str]:
        """Send one packed batch; returns {job id: why} for the messages that were not sent."""
        size = message_size(batch[0])
        if size > MAX_MESSAGE_BYTES:  # _batches puts an oversized message in a batch alone
            return {
                batch[0]["Id"]: f"the message is {size:,} bytes, over SQS's limit of"
                f" {MAX_MESSAGE_BYTES:,} bytes (1 MiB) per message, body and attributes"
                " together; not sent"
            }
        try:
            failures = self.sqs.send_batch(url, batch)
        except SqsError as exc:
            return {entry["Id"]: str(exc) for entry in batch}
        return {
            f["Id"]: f"SendMessageBatch refused the message: {f.get('Code', 'Unknown')}:"
            f" {f.get('Message', '')}"
            for f in failures
        }

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

    def _send_failed(self, job_ids: list[str], reason: str) -> None:
        if self.store is not None:
            for job_id in job_ids:
                self.store.mark_send_failed(job_id, JobError("SendFailed", reason))


def _batches(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of entries within SQS's batch limits (10 entries, 1 MiB in all), in
    order (a FIFO group's order is the send order). A message over the per-message limit comes
    alone, so that it fails by itself."""
    batch: list[dict[str, Any]] = []
    total = 0
    for entry in entries:
        size = message_size(entry)
        if batch and (len(batch) == MAX_BATCH or total + size > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(entry)
        total += size
        if size > MAX_MESSAGE_BYTES:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


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
