"""The demo producer behind ``run --local --demo``: one example message per binding, on a timer."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import time

from supervisor.jobs.producer import EnqueueError, Producer

TOPICS = ("queues", "backoff", "heartbeats", "dead letters", "prefork", "drain")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m supervisor.ops.demo")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: exit(0))
    producer = Producer.from_path(args.config)
    for number in itertools.count(1):
        for binding in producer.config.bindings:
            payload = {"topic": TOPICS[number % len(TOPICS)], "n": number, "seconds": 2}
            # An error here means the endpoint is going away with the supervisor.
            with contextlib.suppress(EnqueueError):
                producer.enqueue(
                    binding.name, payload, group_id="demo" if binding.is_fifo else None
                )
        time.sleep(args.every)


if __name__ == "__main__":
    main()
