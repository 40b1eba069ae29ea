"""What the chaos tests (and tests/benchmarks/killwindow.py) share: jobs and bindings, killing
children, who ran what more than once, and how long messages stayed hidden after a kill.

Times are ``time.time()`` throughout: the handler's ledger, the kills and the proxy's answers
are stamped by different processes on one host.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import signal
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import (
    REPO,
    Answer,
    Faults,
    Ledger,
    SupervisorProcess,
    TcpProxy,
    make_queue,
    queue_counts,
    send_bodies,
    wait_until,
    write_config,
)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}


def durations(rng: random.Random, count: int) -> list[float]:
    """Mostly quick jobs, some of a second or two."""
    return [
        rng.choice([0.01, 0.02, 0.05]) if rng.random() < 0.95 else rng.uniform(0.5, 2)
        for _ in range(count)
    ]


def binding(name: str, **settings: Any) -> dict[str, Any]:
    """A binding of ``apphandlers:chaos`` (runs as long as the body's ``seconds`` says), to
    the queue of its name unless ``queue`` says otherwise."""
    return {
        "name": name,
        "queue": name,
        "handler": "apphandlers:chaos",
        "wait_time_seconds": 1,
        "drain_timeout": 60,
        "timeout": 120,
        **settings,
    }


def kill_one(supervisor: SupervisorProcess, rng: random.Random, kills: dict[int, float]) -> None:
    """SIGKILL one of the supervisor's children at random; note its pid and when."""
    victims = supervisor.children()
    if victims:
        victim = rng.choice(victims)
        kills[victim] = time.time()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            del kills[victim]


def wait_drained(
    sqs: Any, urls: Mapping[str, str], ledger: Ledger, expected: int, timeout: float
) -> None:
    """Every queue empty (nothing visible, in flight or delayed), or fail saying what is left."""
    try:
        wait_until(
            lambda: all(queue_counts(sqs, url) == EMPTY for url in urls.values()),
            round(timeout, 1),
            "every queue empty",
            interval=1,
        )
    except AssertionError as timeout_error:
        left = {name: queue_counts(sqs, url) for name, url in urls.items()}
        handled = len(ledger.count("end"))
        raise AssertionError(f"{timeout_error}: {handled}/{expected} handled; {left}") from None


def runs_by_message(ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
    """Each message's handler runs, in order of start, with ``ended`` (pid and receive count
    of an ``end`` matching the ``start``)."""
    ends = {(row["id"], row["pid"], row["receive_count"]) for row in ledger.events("end")}
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(ledger.events("start"), key=lambda r: r["at"]):
        row["ended"] = (row["id"], row["pid"], row["receive_count"]) in ends
        runs.setdefault(row["id"], []).append(row)
    return runs


def repeated_runs(
    runs: Mapping[str, list[dict[str, Any]]],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(message id, a run, the run after it) for every message that ran more than once."""
    return [
        (message_id, earlier, later)
        for message_id, seq in runs.items()
        for earlier, later in itertools.pairwise(seq)
    ]


# -- the unreported-receive window: hidden time after a kill -------------------------------------


@dataclass(frozen=True)
class Receipt:
    """One receive of one message, as SQS answered it (seen by the proxy)."""

    at: float
    message_id: str
    receive_count: int


@dataclass(frozen=True)
class Hidden:
    """A message its holder never finished: killed at ``killed_at``, received again at
    ``back_at``. ``started``: its handler had begun in the killed child."""

    message_id: str
    killed_at: float
    back_at: float
    started: bool

    @property
    def seconds(self) -> float:
        return self.back_at - self.killed_at


def receipts(answers: Iterable[Answer]) -> dict[str, list[Receipt]]:
    """Every message's receives, in order, from the proxy's ReceiveMessage answers."""
    found: dict[str, list[Receipt]] = {}
    for answer in answers:
        if answer.operation != "ReceiveMessage" or answer.status != 200:
            continue
        for item in json.loads(answer.body or b"{}").get("Messages", []):
            count = int(item.get("Attributes", {}).get("ApproximateReceiveCount", 0))
            found.setdefault(item["MessageId"], []).append(
                Receipt(answer.at, item["MessageId"], count)
            )
    for seq in found.values():
        seq.sort(key=lambda r: (r.receive_count, r.at))
    return found


@dataclass
class KillWindow:
    """Hidden times after kills, and what could not be put down to a kill."""

    hidden: list[Hidden] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)  # finished, yet received again
    unexplained: list[tuple[Receipt, Receipt]] = field(default_factory=list)

    def longest(self) -> float:
        return max((h.seconds for h in self.hidden), default=0.0)

    def longer_than(self, seconds: float) -> int:
        return sum(h.seconds > seconds for h in self.hidden)

    def quantile(self, q: float) -> float:
        values = sorted(h.seconds for h in self.hidden)
        if not values:
            return 0.0
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def kill_window(
    received: Mapping[str, list[Receipt]],
    runs: Mapping[str, list[dict[str, Any]]],
    kills: Mapping[int, float],
) -> KillWindow:
    """For each receive of a message that was not finished and was received again: the time
    from the kill of its holder to its next receive.

    The holder is known when the handler had started (the ledger names its pid); a message
    received but never started names no pid, so the first kill after its receive stands in
    for its holder's: that can only lengthen the time measured (a bound from above). A receive
    followed by another with no kill between them is ``unexplained``.
    """
    window = KillWindow()
    kill_times = sorted(kills.values())
    for message_id, seq in received.items():
        by_count = {run["receive_count"]: run for run in runs.get(message_id, [])}
        for receipt, following in itertools.pairwise(seq):
            run = by_count.get(receipt.receive_count)
            if run is not None and run["ended"]:
                window.rerun.append(message_id)
                continue
            if run is not None and run["pid"] in kills:
                killed_at = kills[run["pid"]]
            else:
                killed_at = next((k for k in kill_times if k > receipt.at), following.at)
            if killed_at >= following.at:
                window.unexplained.append((receipt, following))
                continue
            window.hidden.append(Hidden(message_id, killed_at, following.at, run is not None))
    return window


# -- a steady drain with random kills, measured (tests/chaos/test_kill_window.py, and the
#    benchmark tests/benchmarks/killwindow.py, which runs it for older checkouts too) ---------


@dataclass
class KillRun:
    """What one run of ``run_kills`` saw."""

    messages: int
    kills: dict[int, float]
    window: KillWindow
    lost: int
    ran_twice: int  # messages whose handler started more than once
    running_at_kills: int  # jobs started and not ended in a child when it was killed
    requests: dict[str, int]
    seconds: float
    exit_code: int | None


def children_of(supervisor: SupervisorProcess, binding_name: str) -> list[int]:
    """The live children of one binding, by the parent's "started child PID for NAME" lines."""
    started = re.findall(r"started child (\d+) for (\S+) ", supervisor.logs())
    ours = {int(pid) for pid, name in started if name == binding_name}
    return [pid for pid in supervisor.children() if pid in ours]


def run_kills(
    sqs: Any,
    server_port: int,
    workdir: Path,
    *,
    repo: Path = REPO,
    messages: int,
    kill_seconds: float,
    kill_every: tuple[float, float] = (0.3, 0.9),
    job_seconds: float = 0.05,
    processes: int = 6,
    survivors: int = 2,
    concurrency: int = 1,
    visibility_timeout: int = 300,
    receive_visibility_timeout: int | None = None,
    latency: float = 0.4,
    deadline: float = 60,
    seed: int = 0,
) -> KillRun:
    """A queue of ``messages`` jobs drained by two bindings of it: one of ``processes``
    children, SIGKILLed one at a time at random moments for ``kill_seconds``, and one of
    ``survivors`` children, never killed, so a message visible again is received within a
    long poll (1 s), whatever the crash backoff of the killed binding's slots.

    Every answer comes ``latency`` late through a TcpProxy, as from a distant SQS (or moto
    under load): SQS has applied a receive that long before the child has it, which widens
    the unreported-receive window (answered, not yet told to the parent) so that random kills
    land in it. ``receive_visibility_timeout`` None leaves it out of the YAML (the default,
    or a checkout that predates it)."""
    began = time.monotonic()
    rng = random.Random(seed)
    name = f"kw-{time.monotonic_ns()}"
    url = make_queue(sqs, name, visibility=visibility_timeout)
    expected = set(send_bodies(sqs, url, [{"seconds": job_seconds}] * messages))
    lease: dict[str, Any] = {"visibility_timeout": visibility_timeout}
    if receive_visibility_timeout is not None:
        lease["receive_visibility_timeout"] = receive_visibility_timeout
    if concurrency > 1:
        lease["concurrency"] = concurrency
    bindings = [binding(name, queue=name, processes=processes, **lease)]
    if survivors:
        bindings.append(binding(f"{name}-s", queue=name, processes=survivors, **lease))
    config = write_config(workdir / f"{name}.yaml", bindings)
    proxy = TcpProxy(server_port, seed=rng.randrange(2**32), watch={"ReceiveMessage"})
    proxy.faults = Faults(latency=latency)
    proxy.start()
    supervisor = SupervisorProcess(
        config, workdir, env={"AWS_ENDPOINT_URL_SQS": proxy.url}, repo=repo
    )
    kills: dict[int, float] = {}
    try:
        wait_until(lambda: len(supervisor.children()) == processes + survivors, 60, "all children")
        wait_until(lambda: supervisor.ledger.events("start"), 30, "the first job")
        until = time.monotonic() + kill_seconds
        while time.monotonic() < until and queue_counts(sqs, url)["visible"] > 0:
            time.sleep(rng.uniform(*kill_every))
            victims = children_of(supervisor, name)
            if victims:
                victim = rng.choice(victims)
                kills[victim] = time.time()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
        wait_drained(
            sqs, {name: url}, supervisor.ledger, messages, deadline - (time.monotonic() - began)
        )
        supervisor.signal(signal.SIGTERM)
        exit_code = supervisor.wait(timeout=60)
    finally:
        supervisor.stop()
        proxy.stop()
    runs = runs_by_message(supervisor.ledger)
    handled = {mid for mid, seq in runs.items() if any(run["ended"] for run in seq)}
    running = sum(
        1
        for seq in runs.values()
        for run in seq
        if run["pid"] in kills and run["at"] < kills[run["pid"]] and not run["ended"]
    )
    return KillRun(
        messages=messages,
        kills=kills,
        window=kill_window(receipts(proxy.answers()), runs, kills),
        lost=len(expected - handled),
        ran_twice=sum(len(seq) > 1 for seq in runs.values()),
        running_at_kills=running,
        requests=dict(proxy.counts()),
        seconds=time.monotonic() - began,
        exit_code=exit_code,
    )
