"""Recovery figures: a dead child's message retried, and SIGTERM to exit.

    python tests/benchmarks/recovery.py [--trials 5]

Death to retry: a handler kills its own process (os._exit) or is SIGKILLed mid-job on a queue
with a 120 s visibility timeout; the figure is the time from the first start of the message to
its second start in a replacement child (without instant release it would be ~120 s).
SIGTERM to exit: idle children in a 20 s long poll, and a child 1 s into a 5 s job.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml

from support import Ledger


def start(workdir: Path, url: str, binding: dict) -> tuple[subprocess.Popen, Ledger]:
    ledger = Ledger(workdir / f"ledger-{time.monotonic_ns()}.tsv")
    config = {
        "sqs": {"region": "us-east-1", "endpoint_url": url},
        "metrics": {"enabled": False},
        "bindings": [binding],
    }
    path = workdir / "recovery.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(common.APPS), str(common.REPO)]),
        LEDGER=str(ledger.path),
    )
    log = (workdir / "recovery.log").open("ab")  # kept for a post-mortem if a trial times out
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "run", "-c", str(path)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, ledger


def death_to_retry(url: str, workdir: Path, kill: str) -> float:
    sqs = common.client(url)
    # A fresh queue per trial: the previous trial's interrupted long poll may still be open on
    # the server and would take a message sent to a queue of the same name.
    name = f"recovery-{time.monotonic_ns()}"
    queue = common.fresh_queue(sqs, name, 0, visibility=120)
    body = {"exit_first": 9} if kill == "os._exit" else {"sleep": 3}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
    process, ledger = start(
        workdir,
        url,
        {
            "name": "recovery",
            "queue": name,
            "handler": "apphandlers:behave",
            "processes": 1,
            "visibility_timeout": 120,
            "wait_time_seconds": 1,
        },
    )
    try:
        try:
            common.wait_for(lambda: ledger.events("start"), 30)
            if kill == "SIGKILL":
                os.kill(ledger.events("start")[0]["pid"], signal.SIGKILL)
            common.wait_for(lambda: len(ledger.events("start")) >= 2, 60)
        except TimeoutError:
            print((workdir / "recovery.log").read_text()[-4000:])
            raise
        first, second = ledger.events("start")[:2]
        return second["at"] - first["at"]
    finally:
        process.send_signal(signal.SIGQUIT)
        process.wait(timeout=30)


def sigterm_to_exit(url: str, workdir: Path, busy: bool) -> float:
    sqs = common.client(url)
    name = f"drain-{time.monotonic_ns()}"
    queue = common.fresh_queue(sqs, name, 0, visibility=120)
    process, ledger = start(
        workdir,
        url,
        {
            "name": "drain",
            "queue": name,
            "handler": "apphandlers:behave",
            "processes": 2,
            "wait_time_seconds": 20,
        },
    )
    time.sleep(2)  # let both children settle into their long poll: the case being measured
    if busy:
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"sleep": 5}))
        common.wait_for(lambda: ledger.events("start"), 30)
        time.sleep(1)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    return time.monotonic() - sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = [
            ("death to retry, os._exit (s)", lambda: death_to_retry(url, workdir, "os._exit")),
            ("death to retry, SIGKILL (s)", lambda: death_to_retry(url, workdir, "SIGKILL")),
            (
                "SIGTERM to exit, idle in 20 s poll (s)",
                lambda: sigterm_to_exit(url, workdir, False),
            ),
            ("SIGTERM to exit, 4 s left of a job (s)", lambda: sigterm_to_exit(url, workdir, True)),
        ]
        print(f"{'measure':42} {'median':>7} {'min':>6} {'max':>6}   ({args.trials} trials)")
        for name, measure in rows:
            values = [measure() for _ in range(args.trials)]
            print(
                f"{name:42} {statistics.median(values):7.2f} {min(values):6.2f} {max(values):6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
