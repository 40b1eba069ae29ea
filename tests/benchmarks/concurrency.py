"""Concurrency: jobs that wait, run as many processes or as a few processes with many slots.

Each of --jobs jobs (1000) is one GET to a loopback server that answers after --seconds (2 s),
with --in-flight (100) of them at once, so the ideal is in_flight / seconds jobs/s (50):

  a  processes = in_flight, concurrency 1, plain handler (requests)
  b  processes 2, concurrency in_flight / 2, plain handler (a thread pool, requests)
  c  processes 2, concurrency in_flight / 2, async def handler (one event loop per child)
  a1 (not run unless asked) a with batch_size 1: a one-job child then holds only one message

A child of a with the default batch_size (10) receives up to 10 messages and runs them in turn,
so when there are fewer than 10 jobs per process some processes hold none ("peak" shows the
jobs that really ran at once).

Per variant: jobs/s (first receive to an empty queue) and its ratio to the ideal; PSS of all
our processes (parent and children) at half the jobs; SQS requests per 1000 messages by
operation, counted by a reverse proxy between the supervisor and the endpoint, and requests
per second once the queue is empty (the idle cost); parent CPU seconds during the run.

Then a no-op handler on one pre-filled queue, processes 1, concurrency 1 against 8: messages/s
and client CPU seconds per 1000 messages (all our processes), to show whether the GIL (eight
job threads, the receiver and the heartbeat in one process) makes concurrency 8 slower when
the handler itself costs nothing. That run talks to the endpoint directly, not via the proxy.

    python tests/benchmarks/concurrency.py --jobs 100 --in-flight 20        # local moto server
    python tests/benchmarks/concurrency.py --endpoint http://127.0.0.1:4566  # e.g. LocalStack
    python tests/benchmarks/concurrency.py --variants a1 --noop-concurrency ""   # a1 only

The script fills queues and polls their depth directly, not through the proxy. The local
endpoint costs about 15 ms a call at any depth (supervisor/ops/localindex.py); plain moto
scanned the queue in every call, so figures on it were moto's, not ours.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import multiprocessing
import socket
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import common
import psutil

HERE = Path(__file__).resolve().parent
FORK = multiprocessing.get_context("fork")
_RUNS = itertools.count()
STALL_SECONDS = 10.0  # no progress for this long, with nothing visible: the drain is stuck
MAIN_OPERATIONS = ["ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"]


# -- the slow server: answers every GET after a fixed delay ---------------------------------------


class SlowServer:
    """HTTP/1.1 on loopback, one asyncio loop in its own process, keep-alive: every request
    is answered after ``seconds``, except ``/stats`` (counts and monotonic times, a clock the
    processes of one host share) and ``/reset``, answered at once."""

    def __init__(self, seconds: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.url = f"{self.base}/slow"
        self.process = FORK.Process(target=_serve_slow, args=(self.sock, seconds), daemon=True)

    def __enter__(self) -> SlowServer:
        self.process.start()
        self.sock.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        urllib.request.urlopen(f"{self.base}/reset", timeout=10).close()


def _serve_slow(sock: socket.socket, seconds: float) -> None:
    stats: dict[str, Any] = {}

    def reset() -> None:
        stats.update(started=0, answered=0, active=0, peak=0, first=None, last=None)

    def reply(writer: asyncio.StreamWriter, body: bytes, close: bool) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        writer.write((head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if " " in lines[0] else "/"
                close = any(line.lower() == "connection: close" for line in lines[1:])
                if path == "/stats":
                    reply(writer, json.dumps(stats).encode(), close)
                elif path == "/reset":
                    reset()
                    reply(writer, b"ok", close)
                else:
                    stats["started"] += 1
                    stats["active"] += 1
                    stats["peak"] = max(stats["peak"], stats["active"])
                    if stats["first"] is None:
                        stats["first"] = time.monotonic()
                    await asyncio.sleep(seconds)
                    stats["active"] -= 1
                    stats["answered"] += 1
                    stats["last"] = time.monotonic()
                    reply(writer, b"ok", close)
                await writer.drain()
                if close:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    reset()
    asyncio.run(main())


# -- the counting proxy: SQS requests by operation ------------------------------------------------

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def operation(headers: Any, path: str, body: bytes) -> str:
    """The SQS operation of a request: JSON protocol (X-Amz-Target), else query (Action=)."""
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    for source in (body.decode("latin-1"), urlsplit(path).query):
        action = parse_qs(source).get("Action")
        if action:
            return action[0]
    return "unknown"


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid long poll (a supervisor stopping) is no news


class _ProxyHandler(BaseHTTPRequestHandler):
    """One thread per client connection (long polls block it up to 20 s), and one upstream
    connection per client connection, kept alive. No Nagle on either side: a response written
    as headers then body would otherwise wait for the client's delayed ACK (40 ms a request)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _ProxyServer
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/__counts":
            with self.server.lock:
                body = json.dumps(self.server.counts).encode()
            self.send_response_only(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.counts[operation(self.headers, self.path, body)] += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        while True:
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
                self._upstream.connect()
                self._upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._upstream.request(self.command, self.path, body, headers)
                response = self._upstream.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if not reused:  # only a stale kept-alive connection is worth a second try
                    self.send_error(502)
                    return
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()


class CountingProxy:
    """The reverse proxy in its own process; ``counts()`` asks it for its totals so far."""

    def __init__(self, upstream: str) -> None:
        self.server = _ProxyServer(upstream)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.process = FORK.Process(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.process.start()
        self.server.socket.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)

    def counts(self) -> Counter[str]:
        with urllib.request.urlopen(f"{self.url}/__counts", timeout=10) as response:
            return Counter(json.loads(response.read()))

    def idle_counts(self, seconds: float) -> Counter[str]:
        """Requests over ``seconds``, a second after the work is done: the idle cost."""
        time.sleep(1)
        start = self.counts()
        time.sleep(seconds)
        return self.counts() - start


# -- one drain, measured --------------------------------------------------------------------------


@dataclass
class Drain:
    """From the first receive to an empty queue (polled here, directly), with CPU at both ends.
    ``stalled`` is what was left (visible, in flight) when progress stopped for good."""

    wall: float = 0.0
    began: float = 0.0  # monotonic, the clock the slow server's stats share
    parent_cpu: float = 0.0
    cpu: float = 0.0
    stalled: tuple[int, int] | None = None
    timed_out: bool = False


def drain(
    sqs: Any,
    queue_url: str,
    total: int,
    supervised: common.Supervised,
    *,
    timeout: float,
    finished: Callable[[], bool] = lambda: True,
    on_poll: Callable[[], None] = lambda: None,
) -> Drain:
    """``finished``: every job's handler has run (so no progress left to wait for);
    ``on_poll`` is called at every poll, before the first receive too."""
    deadline = time.monotonic() + 300
    while common.remaining(sqs, [queue_url])[0] >= total:
        on_poll()
        if time.monotonic() > deadline:
            raise TimeoutError("no message was received within 300 s")
        time.sleep(0.05)
    began = time.monotonic()
    parent = supervised.psutil
    parent_cpu, processes = common.cpu_seconds([parent]), supervised.processes()
    before = {p.pid: common.cpu_seconds([p]) for p in processes}
    result = Drain(began=began)
    last, last_change = None, began
    while True:
        now = time.monotonic()
        state = common.remaining(sqs, [queue_url])
        on_poll()
        if state == (0, 0):
            result.wall = now - began
            break
        if state != last:
            last, last_change = state, now
        elif state[0] == 0 and finished() and now - last_change > STALL_SECONDS:
            result.stalled, result.wall = state, last_change - began
            break
        if now - began > timeout:
            result.stalled, result.wall, result.timed_out = state, now - began, True
            break
        time.sleep(0.1)
    result.parent_cpu = common.cpu_seconds([parent]) - parent_cpu
    result.cpu = sum(common.cpu_seconds([p]) - before.get(p.pid, 0.0) for p in processes)
    result.cpu += sum(
        common.cpu_seconds([p]) for p in supervised.processes() if p.pid not in before
    )
    return result


def log_since(path: Path, offset: int) -> list[str]:
    """The supervisor's log lines since ``offset``, but for the expected start-up warning that
    a benchmark queue has no redrive policy."""
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    return [line for line in lines if "has no redrive policy" not in line]


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# -- the slow-job variants ------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    processes: int
    concurrency: int
    handler: str
    drain: Drain
    pss: int = 0
    process_count: int = 0
    up: float | None = None  # supervisor launch to all children forked
    run_counts: Counter[str] = field(default_factory=Counter)
    idle_counts: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    peak: int = 0
    first_call: float | None = None  # monotonic: the slow server's first request
    last_answer: float | None = None
    succeeded: float = 0.0
    receive_metric: float = 0.0
    exit_code: int | None = None
    left_after_stop: tuple[int, int] = (0, 0)
    log: list[str] = field(default_factory=list)


Shape = tuple[int, int, str, dict[str, Any]]  # processes, concurrency, handler, more settings


def variants(in_flight: int, pool_processes: int) -> dict[str, Shape]:
    slots = max(1, in_flight // pool_processes)
    return {
        "a": (in_flight, 1, "slow_get", {}),
        "b": (pool_processes, slots, "slow_get", {}),
        "c": (pool_processes, slots, "slow_get_async", {}),
        "a1": (in_flight, 1, "slow_get", {"batch_size": 1}),
    }


def run_slow(
    args: argparse.Namespace,
    name: str,
    shape: Shape,
    url: str,
    proxy: CountingProxy,
    slow: SlowServer,
    workdir: Path,
) -> Result:
    processes, concurrency, handler, settings = shape
    sqs = common.client(url)
    queue = f"bench-conc-{next(_RUNS)}-{name}-{int(time.time())}"
    queue_url = common.fresh_queue(sqs, queue, args.jobs, visibility=60)
    binding = {
        "name": f"conc-{name}",
        "queue": queue,
        "handler": f"benchhandlers:{handler}",
        "processes": processes,
        "concurrency": concurrency,
        "wait_time_seconds": 20,
        "visibility_timeout": 60,
        "options": {"url": slow.url},
        **settings,
    }
    slow.reset()
    log_path, offset = workdir / "supervisor.log", log_size(workdir / "supervisor.log")
    start_counts = proxy.counts()
    supervised = common.Supervised([binding], workdir, proxy.url, extra_path=[HERE])
    launched = time.monotonic()
    result = Result(name, processes, concurrency, handler, Drain())
    half = args.jobs / 2

    def sample() -> None:
        if result.up is None and len(supervised.psutil.children()) >= processes:
            result.up = time.monotonic() - launched
        if not result.pss and slow.stats()["answered"] >= half:
            members = supervised.processes()
            result.pss, result.process_count = common.pss_bytes(members), len(members)

    try:
        ideal = args.in_flight / args.seconds
        result.drain = drain(
            sqs,
            queue_url,
            args.jobs,
            supervised,
            timeout=max(120.0, 10 * args.jobs / ideal),
            finished=lambda: slow.stats()["answered"] >= args.jobs,
            on_poll=sample,
        )
        if not result.pss:
            members = supervised.processes()
            result.pss, result.process_count = common.pss_bytes(members), len(members)
        result.run_counts = proxy.counts() - start_counts
        stats = slow.stats()
        result.answered, result.peak = stats["answered"], stats["peak"]
        result.first_call, result.last_answer = stats["first"], stats["last"]
        result.succeeded = supervised.counter(
            "sqs_supervisor_messages_processed_total", outcome="succeeded"
        )
        result.receive_metric = supervised.counter("sqs_supervisor_receive_requests_total")
        result.idle_counts = proxy.idle_counts(args.idle_seconds)
    finally:
        result.exit_code = supervised.stop()
    result.left_after_stop = common.remaining(sqs, [queue_url])
    sqs.delete_queue(QueueUrl=queue_url)
    result.log = log_since(log_path, offset)
    return result


# -- the no-op comparison -------------------------------------------------------------------------


def run_noop(
    url: str, concurrency: int, messages: int, workdir: Path
) -> tuple[Drain, float, list[str]]:
    """One drain; also the ReceiveMessage calls it made (the supervisor's own counter)."""
    sqs = common.client(url)
    queue = f"bench-noop-{next(_RUNS)}-c{concurrency}-{int(time.time())}"
    queue_url = common.fresh_queue(sqs, queue, messages, visibility=60)
    binding = {
        "name": f"noop-c{concurrency}",
        "queue": queue,
        "handler": "benchhandlers:noop",
        "processes": 1,
        "concurrency": concurrency,
        "wait_time_seconds": 20,
        "visibility_timeout": 60,
    }
    log_path, offset = workdir / "supervisor.log", log_size(workdir / "supervisor.log")
    supervised = common.Supervised([binding], workdir, url, extra_path=[HERE])
    try:
        common.wait_for(lambda: len(supervised.processes()) == 2, 60)
        result = drain(sqs, queue_url, messages, supervised, timeout=max(120.0, messages))
        receives = supervised.counter("sqs_supervisor_receive_requests_total")
    finally:
        code = supervised.stop()
    log = log_since(log_path, offset)
    if code != 0:
        log.append(f"(supervisor exited {code})")
    left = common.remaining(sqs, [queue_url])
    if left != (0, 0):
        log.append(f"(left in the queue after stop: {left[0]} visible, {left[1]} in flight)")
    sqs.delete_queue(QueueUrl=queue_url)
    return result, receives, log


# -- output ---------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def note(d: Drain) -> str:
    if d.timed_out:
        return f"timed out, {d.stalled[0]} visible {d.stalled[1]} in flight"
    if d.stalled:
        return f"stalled: {d.stalled[1]} stayed in flight"
    return ""


def phases(r: Result) -> list[str]:
    """Where the drain's time went: before the first call, in calls, after the last."""
    if r.first_call is None or r.last_answer is None or not r.drain.wall:
        return ["-", "-", "-"]
    end = r.drain.began + r.drain.wall
    lead, calls = r.first_call - r.drain.began, r.last_answer - r.first_call
    return [f"{lead:.2f}", f"{calls:.2f}", f"{end - r.last_answer:.2f}"]


def request_tables(
    results: Sequence[Any], jobs: int, idle_seconds: float, during: str, idle: str
) -> None:
    """Requests per 1000 messages during the run and per second when idle, by operation, of
    results with ``name``, ``run_counts`` and ``idle_counts`` (this script's and its peers')."""
    ops = operations(results)
    print(f"\nSQS requests per 1000 messages, {during} (via the proxy)")
    rows = []
    for r in results:
        cells = [f"{r.run_counts.get(op, 0) * 1000 / jobs:.1f}" for op in ops]
        rows.append([r.name, *cells, f"{r.run_counts.total() * 1000 / jobs:.1f}"])
    table(["variant", *ops, "total"], rows)

    print(f"\nSQS requests per second when idle ({idle}, {idle_seconds:g} s)")
    rows = []
    for r in results:
        cells = [f"{r.idle_counts.get(op, 0) / idle_seconds:.2f}" for op in ops]
        rows.append([r.name, *cells, f"{r.idle_counts.total() / idle_seconds:.2f}"])
    table(["variant", *ops, "total"], rows)


def operations(results: list[Result]) -> list[str]:
    seen = set().union(*(set(r.run_counts) | set(r.idle_counts) for r in results))
    return [op for op in MAIN_OPERATIONS if op in seen] + sorted(seen - set(MAIN_OPERATIONS))


def report_slow(args: argparse.Namespace, results: list[Result]) -> None:
    ideal = args.in_flight / args.seconds
    print(f"\njobs: {args.jobs} x {args.seconds:g} s calls, {args.in_flight} in flight")
    print(f"ideal {ideal:.1f} jobs/s; jobs/s and CPU from the first receive to an empty queue")
    print("up: supervisor launch to all children forked; peak: handler calls at once;")
    print("PSS: all our processes (procs) when half the jobs were done")
    print("lead: first receive to first call; calls: first call to last answer (ideal")
    print(f"{args.jobs / ideal:g} s); tail: last answer to an empty queue")
    header = ["variant", "P", "conc", "handler", "up s", "peak", "jobs/s", "/ideal"]
    header += ["lead s", "calls s", "tail s", "PSS MB"]
    header.append("procs")
    header += ["parent CPU s", "all CPU s", "note"]
    rows = []
    for r in results:
        rate = args.jobs / r.drain.wall if r.drain.wall else 0.0
        rows.append(
            [
                r.name,
                str(r.processes),
                str(r.concurrency),
                r.handler,
                f"{r.up:.1f}" if r.up is not None else "-",
                str(r.peak),
                f"{rate:.1f}",
                f"{rate / ideal:.2f}",
                *phases(r),
                f"{r.pss / 2**20:.0f}",
                str(r.process_count),
                f"{r.drain.parent_cpu:.2f}",
                f"{r.drain.cpu:.2f}",
                note(r.drain),
            ]
        )
    table(header, rows)

    request_tables(
        results, args.jobs, args.idle_seconds, "supervisor start to empty queue", "queue empty"
    )

    print("\nchecks")
    for r in results:
        print(
            f"  {r.name}: handler calls answered {r.answered} (peak {r.peak} at once), "
            f"succeeded metric {r.succeeded:.0f}, ReceiveMessage proxy "
            f"{r.run_counts.get('ReceiveMessage', 0)} / metric {r.receive_metric:.0f}, "
            f"exit {r.exit_code}, left after stop {r.left_after_stop}, "
            f"{len(r.log)} supervisor log line(s)"
        )
        for line in r.log[:8]:
            print(f"      {line[:240]}")


def report_noop(url: str, args: argparse.Namespace, messages: int, workdir: Path) -> None:
    counts = [int(c) for c in args.noop_concurrency.split(",") if c]
    if not counts:
        return
    print(f"\nno-op handler, {messages} messages on one queue, processes 1 (direct to {url})")
    rows, logs = [], []
    for concurrency in counts:
        result, receives, log = run_noop(url, concurrency, messages, workdir)
        rate = messages / result.wall if result.wall else 0.0
        rows.append(
            [
                str(concurrency),
                f"{rate:.1f}",
                f"{result.cpu / messages * 1000:.3f}",
                f"{result.parent_cpu / messages * 1000:.3f}",
                f"{receives * 1000 / messages:.0f}",
                note(result),
            ]
        )
        logs.append((concurrency, log))
    table(["conc", "msg/s", "CPU s/1000", "parent CPU s/1000", "receives/1000", "note"], rows)
    for concurrency, log in logs:
        if log:
            print(f"  concurrency {concurrency}: {len(log)} supervisor log line(s)")
            for line in log[:8]:
                print(f"      {line[:240]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="an SQS endpoint (default: start a local moto server)")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=100, help="jobs at once, every variant")
    parser.add_argument("--variants", default="a,b,c", help="of a, b, c, a1; empty for none")
    parser.add_argument("--seconds", type=float, default=2.0, help="the slow call's duration")
    parser.add_argument("--pool-processes", type=int, default=2, help="processes of b and c")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=20.0,
        help="idle window after the drain; at least one long poll (20 s), since every child"
        " starts its next poll as the queue empties, so a shorter window may see none",
    )
    parser.add_argument(
        "--noop-messages",
        type=int,
        help="messages of the no-op runs (default 2000 on --endpoint, 300 on local moto)",
    )
    parser.add_argument("--noop-concurrency", default="1,8", help="empty to skip the no-op runs")
    args = parser.parse_args()
    shapes = variants(args.in_flight, args.pool_processes)
    chosen = [v for v in args.variants.split(",") if v]
    unknown = set(chosen) - set(shapes)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    noop_messages = args.noop_messages or (2000 if args.endpoint else 300)
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(f"endpoint {url}, {psutil.cpu_count()} CPUs")
        if chosen:
            results = []
            with SlowServer(args.seconds) as slow, CountingProxy(url) as proxy:
                for name in chosen:
                    results.append(run_slow(args, name, shapes[name], url, proxy, slow, workdir))
                    print(f"  {name} done in {results[-1].drain.wall:.1f} s", flush=True)
            report_slow(args, results)
        report_noop(url, args, noop_messages, workdir)


if __name__ == "__main__":
    main()
