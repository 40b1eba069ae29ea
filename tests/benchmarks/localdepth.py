"""Queue depth: time per call of a receive-10 + delete-batch, and of a send-batch-10, with a
queue already holding 200, 5000 and 20,000 messages.

    python tests/benchmarks/localdepth.py                  # our local endpoint, plain moto
    python tests/benchmarks/localdepth.py --no-moto --endpoint localstack=http://127.0.0.1:4566

moto's SQS backend scans the whole queue in its message operations, so its calls slow down
with depth and filling a queue is quadratic; supervisor/ops/localindex.py is meant to make
them O(batch). An endpoint whose filling exceeds --fill-budget seconds is not filled further
and its deeper rows say "skipped" (plain moto at 20,000 would take many minutes).

Depth stays put while measuring: each sample is one send-batch-10 then one receive-10 +
delete-batch, from boto3, then the same again from a bare HTTP client (one kept connection, the
JSON built by hand): the "http" columns are the endpoint's own time per call, the boto3 ones
add the client's (signing, serializing, parsing: several ms here). Figures are medians over
--samples samples (fewer if --sample-budget is spent).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import common

DEPTHS = (200, 5000, 20000)
WIDTHS = (18, 8, 17, 8)


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


class BareSqs:
    """SQS's JSON protocol over one kept http.client connection: what a call costs the
    endpoint, with next to nothing spent by the client (loopback endpoints check no
    signature, so the Authorization header is a dummy)."""

    HEADERS = {
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request,"
        " SignedHeaders=host, Signature=0",
    }

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {**self.HEADERS, "X-Amz-Target": f"AmazonSQS.{action}"}
        self.connection.request("POST", "/", json.dumps(body), headers)
        response = self.connection.getresponse()
        answer = json.loads(response.read() or b"{}")
        assert response.status == 200, answer
        return answer

    def send_batch(self, url: str, start: int) -> None:
        entries = [{"Id": str(i), "MessageBody": f"m-{start + i}"} for i in range(10)]
        assert not self.call("SendMessageBatch", {"QueueUrl": url, "Entries": entries}).get(
            "Failed"
        )

    def receive_delete(self, url: str) -> int:
        body = {"QueueUrl": url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 60}
        messages = self.call("ReceiveMessage", body).get("Messages", [])
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        if entries:
            deleted = self.call("DeleteMessageBatch", {"QueueUrl": url, "Entries": entries})
            assert not deleted.get("Failed"), deleted
        return len(entries)


class Target:
    """One endpoint's queue, filled step by step to each depth, and its samples there."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.sqs = common.client(url)
        self.bare = BareSqs(url)
        self.queue = self.sqs.create_queue(QueueName=f"depth-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        self.filled, self.fill_seconds = 0, 0.0
        self.recent: deque[float] = deque([0.0], maxlen=50)  # the last batches' times, s
        self.columns: list[list[float]] = [[], [], [], []]
        self.skipped = False

    def fill(self, depth: int, budget: float) -> float:
        """Fill up to ``depth`` unless the projected time exceeds ``budget``; returns the
        projection (about a lower bound where calls slow down with depth; recent batches are
        averaged so that one hiccup does not count as the rate)."""
        projected = self.fill_seconds + (depth - self.filled) / 10 * statistics.mean(self.recent)
        while self.filled < depth and projected <= budget:
            t0 = time.perf_counter()
            send_batch(self.sqs, self.queue, self.filled)
            self.recent.append(time.perf_counter() - t0)
            self.fill_seconds += self.recent[-1]
            self.filled += 10
            projected = self.fill_seconds + (depth - self.filled) / 10 * statistics.mean(
                self.recent
            )
        self.skipped = self.filled < depth
        return projected

    def sample(self, n: int) -> None:
        """One send-batch-10 + receive-10 + delete-batch from boto3, then from the bare
        client; depth stays put."""
        for column, send, receive in (
            (
                0,
                functools.partial(send_batch, self.sqs),
                functools.partial(receive_delete, self.sqs),
            ),
            (2, self.bare.send_batch, self.bare.receive_delete),
        ):
            t0 = time.perf_counter()
            send(self.queue, 10_000_000 + n * 20 + column * 5)
            t1 = time.perf_counter()
            got = receive(self.queue)
            t2 = time.perf_counter()
            assert got == 10, f"{self.name}: received {got}, not 10"
            self.columns[column].append((t2 - t1) * 1000)
            self.columns[column + 1].append((t1 - t0) * 1000)

    def row(self, depth: int) -> str:
        medians = [statistics.median(column) for column in self.columns]
        self.columns = [[], [], [], []]
        figures = "".join(f"{ms:>{width}.1f}" for ms, width in zip(medians, WIDTHS, strict=True))
        return f"{self.name:<12} {depth:>7}{figures} {self.fill_seconds:>8.1f}"

    def close(self) -> None:
        self.bare.connection.close()
        self.sqs.delete_queue(QueueUrl=self.queue)


def run(targets: list[Target], args: argparse.Namespace) -> list[str]:
    """Rows per depth: every endpoint filled to it, then sampled in turns (one sample of each,
    round after round), so that a busy moment of the machine falls on all of them alike."""
    rows: list[str] = []
    for depth in args.depths:
        live = [target for target in targets if not target.skipped]
        for target in live:
            projected = target.fill(depth, args.fill_budget)
            if target.skipped:
                rows.append(
                    f"{target.name:<12} {depth:>7}  skipped: filling takes ~{projected:.0f} s"
                )
        live = [target for target in live if not target.skipped]
        started, n = time.monotonic(), 0
        while (
            live and n < args.samples and (n < 3 or time.monotonic() - started < args.sample_budget)
        ):
            for target in live:
                target.sample(n)
            n += 1
        for target in live:
            rows.append(target.row(depth))
            print(rows[-1], flush=True)
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
    parser.add_argument("--sample-budget", type=float, default=30.0, help="seconds per depth")
    parser.add_argument("--fill-budget", type=float, default=120.0, help="seconds per endpoint")
    args = parser.parse_args()
    # Dummy credentials for plain moto too (common.endpoint sets them for the others).
    os.environ.update({k: os.environ.get(k, v) for k, v in common.DUMMY_CREDENTIALS.items()})

    titles = ("boto3 recv10+del", "send10", "http recv10+del", "send10")
    header = f"{'endpoint':<12} {'depth':>7}" + "".join(
        f"{title:>{width}}" for title, width in zip(titles, WIDTHS, strict=True)
    )
    header += f" {'fill s':>8}  (ms per call)"
    print(header, flush=True)
    with contextlib.ExitStack() as stack:
        targets: list[Target] = []
        if not args.no_local:
            targets.append(Target("local", stack.enter_context(common.endpoint(None))))
        if not args.no_moto:
            targets.append(Target("moto", stack.enter_context(plain_moto())))
        for given in args.endpoint:
            name, _, url = given.rpartition("=")
            targets.append(Target(name or url.split("//")[-1][:12], url))
        for target in targets:
            stack.callback(target.close)
        rows = run(targets, args)
    print("\n" + header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
