"""Celery peer of ``concurrency.py``: the same slow-job workload, run by Celery on SQS.

--jobs (1000) tasks, each one GET to ``concurrency.SlowServer`` that answers after --seconds
(2 s), run by --workers (2) ``celery worker --pool threads --concurrency 50`` processes, so
100 in flight and an ideal of 50 jobs/s, as variant b of ``concurrency.py``. The workers use
kombu's SQS transport (its async receive over pycurl, boto3 for the rest) through
``concurrency.CountingProxy``, which counts their SQS requests by operation. The tasks are
sent beforehand (``apply_async``, one SendMessage each) straight to the endpoint, so only
the workers' requests are counted, from their launch to the last answer, then for
--idle-seconds (20) once all is done.

Celery's app, task and settings are in ``celery_peer_app.py`` (the defaults, but for long
polls of 20 s and a visibility timeout of 60 s). Both the workers and the producer run on
Celery's own venv; this script runs on the project's (it imports ``concurrency``)::

    python3 -m venv /tmp/celery-venv
    /tmp/celery-venv/bin/pip install 'celery[sqs]' requests psutil boto3
    cd /work/main && . .venv/bin/activate
    python tests/benchmarks/celery_peer.py --endpoint http://127.0.0.1:4566   # LocalStack

It runs on Celery's venv too, given the project's dependencies there (``common`` puts the
repository on ``sys.path``)::

    /tmp/celery-venv/bin/pip install pyyaml pydantic prometheus-client pymongo
    /tmp/celery-venv/bin/python tests/benchmarks/celery_peer.py

--runs N makes N runs (a row each); --endpoint "" starts a local moto server instead.

Celery deletes a message (DeleteMessage, one per message) as its task starts (acks_late
False), so the queue is empty about one job before the last answer: the rates here are
first call to last answer (comparable with ``concurrency.py``'s jobs/s, whose drains end
within a receive of the last answer) and worker launch to the last answer.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import common
import psutil
from concurrency import STALL_SECONDS, CountingProxy, SlowServer, request_tables, table

HERE = Path(__file__).resolve().parent
CELERY_PYTHON = "/tmp/celery-venv/bin/python"


def broker_url(endpoint: str) -> str:
    """kombu's SQS URL for an HTTP endpoint (plain HTTP: ``is_secure`` False in the app)."""
    parts = urlsplit(endpoint)
    return f"sqs://test:test@{parts.hostname}:{parts.port or 80}"


ROOT_WARNING = (  # Celery's multi-line warning at every start as root
    "SecurityWarning: You're running the worker with superuser privileges",
    "absolutely not recommended!",
    "Please specify a different user using the --uid option.",
    "User information: uid=",
    "_warn_or_raise_security_error(",
)


def noise(line: str) -> bool:
    return not line.strip() or any(part in line for part in ROOT_WARNING)


def celery_env(broker: str, queue: str) -> dict[str, str]:
    env = dict(os.environ, CELERY_PEER_BROKER=broker, CELERY_PEER_QUEUE=queue)
    env["PYTHONPATH"] = str(HERE)
    env.pop("AWS_ENDPOINT_URL_SQS", None)  # the broker URL alone says where to go
    return env


@dataclass
class Run:
    name: str
    workers: int
    concurrency: int
    enqueue_seconds: float = 0.0
    visibility: str = "?"
    up: float | None = None  # worker launch to the first receive (visible below jobs)
    emptied: float | None = None  # worker launch to an empty queue
    lead: float | None = None  # worker launch to the first call
    pss: int = 0
    process_count: int = 0
    cpu: float = 0.0  # all worker processes, first receive to the last answer
    run_counts: Counter[str] = field(default_factory=Counter)
    idle_counts: Counter[str] = field(default_factory=Counter)
    started: int = 0
    answered: int = 0
    peak: int = 0
    first_call: float | None = None
    last_answer: float | None = None
    launched: float = 0.0
    note: str = ""
    exit_codes: list[int | None] = field(default_factory=list)
    left_after_stop: tuple[int, int] = (0, 0)
    log: list[str] = field(default_factory=list)


class Workers:
    """``--workers`` Celery worker processes on Celery's venv, talking to ``broker``."""

    def __init__(self, args: argparse.Namespace, broker: str, queue: str, workdir: Path) -> None:
        env = celery_env(broker, queue)
        self.logs = [workdir / f"worker-{i}.log" for i in range(args.workers)]
        self.processes = []
        for i, log in enumerate(self.logs):
            command = [args.celery_python, "-m", "celery", "-A", "celery_peer_app", "worker"]
            command += ["--pool", "threads", "--concurrency", str(args.concurrency)]
            command += ["--loglevel", "WARNING", "-n", f"peer{i}@%h", "-Q", queue]
            with log.open("wb") as err:  # stdout: only the start-up banner
                self.processes.append(
                    subprocess.Popen(
                        command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=err
                    )
                )
        self.psutil = [psutil.Process(p.pid) for p in self.processes]

    def members(self) -> list[psutil.Process]:
        found = []
        for process in self.psutil:
            try:
                found += [process, *process.children(recursive=True)]
            except psutil.Error:
                continue
        return found

    def stop(self) -> list[int | None]:
        """Warm shutdown (SIGTERM), then SIGKILL after 60 s."""
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=60))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes

    def log_lines(self) -> list[str]:
        lines = []
        for i, log in enumerate(self.logs):
            text = log.read_text(errors="replace") if log.exists() else ""
            lines += [f"[{i}] {line}" for line in text.splitlines() if not noise(line)]
        return lines


def run_celery(
    args: argparse.Namespace,
    name: str,
    url: str,
    proxy: CountingProxy,
    slow: SlowServer,
    workdir: Path,
) -> Run:
    sqs = common.client(url)
    queue = f"bench-celery-{name}-{os.getpid()}-{int(time.time())}"
    run = Run(name, args.workers, args.concurrency)
    began = time.monotonic()
    producer = [args.celery_python, str(HERE / "celery_peer_app.py"), "enqueue"]
    subprocess.run(
        [*producer, str(args.jobs), slow.url],
        env=celery_env(broker_url(url), queue),
        check=True,
    )
    run.enqueue_seconds = time.monotonic() - began
    queue_url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
        run.visibility = attributes["Attributes"].get("VisibilityTimeout", "?")
        common.wait_for(lambda: common.remaining(sqs, [queue_url])[0] >= args.jobs, 30, 0.2)
        slow.reset()
        start_counts = proxy.counts()
        run.launched = time.monotonic()
        workers = Workers(args, broker_url(proxy.url), queue, workdir)
        try:
            measure(args, run, sqs, queue_url, slow, workers)
            run.run_counts = proxy.counts() - start_counts
            run.idle_counts = proxy.idle_counts(args.idle_seconds)
        finally:
            run.exit_codes = workers.stop()
            run.log = workers.log_lines()
        run.left_after_stop = common.remaining(sqs, [queue_url])
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
    return run


def measure(
    args: argparse.Namespace,
    run: Run,
    sqs: Any,
    queue_url: str,
    slow: SlowServer,
    workers: Workers,
) -> None:
    """Poll until every job is answered (or progress stops): first receive, empty queue,
    PSS at half the answers, CPU from the first receive."""
    ideal = args.in_flight / args.seconds
    deadline = run.launched + max(120.0, 10 * args.jobs / ideal)
    cpu_before: dict[int, float] = {}
    last_answered, last_change = -1, run.launched
    while True:
        now = time.monotonic()
        stats = slow.stats()
        if run.emptied is None:
            state = common.remaining(sqs, [queue_url])
            if run.up is None and state[0] < args.jobs:
                run.up = now - run.launched
                cpu_before = {p.pid: common.cpu_seconds([p]) for p in workers.members()}
            if state == (0, 0):
                run.emptied = now - run.launched
        if not run.pss and stats["answered"] >= args.jobs / 2:
            members = workers.members()
            run.pss, run.process_count = common.pss_bytes(members), len(members)
        if stats["answered"] >= args.jobs:
            break
        if stats["answered"] != last_answered:
            last_answered, last_change = stats["answered"], now
        elif last_answered > 0 and now - last_change > STALL_SECONDS:
            run.note = f"stalled at {last_answered} answered"
            break
        if now > deadline:
            run.note = f"timed out at {stats['answered']} answered"
            break
        if any(p.poll() is not None for p in workers.processes):
            run.note = "a worker exited"
            break
        time.sleep(0.1)
    members = workers.members()
    run.cpu = sum(common.cpu_seconds([p]) - cpu_before.get(p.pid, 0.0) for p in members)
    if not run.pss:
        run.pss, run.process_count = common.pss_bytes(members), len(members)
    stats = slow.stats()
    run.started, run.answered, run.peak = stats["started"], stats["answered"], stats["peak"]
    run.first_call, run.last_answer = stats["first"], stats["last"]
    if run.first_call is not None:
        run.lead = run.first_call - run.launched


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    ideal = args.in_flight / args.seconds
    print(f"\njobs: {args.jobs} x {args.seconds:g} s calls, {args.in_flight} in flight")
    print(f"ideal {ideal:.1f} jobs/s; jobs/s: first call to last answer; from start: worker")
    print("launch to last answer; up: launch to first receive; peak: task calls at once;")
    print("PSS: all worker processes (procs) when half the jobs were done; lead: launch to")
    print(f"first call; calls: first call to last answer (ideal {args.jobs / ideal:g} s); empty:")
    print("launch to an empty queue; CPU: worker processes, first receive to last answer")
    header = ["variant", "P", "conc", "pool", "up s", "peak", "jobs/s", "/ideal"]
    header += ["from start", "/ideal", "lead s", "calls s", "empty s", "PSS MB", "procs"]
    header += ["CPU s", "note"]
    rows = []
    for r in runs:
        calls = rate = start_rate = None
        if r.first_call is not None and r.last_answer is not None:
            calls = r.last_answer - r.first_call
            rate = r.answered / calls if calls else 0.0
            start_rate = r.answered / (r.last_answer - r.launched)
        rows.append(
            [
                r.name,
                str(r.workers),
                str(r.concurrency),
                "threads",
                seconds(r.up),
                str(r.peak),
                "-" if rate is None else f"{rate:.1f}",
                "-" if rate is None else f"{rate / ideal:.2f}",
                "-" if start_rate is None else f"{start_rate:.1f}",
                "-" if start_rate is None else f"{start_rate / ideal:.2f}",
                seconds(r.lead),
                seconds(calls),
                seconds(r.emptied),
                f"{r.pss / 2**20:.0f}",
                str(r.process_count),
                f"{r.cpu:.2f}",
                r.note,
            ]
        )
    table(header, rows)

    request_tables(
        runs, args.jobs, args.idle_seconds, "worker launch to last answer", "all answered"
    )

    print("\nchecks")
    for r in runs:
        receives = r.run_counts.get("ReceiveMessage", 0)
        print(
            f"  {r.name}: calls started {r.started}, answered {r.answered} (peak {r.peak} at "
            f"once, {r.started - args.jobs} beyond {args.jobs} jobs), ReceiveMessage "
            f"{receives} ({args.jobs / receives if receives else 0:.1f} messages each), "
            f"DeleteMessage {r.run_counts.get('DeleteMessage', 0)}, enqueue "
            f"{r.enqueue_seconds:.1f} s, queue VisibilityTimeout {r.visibility}, exit "
            f"{r.exit_codes}, left after stop {r.left_after_stop}, {len(r.log)} worker log "
            f"line(s)"
        )
        for line in r.log[:8]:
            print(f"      {line[:240]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--endpoint",
        default="http://127.0.0.1:4566",
        help='an SQS endpoint (default LocalStack on 4566; "" starts a local moto server)',
    )
    parser.add_argument("--celery-python", default=CELERY_PYTHON, help="Celery's venv python")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
    parser.add_argument("--concurrency", type=int, default=50, help="threads per worker")
    parser.add_argument("--seconds", type=float, default=2.0, help="the slow call's duration")
    parser.add_argument("--runs", type=int, default=1, help="runs, one table row each")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=20.0,
        help="idle window after the last answer; at least one long poll (20 s)",
    )
    args = parser.parse_args()
    args.in_flight = args.workers * args.concurrency
    with common.endpoint(args.endpoint or None) as url, tempfile.TemporaryDirectory() as tmp:
        print(f"endpoint {url}, {psutil.cpu_count()} CPUs")
        runs = []
        with SlowServer(args.seconds) as slow, CountingProxy(url) as proxy:
            for i in range(args.runs):
                name = "celery" if args.runs == 1 else f"celery{i + 1}"
                runs.append(run_celery(args, name, url, proxy, slow, Path(tmp)))
                print(f"  {name} done: {runs[-1].answered} answered", flush=True)
        report(args, runs)


if __name__ == "__main__":
    main()
