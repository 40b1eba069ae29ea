"""The supervisor as PID 1, for real: a new PID namespace, as in a container with no init shim.

``unshare --pid --fork --mount-proc`` runs ``sqs-supervisor run`` as the namespace's PID 1 (the
network namespace is shared, so the local SQS on loopback answers). Seen from here, that PID 1
is the unshare process's only child, and every process of the namespace descends from it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from support import APPS, REPO, Ledger, make_queue, send_bodies, wait_until, write_config

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _unshare_refusal() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a PID namespace here (needs root): {probe.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _unshare_refusal() is not None,
    reason=str(_unshare_refusal()) if sys.platform.startswith("linux") else "Linux only",
)


class Pid1Supervisor:
    """``sqs-supervisor run`` as PID 1 of a new PID namespace."""

    def __init__(self, config: Path, tmp_path: Path) -> None:
        self.log_path = tmp_path / "supervisor.log"
        self.ledger = Ledger(tmp_path / "ledger.tsv")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APPS), str(REPO)]),
            "LEDGER": str(self.ledger.path),
        }
        with self.log_path.open("wb") as sink:
            self.unshare = subprocess.Popen(
                [*UNSHARE, sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        self.init = wait_until(self._init, 20, "the namespace's PID 1")

    def _init(self) -> psutil.Process | None:
        children = psutil.Process(self.unshare.pid).children()
        return children[0] if children else None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        wait_until(lambda: text in self.logs(), timeout, f"{text!r} in the log")

    def namespace(self) -> list[psutil.Process]:
        """Every process of the namespace but its PID 1."""
        try:
            return self.init.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def zombies(self) -> list[int]:
        found = []
        for process in self.namespace():
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    found.append(process.pid)
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self) -> None:
        if self.unshare.poll() is None:
            # SIGKILL from an ancestor namespace reaches PID 1, and its end ends the namespace.
            with contextlib.suppress(psutil.NoSuchProcess):
                self.init.kill()
            self.unshare.wait(timeout=15)


@pytest.fixture
def in_namespace(tmp_path: Path):
    started: list[Pid1Supervisor] = []

    def start(config: Path) -> Pid1Supervisor:
        supervisor = Pid1Supervisor(config, tmp_path)
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop()
        tail = "\n".join(supervisor.logs().splitlines()[-40:])
        print(f"\n--- last lines of the namespace's supervisor log ---\n{tail}")


def config_for(tmp_path: Path, queue: str, handler: str, **settings) -> Path:
    binding = {"name": queue, "queue": queue, "handler": handler, "wait_time_seconds": 1}
    return write_config(tmp_path / "w.yaml", [{**binding, **settings}])


def test_orphans_of_a_burst_of_forking_handlers_are_reaped_by_pid_1(sqs, tmp_path, in_namespace):
    url = make_queue(sqs, "burst")
    ids = send_bodies(sqs, url, [{"count": 5} for _ in range(30)])  # 150 orphans
    config = config_for(tmp_path, "burst", "apphandlers:fork_burst", processes=3)

    supervisor = in_namespace(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == len(ids), 60, "the burst handled")

    # The grandchildren sleep 0.2 s after their parent exited: orphans of PID 1 that it reaps.
    wait_until(lambda: len(supervisor.namespace()) == 3, 10, "only the workers left")
    assert supervisor.zombies() == []
    assert supervisor.init.pid == supervisor._init().pid

    supervisor.init.send_signal(signal.SIGTERM)
    assert supervisor.unshare.wait(timeout=30) == 0, "the drain's exit 0 comes out of unshare"
    assert "SIGTERM: draining 3 children" in supervisor.logs()


def test_a_crashing_child_does_not_take_pid_1_down(sqs, tmp_path, in_namespace):
    url = make_queue(sqs, "crashy", visibility=60)
    [crasher] = send_bodies(sqs, url, [{"exit_first": 7}])
    config = config_for(tmp_path, "crashy", "apphandlers:behave", processes=1)

    supervisor = in_namespace(config)
    supervisor.wait_for_log("exited unexpectedly with code 7")
    wait_until(lambda: supervisor.ledger.count("end")[crasher], 20, "the crashed job's retry")
    [after] = send_bodies(sqs, url, [{"n": 1}])
    wait_until(lambda: supervisor.ledger.count("end")[after], 20, "the next message handled")

    assert supervisor.init.is_running(), "PID 1 outlived its child's crash"
    assert supervisor.unshare.poll() is None
    supervisor.init.send_signal(signal.SIGTERM)
    assert supervisor.unshare.wait(timeout=30) == 0
