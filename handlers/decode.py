"""Decoding helpers for handlers: SNS envelopes, S3 event notifications, metadata as text.

Every helper that needs JSON raises ``MessageDecodeError`` (a ``PermanentError``) for a body
it cannot parse, so a malformed message goes to the dead-letter queue after one attempt
instead of being retried until its receive count runs out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from supervisor import Message, MessageDecodeError

S3_TEST_EVENT = "s3:TestEvent"


@dataclass(frozen=True)
class S3Object:
    """One object named by an S3 event notification record."""

    bucket: str
    key: str  # URL-decoded: S3 sends ``my+file%3F.txt`` for ``my file?.txt``
    size: int | None
    event_name: str
    event_time: datetime | None


def payload(message: Message) -> Any:
    """The message's JSON body, with an SNS envelope (raw delivery off) unwrapped.

    The SNS ``Message`` is itself parsed when it is JSON, else returned as the string SNS
    carried; a body that is not JSON at all raises ``MessageDecodeError``.
    """
    data = message.json()
    if not _is_sns_envelope(data):
        return data
    inner = data["Message"]
    try:
        return json.loads(inner)
    except ValueError:
        return inner


def s3_records(message: Message) -> list[S3Object]:
    """The objects of an S3 event notification, sent directly or through SNS.

    ``s3:TestEvent`` (what S3 sends when a notification is configured) yields ``[]``; anything
    that is not an S3 notification raises ``MessageDecodeError``.
    """
    data = payload(message)
    if isinstance(data, Mapping) and data.get("Event") == S3_TEST_EVENT:
        return []
    records = data.get("Records") if isinstance(data, Mapping) else None
    if not isinstance(records, list):
        raise MessageDecodeError("not an S3 event notification: no 'Records' list")
    return [_s3_object(index, record) for index, record in enumerate(records)]


def text_attributes(message: Message) -> dict[str, str]:
    """String and Number message attributes as text; Binary ones are left out."""
    text: dict[str, str] = {}
    for name, value in message.message_attributes.items():
        if isinstance(value, str):
            text[name] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            text[name] = str(value)
    return text


def isoformat(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds and a ``Z``, the form SQS and S3 use themselves."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def _is_sns_envelope(data: Any) -> bool:
    return (
        isinstance(data, Mapping)
        and data.get("Type") == "Notification"
        and isinstance(data.get("Message"), str)
    )


def _s3_object(index: int, record: Any) -> S3Object:
    try:
        s3 = record["s3"]
        bucket, item = s3["bucket"]["name"], s3["object"]
        key = item["key"]
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise TypeError("bucket name and key must be strings")
        size = item.get("size")
        return S3Object(
            bucket=bucket,
            key=unquote_plus(key),
            size=int(size) if size is not None else None,
            event_name=str(record.get("eventName", "")),
            event_time=_parse_time(record.get("eventTime")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MessageDecodeError(f"S3 event record {index} is malformed: {exc!r}") from None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)
