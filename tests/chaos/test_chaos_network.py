"""Chaos on a slow, lossy network: every SQS answer 300 ms late, some cut mid-answer, some
stalled past the client's read timeout, children SIGKILLed; nothing lost, exit 0.

support.TcpProxy sits between the supervisor and a local SQS of the test's own (its log is
read back). Every answer is delayed; 3 % are cut (the client's connection closed after 0-400
bytes of the answer: a reset before the status line, a truncated head or a truncated body) and
2 % stall for 12 s, past a child's read timeout (wait_time_seconds + 10 = 11 s) and the
parent's (3 s), so botocore's read timeouts, connection errors and retries all run. A fault
strikes an answer: the request itself always reached SQS whole and was applied. Faults start
once the pool is up (``run`` checks each queue once before it forks, and stops if it cannot)
and stop after the kills, for the drain and the SIGTERM.

A message may run more than once only if
- a run of it was in a child this test killed; or
- its lease lapsed while its child's deletes or extensions were held up: a
  DeleteMessageBatch or ChangeMessageVisibilityBatch answer to that child (the proxy finds
  the client's pid) stalled between a receive visibility before the run and the rerun. A
  stalled call holds up one thread of the child for 11 s or more, longer than the 6 s receive
  visibility, so what that thread would have deleted or extended meanwhile can lapse: at most
  what the child holds, 10 received (batch_size) and 10 finished awaiting their delete. Hence
  at most 20 such duplicates per stalled call. (The call's own messages are safe: its request
  reached SQS and was applied.)
A cut answer cannot cause one: a delete whose answer was cut has deleted (SQS applied it;
botocore's retry of it is answered as success, or as a receipt that is gone, which settles it
too), and a cut receive's messages stay hidden, unrun, until their receive visibility lapses.

CI runs the short variant (under a minute); the full one is::

    CHAOS_FULL=1 python -m pytest tests/chaos/test_chaos_network.py -q -s -n 0
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from supervisor.ops.local import free_port
from support import (
    Faults,
    LoggedSqs,
    TcpProxy,
    make_queue,
    scrape,
    send_bodies,
    tracebacks,
    wait_until,
    write_config,
)

from .harness import binding, kill_one, repeated_runs, runs_by_message, wait_drained

RECEIVE_VISIBILITY = 6
# The first receive after the faults start is cut and the second stalled past its read
# timeout, whatever the dice do (once, in 459 answers, they struck no receive).
FAULTS = Faults(
    latency=0.3,
    drop=0.03,
    stall=0.02,
    stall_seconds=12,
    after=400,
    first=(("drop", "ReceiveMessage"), ("stall", "ReceiveMessage")),
)
HELD_UP = {"DeleteMessageBatch", "ChangeMessageVisibilityBatch"}
PER_STALLED_CALL = 20  # what its child holds: 10 received (batch_size), 10 awaiting a delete
# Warnings a fault or a kill explains; any other WARNING or ERROR line fails the test.
EXPECTED_LOG = (
    "failed (",  # receive failed (...) / looking up the queue failed (...); retrying
    "works again after",
    "could not delete",
    "could not extend visibility",
    "could not be extended: the receipt is gone",  # a stalled extension outlived its lease
    "could not release",
    "cannot read attributes",
    "was killed by SIGKILL",
    "perhaps out of memory",
    "restarting",
    "Failed to parse headers",
    "has no redrive policy",
)


# urllib3 logs a head cut mid-way at WARNING, with a traceback, and goes on with what it got.
EXPECTED_TRACEBACK = "urllib3.exceptions.HeaderParsingError:"


@dataclass(frozen=True)
class Scale:
    fast_queues: int
    per_queue: int
    concurrent_jobs: int
    long_jobs: int
    chaos_seconds: float
    deadline: float


FULL = Scale(
    fast_queues=5,
    per_queue=250,
    concurrent_jobs=600,
    long_jobs=8,
    chaos_seconds=60,
    deadline=240,
)
SHORT = Scale(
    fast_queues=3,
    per_queue=80,
    concurrent_jobs=150,
    long_jobs=4,
    chaos_seconds=20,
    deadline=90,
)
SCALE = FULL if os.environ.get("CHAOS_FULL") else SHORT


@pytest.fixture
def server(tmp_path):
    endpoint = LoggedSqs(tmp_path / "sqs-server.log")
    yield endpoint
    endpoint.stop()


@pytest.mark.slow
def test_nothing_is_lost_on_a_slow_lossy_network_with_kills(
    server, tmp_path, request, start_supervisor
):
    began = time.monotonic()
    rng = random.Random(20261202)
    sqs = server.client()
    lease = {"receive_visibility_timeout": RECEIVE_VISIBILITY, "visibility_timeout": 30}
    bindings, urls, expected = [], {}, set()

    def queue(name: str, bodies: list[dict], **settings) -> None:
        urls[name] = make_queue(sqs, name, visibility=30)
        expected.update(send_bodies(sqs, urls[name], bodies))
        bindings.append(binding(name, **lease, **settings))

    # Enough work for the children to be busy (deleting, extending) all through the faults.
    for index in range(SCALE.fast_queues):
        seconds = [rng.uniform(0.05, 0.4) for _ in range(SCALE.per_queue)]
        queue(f"net-{index}", [{"seconds": s} for s in seconds], processes=2)
    seconds = [rng.uniform(0.2, 1.0) for _ in range(SCALE.concurrent_jobs)]
    queue("net-threads", [{"seconds": s} for s in seconds], processes=2, concurrency=4)
    # Longer than the receive visibility: only the heartbeat's extension keeps them from a rerun.
    queue("net-long", [{"seconds": 8}] * SCALE.long_jobs, processes=2, concurrency=2)

    proxy = TcpProxy(server.port, seed=rng.randrange(2**32))
    proxy.faults = Faults(latency=FAULTS.latency)
    proxy.start()
    request.addfinalizer(proxy.stop)
    port = free_port()
    config = write_config(
        tmp_path / "w.yaml",
        bindings,
        metrics={"host": "127.0.0.1", "port": port, "queue_poll_seconds": 3600},
    )
    supervisor = start_supervisor(config, env={"AWS_ENDPOINT_URL_SQS": proxy.url})
    wait_until(
        lambda: len(supervisor.children()) == sum(b["processes"] for b in bindings),
        30,
        "all children",
    )
    # Faults from here: `run` checks every queue once before it forks, and stops if it can't.
    proxy.faults = FAULTS
    kills: dict[int, float] = {}
    chaos_until = time.monotonic() + SCALE.chaos_seconds
    while time.monotonic() < chaos_until:
        kill_one(supervisor, rng, kills)
        time.sleep(rng.uniform(1, 2))
    proxy.faults = Faults(latency=FAULTS.latency)  # no more cuts or stalls: let it drain
    wait_drained(
        sqs, urls, supervisor.ledger, len(expected), SCALE.deadline - (time.monotonic() - began)
    )
    samples = scrape(port)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0

    runs = runs_by_message(supervisor.ledger)
    handled = {mid for mid, seq in runs.items() if any(run["ended"] for run in seq)}
    assert handled == expected, f"lost: {len(expected - handled)} message(s)"

    events = proxy.events()
    stalled = [e for e in events if e.kind == "stall" and e.operation in HELD_UP]
    by_kill, by_stall = [], Counter()
    for message_id, earlier, later in repeated_runs(runs):
        if earlier["pid"] in kills:
            by_kill.append(message_id)
            continue
        # The stalled call was that child's, from a receive visibility before the run it
        # repeats (a lease may lapse before its run starts) to the repeat.
        window = (earlier["at"] - RECEIVE_VISIBILITY, later["at"])
        cause = next(
            (e for e in stalled if e.pid == earlier["pid"] and window[0] <= e.at <= window[1]),
            None,
        )
        assert cause is not None, (
            f"{message_id} ran again with no kill and no delete or extension of its child "
            f"held up: {earlier} then {later}"
        )
        by_stall[cause.at, cause.link] += 1
    assert max(by_stall.values(), default=0) <= PER_STALLED_CALL, by_stall
    by_fault = by_stall.total()

    faults = Counter((e.kind, e.operation) for e in events)
    gave_up = sum(e.gave_up for e in events)
    errors = {
        dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "sqs_supervisor_sqs_errors_total"
    }
    print(
        f"\nnetwork chaos: {len(expected)} messages, {len(kills)} children killed, "
        f"{sum(proxy.counts().values())} requests, faults {dict(faults)}, "
        f"{gave_up} stalls outlasted the client's read timeout; ran again: "
        f"{len(by_kill)} after a kill, {by_fault} after a held-up delete or extension "
        f"({len(stalled)} such calls stalled); sqs_errors_total {errors}; "
        f"{time.monotonic() - began:.0f} s"
    )
    # The faults ran the paths they are for: connections cut, read timeouts fired.
    assert faults[("drop", "ReceiveMessage")] and gave_up

    log = supervisor.logs()
    found = [t for t in tracebacks(log) if not t.startswith(EXPECTED_TRACEBACK)]
    # A cut answer is an error (supervisor/sqs.py refuses it), never a success without fields.
    assert found == [], "\n".join(found)
    assert server.errors() == []
    unexpected = [
        line
        for line in log.splitlines()
        if (" WARNING " in line or " ERROR " in line)
        and not any(text in line for text in EXPECTED_LOG)
    ]
    assert unexpected == [], "\n".join(unexpected[:20])
