"""The local endpoint's queue index (supervisor/ops/localindex.py) against a brute-force scan.

Random sends, receives, deletes (by current and stale receipt handles), visibility changes and
purges on moto's patched backend, in this process, on a fake clock. After every step the
Approximate* counts must equal a scan of all messages, and every receive must return what a
scan says it should: the oldest receivable first, as many as asked while any are left, never
a message of a FIFO group that had one in flight. A deleted head of a FIFO group once left the
group's other messages unreachable: only such a sequence of calls found it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from moto.core import utils as moto_utils
from moto.sqs import models
from moto.sqs.exceptions import PurgeQueueInProgress, ReceiptHandleIsInvalid

from supervisor.ops import localindex, localserver

MAX_RECEIVES = 3  # the redrive policy's maxReceiveCount


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_700_000_000_000.0]
    for module in (moto_utils, models, localindex, localserver):
        monkeypatch.setattr(module, "unix_time_millis", lambda: now[0])
    monkeypatch.setattr(models, "unix_time", lambda: now[0] / 1000)
    localserver.install()
    return now


def scan(queue: Any, now: float) -> dict[str, list[Any]]:
    """Every message of ``queue`` by state, as moto's own scans would see it."""
    found: dict[str, list[Any]] = {"ready": [], "delayed": [], "in flight": []}
    for message in queue._messages:  # arrival order
        if message.delayed_until > now:
            found["delayed"].append(message)
        elif message.visible_at > now:
            found["in flight"].append(message)
        else:
            found["ready"].append(message)
    return found


def check_receive(queue: Any, before: dict[str, list[Any]], got: list[Any], count: int) -> None:
    busy = {m.group_id for m in before["in flight"]} if queue.fifo_queue else set()
    ids = [m.id for m in got]
    assert len(ids) == len(set(ids)), "a message twice in one receive"
    assert not busy & {m.group_id for m in got}, "a FIFO group with a message in flight"
    # What a receive may take: ready, not of a busy group, not due for the DLQ (counts are
    # read after the receive, which bumped those it returned).
    receivable = [
        m.id
        for m in before["ready"]
        if m.group_id not in busy and m.approximate_receive_count - (m.id in ids) < MAX_RECEIVES
    ]
    if len(got) < count:
        assert set(receivable) <= set(ids), "fewer than asked while some were receivable"
    if queue.fifo_queue:
        for group in {m.group_id for m in got}:
            mine = [m.id for m in got if m.group_id == group]
            assert mine == [i for i in receivable if i in mine], f"group {group} out of order"
    else:
        assert ids == receivable[: len(ids)], "not the oldest first"


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
@pytest.mark.parametrize("seed", range(4))
def test_the_index_answers_as_a_scan_would(clock: list[float], fifo: bool, seed: int) -> None:
    rng = random.Random(seed)
    backend = models.sqs_backends["123456789012"]["us-east-1"]
    suffix, attributes = (".fifo", {"FifoQueue": "true"}) if fifo else ("", {})
    dlq = backend.create_queue(f"index-{seed}-dlq{suffix}", **attributes)
    policy = {"deadLetterTargetArn": dlq.queue_arn, "maxReceiveCount": MAX_RECEIVES}
    name = f"index-{seed}{suffix}"
    queue = backend.create_queue(name, RedrivePolicy=policy, **attributes)
    handles: list[str] = []
    for step in range(1500):
        clock[0] += rng.choice([0, 1, 5, 50, 500, 1500])
        op = rng.random()
        if op < 0.3:
            options: dict[str, Any] = {"delay_seconds": rng.choice([0, 0, 0, 1, 2])}
            if fifo:  # a deduplication id now and then repeated: dropped
                options = {
                    "group_id": rng.choice("abcd"),
                    "deduplication_id": str(rng.randint(1, step + 1)),
                }
            backend.send_message(name, f"m{step}", **options)
        elif op < 0.55:
            before = scan(queue, clock[0])
            count = rng.randint(1, 10)
            got = backend.receive_message(name, count, 0, rng.choice([0, 1, 2, 5]), [])
            check_receive(queue, before, got, count)
            handles += [m.receipt_handle for m in got]
        elif op < 0.9 and handles:
            handle = rng.choice(handles)  # the current one, or one a later receive replaced
            try:
                if op < 0.75:
                    backend.delete_message(name, handle)
                else:
                    backend.change_message_visibility(name, handle, rng.choice([0, 0, 1, 3, 30]))
            except ReceiptHandleIsInvalid:
                pass  # a message deleted, moved to the DLQ or purged since
        elif op < 0.905:
            try:
                backend.purge_queue(name)
            except PurgeQueueInProgress:
                pass
        for each in (queue, dlq):
            states = scan(each, clock[0])
            counts = (
                each.approximate_number_of_messages,
                each.approximate_number_of_messages_delayed,
                each.approximate_number_of_messages_not_visible,
            )
            expected = tuple(len(states[s]) for s in ("ready", "delayed", "in flight"))
            assert counts == expected, f"step {step}: counts {counts}, a scan says {expected}"
    backend.delete_queue(name)
    backend.delete_queue(dlq.name)
