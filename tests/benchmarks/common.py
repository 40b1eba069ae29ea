"""Shared pieces of the benchmarks: an endpoint, queue filling, a supervisor run, CPU sums."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from supervisor.ops.local import DUMMY_CREDENTIALS, LocalSqs, free_port  # noqa: E402


@contextmanager
def endpoint(url: str | None) -> Iterator[str]:
    """The given endpoint, or a fresh local one (moto) for the duration."""
    os.environ.update({k: os.environ.get(k, v) for k, v in DUMMY_CREDENTIALS.items()})
    if url:
        os.environ["AWS_ENDPOINT_URL_SQS"] = url
        yield url
        return
    with LocalSqs() as server:
        os.environ["AWS_ENDPOINT_URL_SQS"] = server.url
        yield server.url


def client(url: str) -> Any:
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1")


def fresh_queue(
    sqs: Any, name: str, count: int, visibility: int = 60, body: dict[str, Any] | None = None
) -> str:
    """(Re)create a queue holding ``count`` messages (``{"n": i}``, or ``body``)."""
    try:
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        pass
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})[
        "QueueUrl"
    ]
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(body or {"n": start + i})}
            for i in range(min(10, count - start))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url


def remaining(sqs: Any, urls: list[str]) -> tuple[int, int]:
    """(visible, in flight) summed over queues."""
    visible = in_flight = 0
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    for url in urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        visible += int(attributes[names[0]])
        in_flight += int(attributes[names[1]])
    return visible, in_flight


def pss_bytes(processes: list[psutil.Process]) -> int:
    """Proportional set size summed over processes (shared pages split among their users)."""
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            continue
    return total


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Supervised:
    """sqs-supervisor run as a subprocess, with its metrics port for progress."""

    def __init__(
        self,
        bindings: list[dict[str, Any]],
        workdir: Path,
        url: str,
        repo: Path = REPO,
        *,
        extra_path: Iterable[Path] = (),
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``extra_path``: more directories on the supervisor's PYTHONPATH (handler modules);
        ``prefix``: a command to run it under (``valgrind ...``: the pid is still the parent's,
        since valgrind runs the program in its own process); ``env``: more variables."""
        self.port = free_port()
        config = {
            "sqs": {"region": "us-east-1", "endpoint_url": url},
            "metrics": {"host": "127.0.0.1", "port": self.port, "queue_poll_seconds": 3600},
            "bindings": bindings,
        }
        path = workdir / f"bench-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(config))
        paths = [str(APPS), str(repo), *map(str, extra_path)]
        env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(paths)}
        self.log = (workdir / "supervisor.log").open("ab")
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "supervisor.cli",
                "--log-level",
                "WARNING",
                "run",
                "-c",
                str(path),
            ],
            env=env,
            # Not the caller's directory: ``-m`` puts the working directory first on sys.path,
            # so a run started inside a checkout would import that checkout, not ``repo``.
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.psutil = psutil.Process(self.process.pid)

    def counter(self, name: str, **labels: str) -> float:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        value = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and set(labels.items()) <= set(sample.labels.items()):
                    value += sample.value
        return value

    def processes(self) -> list[psutil.Process]:
        return [self.psutil, *self.psutil.children()]

    def stop(self, timeout: float = 60) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=timeout)
        self.log.close()
        return code


def wait_for(condition: Any, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(interval)
