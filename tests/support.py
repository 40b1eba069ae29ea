"""Helpers for the end-to-end tests: a supervisor subprocess, a ledger reader, polling."""

from __future__ import annotations

import itertools
import json
import os
import queue
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
        self,
        config: Path,
        tmp_path: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        repo: Path = REPO,
    ):
        """``repo``: the checkout whose supervisor runs (another commit's, for a benchmark)."""
        self.log_path = tmp_path / f"supervisor-{time.monotonic_ns()}.log"
        self.ledger = Ledger(tmp_path / "ledger.tsv")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(repo)])
        full_env["LEDGER"] = str(self.ledger.path)
        full_env.update(env or {})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", *extra, "run", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=repo,
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


_SERVER_ERROR = re.compile(r'"[A-Z]+ [^"]*" 5\d\d ')


class LoggedSqs:
    """A local SQS endpoint of its own (``python -m supervisor.ops.localserver``) with its stderr
    (werkzeug's request lines, any traceback) in ``log``, for ``errors()``."""

    def __init__(self, log: Path) -> None:
        from supervisor.ops.local import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = ["-m", "supervisor.ops.localserver", "-H", "127.0.0.1", "-p", str(self.port)]
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
            )

        def up() -> bool:
            import urllib.request

            assert self.process.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(up, 30, "the local endpoint to answer")

    def client(self) -> Any:
        import boto3

        from supervisor.sqs import LOOPBACK_CREDENTIALS

        return boto3.client(
            "sqs", endpoint_url=self.url, region_name="us-east-1", **LOOPBACK_CREDENTIALS
        )

    def errors(self) -> list[str]:
        """5xx request lines, and the last line of each traceback, in the server's log."""
        text = self.log.read_text(errors="replace")
        found = [line for line in text.splitlines() if _SERVER_ERROR.search(line)]
        return found + [f"Traceback: {exception}" for exception in tracebacks(text)]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def tracebacks(log: str) -> list[str]:
    """The exception line (``KeyError: 'QueueUrl'``) of each traceback in a log."""
    lines = log.splitlines()
    found = []
    for n, line in enumerate(lines):
        if line.startswith("Traceback"):
            rest = (x for x in lines[n + 1 :] if x and not x.startswith(" "))
            found.append(next(rest, "?"))
    return found


@dataclass(frozen=True)
class Faults:
    """What a ``TcpProxy`` does to the answers it forwards (upstream -> client); all off by
    default. A fault picks its answer when the answer's first bytes arrive, and strikes after a
    uniform 0..``after`` bytes of it, never past its last byte (so always mid-answer).
    ``first``: (kind, operation) pairs, each struck on the first answer of that operation
    once these faults are on, so a test that needs a path run does not wait on the dice.
    ``hold``: (operation, seconds) pairs; each request of that operation waits that long
    before it goes upstream, and one whose client hangs up meanwhile never arrives (a
    process that died before its request left it)."""

    latency: float = 0.0  # seconds every answer byte is held: a one-way delay line, in order
    drop: float = 0.0  # probability an answer is cut: the client's connection closed mid-answer
    stall: float = 0.0  # probability an answer stops for ``stall_seconds`` mid-answer
    stall_seconds: float = 0.0
    after: int = 400
    first: tuple[tuple[str, str], ...] = ()
    hold: tuple[tuple[str, float], ...] = ()


@dataclass
class FaultEvent:
    at: float  # time.time() when the answer's first bytes reached the proxy
    kind: str  # "drop" or "stall"
    operation: str  # the SQS operation whose answer it struck
    link: int  # the connection, numbered from 1
    pid: int | None  # the client's process, if still connected when the fault was chosen
    gave_up: bool = False  # a stall: the client hung up before it ended (its read timeout)


@dataclass(frozen=True)
class Answer:
    """One answer of a watched operation, as SQS sent it: applied by SQS whatever ``fault``
    (None, "drop" or "stall") then did to it on its way to the client, or if the client was
    gone before it arrived."""

    at: float  # time.time() when its first bytes reached the proxy: SQS had applied the call
    operation: str
    link: int
    status: int
    body: bytes
    fault: str | None


_TARGET = re.compile(rb"^x-amz-target:\s*AmazonSQS\.(\w+)", re.IGNORECASE | re.MULTILINE)
_ACTION = re.compile(rb"[?&\n]Action=(\w+)")
_LENGTH = re.compile(rb"^content-length:\s*(\d+)", re.IGNORECASE | re.MULTILINE)


class TcpProxy:
    """A loopback TCP proxy between the supervisor and SQS.

    ``stop()`` cuts it (every connection closed, the port refused) and ``start()`` listens again
    on the same port: an outage without losing the server's state. ``faults`` (a ``Faults``,
    replaceable at any time; each new answer reads the current one) adds latency, drops and
    stalls to answers, decided by one RNG seeded with ``seed``; ``events()`` lists the faults
    applied. A "request" is one HTTP request: HTTP/1.1 without pipelining alternates request
    and answer on a connection (keep-alive or not), so the first bytes from upstream after
    bytes from the client begin a new answer, and the operation is read from the request's
    X-Amz-Target header. ``counts()`` are requests by operation; the answers of the operations
    in ``watch`` are kept whole in ``answers()``, even when the client is gone before they end.
    """

    def __init__(self, target_port: int, *, seed: int = 0, watch: Iterable[str] = ()) -> None:
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.faults = Faults()
        self.watch = frozenset(watch)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener: Any = None
        self._links: list[_Link] = []
        self._link_ids = itertools.count(1)
        self._events: list[FaultEvent] = []
        self._answers: list[Answer] = []
        self._counts: Counter[str] = Counter()
        self._struck_first: set[tuple[int, str, str]] = set()  # (id(faults), kind, operation)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone leaves it bound.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def _accept(self, listener: Any) -> None:
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
            link = _Link(self, next(self._link_ids), client, upstream)
            with self._lock:
                self._links = [x for x in self._links if not x.closed] + [link]
            link.start()

    # -- called by the links --------------------------------------------------------------------

    def _request(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def _plan(self, link: _Link, at: float, size: int) -> tuple[FaultEvent, int] | None:
        """The fault for a new answer of ``size`` bytes, if any, and after how many bytes."""
        faults = self.faults
        with self._lock:
            draw = self._rng.random()
            offset = self._rng.randint(0, max(0, min(faults.after, size - 1)))
            forced = [
                kind
                for kind, operation in faults.first
                if operation == link.operation
                and (id(faults), kind, operation) not in self._struck_first
            ]
            if forced:
                kind = forced[0]
                self._struck_first.add((id(faults), kind, link.operation))
            elif draw < faults.drop:
                kind = "drop"
            elif draw < faults.drop + faults.stall:
                kind = "stall"
            else:
                return None
            event = FaultEvent(at, kind, link.operation, link.id, None)
            self._events.append(event)
        event.pid = self._client_pid(link)
        return event, offset

    def _client_pid(self, link: _Link) -> int | None:
        """The process on the client side of ``link`` (a fault is rare: the lookup can cost)."""
        import psutil

        try:
            wanted = (link.client.getpeername()[1], self.port)
            for conn in psutil.net_connections(kind="tcp4"):
                if conn.laddr and conn.raddr and (conn.laddr.port, conn.raddr.port) == wanted:
                    return conn.pid
        except (OSError, psutil.Error):
            pass
        return None

    def _answered(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append(answer)


class _Link:
    """One proxied connection. Client -> upstream is one pump. Upstream -> client is a reader
    that stamps each chunk and a writer that sends it once its latency has passed (so one
    chunk's delay never adds to the next one's) and applies the answer's fault. A client that
    hangs up (or is dropped) half-closes the upstream side: the server finishes its answer,
    which the reader still collects, and closes."""

    def __init__(self, proxy: TcpProxy, link_id: int, client: Any, upstream: Any) -> None:
        self.proxy = proxy
        self.id = link_id
        self.client = client
        self.upstream = upstream
        self.closed = False
        self.client_gone = False
        self.operation = "unknown"
        self._answering = True  # so the first request starts a new exchange
        # (when to send, bytes, the answer's fault if these begin one, else ()); None: the end
        self._chunks: queue.SimpleQueue[tuple[float, bytes, Any] | None] = queue.SimpleQueue()

    def start(self) -> None:
        for target in (self._requests, self._read_answers, self._write_answers):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        """Cut both sides now."""
        self.closed = self.client_gone = True
        for sock in (self.client, self.upstream):
            _close(sock)

    def _hang_up_client(self) -> None:
        self.client_gone = True
        _close(self.client)

    def _requests(self) -> None:
        try:
            while chunk := self.client.recv(65536):
                if self._answering:  # the previous answer is over: a new request begins
                    self._answering = False
                    found = _TARGET.search(chunk) or _ACTION.search(chunk)
                    self.operation = found.group(1).decode() if found else "unknown"
                    self.proxy._request(self.operation)
                    held = dict(self.proxy.faults.hold).get(self.operation)
                    if held and (chunk := self._hold(chunk, held)) is None:
                        break
                self.upstream.sendall(chunk)
        except OSError:
            pass
        self.client_gone = True
        try:
            self.upstream.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _hold(self, chunk: bytes, seconds: float) -> bytes | None:
        """Keep a request's bytes here for ``seconds`` (collecting the rest of it); None if
        the client hung up meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.client], [], [], left)[0]:
                more = self.client.recv(65536)
                if not more:
                    return None
                chunk += more
        return chunk

    def _read_answers(self) -> None:
        head: bytes | None = None  # a new answer's first bytes, held until its head is whole
        answer: dict[str, Any] | None = None  # a watched answer being collected
        began = 0.0
        try:
            while chunk := self.upstream.recv(65536):
                if not self._answering:
                    self._answering = True
                    head, began = b"", time.time()
                    if self.operation in self.proxy.watch:
                        answer = {"at": began, "operation": self.operation, "data": b""}
                planned: Any = ()
                if head is not None:
                    # Hold the head (a server may write the status line apart) so the fault
                    # can be placed anywhere in the answer, whose size it gives.
                    head += chunk
                    if b"\r\n\r\n" not in head and len(head) < 65536:
                        continue
                    chunk, head = head, None
                    planned = self.proxy._plan(self, began, _size(chunk))
                    if answer is not None:
                        answer["fault"] = planned[0].kind if planned else None
                self._chunks.put((time.monotonic() + self.proxy.faults.latency, chunk, planned))
                if answer is not None:
                    answer["data"] += chunk
                    if _complete(answer["data"]):
                        self._answered(answer)
                        answer = None
        except OSError:
            pass
        finally:
            if head:
                self._chunks.put((time.monotonic(), head, None))
            if answer is not None:
                self._answered(answer)
            self._chunks.put(None)

    def _write_answers(self) -> None:
        fault: tuple[FaultEvent, int] | None = None  # the current answer's, until it strikes
        try:
            while (item := self._chunks.get()) is not None:
                due, chunk, planned = item
                if self.client_gone:
                    continue  # drain what the server still sends
                time.sleep(max(0.0, due - time.monotonic()))
                if planned != ():  # an answer's first chunk: its fault, or None
                    fault = planned
                try:
                    if fault is not None and fault[1] < len(chunk):
                        event, offset = fault
                        fault = None
                        self.client.sendall(chunk[:offset])
                        if event.kind == "drop":
                            self._hang_up_client()
                            continue
                        time.sleep(self.proxy.faults.stall_seconds)
                        event.gave_up = self.client_gone
                        chunk = chunk[offset:]
                    elif fault is not None:
                        fault = (fault[0], fault[1] - len(chunk))
                    self.client.sendall(chunk)
                except OSError:
                    self._hang_up_client()
        finally:
            self.close()

    def _answered(self, answer: dict[str, Any]) -> None:
        head, _, body = answer["data"].partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = 0
        self.proxy._answered(
            Answer(answer["at"], answer["operation"], self.id, status, body, answer.get("fault"))
        )


def _close(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _size(first: bytes) -> int:
    """An answer's length in bytes from its first chunk (headers and Content-Length), else
    that chunk's."""
    head, sep, _ = first.partition(b"\r\n\r\n")
    length = _LENGTH.search(head) if sep else None
    return len(head) + 4 + int(length.group(1)) if length else len(first)


def _complete(data: bytes) -> bool:
    """An HTTP answer is all there, by its Content-Length."""
    head, sep, body = data.partition(b"\r\n\r\n")
    length = _LENGTH.search(head) if sep else None
    return bool(length) and len(body) >= int(length.group(1))


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
