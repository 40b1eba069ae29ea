"""Batch bindings (partial failures), soft and hard timeouts, handler option validation."""

from __future__ import annotations

import signal

from supervisor.cli.main import main
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
                "retry": {"base_seconds": 2, "max_seconds": 2},
            }
        ],
    )
    supervisor = start_supervisor(config)
    wait_until(
        lambda: queue_counts(sqs, url) == {"visible": 0, "in_flight": 3, "delayed": 0},
        20,
        "7 deleted and 3 held for retry",
    )

    def retried() -> set[str]:
        return {r["id"] for r in supervisor.ledger.events("start") if r["receive_count"] == 2}

    wait_until(lambda: len(retried()) == 3, 20, "the three failures to come back")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert retried() == failing
    first_round = [r["id"] for r in supervisor.ledger.events("start") if r["receive_count"] == 1]
    assert sorted(first_round) == sorted(ids), "every message ran exactly once in the first batch"
    assert supervisor.logs().count("reported as failed by the batch handler") >= 3


def soft_timeout_binding(name: str, timeout: float) -> dict:
    """A soft timeout of 1 s under the given hard one, with quick retries."""
    return {
        "name": name,
        "queue": name,
        "handler": "apphandlers:soft_timeout_aware",
        "processes": 1,
        "wait_time_seconds": 1,
        "soft_timeout": 1,
        "timeout": timeout,
        "retry": {"base_seconds": 1, "max_seconds": 2},
    }


def test_soft_timeout_raises_inside_the_handler_and_the_message_is_retried(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "soft", visibility=60)
    [message_id] = send_bodies(sqs, url, [{"sleep": 30}])
    config = write_config(tmp_path / "w.yaml", [soft_timeout_binding("soft", timeout=10)])
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
    config = write_config(tmp_path / "w.yaml", [soft_timeout_binding("stubborn", timeout=3)])
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
