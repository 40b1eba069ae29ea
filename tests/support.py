"""Helpers for the end-to-end tests: a supervisor subprocess, a ledger reader, polling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Ledger:
    """Reads the lines apphandlers writes: what ran, where, on which receive."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            event, message_id, pid, receive_count, at = line.split("\t")
            if kind is None or event == kind:
                rows.append(
                    {
                        "event": event,
                        "id": message_id,
                        "pid": int(pid),
                        "receive_count": int(receive_count),
                        "at": float(at),
                    }
                )
        return rows

    def count(self, kind: str) -> Counter[str]:
        return Counter(row["id"] for row in self.events(kind))


def write_config(path: Path, bindings: list[dict[str, Any]], **top: Any) -> Path:
    document = {"sqs": {"region": "us-east-1"}, "metrics": {"enabled": False}, **top}
    document["bindings"] = bindings
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class SupervisorProcess:
    """``sqs-supervisor run`` as a real subprocess, its stderr kept in a file."""

    def __init__(
        self, config: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
    ):
        self.log_path = tmp_path / f"supervisor-{time.monotonic_ns()}.log"
        self.ledger = Ledger(tmp_path / "ledger.tsv")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(REPO)])
        full_env["LEDGER"] = str(self.ledger.path)
        full_env.update(env or {})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", *extra, "run", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20, count: int = 1) -> None:
        wait_until(lambda: self.logs().count(text) >= count, timeout, f"{text!r} in the log")

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def children(self) -> list[int]:
        """The live (non-zombie) children: the workers."""
        import psutil

        try:
            return [
                c.pid
                for c in psutil.Process(self.pid).children()
                if c.status() != psutil.STATUS_ZOMBIE
            ]
        except psutil.Error:
            return []

    def stop(self) -> int | None:
        """Make sure nothing outlives the test."""
        if self.process.poll() is None:
            self.signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def make_queue(
    sqs: Any, name: str, *, visibility: int = 30, dlq: str | None = None, max_receive: int = 3
) -> str:
    """Create a queue (and its DLQ with a redrive policy when ``dlq`` is given); return its URL."""
    attributes = {"VisibilityTimeout": str(visibility)}
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    if dlq:
        dlq_attributes = {"FifoQueue": "true"} if dlq.endswith(".fifo") else {}
        dlq_url = sqs.create_queue(QueueName=dlq, Attributes=dlq_attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": max_receive}
        )
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def send_bodies(sqs: Any, url: str, bodies: list[Any]) -> list[str]:
    """Send JSON bodies in batches of ten; return the message ids in order."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        entries = [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(chunk)]
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response.get("Failed")
        by_entry = {int(r["Id"]): r["MessageId"] for r in response["Successful"]}
        ids.extend(by_entry[i] for i in range(len(chunk)))
    return ids


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    visible, in_flight, delayed = (int(attributes[n]) for n in names)
    return {"visible": visible, "in_flight": in_flight, "delayed": delayed}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One /metrics scrape as {(sample name, sorted labels): value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def http_status(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


class TcpProxy:
    """A loopback TCP proxy the test can cut and restore: an SQS outage without losing state."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: Any = None
        self._connections: list[Any] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        import socket

        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone leaves it bound.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self._connections.clear()

    def _accept(self, listener: Any) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: Any, sink: Any) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.close()
            except OSError:
                pass


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """The queue verbs in-process, with cli.main's error mapping (exit 2 config, 1 runtime)."""
    import argparse

    from supervisor.cli.common import RuntimeFailure
    from supervisor.cli.queues import add_commands
    from supervisor.errors import ConfigError

    parser = argparse.ArgumentParser(prog="sqs-supervisor")
    add_commands(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}")
        code = 2
    except RuntimeFailure as exc:
        print(f"error: {exc}")
        code = 1
    out, err = capsys.readouterr()
    return code, out, err
