"""Throughput: sqs-supervisor with a no-op handler against a raw boto3 receive/delete loop.

Both drain the same pre-filled queues on the same endpoint, one queue per process (moto slows
down with queue depth, so depth stays at --per-queue). Prints messages/s and client CPU
seconds per 1000 messages (every process of ours, parent included) and the ratios.

    python tests/benchmarks/throughput.py                      # local moto server
    python tests/benchmarks/throughput.py --endpoint http://127.0.0.1:4566   # e.g. LocalStack
    git worktree add /tmp/b HEAD~5 && python tests/benchmarks/throughput.py --before /tmp/b

``--before DIR`` also runs the supervisor from another checkout (an older commit) in the same
loop, so a change is compared side by side on the same server, not across noisy runs.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import tempfile
import time
from pathlib import Path

import common
import psutil

# What sqs-supervisor asks for on every receive: the receive count (retry backoff, DLQ), the
# sent time (message age), the FIFO group, and the message attributes (job ids).
_RUNS = itertools.count()
SUPERVISOR_RECEIVE = {"MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"]}


def raw_worker(
    url: str, queue_url: str, start: multiprocessing.Event, attributes: bool = False
) -> None:
    """The practical limit: receive 10, delete them in one batch, until the queue stays empty."""
    sqs = common.client(url)
    extra = SUPERVISOR_RECEIVE if attributes else {}
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
    url: str, processes: int, per_queue: int, attributes: bool = False
) -> tuple[float, float]:
    sqs = common.client(url)
    urls = [common.fresh_queue(sqs, f"bench-raw-{i}", per_queue) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=raw_worker, args=(url, q, start, attributes)) for q in urls]
    for worker in workers:
        worker.start()
    procs = [psutil.Process(w.pid) for w in workers]
    start.set()
    rate, cpu = measure(sqs, urls, processes * per_queue, procs)
    for worker in workers:
        worker.join()
    return rate, cpu


def measure(sqs, urls: list[str], total: int, procs: list[psutil.Process]) -> tuple[float, float]:
    """The same stopwatch for both sides: from the first receive to an empty queue, by polling
    SQS from here (the cost lands on the server equally), CPU from psutil at those moments."""
    common.wait_for(lambda: common.remaining(sqs, urls)[0] < total, 60, interval=0.01)
    began, began_cpu = time.monotonic(), common.cpu_seconds(procs)
    common.wait_for(lambda: common.remaining(sqs, urls) == (0, 0), 600, interval=0.05)
    wall = time.monotonic() - began
    cpu = common.cpu_seconds(procs) - began_cpu
    return total / wall, cpu / total * 1000


def run_ours(
    url: str, processes: int, per_queue: int, workdir: Path, repo: Path = common.REPO
) -> tuple[float, float]:
    sqs = common.client(url)
    # Fresh names every run: moto slows to ~3 msg/s on a queue re-created under the name of
    # one a supervisor consumed from moments before (seen with every version of ours).
    run = next(_RUNS)
    names = [f"bench-ours-{run}-{i}" for i in range(processes)]
    for name in names:
        common.fresh_queue(sqs, name, per_queue)
    bindings = [
        {
            "name": name,
            "queue": name,
            "handler": "apphandlers:noop",
            "processes": 1,
            "wait_time_seconds": 1,
            "visibility_timeout": 60,
        }
        for name in names
    ]
    total = processes * per_queue
    urls = [sqs.get_queue_url(QueueName=name)["QueueUrl"] for name in names]
    supervised = common.Supervised(bindings, workdir, url, repo)
    try:
        common.wait_for(lambda: len(supervised.processes()) == processes + 1, 60)
        return measure(sqs, urls, total, supervised.processes())
    finally:
        assert supervised.stop() == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="an SQS endpoint (default: start a local moto server)")
    parser.add_argument(
        "--per-queue", type=int, default=300, help="messages per queue (and process)"
    )
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--before", type=Path, help="also run the supervisor of this checkout")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        print(
            f"endpoint {url}, {args.per_queue} messages per queue, one queue per process, "
            f"{psutil.cpu_count()} CPUs"
        )
        print("raw: receive 10 / delete batch; raw+attrs: the same, asking for what we ask for")
        header = ["P", "raw", "raw+attrs", "ours", "ours/raw", "ours/+attrs"]
        if args.before:
            header += ["before", "ours/before"]
        print("messages per second")
        print(" ".join(f"{h:>11}" for h in header))
        rows = []
        for p in counts:
            raw = run_raw(url, p, args.per_queue)
            attrs = run_raw(url, p, args.per_queue, attributes=True)
            ours = run_ours(url, p, args.per_queue, Path(tmp))
            before = (
                run_ours(url, p, args.per_queue, Path(tmp), args.before) if args.before else None
            )
            rows.append((p, raw, attrs, ours, before))
            print(_row(p, raw[0], attrs[0], ours[0], before and before[0], "{:>11.1f}"), flush=True)
        print("client CPU seconds per 1000 messages (all our processes, parent included)")
        print(" ".join(f"{h:>11}" for h in header))
        for p, raw, attrs, ours, before in rows:
            print(_row(p, raw[1], attrs[1], ours[1], before and before[1], "{:>11.3f}"))


def _row(p: int, raw: float, attrs: float, ours: float, before: float | None, fmt: str) -> str:
    cells = [f"{p:>11}", fmt.format(raw), fmt.format(attrs), fmt.format(ours)]
    cells += [f"{ours / raw:>11.2f}", f"{ours / attrs:>11.2f}"]
    if before is not None:
        cells += [fmt.format(before), f"{ours / before:>11.2f}"]
    return " ".join(cells)


if __name__ == "__main__":
    main()
