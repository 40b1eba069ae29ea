"""Latency: idle workers long-polling, single messages sent at a steady rate; percentiles of
handler start minus SentTimestamp, for sqs-supervisor and for a raw boto3 long-poll loop.

    python tests/benchmarks/latency.py [--rate 5] [--count 100]

Goal: p50 under 50 ms locally. SentTimestamp has millisecond precision and comes from the
server's clock (the same machine here).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import common


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return at(0.50), at(0.95), at(0.99)


def send_steadily(url: str, queue_url: str, rate: float, count: int) -> None:
    sqs = common.client(url)
    interval = 1 / rate
    next_at = time.monotonic()
    for n in range(count):
        next_at += interval
        sqs.send_message(QueueUrl=queue_url, MessageBody=f'{{"n": {n}}}')
        time.sleep(max(0.0, next_at - time.monotonic()))


def raw_listener(url: str, queue_url: str, count: int, results) -> None:
    sqs = common.client(url)
    latencies: list[float] = []
    while len(latencies) < count:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=20,
            MessageSystemAttributeNames=["SentTimestamp"],
        ).get("Messages", [])
        now = time.time()
        for m in messages:
            latencies.append(now - int(m["Attributes"]["SentTimestamp"]) / 1000)
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
    results.put(latencies)


def run_raw(url: str, rate: float, count: int) -> list[float]:
    sqs = common.client(url)
    queue_url = common.fresh_queue(sqs, "latency-raw", 0)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    listener = context.Process(target=raw_listener, args=(url, queue_url, count, results))
    listener.start()
    time.sleep(1)  # the listener is in its long poll
    send_steadily(url, queue_url, rate, count)
    latencies = results.get(timeout=120)
    listener.join()
    return latencies


def run_ours(url: str, rate: float, count: int, workdir: Path) -> list[float]:
    sqs = common.client(url)
    queue_url = common.fresh_queue(sqs, "latency-ours", 0)
    log = workdir / "latency.log"
    os.environ["LATENCY_LOG"] = str(log)
    supervised = common.Supervised(
        [
            {
                "name": "latency",
                "queue": "latency-ours",
                "handler": "apphandlers:record_latency",
                "processes": 2,
                "wait_time_seconds": 20,
            }
        ],
        workdir,
        url,
    )
    try:
        common.wait_for(
            lambda: supervised.counter("sqs_supervisor_workers", state="running") == 2, 30
        )
        time.sleep(1)  # both children are in their long poll
        send_steadily(url, queue_url, rate, count)
        common.wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= count, 60)
    finally:
        assert supervised.stop() == 0
    return [float(line.split()[1]) for line in log.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint")
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        print(f"endpoint {url}: {args.count} single messages at {args.rate:g}/s to idle consumers")
        print(f"{'':10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        raw = percentiles(run_raw(url, args.rate, args.count))
        ours = percentiles(run_ours(url, args.rate, args.count, Path(tmp)))
        for name, values in (("raw boto3", raw), ("ours", ours)):
            print(f"{name:10} " + " ".join(f"{v * 1000:8.1f}" for v in values))
        print(f"{'ratio':10} " + " ".join(f"{o / r:8.2f}" for o, r in zip(ours, raw, strict=True)))


if __name__ == "__main__":
    main()
