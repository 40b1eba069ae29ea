"""A child with ``concurrency`` > 1, driven one ``run_once`` at a time with an in-memory SQS:
it asks only for its free slots, and one receive serves them all."""

from __future__ import annotations

import json
import os
import threading

import pytest
from test_worker_loop import MemorySqs, in_memory_worker

from supervisor.config import Binding
from support import wait_until

gate = threading.Event()


def waits_for_the_gate(message, ctx):
    assert gate.wait(10), "the test never opened the gate"


@pytest.fixture
def child():
    gate.clear()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    sqs = MemorySqs({f"m{i}": json.dumps({"n": i}) for i in range(10)})
    binding = Binding(name="jobs", queue="jobs", handler="m:f", wait_time_seconds=0, concurrency=4)
    worker = in_memory_worker(binding, waits_for_the_gate, sqs, write_fd)
    try:
        yield worker, sqs
    finally:
        gate.set()
        worker.stopping = True
        worker.shutdown()
        os.close(write_fd)
        os.close(read_fd)


def test_a_child_asks_only_for_its_free_slots_and_waits_when_none_is_free(child):
    worker, sqs = child
    assert worker.slots is not None

    worker.run_once()
    assert sqs.asked == [4]
    worker.run_once()  # every slot busy: no receive at all
    assert sqs.asked == [4]

    gate.set()
    assert worker.slots.wait_for_idle(5)
    worker.run_once()
    assert sqs.asked == [4, 4]
    assert worker.slots.wait_for_idle(5)
    worker.run_once()
    assert (sqs.asked, sqs.inbox) == ([4, 4, 4], [])  # it got the last two of the ten
    assert worker.slots.wait_for_idle(5)
    # The last job's thread flushes the deletes once the child is idle: wait for that call.
    wait_until(lambda: len(sqs.deleted) == 10, 5, "ten deletes")
    assert sorted(sqs.deleted) == sorted(f"m{i}" for i in range(10))

    for _ in range(20):  # jobs of 2 s: none may wait for a slot (no prefetch)
        worker.fetcher.note_duration(2.0)
    worker.run_once()  # an empty queue: one receive for all four free slots
    assert sqs.asked == [4, 4, 4, 4]


def test_short_jobs_fill_a_receive_and_the_extra_wait_for_a_slot_not_in_the_runner(child):
    """Jobs of 1 ms on 4 slots: a receive asks for 10, not 4, and those beyond the slots (up
    to one receive's worth) wait their turn; on a stop, those not started are released, not
    run."""
    worker, sqs = child
    assert worker.slots is not None and worker.fetcher is not None
    sqs.inbox += [dict(m, MessageId=f"x{m['MessageId']}") for m in sqs.inbox]  # twenty
    for _ in range(20):
        worker.fetcher.note_duration(0.001)

    worker.run_once()
    assert sqs.asked == [10]
    assert worker.slots.free() == -6  # four running (at the gate), six waiting for them
    wait_until(lambda: len(worker.processor.running) == 4, 5, "four jobs at the gate")
    worker.run_once()  # up to one receive's worth beyond the slots: four more
    assert sqs.asked == [10, 4]
    worker.run_once()  # nothing free, even counting the prefetch: no receive
    assert sqs.asked == [10, 4]

    worker.stopping = True
    released = worker.leases.take_unstarted()
    assert len(released) == 10  # the ten in line: their leases were never claimed
    worker.settler.release(released)
    gate.set()
    assert worker.slots.wait_for_idle(5)
    wait_until(lambda: len(sqs.deleted) == 4, 5, "the four that ran deleted")
    assert sorted(key for key, seconds in sqs.visibility) == sorted(
        lease.message_id for lease in released
    )
