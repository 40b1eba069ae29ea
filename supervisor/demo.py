"""The demo producer behind ``run --local --demo``: one example message per binding, on a timer."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import time
import uuid

from supervisor.config import load_config
from supervisor.sqs import SqsClient, SqsError

TOPICS = ("queues", "backoff", "heartbeats", "dead letters", "prefork", "drain")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m supervisor.demo")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: exit(0))
    config = load_config(args.config, import_handlers=False)
    sqs = SqsClient(config.sqs)
    for number in itertools.count(1):
        for binding in config.bindings:
            body = {"topic": TOPICS[number % len(TOPICS)], "n": number, "seconds": 2}
            fifo = binding.is_fifo
            # An error here means the endpoint is going away with the supervisor.
            with contextlib.suppress(SqsError):
                sqs.send(
                    sqs.queue_url(binding.queue),
                    json.dumps(body),
                    group_id="demo" if fifo else None,
                    dedup_id=uuid.uuid4().hex if fifo else None,
                )
        time.sleep(args.every)


if __name__ == "__main__":
    main()
