"""Throughput: sqs-supervisor with a no-op handler against a raw boto3 receive/delete loop.

Both drain the same pre-filled queues on the same endpoint, one queue per process (depth
stays at --per-queue). Three columns per P (processes):

  raw        receive 10 (long poll 1 s), delete them in one batch, until the queue stays empty
  raw+attrs  the same, asking for what sqs-supervisor asks for on every receive (all system
             and message attributes): the fair baseline for ours
  ours       sqs-supervisor, P processes of one binding each, handler ``apphandlers:noop``

    python tests/benchmarks/throughput.py                      # local moto server
    python tests/benchmarks/throughput.py --endpoint http://127.0.0.1:4566   # e.g. LocalStack
    git worktree add /tmp/b HEAD~5 && python tests/benchmarks/throughput.py --before /tmp/b
    python tests/benchmarks/throughput.py --endpoint http://127.0.0.1:4566 --processes "" \\
        --instructions                                         # only the callgrind table
    python tests/benchmarks/throughput.py --concurrency 8      # ours with 8 jobs per child

``--before DIR`` also runs the supervisor from another checkout (an older commit) in the same
loop, so a change is compared side by side on the same server, not across noisy runs.

Tables, one row per P, with ratios ours/raw, ours/raw+attrs (and ours/before):

- messages per second: from the first receive to an empty queue, as seen by polling the queue
  depth from this script (directly, not through the proxy), the same stopwatch for every column;
- client CPU seconds per 1000 messages over that window (psutil; for ours every process, the
  parent included). Noisy on a shared machine: compare columns of one run, not runs;
- SQS requests per 1000 messages, from the workers' launch to the empty queue (start-up calls
  of ours included), counted by a reverse proxy (``concurrency.CountingProxy``) that every
  worker talks to; then the same by operation. The raw loop's floor is 200: a receive and a
  delete batch per 10 messages. The proxy (one Python process) adds a hop and CPU of its own
  to every call of every column, so rates through it are lower (by up to ~40% on 2 CPUs) and
  their ratios closer to 1: so the counted runs are a second pass, after the direct one that
  gives the rate and CPU tables (``--no-requests`` skips it).

``--instructions`` (needs valgrind) adds client CPU as instructions, a count that does not
move with the machine's load, at P=1: raw+attrs and ours (and --before) run once more each
under ``valgrind --tool=callgrind``, twice, draining N1 and N2 messages (--instructions-n1,
--instructions-n2: 300 and 900), and each process's instructions per message are
(I(N2) - I(N1)) / (N2 - N1), so start-up (imports, connections) cancels. Forked children are
traced too (one callgrind file per process): "parent" is the supervisor's arbiter, "workers"
its children (for raw+attrs the loop's own process), with ratios against raw+attrs. Time-driven
work (the parent's 1 s select loop) is counted per message at valgrind's pace (~50x slower
than native), so the parent's share is an upper bound. Each traced run of ours takes about a
minute at 300..900 messages on LocalStack; --callgrind-dir keeps the files for
``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import psutil
from concurrency import MAIN_OPERATIONS, CountingProxy, table

HERE = Path(__file__).resolve().parent
# What sqs-supervisor asks for on every receive: the receive count (retry backoff, DLQ), the
# sent time (message age), the FIFO group, and the message attributes (job ids).
_RUNS = itertools.count()
SUPERVISOR_RECEIVE = {"MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"]}
TRACE_TIMEOUT = 1200.0  # one run under callgrind, which is ~50x slower than native
TRACE_ENV = {"PYTHONHASHSEED": "0"}  # the same dict layouts in every traced run


@dataclass
class Run:
    rate: float  # messages per second, first receive to an empty queue
    cpu: float  # client CPU seconds per 1000 messages over the same window
    requests: Counter[str] = field(default_factory=Counter)  # by operation, via the proxy


def raw_worker(
    url: str, queue_url: str, start: multiprocessing.Event | None, attributes: bool = False
) -> None:
    """The practical limit: receive 10, delete them in one batch, until the queue stays empty."""
    sqs = common.client(url)
    extra = SUPERVISOR_RECEIVE if attributes else {}
    if start is not None:
        start.wait()
    empties = 0
    while empties < 3:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **extra
        ).get("Messages", [])
        if not messages:
            empties += 1
            continue
        empties = 0
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def run_raw(
    url: str,
    processes: int,
    per_queue: int,
    attributes: bool = False,
    proxy: CountingProxy | None = None,
) -> Run:
    sqs = common.client(url)
    urls = [common.fresh_queue(sqs, f"bench-raw-{i}", per_queue) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    start = context.Event()
    worker_url = proxy.url if proxy else url
    args = [(worker_url, q, start, attributes) for q in urls]
    counted = proxy.counts() if proxy else Counter()
    workers = [context.Process(target=raw_worker, args=a) for a in args]
    for worker in workers:
        worker.start()
    procs = [psutil.Process(w.pid) for w in workers]
    start.set()
    rate, cpu = measure(sqs, urls, processes * per_queue, procs)
    requests = proxy.counts() - counted if proxy else Counter()
    for worker in workers:
        worker.join()
    for queue_url in urls:
        sqs.delete_queue(QueueUrl=queue_url)
    return Run(rate, cpu, requests)


def measure(sqs, urls: list[str], total: int, procs: list[psutil.Process]) -> tuple[float, float]:
    """The same stopwatch for both sides: from the first receive to an empty queue, by polling
    SQS from here (the cost lands on the server equally), CPU from psutil at those moments."""
    common.wait_for(lambda: common.remaining(sqs, urls)[0] < total, 60, interval=0.01)
    began, began_cpu = time.monotonic(), common.cpu_seconds(procs)
    common.wait_for(lambda: common.remaining(sqs, urls) == (0, 0), 600, interval=0.05)
    wall = time.monotonic() - began
    cpu = common.cpu_seconds(procs) - began_cpu
    return total / wall, cpu / total * 1000


CONCURRENCY = [1]  # --concurrency: ours' binding setting, for every run of ours


def _bindings(names: list[str]) -> list[dict[str, object]]:
    return [
        {
            "name": name,
            "queue": name,
            "handler": "apphandlers:noop",
            "processes": 1,
            "concurrency": CONCURRENCY[0],
            "wait_time_seconds": 1,
            "visibility_timeout": 60,
        }
        for name in names
    ]


def run_ours(
    url: str,
    processes: int,
    per_queue: int,
    workdir: Path,
    repo: Path = common.REPO,
    proxy: CountingProxy | None = None,
) -> Run:
    sqs = common.client(url)
    # Fresh names every run: moto slows to ~3 msg/s on a queue re-created under the name of
    # one a supervisor consumed from moments before (seen with every version of ours).
    run = next(_RUNS)
    names = [f"bench-ours-{run}-{i}" for i in range(processes)]
    for name in names:
        common.fresh_queue(sqs, name, per_queue)
    total = processes * per_queue
    urls = [sqs.get_queue_url(QueueName=name)["QueueUrl"] for name in names]
    counted = proxy.counts() if proxy else Counter()
    supervised = common.Supervised(_bindings(names), workdir, proxy.url if proxy else url, repo)
    try:
        common.wait_for(lambda: len(supervised.processes()) == processes + 1, 60)
        rate, cpu = measure(sqs, urls, total, supervised.processes())
        requests = proxy.counts() - counted if proxy else Counter()
        return Run(rate, cpu, requests)
    finally:
        assert supervised.stop() == 0
        for queue_url in urls:
            sqs.delete_queue(QueueUrl=queue_url)


# -- instructions per message, under callgrind ----------------------------------------------------


@dataclass
class Traced:
    """Instructions of one traced run: the launched process (ours: the arbiter; raw: none, its
    one process is the worker) and the workers (ours: every forked child)."""

    parent: int
    workers: int
    processes: int
    seconds: float


def callgrind(outdir: Path) -> list[str]:
    outdir.mkdir(parents=True)
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/cg.%p", "-q"]


def instructions(outdir: Path) -> dict[int, int]:
    """Instructions by pid: the ``summary:`` line (near the top) or ``totals:`` (the end)."""
    counts = {}
    for path in outdir.glob("cg.*"):
        with path.open("rb") as f:
            found = re.search(rb"^summary: (\d+)", f.read(1 << 16), re.M)
        found = found or re.search(rb"^(?:summary|totals): (\d+)", path.read_bytes(), re.M)
        if not found:
            raise RuntimeError(f"no instruction count in {path}")
        counts[int(path.name.split(".")[1])] = int(found.group(1))
    return counts


def trace_raw(url: str, messages: int, outdir: Path) -> Traced:
    """raw+attrs at P=1: ``raw_worker`` in a process of its own under callgrind."""
    sqs = common.client(url)
    queue_url = common.fresh_queue(sqs, f"bench-cg-raw-{next(_RUNS)}-{time.time_ns()}", messages)
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import throughput; "
        f"throughput.raw_worker({url!r}, {queue_url!r}, None, attributes=True)"
    )
    began = time.monotonic()
    try:
        subprocess.run(
            [*callgrind(outdir), sys.executable, "-c", code],
            env={**os.environ, **TRACE_ENV},
            check=True,
            timeout=TRACE_TIMEOUT,
        )
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
    counts = instructions(outdir)
    return Traced(0, sum(counts.values()), len(counts), time.monotonic() - began)


def trace_ours(url: str, messages: int, workdir: Path, outdir: Path, repo: Path) -> Traced:
    """The whole supervisor at P=1 under callgrind, stopped (SIGTERM) once the queue is empty."""

    def drained(supervised: common.Supervised, sqs: Any, queue_url: str, began: float) -> float:
        common.wait_for(
            lambda: common.remaining(sqs, [queue_url]) == (0, 0), TRACE_TIMEOUT, interval=0.5
        )
        return began

    return _trace("ours", messages, url, workdir, outdir, repo, drained)


def trace_idle(url: str, seconds: float, workdir: Path, outdir: Path, repo: Path) -> Traced:
    """Ours at P=1 on an empty queue for about ``seconds`` under callgrind: what the parent's
    timers (housekeeping 4 times a second, gauges, memory checks) cost per second of wall
    time, whatever the pace of the run."""

    def idle(supervised: common.Supervised, sqs: Any, queue_url: str, began: float) -> float:
        # Start-up under callgrind takes ~20 s; the interval counts from when the one message
        # is gone, seen from SQS: scraping the parent's metrics to see it consuming costs the
        # parent about as much per scrape as a second of its timers, and start-up's length
        # (so the number of scrapes) varies by seconds, which made the rate come out negative.
        common.wait_for(
            lambda: common.remaining(sqs, [queue_url]) == (0, 0), TRACE_TIMEOUT, interval=0.5
        )
        began = time.monotonic()
        time.sleep(seconds)  # the interval measured, not a wait for anything
        return began

    return _trace("idle", 1, url, workdir, outdir, repo, idle)


Wait = Callable[[common.Supervised, Any, str, float], float]


def _trace(
    label: str, messages: int, url: str, workdir: Path, outdir: Path, repo: Path, wait: Wait
) -> Traced:
    """Ours under callgrind on a fresh queue of ``messages``: ``wait`` returns when the run is
    over, with the moment its seconds count from; then SIGTERM, and the instructions."""
    sqs = common.client(url)
    name = f"bench-cg-{label}-{next(_RUNS)}-{time.time_ns()}"
    queue_url = common.fresh_queue(sqs, name, messages)
    began = time.monotonic()
    supervised = common.Supervised(
        _bindings([name]), workdir, url, repo, prefix=callgrind(outdir), env=TRACE_ENV
    )
    try:
        began = wait(supervised, sqs, queue_url, began)
    finally:
        try:
            code = supervised.stop(timeout=TRACE_TIMEOUT)
        except subprocess.TimeoutExpired:
            supervised.process.kill()
            raise
        finally:
            sqs.delete_queue(QueueUrl=queue_url)
    seconds = time.monotonic() - began
    if code != 0:
        raise RuntimeError(f"the traced supervisor exited {code}, see {workdir}/supervisor.log")
    counts = instructions(outdir)
    parent = counts.pop(supervised.process.pid)
    return Traced(parent, sum(counts.values()), len(counts) + 1, seconds)


def report_instructions(args: argparse.Namespace, url: str, workdir: Path, outdir: Path) -> None:
    n1, n2 = args.instructions_n1, args.instructions_n2
    print(
        f"\ninstructions per message, P=1, under callgrind: (I({n2}) - I({n1})) / {n2 - n1} "
        "per process, so start-up cancels"
    )
    print("parent: the arbiter; workers: its children (raw+attrs: the loop's one process)")
    sides: list[tuple[str, Callable[[int, Path], Traced]]] = [
        ("raw+attrs", lambda n, d: trace_raw(url, n, d)),
        ("ours", lambda n, d: trace_ours(url, n, workdir, d, common.REPO)),
    ]
    if args.before:
        sides.append(("before", lambda n, d: trace_ours(url, n, workdir, d, args.before)))
    results: dict[str, tuple[float, float, str, str]] = {}
    spans: dict[str, float] = {}  # label -> wall seconds the larger run took beyond the smaller
    for label, trace in sides:
        runs = []
        for n in (n1, n2):
            runs.append(trace(n, outdir / f"{label.replace('+', '-')}-{n}"))
            print(f"  traced {label}, {n} messages: {runs[-1].seconds:.0f} s", flush=True)
        small, large = runs
        parent = (large.parent - small.parent) / (n2 - n1)
        workers = (large.workers - small.workers) / (n2 - n1)
        procs = str(large.processes)
        if small.processes != large.processes:
            procs = f"{small.processes}/{large.processes}"
        results[label] = (parent, workers, procs, f"{small.seconds:.0f}+{large.seconds:.0f}")
        spans[label] = large.seconds - small.seconds
    raw_workers = results["raw+attrs"][1]
    rows = []
    for label, (parent, workers, procs, seconds) in results.items():
        rows.append(
            [
                label,
                _k(parent) if label != "raw+attrs" else "-",
                _k(workers),
                _k(parent + workers),
                f"{(parent + workers) / raw_workers:.2f}",
                f"{workers / raw_workers:.2f}",
                procs,
                seconds,
            ]
        )
    if args.before:
        ours, before = results["ours"], results["before"]
        ratios = [ours[0] / before[0], ours[1] / before[1], sum(ours[:2]) / sum(before[:2])]
        rows.append(["ours/before", *(f"{r:.2f}" for r in ratios), "", "", "", ""])
    header = ["", "parent", "workers", "total", "total/+attrs", "workers/+attrs", "procs"]
    table([*header, "run s"], rows)
    if args.idle_seconds:
        _report_timers(args, url, workdir, outdir, results, spans)


def _report_timers(
    args: argparse.Namespace,
    url: str,
    workdir: Path,
    outdir: Path,
    results: dict[str, tuple[float, float, str, str]],
    spans: dict[str, float],
) -> None:
    """The parent's timers run by the wall clock, and under callgrind each message takes ~50x
    its native time, so the table above charges each message ~50x its native share of them.
    Two idle runs give their rate per second; removing rate x the runs' extra wall time
    leaves the parent's work per message (natively the timers add rate / msg-per-s)."""
    s1, s2 = args.idle_seconds, 3 * args.idle_seconds
    n1, n2 = args.instructions_n1, args.instructions_n2
    labels = [label for label in results if label != "raw+attrs"]
    print(f"\nthe parent's timers: idle runs of {s1:g} s and {s2:g} s under callgrind")
    rows = []
    raw_workers = results["raw+attrs"][1]
    for label in labels:
        repo = common.REPO if label == "ours" else args.before
        idle = [
            trace_idle(url, seconds, workdir, outdir / f"idle-{label}-{seconds:g}", repo)
            for seconds in (s1, s2)
        ]
        rate = (idle[1].parent - idle[0].parent) / (idle[1].seconds - idle[0].seconds)
        parent, workers = results[label][:2]
        timers = rate * spans[label] / (n2 - n1)
        rows.append(
            [
                label,
                f"{rate / 1000:.0f}k/s",
                _k(timers),
                _k(parent - timers),
                _k(parent - timers + workers),
                f"{(parent - timers + workers) / raw_workers:.2f}",
            ]
        )
    header = ["", "timers", "in the table", "parent w/o", "total w/o", "total/+attrs"]
    table(header, rows)


def _k(instructions: float) -> str:
    return f"{instructions / 1000:.1f}k"


# -- the throughput tables ------------------------------------------------------------------------


def report_throughput(
    args: argparse.Namespace,
    counts: list[int],
    url: str,
    workdir: Path,
    proxy: CountingProxy | None,
) -> None:
    header = ["P", "raw", "raw+attrs", "ours", "ours/raw", "ours/+attrs"]
    if args.before:
        header += ["before", "ours/before"]
    print("messages per second")
    print(" ".join(f"{h:>11}" for h in header))
    rows = []
    for p in counts:
        raw = run_raw(url, p, args.per_queue, proxy=proxy)
        attrs = run_raw(url, p, args.per_queue, attributes=True, proxy=proxy)
        ours = run_ours(url, p, args.per_queue, workdir, proxy=proxy)
        before = (
            run_ours(url, p, args.per_queue, workdir, args.before, proxy=proxy)
            if args.before
            else None
        )
        rows.append((p, raw, attrs, ours, before))
        print(_row(p, raw.rate, attrs.rate, ours.rate, before and before.rate, "{:>11.1f}"))
        sys.stdout.flush()
    print("client CPU seconds per 1000 messages (all our processes, parent included)")
    print(" ".join(f"{h:>11}" for h in header))
    for p, raw, attrs, ours, before in rows:
        print(_row(p, raw.cpu, attrs.cpu, ours.cpu, before and before.cpu, "{:>11.3f}"))
    if proxy is None:
        return
    print("SQS requests per 1000 messages (launch to an empty queue, counted by the proxy)")
    print(" ".join(f"{h:>11}" for h in header))
    messages = {p: p * args.per_queue for p in counts}
    for p, *runs in rows:
        per = [r and r.requests.total() * 1000 / messages[p] for r in runs]
        print(_row(p, *per, "{:>11.1f}"))
    print("SQS requests per 1000 messages by operation")
    seen = set().union(*(set(r.requests) for _, *runs in rows for r in runs if r))
    ops = [op for op in MAIN_OPERATIONS if op in seen] + sorted(seen - set(MAIN_OPERATIONS))
    names = ["raw", "raw+attrs", "ours", "before"]
    lines = []
    for p, *runs in rows:
        for name, r in zip(names, runs, strict=True):
            if r is not None:
                cells = [f"{r.requests.get(op, 0) * 1000 / messages[p]:.1f}" for op in ops]
                lines.append([str(p), name, *cells])
    table(["P", "", *ops], lines)


def _row(p: int, raw: float, attrs: float, ours: float, before: float | None, fmt: str) -> str:
    cells = [f"{p:>11}", fmt.format(raw), fmt.format(attrs), fmt.format(ours)]
    cells += [f"{ours / raw:>11.2f}", f"{ours / attrs:>11.2f}"]
    if before is not None:
        cells += [fmt.format(before), f"{ours / before:>11.2f}"]
    return " ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="an SQS endpoint (default: start a local moto server)")
    parser.add_argument(
        "--per-queue", type=int, default=300, help="messages per queue (and process)"
    )
    parser.add_argument("--processes", default="1,2,4", help="empty: no throughput tables")
    parser.add_argument("--before", type=Path, help="also run the supervisor of this checkout")
    parser.add_argument(
        "--no-requests",
        action="store_true",
        help="skip the second pass, through a counting proxy, that gives requests per 1000",
    )
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per message at P=1 (callgrind)"
    )
    parser.add_argument("--instructions-n1", type=int, default=300, help="messages, first run")
    parser.add_argument("--instructions-n2", type=int, default=900, help="messages, second run")
    parser.add_argument("--callgrind-dir", type=Path, help="keep the callgrind files here")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="with --instructions: idle runs of this and 3x this long measure the parent's"
        " timers (0: skip; much under 10 s, start-up's spread swamps them)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="ours: jobs per child (threads), default 1"
    )
    args = parser.parse_args()
    CONCURRENCY[0] = args.concurrency
    counts = [int(p) for p in args.processes.split(",") if p]
    if args.instructions:
        if not shutil.which("valgrind"):
            parser.error("--instructions needs valgrind on PATH")
        if args.instructions_n2 <= args.instructions_n1:
            parser.error("--instructions-n2 must be more than --instructions-n1")
        if args.callgrind_dir and args.callgrind_dir.exists() and any(args.callgrind_dir.iterdir()):
            parser.error(f"--callgrind-dir {args.callgrind_dir} is not empty")
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(
            f"endpoint {url}, {args.per_queue} messages per queue, one queue per process, "
            f"{psutil.cpu_count()} CPUs, ours at concurrency {args.concurrency}"
        )
        if counts:
            began = time.monotonic()
            print("raw: receive 10 / delete batch; raw+attrs: the same, asking for what we ask for")
            report_throughput(args, counts, url, workdir, None)
            if not args.no_requests:
                print("\nagain, the workers through a counting proxy (rates and CPU: see above)")
                with CountingProxy(url) as proxy:
                    report_throughput(args, counts, url, workdir, proxy)
            print(f"(throughput runs: {time.monotonic() - began:.0f} s)")
        if args.instructions:
            began = time.monotonic()
            outdir = args.callgrind_dir or workdir / "callgrind"
            report_instructions(args, url, workdir, outdir)
            print(f"(traced runs: {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
