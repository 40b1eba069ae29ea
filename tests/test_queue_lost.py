"""The endpoint loses the queue under a running pool (deleted, or a local SQS restarted
empty): readiness names it, liveness stays, nothing crash-loops, and consumption resumes by
itself once the queue exists again."""

from __future__ import annotations

import json
import signal

from supervisor.ops.local import free_port
from support import (
    http_status,
    make_queue,
    scrape,
    send_bodies,
    total,
    wait_until,
    write_config,
)


def test_a_deleted_queue_is_reported_and_consumption_resumes_when_it_is_back(
    sqs, tmp_path, start_supervisor
):
    port = free_port()
    url = make_queue(sqs, "fragile")
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "fragile",
                "queue": "fragile",
                "handler": "apphandlers:behave",
                "processes": 2,
                "wait_time_seconds": 1,
                "max_jobs_per_child": 1,  # a child recycles while the queue is gone, too
            }
        ],
        metrics={"host": "127.0.0.1", "port": port},
    )
    supervisor = start_supervisor(config)
    supervisor.wait_for_log("metrics, /healthz and /readyz on")
    send_bodies(sqs, url, [{"n": 1}])
    wait_until(lambda: len(supervisor.ledger.count("end")) == 1, 20, "the first job")

    sqs.delete_queue(QueueUrl=url)

    def readyz() -> tuple[int, dict]:
        status, body = http_status(f"http://127.0.0.1:{port}/readyz")
        return status, json.loads(body)

    wait_until(lambda: readyz()[0] == 503, 20, "/readyz to fail")
    wait_until(
        lambda: "does not exist" in readyz()[1]["problems"].get("fragile", ""), 10, "the reason"
    )
    assert readyz()[1]["problems"]["fragile"].startswith("queue 'fragile' does not exist")
    assert http_status(f"http://127.0.0.1:{port}/healthz")[0] == 200
    errors = lambda: total(scrape(port), "sqs_supervisor_sqs_errors_total")  # noqa: E731
    wait_until(lambda: errors() >= 6, 30, "several failed calls")
    assert total(scrape(port), "sqs_supervisor_worker_restarts_total", reason="crash") == 0

    url = make_queue(sqs, "fragile")  # `queues apply` would do the same
    send_bodies(sqs, url, [{"n": 2}, {"n": 3}])
    wait_until(lambda: len(supervisor.ledger.count("end")) == 3, 30, "consumption to resume")
    wait_until(lambda: readyz()[0] == 200, 20, "/readyz to recover")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    # Each child says so once, then at most once per 30 s: not a line per retry.
    assert supervisor.logs().count("failed (") <= 8
