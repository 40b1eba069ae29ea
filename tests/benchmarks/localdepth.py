"""Queue depth: time per call of a receive-10 + delete-batch, and of a send-batch-10, with a
queue already holding 200, 5000 and 20,000 messages.

    python tests/benchmarks/localdepth.py                  # our local endpoint, plain moto
    python tests/benchmarks/localdepth.py --no-moto --endpoint localstack=http://127.0.0.1:4566

moto's SQS backend scans the whole queue in its message operations, so its calls slow down
with depth and filling a queue is quadratic; supervisor/ops/localindex.py is meant to make
them O(batch). An endpoint whose filling exceeds --fill-budget seconds is not filled further
and its deeper rows say "skipped" (plain moto at 20,000 would take many minutes).

Depth stays put while measuring: each sample is one send-batch-10 then one receive-10 +
delete-batch. Figures are medians over --samples samples (fewer if --sample-budget is spent).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import common

DEPTHS = (200, 5000, 20000)


@contextlib.contextmanager
def plain_moto() -> Iterator[str]:
    """moto_server as it ships, without our patches, for comparison."""
    port = common.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        common.wait_for(lambda: _answers(url), 30, 0.1)
        yield url
    finally:
        process.kill()
        process.wait()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
        return True
    except OSError:
        return False


def send_batch(sqs: Any, url: str, start: int) -> None:
    entries = [{"Id": str(i), "MessageBody": f"m-{start + i}"} for i in range(10)]
    failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    assert not failed, failed


def receive_delete(sqs: Any, url: str) -> int:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
    entries = [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
        for i, m in enumerate(messages.get("Messages", []))
    ]
    if entries:
        assert not sqs.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    return len(entries)


def measure(sqs: Any, url: str, samples: int, budget: float) -> tuple[float, float]:
    """(receive-10 + delete-batch ms, send-batch-10 ms), medians."""
    sends: list[float] = []
    receives: list[float] = []
    started = time.monotonic()
    while len(sends) < samples and (len(sends) < 3 or time.monotonic() - started < budget):
        t0 = time.perf_counter()
        send_batch(sqs, url, 10_000_000 + len(sends) * 10)
        t1 = time.perf_counter()
        got = receive_delete(sqs, url)
        t2 = time.perf_counter()
        assert got == 10, f"received {got}, not 10"
        sends.append((t1 - t0) * 1000)
        receives.append((t2 - t1) * 1000)
    return statistics.median(receives), statistics.median(sends)


def run(name: str, url: str, args: argparse.Namespace) -> list[str]:
    """One endpoint's rows, filling one queue up to each depth in turn."""
    sqs = common.client(url)
    queue = sqs.create_queue(QueueName=f"depth-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    rows: list[str] = []
    filled, fill_seconds = 0, 0.0
    recent: deque[float] = deque([0.0], maxlen=50)  # the last batches' times, seconds
    try:
        for depth in args.depths:
            # About a lower bound where calls slow down with depth (recent batches, averaged
            # so that one hiccup does not count as the rate).
            projected = fill_seconds + (depth - filled) / 10 * statistics.mean(recent)
            while filled < depth and projected <= args.fill_budget:
                t0 = time.perf_counter()
                send_batch(sqs, queue, filled)
                recent.append(time.perf_counter() - t0)
                fill_seconds += recent[-1]
                filled += 10
                projected = fill_seconds + (depth - filled) / 10 * statistics.mean(recent)
            if filled < depth:
                rows.append(f"{name:<12} {depth:>7}  skipped: filling takes ~{projected:.0f} s")
                break
            receive_ms, send_ms = measure(sqs, queue, args.samples, args.sample_budget)
            rows.append(
                f"{name:<12} {depth:>7} {receive_ms:>17.1f} {send_ms:>14.1f} {fill_seconds:>11.1f}"
            )
            print(rows[-1], flush=True)
    finally:
        sqs.delete_queue(QueueUrl=queue)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--endpoint", action="append", default=[], help="another endpoint: [NAME=]URL"
    )
    parser.add_argument("--no-local", action="store_true", help="skip our local endpoint")
    parser.add_argument("--no-moto", action="store_true", help="skip plain moto_server")
    parser.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",")], default=DEPTHS)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--sample-budget", type=float, default=15.0, help="seconds per depth")
    parser.add_argument("--fill-budget", type=float, default=120.0, help="seconds per endpoint")
    args = parser.parse_args()
    # Dummy credentials for plain moto too (common.endpoint sets them for the others).
    os.environ.update({k: os.environ.get(k, v) for k, v in common.DUMMY_CREDENTIALS.items()})

    header = f"{'endpoint':<12} {'depth':>7} {'recv10+del ms':>17} {'send10 ms':>14} {'fill s':>11}"
    print(header, flush=True)
    rows: list[str] = []
    if not args.no_local:
        with common.endpoint(None) as url:
            rows += run("local", url, args)
    if not args.no_moto:
        with plain_moto() as url:
            rows += run("moto", url, args)
    for given in args.endpoint:
        name, _, url = given.rpartition("=")
        with common.endpoint(url):
            rows += run(name or url.split("//")[-1][:12], url, args)
    print("\n" + header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
