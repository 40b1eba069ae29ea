"""Our own CPU per message without the network: a child's real ``Worker`` and the parent's real
``ReportRouter``, in one process, on canned receives.

The SQS client is a stub that hands out ten LocalStack-shaped messages per receive (UUID ids,
180-character receipts, the four system attributes) and accepts every delete, so what is
timed is everything of ours around boto3: messages, leases, the handler's steps, settling,
the reports over a real pipe and the parent's handling of them. A no-op handler.

    python tests/benchmarks/inprocess.py                    # concurrency 1, 3000 receives
    python tests/benchmarks/inprocess.py --concurrency 8
    valgrind --tool=callgrind python tests/benchmarks/inprocess.py --receives 300 --child-only

Prints CPU microseconds per message for the child and the parent (process time, so it moves
with the machine's load by some percent; compare runs side by side). Process time counts every
thread: with ``--concurrency`` above 1 the job threads also run while the parent's share is
timed, so there only the sum means much. Under callgrind, two
runs with different ``--receives`` give instructions per message as (I2 - I1) / messages; run
once with ``--child-only`` (the pipe is drained, not decoded) to split child from parent.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import common  # noqa: F401  (puts the repository on sys.path)

from supervisor.child.worker import Worker
from supervisor.config import Binding, SqsSettings
from supervisor.finished import FinishedLog
from supervisor.ipc import Reporter, ReportReader
from supervisor.observe.metrics import Metrics
from supervisor.observe.queuestats import QueueStats
from supervisor.parent.children import Child
from supervisor.parent.reports import ReportRouter

QUEUE_URL = "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/bench"


class CannedSqs:
    """Ten fresh messages per receive (new ids, so jobs in flight never collide)."""

    def __init__(self) -> None:
        self.receives = 0

    def queue_url(self, name: str) -> str:
        return QUEUE_URL

    def receive(self, url: str, *, max_messages: int, **_: Any) -> list[dict[str, Any]]:
        self.receives += 1
        now = str(int(time.time() * 1000))
        return [_message(self.receives, i, now) for i in range(max_messages)]

    def delete_batch(self, url: str, entries: Any) -> dict[str, str]:
        for _ in entries:
            pass
        return {}

    def change_visibility_batch(self, url: str, entries: Any) -> dict[str, str]:
        return {}


def _message(receive: int, index: int, sent: str) -> dict[str, Any]:
    message_id = f"{receive:08x}-0000-4000-8000-{index:012x}"  # a UUID's shape, made cheaply
    return {
        "MessageId": message_id,
        "ReceiptHandle": (message_id * 5)[:180],
        "MD5OfBody": "daa4744198fee6d0753cbff2b1663b3c",
        "Body": f'{{"n": {index}}}',
        "Attributes": {
            "SenderId": "000000000000",
            "SentTimestamp": sent,
            "ApproximateReceiveCount": "1",
            "ApproximateFirstReceiveTimestamp": sent,
        },
    }


class _Pool:
    """What the router asks of the parent's pool, for one binding."""

    def __init__(self, binding: Binding) -> None:
        self.receives: dict[str, Any] = {}
        self.children: dict[int, Child] = {}
        self._binding = binding

    def binding(self, child: Child) -> Binding:
        return self._binding

    def forget(self, child: Child) -> None:
        pass


def noop(message: Any, ctx: Any) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receives", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--child-only", action="store_true", help="drain the pipe undecoded")
    args = parser.parse_args()
    read_fd, write_fd = os.pipe()
    binding = Binding(
        name="bench",
        queue="bench",
        handler="m:f",
        wait_time_seconds=0,
        concurrency=args.concurrency,
    )
    sqs = CannedSqs()
    worker = Worker(
        binding,
        noop,
        Reporter(write_fd, finished := FinishedLog()),
        SqsSettings(),
        parent_pid=os.getppid(),
        sqs_factory=lambda settings, **options: sqs,
    )
    worker.initialize()
    metrics = Metrics()
    router = ReportRouter(
        _Pool(binding),  # type: ignore[arg-type]
        metrics,
        QueueStats(metrics, lambda: None, 60),  # type: ignore[arg-type,return-value]
        time.monotonic,
        announce_ready=lambda: None,
    )
    child = Child(os.getpid(), "bench", 0, ReportReader(read_fd), 0.0, 0.0, finished=finished)
    router.read(child)
    child_cpu = parent_cpu = 0.0
    while sqs.receives < args.receives:
        started = time.process_time()
        worker.run_once()
        middle = time.process_time()
        if args.child_only:
            os.read(read_fd, 1 << 20)
        else:
            router.read(child)
        child_cpu += middle - started
        parent_cpu += time.process_time() - middle
    if worker.slots is not None:
        worker.slots.wait_for_idle(10)  # the last jobs, in their threads
    worker.stopping = True
    worker.shutdown()
    messages = sqs.receives * 10
    print(
        f"concurrency {args.concurrency}, {messages} messages: child"
        f" {child_cpu / messages * 1e6:.1f} us, parent"
        f" {'-' if args.child_only else f'{parent_cpu / messages * 1e6:.1f}'} us per message"
        " (process time: with concurrency, job threads run during both)"
    )


if __name__ == "__main__":
    main()
