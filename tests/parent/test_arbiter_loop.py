"""``Arbiter.run_once`` driven step by step: fake spawner, fake reaper, fake clock, fake SQS.

No process is forked: each "child" is a pipe the test writes reports into with the real
``Reporter``, so what is tested is the parent's decisions (leases, releases, backoff, timeouts,
counters), one loop iteration at a time.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from supervisor.config import load_config
from supervisor.ipc import Reporter
from supervisor.lease import Lease
from supervisor.parent.arbiter import Arbiter

# Far above any pid_max, so a kill the arbiter sends can never reach a real process.
FAKE_PID_BASE = 50_000_000
QUEUE_URL = "http://sqs.local/000000000000/jobs"


class FakeSpawner:
    def __init__(self) -> None:
        self.reporters: dict[int, Reporter] = {}
        self.write_fds: dict[int, int] = {}
        self.started: list[tuple[str, int]] = []

    def __call__(self, binding, slot, finished):
        read_fd, write_fd = os.pipe()
        pid = FAKE_PID_BASE + len(self.started)
        self.started.append((binding.name, slot))
        self.reporters[pid] = Reporter(write_fd, finished)
        self.write_fds[pid] = write_fd
        return pid, read_fd

    def die(self, pid: int) -> None:
        os.close(self.write_fds.pop(pid))

    def close(self) -> None:
        for fd in self.write_fds.values():
            os.close(fd)


class FakeReaper:
    def __init__(self) -> None:
        self.exits: list[tuple[int, int]] = []

    def __call__(self):
        return self.exits.pop(0) if self.exits else (0, 0)


class RecordingSqs:
    """The parent's SQS calls: releases and deletes are recorded; the queue-depth poll sees
    empty queues."""

    def __init__(self) -> None:
        self.visibility: list[tuple[str, int]] = []
        self.deleted: list[str] = []

    def queue_url(self, name):
        return QUEUE_URL

    def get_attributes(self, url, names):
        return dict.fromkeys(names, "0")

    def change_visibility_batch(self, url, entries):
        self.visibility += [(e.key, e.visibility_timeout) for e in entries]
        return {}

    def delete_batch(self, url, entries):
        self.deleted += [e.key for e in entries]
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop(tmp_path: Path):
    path = tmp_path / "workers.yaml"
    path.write_text(
        "metrics: {enabled: false}\n"
        "bindings:\n"
        "  - {name: jobs, queue: jobs, handler: 'handlers.examples:make_thumbnail',"
        " processes: 2, timeout: 30, retry: {base_seconds: 10, max_seconds: 10}}\n"
    )
    spawner, reaper, clock, sqs = FakeSpawner(), FakeReaper(), Clock(), RecordingSqs()
    arbiter = Arbiter(load_config(path), clock=clock, spawner=spawner, waitpid=reaper)
    arbiter._sqs = sqs
    arbiter.setup()
    try:
        yield arbiter, spawner, reaper, clock, sqs
    finally:
        arbiter.teardown()
        spawner.close()


def sample(arbiter: Arbiter, name: str, **labels: str) -> float:
    return arbiter.metrics.registry.get_sample_value(f"sqs_supervisor_{name}", labels) or 0.0


def leases(*ids: str) -> list[Lease]:
    return [Lease(i, f"receipt-{i}", QUEUE_URL, 1) for i in ids]


def step(arbiter: Arbiter, clock: Clock, seconds: float = 0.0) -> None:
    clock.now += seconds
    arbiter._housekeeping_at = 0.0  # as a signal or a closed pipe would
    arbiter.run_once(timeout=0.05)


def test_a_killed_childs_leases_are_released_at_once_and_its_slot_backs_off(loop):
    arbiter, spawner, reaper, clock, sqs = loop
    assert spawner.started == [("jobs", 0), ("jobs", 1)]
    victim = FAKE_PID_BASE
    spawner.reporters[victim].ready()
    reporter = spawner.reporters[victim]
    reporter.received(QUEUE_URL, leases("a", "b", "c", "d"), ["1000", "-", "500", "-"], 1500)
    step(arbiter, clock)
    assert set(arbiter.pool.children[victim].leases) == {"a", "b", "c", "d"}
    assert sample(arbiter, "messages_received_total", binding="jobs", queue="jobs") == 4
    # Ages from SentTimestamp and the child's clock: 0.5 s and 1 s (none for the one without).
    assert sample(arbiter, "message_age_seconds_count", binding="jobs") == 2
    assert sample(arbiter, "message_age_seconds_sum", binding="jobs") == 1.5

    reporter.done("succeeded", [(leases("a")[0], 0.2)])
    slot = reporter.deleting("b", 0.3)  # b finished; its batched delete then went out
    reporter.deleted("succeeded", [("b", 0.3, slot)])
    reporter.deleting("d", 0.5)  # d finished, and the child dies before its delete
    step(arbiter, clock)
    assert set(arbiter.pool.children[victim].leases) == {"c", "d"}
    assert arbiter.pool.children[victim].deleting == {}  # in the shared log, not the pipe
    assert sample(arbiter, "handler_duration_seconds_count", binding="jobs") == 2
    assert sample(arbiter, "handler_duration_seconds_sum", binding="jobs") == 0.5

    spawner.die(victim)
    reaper.exits.append((victim, signal.SIGKILL))  # a wait status: killed by signal 9
    step(arbiter, clock, 1.0)
    assert sorted(sqs.visibility) == [("c", 0)]  # d finished: deleted, not run again
    assert sqs.deleted == ["d"]
    assert victim not in arbiter.pool.children
    labels = {"binding": "jobs", "queue": "jobs"}
    assert sample(arbiter, "messages_processed_total", outcome="released", **labels) == 1
    assert sample(arbiter, "messages_processed_total", outcome="succeeded", **labels) == 3
    assert sample(arbiter, "handler_duration_seconds_sum", binding="jobs") == 1.0
    assert sample(arbiter, "worker_restarts_total", binding="jobs", reason="crash") == 1

    step(arbiter, clock, 0.5)  # still inside the 1 s crash backoff
    assert len(spawner.started) == 2
    step(arbiter, clock, 0.6)
    assert spawner.started[-1] == ("jobs", 0)


def test_an_age_from_a_clock_behind_counts_as_zero_and_a_duplicate_adds_no_run_time(loop):
    arbiter, spawner, _, clock, _ = loop
    reporter = spawner.reporters[FAKE_PID_BASE]
    # The child's clock reads 2 s before the sender's for "a": its age is observed as 0.
    reporter.received(QUEUE_URL, leases("a", "b"), ["3000", "500"], 1000)
    step(arbiter, clock)
    assert sample(arbiter, "message_age_seconds_count", binding="jobs") == 2
    assert sample(arbiter, "message_age_seconds_sum", binding="jobs") == 0.5
    assert sample(arbiter, "message_age_seconds_bucket", binding="jobs", le="0.05") == 1

    reporter.deleted("duplicate", [("a", None, None)])  # settled without running
    reporter.deleted("succeeded", [("b", 0.25, None)])
    step(arbiter, clock)
    assert arbiter.pool.children[FAKE_PID_BASE].leases == {}
    labels = {"binding": "jobs", "queue": "jobs"}
    assert sample(arbiter, "messages_processed_total", outcome="duplicate", **labels) == 1
    assert sample(arbiter, "messages_processed_total", outcome="succeeded", **labels) == 1
    assert sample(arbiter, "handler_duration_seconds_count", binding="jobs") == 1
    assert sample(arbiter, "handler_duration_seconds_sum", binding="jobs") == 0.25


def test_a_job_past_its_timeout_kills_the_child_and_its_message_gets_the_retry_delay(loop):
    arbiter, spawner, reaper, clock, sqs = loop
    pid = FAKE_PID_BASE + 1
    spawner.reporters[pid].received(QUEUE_URL, leases("slow", "next"), ["-", "-"], 0)
    spawner.reporters[pid].alive([("slow", clock.now)])
    step(arbiter, clock)
    step(arbiter, clock, 29.0)
    assert arbiter.pool.children[pid].exit_reason is None  # within its 30 s

    step(arbiter, clock, 2.0)
    child = arbiter.pool.children[pid]
    assert (child.exit_reason, child.timed_out) == ("timeout", {"slow"})
    spawner.die(pid)
    reaper.exits.append((pid, signal.SIGKILL))
    step(arbiter, clock)
    delays = dict(sqs.visibility)
    assert delays["next"] == 0 and 8 <= delays["slow"] <= 10  # 10 s base, up to 20 % jitter
    assert sample(arbiter, "worker_restarts_total", binding="jobs", reason="timeout") == 1


def test_every_report_kind_has_a_route_in_the_parent():
    from supervisor.ipc import KINDS
    from supervisor.parent.reports import ReportRouter

    assert [kind for kind in KINDS if not hasattr(ReportRouter, f"on_{kind}")] == []
