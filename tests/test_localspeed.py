"""The serializer shortcut of supervisor/ops/localspeed.py answers byte for byte what moto's own
serializer answers: every answer of an SQS session over HTTP (queues with attributes and tags,
messages with attributes of each type, batches with failed entries, receives with every
attribute) is serialized both ways, in the endpoint, and compared."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import responses, serialize
from moto.server import ThreadedMotoServer

from supervisor.ops import localserver, localspeed
from supervisor.sqs import LOOPBACK_CREDENTIALS


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[str]]]:
    """An in-process endpoint whose every answer is serialized twice; yields a client and the
    names of the operations compared."""
    localserver.install()
    assert serialize.ResponseSerializer.get_value is localspeed.get_value
    execute = responses.ActionResult.execute_result
    seen: list[str] = []

    def twice(self: Any, context: Any) -> Any:
        ours = execute(self, context)
        monkeypatch.setattr(serialize.ResponseSerializer, "get_value", localspeed._moto_get_value)
        try:
            motos = execute(self, context)
        finally:
            monkeypatch.setattr(serialize.ResponseSerializer, "get_value", localspeed.get_value)
        assert ours == motos, context.operation_model.name
        seen.append(str(context.operation_model.name))
        return ours

    monkeypatch.setattr(responses.ActionResult, "execute_result", twice)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client(
        "sqs", endpoint_url=f"http://{host}:{port}", region_name="us-east-1", **LOOPBACK_CREDENTIALS
    )
    try:
        yield client, seen
    finally:
        server.stop()


def test_every_answer_serializes_as_moto_s_own(compared: tuple[Any, list[str]]) -> None:
    client, seen = compared
    dlq = client.create_queue(QueueName="speed-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    url = client.create_queue(
        QueueName="speed-main",
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": (
                f'{{"deadLetterTargetArn": "{dlq_arn["Attributes"]["QueueArn"]}",'
                ' "maxReceiveCount": "3"}'
            ),
        },
        tags={"team": "media"},
    )["QueueUrl"]
    client.create_queue(QueueName="speed-order.fifo", Attributes={"FifoQueue": "true"})
    client.list_queues(QueueNamePrefix="speed")
    client.get_queue_url(QueueName="speed-main")
    client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    client.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0"})
    client.list_queue_tags(QueueUrl=url)
    client.list_dead_letter_source_queues(QueueUrl=dlq)
    attributes = {
        "kind": {"DataType": "String", "StringValue": "thumbnail"},
        "size": {"DataType": "Number", "StringValue": "1024"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    client.send_message(QueueUrl=url, MessageBody="one", MessageAttributes=attributes)
    sent = client.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "ok", "MessageBody": "two", "MessageAttributes": attributes},
            {"Id": "late", "MessageBody": "three", "DelaySeconds": 0},
            {"Id": "bad", "MessageBody": "four", "DelaySeconds": 901},
        ],
    )
    assert [entry["Id"] for entry in sent["Failed"]] == ["bad"]
    got = client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )["Messages"]
    assert len(got) == 3 and got[0]["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
    handles = [message["ReceiptHandle"] for message in got]
    changed = client.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "ReceiptHandle": handles[0], "VisibilityTimeout": 60},
            {"Id": "x", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 60},
        ],
    )
    assert [entry["Id"] for entry in changed["Failed"]] == ["x"]
    client.change_message_visibility(QueueUrl=url, ReceiptHandle=handles[1], VisibilityTimeout=5)
    deleted = client.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "a", "ReceiptHandle": handles[0]}, {"Id": "x", "ReceiptHandle": "nope"}],
    )
    assert [entry["Id"] for entry in deleted["Failed"]] == ["x"]
    client.delete_message(QueueUrl=url, ReceiptHandle=handles[2])
    with pytest.raises(ClientError):
        client.get_queue_url(QueueName="speed-missing")
    client.purge_queue(QueueUrl=url)
    client.delete_queue(QueueUrl=url)

    assert {
        "CreateQueue",
        "ListQueues",
        "GetQueueAttributes",
        "ListQueueTags",
        "ListDeadLetterSourceQueues",
        "SendMessage",
        "SendMessageBatch",
        "ReceiveMessage",
        "ChangeMessageVisibilityBatch",
        "DeleteMessageBatch",
    } <= set(seen), seen
