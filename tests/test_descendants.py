"""A handler's own processes do not outlive its child: the parent, a child subreaper, gets
them back when the child exits and stops them (SIGTERM, then SIGKILL), whatever ended the child.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from support import APPS, REPO, make_queue, send_bodies, wait_until, write_config

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux only")


def gone(process: psutil.Process | None) -> bool:
    """``None``: it had already ended when the test first looked."""
    if process is None:
        return True
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Sleepers:
    """The ``sleep 300`` processes ``fork_sleeper`` started, read from the file it appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {"SLEEPERS": str(path)}
        self._seen: dict[int, psutil.Process | None] = {}

    def rows(self) -> list[tuple[int, int]]:
        if not self.path.exists():
            return []
        return [tuple(map(int, line.split())) for line in self.path.read_text().splitlines()]

    def wait_for(self, count: int) -> list[tuple[psutil.Process | None, int]]:
        wait_until(lambda: len(self.rows()) >= count, 30, f"{count} sleeper(s) started")
        found = []
        for sleeper_pid, worker_pid in self.rows()[:count]:
            if sleeper_pid not in self._seen:
                try:
                    self._seen[sleeper_pid] = psutil.Process(sleeper_pid)
                except psutil.NoSuchProcess:
                    self._seen[sleeper_pid] = None
            found.append((self._seen[sleeper_pid], worker_pid))
        return found

    def kill_all(self) -> None:
        """Whatever the outcome, leave no ``sleep 300`` behind on the machine."""
        for sleeper_pid, _ in self.rows():
            try:
                if sleeper_pid in self._seen:
                    process = self._seen[sleeper_pid]
                else:
                    process = psutil.Process(sleeper_pid)
                if process is not None and process.name() == "sleep" and not gone(process):
                    process.kill()
            except psutil.Error:
                pass


@pytest.fixture
def sleepers(tmp_path: Path):
    found = Sleepers(tmp_path / "sleepers.txt")
    yield found
    found.kill_all()


def sleeper_config(tmp_path: Path, **settings) -> Path:
    binding = {
        "name": "forks",
        "queue": "forks",
        "handler": "apphandlers:fork_sleeper",
        "processes": 1,
        "wait_time_seconds": 1,
        **settings,
    }
    return write_config(tmp_path / "w.yaml", [binding])


def wait_gone(process: psutil.Process | None, what: str) -> None:
    wait_until(lambda: gone(process), 10, what)


def test_a_sleeper_dies_with_its_child_when_the_child_is_sigkilled(
    sqs, tmp_path, start_supervisor, sleepers
):
    url = make_queue(sqs, "forks")
    send_bodies(sqs, url, [{"n": 1}])
    supervisor = start_supervisor(sleeper_config(tmp_path), env=sleepers.env)
    [(sleeper, worker)] = sleepers.wait_for(1)
    wait_until(lambda: supervisor.ledger.count("end"), 10, "the handler to return")
    assert not gone(sleeper), "the sleeper runs on after its handler returned"

    os.kill(worker, signal.SIGKILL)

    wait_gone(sleeper, "the SIGKILLed child's sleeper to be stopped")
    supervisor.wait_for_log(f"killed 1 leftover process(es) of child {worker}")
    wait_until(lambda: len(supervisor.children()) == 1, 10, "a replacement child")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_a_sleeper_dies_with_its_child_when_the_child_recycles(
    sqs, tmp_path, start_supervisor, sleepers
):
    url = make_queue(sqs, "forks")
    send_bodies(sqs, url, [{"n": 1}, {"n": 2}])
    config = sleeper_config(tmp_path, max_jobs_per_child=1, batch_size=1)
    supervisor = start_supervisor(config, env=sleepers.env)

    (first, first_worker), (second, second_worker) = sleepers.wait_for(2)

    assert first_worker != second_worker, "each job ran in a fresh child"
    wait_gone(first, "the recycled child's sleeper to be stopped")
    wait_gone(second, "the second recycled child's sleeper to be stopped")
    supervisor.wait_for_log(f"killed 1 leftover process(es) of child {first_worker}")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_a_sleeper_dies_when_the_supervisor_stops(sqs, tmp_path, start_supervisor, sleepers):
    url = make_queue(sqs, "forks")
    send_bodies(sqs, url, [{"n": 1}])
    supervisor = start_supervisor(sleeper_config(tmp_path), env=sleepers.env)
    [(sleeper, worker)] = sleepers.wait_for(1)
    wait_until(lambda: supervisor.ledger.count("end"), 10, "the handler to return")

    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert gone(sleeper), "the sleeper was stopped before the supervisor exited"
    assert f"killed 1 leftover process(es) of child {worker}" in supervisor.logs()


def test_run_local_keeps_its_endpoint_and_demo_producer_while_leftovers_are_killed(
    tmp_path, sleepers
):
    """The local SQS server and the demo producer are the CLI's children too, started before
    the arbiter: recycling children (each leaving a sleeper) must never stop them."""
    config = sleeper_config(tmp_path, max_jobs_per_child=1, batch_size=1)
    log = tmp_path / "run.log"
    env = {
        **os.environ,
        **sleepers.env,
        "PYTHONPATH": os.pathsep.join([str(APPS), str(REPO)]),
        "LEDGER": str(tmp_path / "ledger.tsv"),
    }
    env.pop("AWS_ENDPOINT_URL_SQS", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["sqs-supervisor", "run", "--local", "--demo", "0.2", "-c", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        cli = psutil.Process(process.pid)
        wait_until(lambda: "started child" in log.read_text(), 30, "a child")
        helpers = [
            p
            for p in cli.children()
            if any(part in " ".join(p.cmdline()) for part in ("localserver", "ops.demo"))
        ]
        assert len(helpers) == 2, helpers
        found = sleepers.wait_for(4)  # four children recycled, each after leaving a sleeper
        for sleeper, _ in found[:3]:
            wait_gone(sleeper, "a recycled child's sleeper to be stopped")
        assert all(not gone(helper) for helper in helpers), "the endpoint or producer was hit"
        assert log.read_text().count("leftover process(es) of child") >= 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert re.search(r"local SQS at \S+ stopped", log.read_text())
