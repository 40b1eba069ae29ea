"""Overhead: parent CPU idle and under load, memory per child (USS/PSS: copy-on-write sharing),
and heartbeat calls per held message per half visibility period.

    python tests/benchmarks/overhead.py

Goals: idle parent under 0.5 % CPU, per-child PSS at most 25 MB, at most one visibility call
per 10 held messages per half period.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import common
import psutil


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / seconds * 100


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint")
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sqs = common.client(url)
        names = ["overhead-a", "overhead-b"]
        for name in names:
            common.fresh_queue(sqs, name, 0)
        bindings = [
            {
                "name": n,
                "queue": n,
                "handler": "apphandlers:noop",
                "processes": 2,
                "wait_time_seconds": 20,
                "visibility_timeout": 60,
            }
            for n in names
        ]
        supervised = common.Supervised(bindings, workdir, url)
        try:
            common.wait_for(
                lambda: supervised.counter("sqs_supervisor_workers", state="running") == 4, 30
            )
            time.sleep(2)
            parent = supervised.psutil
            idle = cpu_percent(parent, args.idle_seconds)
            children = parent.children()
            memory = [c.memory_full_info() for c in children]
            parent_memory = parent.memory_full_info()
            urls = [sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in names]
            # The clock starts before the sends: the children consume while they happen.
            before = parent.cpu_times()
            began = time.monotonic()
            for queue_url in urls:
                for start in range(0, 300, 10):
                    entries = [
                        {"Id": str(i), "MessageBody": json.dumps({"n": start + i})}
                        for i in range(10)
                    ]
                    sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            common.wait_for(lambda: common.remaining(sqs, urls) == (0, 0), 300, interval=0.2)
            after = parent.cpu_times()
            busy = (
                (after.user + after.system - before.user - before.system)
                / (time.monotonic() - began)
                * 100
            )
        finally:
            assert supervised.stop() == 0

        # Heartbeat: 2 children each holding 10 slow messages on a 10 s visibility timeout.
        common.fresh_queue(sqs, "overhead-hb", 20, visibility=10, body={"sleep": 60})
        supervised = common.Supervised(
            [
                {
                    "name": "hb",
                    "queue": "overhead-hb",
                    "handler": "apphandlers:behave",
                    "processes": 2,
                    "wait_time_seconds": 1,
                    "visibility_timeout": 10,
                    "timeout": 600,
                }
            ],
            workdir,
            url,
        )
        try:
            held_seconds = 30
            common.wait_for(
                lambda: supervised.counter("sqs_supervisor_inflight_messages") >= 20, 30
            )
            requests0 = supervised.counter("sqs_supervisor_visibility_extension_requests_total")
            extended0 = supervised.counter("sqs_supervisor_visibility_extensions_total")
            time.sleep(held_seconds)
            requests = (
                supervised.counter("sqs_supervisor_visibility_extension_requests_total") - requests0
            )
            extended = supervised.counter("sqs_supervisor_visibility_extensions_total") - extended0
        finally:
            supervised.stop()
        half_periods = held_seconds / 5
        per_ten = requests / (20 / 10) / half_periods

    mb = 1024 * 1024
    print(f"parent CPU idle (2 bindings x 2 children, 20 s long polls): {idle:.2f} %")
    print(f"parent CPU while 4 children drain 600 messages:             {busy:.2f} %")
    print(
        f"parent memory: RSS {parent_memory.rss / mb:.1f} MB, USS {parent_memory.uss / mb:.1f} MB"
    )
    print(f"{'child':>6} {'RSS MB':>8} {'USS MB':>8} {'PSS MB':>8}")
    for index, info in enumerate(memory):
        print(f"{index:>6} {info.rss / mb:8.1f} {info.uss / mb:8.1f} {info.pss / mb:8.1f}")
    print(
        f"heartbeat: {requests:.0f} calls extended {extended:.0f} leases of 20 held messages"
        f" in {held_seconds} s (10 s visibility):"
        f" {per_ten:.2f} calls per 10 held messages per half period"
    )


if __name__ == "__main__":
    main()
