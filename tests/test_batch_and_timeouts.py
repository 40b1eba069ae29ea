"""Batch bindings (partial failures), soft and hard timeouts, handler option validation."""

from __future__ import annotations

import signal

from supervisor.cli import main
from support import make_queue, queue_counts, send_bodies, wait_until, write_config


def test_a_batch_of_10_with_3_failures_deletes_7_and_retries_those_3(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "batch", visibility=60)
    ids = send_bodies(sqs, url, [{"n": i, "fail": i in (2, 5, 7)} for i in range(10)])
    failing = {ids[2], ids[5], ids[7]}
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "batch",
                "queue": "batch",
                "handler": "apphandlers:batch_fail_some",
                "batch": True,
                "processes": 1,
                "wait_time_seconds": 1,
                "retry": {"base_seconds": 30, "max_seconds": 30},
            }
        ],
    )
    supervisor = start_supervisor(config)
    wait_until(
        lambda: queue_counts(sqs, url) == {"visible": 0, "in_flight": 3, "delayed": 0},
        20,
        "7 deleted and 3 held for retry",
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert set(supervisor.ledger.count("start")) == set(ids)
    # The three wait out their retry delay (about 30 s): nothing else is in the queue.
    held = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert "Messages" not in held
    assert "handler failed (attempt 1), retry in" in supervisor.logs()
    assert supervisor.logs().count("reported as failed by the batch handler") == 3
    assert failing  # the ids above, for the reader of a failure


def test_soft_timeout_raises_inside_the_handler_and_the_message_is_retried(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "soft", visibility=60)
    [message_id] = send_bodies(sqs, url, [{"sleep": 30}])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "soft",
                "queue": "soft",
                "handler": "apphandlers:soft_timeout_aware",
                "processes": 1,
                "wait_time_seconds": 1,
                "soft_timeout": 1,
                "timeout": 10,
                "retry": {"base_seconds": 1, "max_seconds": 2},
            }
        ],
    )
    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("soft")[message_id] >= 2, 20, "two soft timeouts")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert "SoftTimeout: soft timeout of 1 s exceeded" in supervisor.logs()
    assert "exceeded its 10 s timeout" not in supervisor.logs(), "the child was never killed"
    assert len({row["pid"] for row in supervisor.ledger.events("start")}) == 1


def test_a_handler_ignoring_the_soft_timeout_is_killed_at_the_hard_one(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "stubborn", visibility=60)
    [message_id] = send_bodies(sqs, url, [{"sleep": 30, "ignore_soft_timeout": True}])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "stubborn",
                "queue": "stubborn",
                "handler": "apphandlers:soft_timeout_aware",
                "processes": 1,
                "wait_time_seconds": 1,
                "soft_timeout": 1,
                "timeout": 3,
                "retry": {"base_seconds": 1, "max_seconds": 2},
            }
        ],
    )
    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("start")[message_id] >= 2, 20, "a retry")
    supervisor.signal(signal.SIGQUIT)
    assert supervisor.wait() == 0
    assert f"job {message_id} exceeded its 3 s timeout; killing the child" in supervisor.logs()
    first, second = supervisor.ledger.events("start")[:2]
    assert first["pid"] != second["pid"]
    assert supervisor.ledger.count("soft")[message_id] >= 1


def test_soft_timeout_must_be_shorter_than_timeout(tmp_path, capsys):
    path = write_config(
        tmp_path / "w.yaml",
        [{"name": "a", "queue": "q", "handler": "json:loads", "soft_timeout": 5, "timeout": 5}],
    )
    assert main(["check", "-c", str(path)]) == 2
    assert "bindings[0]: soft_timeout must be shorter than timeout" in capsys.readouterr().err
