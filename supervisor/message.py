"""What a handler receives: the Message and the Context of its run."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from supervisor.errors import MessageDecodeError

JOB_ID_ATTRIBUTE = "JobId"
# What a message the supervisor dead-letters carries, so `dlq dump` can say why it is there.
ERROR_ATTRIBUTE_PREFIX = "SqsSupervisor"
ERROR_ATTRIBUTE = f"{ERROR_ATTRIBUTE_PREFIX}Error"


@dataclass
class Message:
    """One SQS message as the handler sees it; immutable facts plus a cached JSON parse."""

    message_id: str
    receipt_handle: str
    body: str
    queue_url: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_attributes: Mapping[str, Any] = field(default_factory=dict)
    md5_of_body: str = ""
    _json: Any = field(default=None, init=False, repr=False)
    _parsed: bool = field(default=False, init=False, repr=False)

    @classmethod
    def from_sqs(cls, raw: Mapping[str, Any], queue_url: str) -> Message:
        attributes = raw.get("MessageAttributes")
        return cls(
            raw["MessageId"],
            raw["ReceiptHandle"],
            raw.get("Body", ""),
            queue_url,
            raw.get("Attributes") or {},  # boto3's dict, parsed for this receive: not copied
            {name: _attribute_value(v) for name, v in attributes.items()} if attributes else {},
            raw.get("MD5OfBody", ""),
        )

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def sent_at(self) -> datetime | None:
        return _epoch_ms(self.attributes.get("SentTimestamp"))

    @property
    def first_received_at(self) -> datetime | None:
        return _epoch_ms(self.attributes.get("ApproximateFirstReceiveTimestamp"))

    @property
    def group_id(self) -> str | None:
        return self.attributes.get("MessageGroupId")

    @property
    def job_id(self) -> str | None:
        """The job id from the message attribute, else from a producer envelope's ``jobId``."""
        value = self.message_attributes.get(JOB_ID_ATTRIBUTE)
        if isinstance(value, str) and value:
            return value
        if self.body.startswith("{") and '"jobId"' in self.body:
            try:
                data = self.json()
            except MessageDecodeError:
                return None
            if isinstance(data, dict) and isinstance(data.get("jobId"), str):
                return data["jobId"]
        return None

    def payload(self) -> Any:
        """The producer envelope's ``payload`` if the body is one, else the whole JSON body."""
        data = self.json()
        if isinstance(data, dict) and "jobId" in data and "payload" in data:
            return data["payload"]
        return data

    @property
    def job_type(self) -> str | None:
        if not self.body.startswith("{"):
            return None
        try:
            data = self.json()
        except MessageDecodeError:
            return None
        return data.get("type") if isinstance(data, dict) and "jobId" in data else None

    def json(self) -> Any:
        """The body parsed as JSON; a body that isn't JSON is a permanent failure, not a retry."""
        if not self._parsed:
            try:
                self._json = json.loads(self.body)
            except ValueError as exc:
                raise MessageDecodeError(f"message body is not valid JSON: {exc}") from None
            self._parsed = True
        return self._json


def _attribute_value(value: Mapping[str, Any]) -> Any:
    data_type = value.get("DataType", "String")
    if data_type.startswith("Binary"):
        return value.get("BinaryValue")
    text = value.get("StringValue", "")
    if data_type.startswith("Number"):
        try:
            return int(text)
        except ValueError:
            return float(text)
    return text


def _epoch_ms(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


ProgressSink = Callable[[int, str], None]


@dataclass
class Context:
    """Per-run facts and services for a handler: who it is, how long it has, how to report."""

    binding: str
    queue_url: str
    attempt: int
    logger: logging.Logger
    options: Mapping[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    _progress_sink: ProgressSink | None = field(default=None, repr=False)

    def progress(self, percent: int, note: str = "") -> None:
        """Report progress (0-100); also counts as proof that the job is alive."""
        percent = max(0, min(100, int(percent)))
        self.logger.info("progress %d%% %s", percent, note)
        if self._progress_sink is not None:
            self._progress_sink(percent, note)
