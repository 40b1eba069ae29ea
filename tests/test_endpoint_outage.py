"""An SQS endpoint that cannot be reached: the pool keeps running, says so in /readyz, and
logs it at a sane rate instead of a line every second per child."""

from __future__ import annotations

import json
import signal

from supervisor.ops.local import DUMMY_CREDENTIALS, free_port
from support import http_status, scrape, total, wait_until, write_config


def test_an_unreachable_endpoint_is_reported_not_fatal_and_logged_once_per_child(
    tmp_path, start_supervisor
):
    port = free_port()
    closed = free_port()  # nothing listens there
    config = write_config(
        tmp_path / "w.yaml",
        [{"name": "jobs", "queue": "jobs", "handler": "apphandlers:behave", "processes": 2}],
        sqs={"region": "us-east-1", "endpoint_url": f"http://127.0.0.1:{closed}"},
        metrics={"host": "127.0.0.1", "port": port},
    )

    supervisor = start_supervisor(config, env=dict(DUMMY_CREDENTIALS))
    supervisor.wait_for_log("metrics, /healthz and /readyz on")

    def lookups_failed() -> float:
        return total(scrape(port), "sqs_supervisor_sqs_errors_total", operation="GetQueueUrl")

    # Each child has tried (and backed off) several times by now.
    wait_until(lambda: lookups_failed() >= 8, 60, "8 failed queue lookups")
    status, body = http_status(f"http://127.0.0.1:{port}/readyz")
    assert status == 503
    assert json.loads(body)["problems"] == {
        "jobs": "the latest receive failed (EndpointConnectionError)"
    }
    assert http_status(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert supervisor.process.poll() is None, "the supervisor exited on an unreachable endpoint"
    assert supervisor.logs().count("looking up the queue failed") == 2  # one per child
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
