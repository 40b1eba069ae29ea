"""Message decoding helpers: SNS envelopes, S3 event notifications, metadata as text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from handlers.decode import S3Object, isoformat, payload, s3_records, text_attributes
from supervisor import Message, MessageDecodeError, PermanentError

S3_EVENT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2024-05-01T12:34:56.789Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": "media", "arn": "arn:aws:s3:::media"},
                "object": {"key": "uploads/my+holiday+photo%281%29+%2B1.jpg", "size": 1024},
            },
        },
        {
            "eventSource": "aws:s3",
            "eventTime": "2024-05-01T12:35:00.000Z",
            "eventName": "ObjectRemoved:Delete",
            "s3": {"bucket": {"name": "media"}, "object": {"key": "old%20file.txt"}},
        },
    ]
}
S3_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2024-05-01T12:00:00.000Z",
    "Bucket": "media",
}


def message(body: Any, **attributes: Any) -> Message:
    text = body if isinstance(body, str) else json.dumps(body)
    return Message("m-1", "receipt", text, "http://sqs/123/q", message_attributes=attributes)


def sns(inner: Any) -> dict[str, Any]:
    """An SNS envelope as SQS receives it with raw message delivery off."""
    return {
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:123:uploads",
        "Message": inner if isinstance(inner, str) else json.dumps(inner),
        "Timestamp": "2024-05-01T12:34:57.000Z",
    }


def test_payload_is_the_json_body_when_there_is_no_envelope():
    assert payload(message({"topic": "tides"})) == {"topic": "tides"}
    assert payload(message([1, 2])) == [1, 2]


def test_payload_unwraps_an_sns_envelope_and_parses_its_json_message():
    assert payload(message(sns({"topic": "tides"}))) == {"topic": "tides"}


def test_payload_returns_an_sns_message_that_is_not_json_as_text():
    assert payload(message(sns("plain words, not JSON"))) == "plain words, not JSON"


def test_a_notification_lookalike_without_a_string_message_is_not_unwrapped():
    body = {"Type": "Notification", "Message": {"already": "an object"}}
    assert payload(message(body)) == body


def test_a_body_that_is_not_json_is_a_permanent_decode_error():
    with pytest.raises(MessageDecodeError) as caught:
        payload(message("this is not JSON"))
    assert isinstance(caught.value, PermanentError), "goes to the DLQ after one attempt"


def test_s3_records_url_decode_keys_and_keep_size_event_and_time():
    first, second = s3_records(message(S3_EVENT))

    assert first == S3Object(
        bucket="media",
        key="uploads/my holiday photo(1) +1.jpg",
        size=1024,
        event_name="ObjectCreated:Put",
        event_time=datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=UTC),
    )
    assert (second.key, second.size, second.event_name) == (
        "old file.txt",
        None,
        "ObjectRemoved:Delete",
    )


def test_s3_records_arrive_the_same_through_sns():
    assert s3_records(message(sns(S3_EVENT))) == s3_records(message(S3_EVENT))


@pytest.mark.parametrize("body", [S3_TEST_EVENT, sns(S3_TEST_EVENT)], ids=["direct", "via-sns"])
def test_the_s3_test_event_yields_no_records(body):
    assert s3_records(message(body)) == []


@pytest.mark.parametrize(
    "body",
    [
        {"topic": "tides"},
        sns("plain text"),
        {"Records": [{"eventName": "ObjectCreated:Put"}]},
        {"Records": [{"s3": {"bucket": {"name": "media"}, "object": {"key": 7}}}]},
        {"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": "big"}}}]},
        "not JSON",
    ],
    ids=["not-s3", "sns-text", "no-s3-part", "key-not-string", "bad-size", "not-json"],
)
def test_anything_but_an_s3_notification_is_a_decode_error(body):
    with pytest.raises(MessageDecodeError):
        s3_records(message(body))


def test_text_attributes_keep_strings_and_numbers_and_skip_binary():
    msg = message({}, Trace="abc", Priority=5, Ratio=0.5, Blob=b"\x00\x01")
    assert text_attributes(msg) == {"Trace": "abc", "Priority": "5", "Ratio": "0.5"}


def test_isoformat_is_utc_with_milliseconds_and_z():
    moment = datetime.fromtimestamp(1_714_566_896.789, tz=UTC)
    assert isoformat(moment) == "2024-05-01T12:34:56.789Z"
    assert isoformat(None) is None
