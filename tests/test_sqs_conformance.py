"""SQS semantics the supervisor relies on, checked against the local endpoint and, when
``SQS_CONFORMANCE_URL`` is set, against that endpoint as well (LocalStack, real SQS):

    SQS_CONFORMANCE_URL=http://127.0.0.1:4566 python -m pytest -q tests/test_sqs_conformance.py

Every check holds on real SQS, so a difference found here is the local endpoint's to fix (or a
documented limit of the other endpoint). Queues get unique names and are deleted afterwards:
LocalStack and SQS keep them. Nothing sleeps to synchronise: a wait is a long poll, or a poll
with a deadline; a "nothing comes back" check is a long poll that must return empty.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from supervisor.ops.local import LocalSqs
from supervisor.sqs import credentials_for

REMOTE = os.environ.get("SQS_CONFORMANCE_URL")
ENDPOINTS = ["local", *(["remote"] if REMOTE else [])]
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def local_url() -> Iterator[str]:
    with LocalSqs() as server:
        yield server.url


@pytest.fixture(params=ENDPOINTS)
def sqs(request: pytest.FixtureRequest) -> Any:
    url = request.getfixturevalue("local_url") if request.param == "local" else REMOTE
    client = boto3.client(
        "sqs", endpoint_url=url, region_name=REGION, config=NO_RETRY, **credentials_for(url)
    )
    client.endpoint_kind = request.param  # type: ignore[attr-defined]
    return client


@pytest.fixture
def make_queue(sqs: Any) -> Iterator[Callable[..., str]]:
    """``make_queue(name, **attributes)`` -> url; every queue made is deleted at the end."""
    made: list[str] = []
    run = uuid.uuid4().hex[:10]

    def make(name: str, **attributes: Any) -> str:
        fifo = name.endswith(".fifo")
        full = f"conf-{run}-{name.removesuffix('.fifo')}" + (".fifo" if fifo else "")
        if fifo:
            attributes["FifoQueue"] = "true"
        values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in attributes.items()}
        url = sqs.create_queue(QueueName=full, Attributes=values)["QueueUrl"]
        made.append(url)
        return url

    yield make
    for url in reversed(made):
        sqs.delete_queue(QueueUrl=url)


def local_only(sqs: Any, why: str) -> None:
    if sqs.endpoint_kind != "local":
        pytest.skip(why)


@functools.cache
def is_localstack(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_localstack/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def known_gap(sqs: Any, request: pytest.FixtureRequest, reason: str) -> None:
    """Where LocalStack differs from SQS: expected to fail there, and to be noticed if fixed."""
    if sqs.endpoint_kind == "remote" and is_localstack(str(REMOTE)):
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def receive(sqs: Any, url: str, *, wait: int = 1, count: int = 10, **extra: Any) -> list[Any]:
    asked = {"MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"], **extra}
    return sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=count, WaitTimeSeconds=wait, **asked
    ).get("Messages", [])


def receive_within(sqs: Any, url: str, seconds: float, **extra: Any) -> list[Any]:
    """Long polls until something comes back, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if messages := receive(sqs, url, **extra):
            return messages
    return []


def counts(sqs: Any, url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(found[names[0]]), int(found[names[1]]), int(found[names[2]])


def counts_become(sqs: Any, url: str, expected: tuple[int, int, int], seconds: float = 10) -> None:
    """The counts are approximate on SQS (they may lag): poll them until they match."""
    deadline = time.monotonic() + seconds
    while (found := counts(sqs, url)) != expected:
        assert time.monotonic() < deadline, f"counts {found}, expected {expected}"
        time.sleep(0.1)


def receive_count(message: dict[str, Any]) -> int:
    return int(message["Attributes"]["ApproximateReceiveCount"])


def entries(messages: list[Any]) -> list[dict[str, str]]:
    return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]


def test_visibility_expiry_redelivers_with_a_higher_receive_count(sqs: Any, make_queue) -> None:
    url = make_queue("expiry")
    sqs.send_message(QueueUrl=url, MessageBody="once")
    started = time.monotonic()
    [first] = receive_within(sqs, url, 5, VisibilityTimeout=1)
    assert receive_count(first) == 1
    assert receive(sqs, url, wait=0) == [], "visible while in flight"
    [again] = receive_within(sqs, url, 6, VisibilityTimeout=30)
    assert time.monotonic() - started >= 0.95, "redelivered before its visibility timeout"
    assert (again["MessageId"], receive_count(again)) == (first["MessageId"], 2)
    assert again["ReceiptHandle"] != first["ReceiptHandle"]
    counts_become(sqs, url, (0, 1, 0))


def test_visibility_extension_holds_and_zero_releases_at_once(sqs: Any, make_queue) -> None:
    url = make_queue("extend")
    sqs.send_message(QueueUrl=url, MessageBody="held")
    [message] = receive_within(sqs, url, 5, VisibilityTimeout=1)
    handle = message["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=30)
    assert receive(sqs, url, wait=2) == [], "extended, yet redelivered at the first timeout"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    released = time.monotonic()
    [again] = receive_within(sqs, url, 5)
    assert time.monotonic() - released < 1.5
    assert (again["Body"], receive_count(again)) == ("held", 2)


def test_a_long_poll_wakes_on_a_send(sqs: Any, make_queue) -> None:
    url = make_queue("longpoll")
    got: list[tuple[float, list[Any]]] = []

    def long_poll() -> None:
        messages = receive(sqs, url, wait=10)
        got.append((time.monotonic(), messages))

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    # Half-way between the local endpoint's 1 s re-checks: only a wake-up answers in time.
    poller.join(1.5)
    assert got == [], "a long poll on an empty queue returned early"
    sent = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="wake")
    poller.join(10)
    [(returned, messages)] = got
    assert [m["Body"] for m in messages] == ["wake"]
    assert returned - sent < 0.3, f"woke {returned - sent:.2f} s after the send"


def test_a_delayed_message_arrives_after_its_delay(sqs: Any, make_queue) -> None:
    url = make_queue("delay")
    sent = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    counts_become(sqs, url, (0, 0, 1), seconds=0.9)
    [message] = receive_within(sqs, url, 6)
    assert time.monotonic() - sent >= 0.95
    assert message["Body"] == "later"


def test_redrive_moves_a_message_to_the_dlq_after_max_receive_count(sqs: Any, make_queue) -> None:
    dlq = make_queue("redrive-dlq")
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = {"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": "2"}
    url = make_queue("redrive", RedrivePolicy=policy, VisibilityTimeout="30")
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for attempt in (1, 2):
        [message] = receive_within(sqs, url, 5)
        assert receive_count(message) == attempt
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    assert receive(sqs, url, wait=2) == [], "delivered a third time"
    [moved] = receive_within(sqs, dlq, 10)
    assert moved["Body"] == "poison"
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]
    counts_become(sqs, url, (0, 0, 0))


def test_a_send_batch_refuses_only_the_bad_entry(
    sqs: Any, make_queue, request: pytest.FixtureRequest
) -> None:
    known_gap(sqs, request, "LocalStack 4.12 does not check an entry's DelaySeconds (<= 900)")
    url = make_queue("send-batch")
    sent = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "MessageBody": "a"},
            {"Id": "too-late", "MessageBody": "x", "DelaySeconds": 1000},
            {"Id": "b", "MessageBody": "b"},
        ],
    )
    assert sorted(e["Id"] for e in sent["Successful"]) == ["a", "b"]
    assert [(e["Id"], e["SenderFault"]) for e in sent["Failed"]] == [("too-late", True)]
    counts_become(sqs, url, (2, 0, 0))


def test_delete_and_visibility_batches_refuse_only_the_bad_entry(sqs: Any, make_queue) -> None:
    url = make_queue("batch")
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": n, "MessageBody": n} for n in ("a", "b", "c")]
    )
    messages: list[Any] = []
    deadline = time.monotonic() + 10
    while len(messages) < 3 and time.monotonic() < deadline:
        messages += receive(sqs, url, VisibilityTimeout=30)
    assert sorted(m["Body"] for m in messages) == ["a", "b", "c"]

    bogus = {"Id": "bogus", "ReceiptHandle": "not-a-receipt-handle", "VisibilityTimeout": 0}
    extended = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{**e, "VisibilityTimeout": 60} for e in entries(messages[:2])] + [bogus],
    )
    assert sorted(e["Id"] for e in extended["Successful"]) == ["0", "1"]
    assert [(e["Id"], e["Code"]) for e in extended["Failed"]] == [
        ("bogus", "ReceiptHandleIsInvalid")
    ]
    del bogus["VisibilityTimeout"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[*entries(messages), bogus])
    assert sorted(e["Id"] for e in deleted["Successful"]) == ["0", "1", "2"]
    assert [(e["Id"], e["Code"]) for e in deleted["Failed"]] == [
        ("bogus", "ReceiptHandleIsInvalid")
    ]
    counts_become(sqs, url, (0, 0, 0))


def test_fifo_keeps_group_order_and_drops_duplicates(sqs: Any, make_queue) -> None:
    url = make_queue("groups.fifo")

    def send(group: str, n: int, dedup: str | None = None) -> None:
        sqs.send_message(
            QueueUrl=url,
            MessageBody=f"{group}{n}",
            MessageGroupId=group,
            MessageDeduplicationId=dedup or f"{group}{n}",
        )

    for n in (1, 2, 3):
        send("a", n)
    send("b", 1)
    send("a", 9, dedup="a1")  # a repeat of a1's deduplication id: accepted, never delivered
    send("b", 2)
    counts_become(sqs, url, (5, 0, 0))

    [head] = receive_within(sqs, url, 5, count=1, VisibilityTimeout=30)
    assert head["Body"] == "a1"
    assert head["Attributes"]["MessageGroupId"] == "a"
    others: list[Any] = []
    deadline = time.monotonic() + 5
    while len(others) < 2 and time.monotonic() < deadline:
        others += receive(sqs, url, VisibilityTimeout=30)
    assert [m["Body"] for m in others] == ["b1", "b2"], "group a is held while a1 is in flight"
    assert receive(sqs, url, wait=1) == []
    sqs.delete_message(QueueUrl=url, ReceiptHandle=head["ReceiptHandle"])
    send("a", 1)  # deleted, but its deduplication id is remembered for five minutes
    delivered = [head["Body"]]
    deadline = time.monotonic() + 10
    while len(delivered) < 3 and time.monotonic() < deadline:
        batch = receive(sqs, url, VisibilityTimeout=30)
        delivered += [m["Body"] for m in batch]
        if batch:
            sqs.delete_message_batch(QueueUrl=url, Entries=entries(batch))
    assert delivered == ["a1", "a2", "a3"]
    sqs.delete_message_batch(QueueUrl=url, Entries=entries(others))
    assert receive(sqs, url, wait=1) == [], "a duplicate was delivered"
    counts_become(sqs, url, (0, 0, 0))


def test_message_and_queue_attributes(sqs: Any, make_queue) -> None:
    url = make_queue("attributes")
    before = int(time.time() * 1000)
    attributes = {
        "text": {"DataType": "String", "StringValue": "héllo"},
        "number": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        "typed": {"DataType": "Number.int", "StringValue": "7"},
    }
    sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes=attributes)
    after = int(time.time() * 1000)
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"plain-{i}"} for i in range(2)]
    )
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=60)
    counts_become(sqs, url, (3, 0, 1))

    received: list[Any] = []
    deadline = time.monotonic() + 10
    while not any(m["Body"] == "with attributes" for m in received):
        assert time.monotonic() < deadline, "the message with attributes never came"
        received += receive(sqs, url, count=1, VisibilityTimeout=60)
    message = next(m for m in received if m["Body"] == "with attributes")
    assert message["MessageAttributes"] == attributes
    system = message["Attributes"]
    assert before - 1000 <= int(system["SentTimestamp"]) <= after + 1000
    assert int(system["ApproximateFirstReceiveTimestamp"]) >= int(system["SentTimestamp"])
    assert receive_count(message) == 1
    assert system["SenderId"]
    counts_become(sqs, url, (3 - len(received), len(received), 1))

    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    deadline = time.monotonic() + 10
    while (again := receive(sqs, url, count=1, MessageAttributeNames=["text"])) and again[0][
        "Body"
    ] != "with attributes":
        assert time.monotonic() < deadline, "the released message never came back"
    assert again, "the released message did not come back"
    assert again[0]["MessageAttributes"] == {"text": attributes["text"]}
    assert receive_count(again[0]) == 2


def test_purge_empties_the_queue(sqs: Any, make_queue) -> None:
    url = make_queue("purge")
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(5)]
    )
    receive_within(sqs, url, 5, count=2, VisibilityTimeout=60)
    sqs.purge_queue(QueueUrl=url)
    counts_become(sqs, url, (0, 0, 0), seconds=60)  # SQS: "within 60 seconds"
    sqs.send_message(QueueUrl=url, MessageBody="after")
    assert [m["Body"] for m in receive_within(sqs, url, 5)] == ["after"]


def test_a_message_past_the_retention_period_is_gone(sqs: Any, make_queue) -> None:
    local_only(sqs, "SQS's shortest retention period is 60 s: too slow for this suite")
    url = make_queue("retention", MessageRetentionPeriod="1")
    sqs.send_message(QueueUrl=url, MessageBody="stale")
    sqs.send_message(QueueUrl=url, MessageBody="stale in flight")
    in_flight = receive_within(sqs, url, 5, count=1, VisibilityTimeout=60)
    assert len(in_flight) == 1
    counts_become(sqs, url, (0, 0, 0), seconds=5)
    assert receive(sqs, url, wait=0) == []


def _per_call_ms(sqs: Any, url: str, samples: int = 15) -> tuple[float, float]:
    """Medians of (receive-10 + delete-batch, send-batch-10) at the queue's current depth."""
    receives, sends = [], []
    for n in range(samples):
        t0 = time.perf_counter()
        sqs.send_message_batch(QueueUrl=url, Entries=_batch(f"s{n}-"))
        t1 = time.perf_counter()
        messages = receive(sqs, url, wait=1, VisibilityTimeout=60)
        if messages:
            sqs.delete_message_batch(QueueUrl=url, Entries=entries(messages))
        t2 = time.perf_counter()
        sends.append(t1 - t0)
        receives.append(t2 - t1)
    return statistics.median(receives) * 1000, statistics.median(sends) * 1000


def _batch(prefix: str) -> list[dict[str, str]]:
    return [{"Id": str(i), "MessageBody": f"{prefix}{i}"} for i in range(10)]


def test_calls_do_not_slow_down_with_queue_depth(sqs: Any, make_queue) -> None:
    """At depth 5000 a receive-10 + delete-batch or a send-batch-10 is not much slower than at
    depth 100. Before the index, the local endpoint took 22 and 150 ms to receive and delete,
    89 ms and 2.2 s to send (filling 5000 took 9 minutes); the index makes them O(batch).
    Compared on the same endpoint, so a slow machine slows both alike."""
    url = make_queue("depth", VisibilityTimeout="60")
    for n in range(10):
        sqs.send_message_batch(QueueUrl=url, Entries=_batch(f"f{n}-"))
    shallow = _per_call_ms(sqs, url)
    filled = time.monotonic()
    for n in range(10, 500):
        sqs.send_message_batch(QueueUrl=url, Entries=_batch(f"f{n}-"))
    fill_seconds = time.monotonic() - filled
    deep = _per_call_ms(sqs, url)
    visible, in_flight, _ = counts(sqs, url)
    assert visible + in_flight >= 4900  # SQS's counts are approximate
    report = (
        f"depth 100: {shallow}, 5000: {deep} ms (receive+delete, send); fill {fill_seconds:.1f} s"
    )
    assert deep[0] < 3 * shallow[0] + 10, report
    assert deep[1] < 3 * shallow[1] + 10, report
