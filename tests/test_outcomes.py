"""Outcomes said as they happened: the last allowed attempt is dead-lettered by us, with why."""

from __future__ import annotations

import json
import os
import signal

from supervisor.ops.local import free_port
from support import (
    make_queue,
    queue_counts,
    run_cli,
    scrape,
    send_bodies,
    total,
    wait_until,
    write_config,
)


def test_exhausted_retries_are_dead_lettered_with_their_error_and_counted(
    sqs, tmp_path, start_supervisor, capsys
):
    port = free_port()
    url = make_queue(sqs, "flaky", visibility=30, dlq="flaky-dlq", max_receive=2)
    failing = send_bodies(sqs, url, [{"fail": True, "n": i} for i in range(3)])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "flaky",
                "queue": "flaky",
                "handler": "apphandlers:behave",
                "processes": 1,
                "wait_time_seconds": 1,
                "retry": {"base_seconds": 1, "max_seconds": 1},
                "dead_letter": {"queue": "flaky-dlq", "max_receive_count": 2},
            }
        ],
        metrics={"host": "127.0.0.1", "port": port},
    )

    supervisor = start_supervisor(config)

    def processed(samples, outcome: str) -> float:
        name = "sqs_supervisor_messages_processed_total"
        return total(samples, name, binding="flaky", queue="flaky", outcome=outcome)

    supervisor.wait_for_log("metrics, /healthz and /readyz on")
    wait_until(lambda: processed(scrape(port), "dead_lettered") == 3, 30, "3 dead-lettered")
    wait_until(lambda: queue_counts(sqs, url)["in_flight"] == 0, 10, "an empty source queue")
    samples = scrape(port)
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert supervisor.ledger.count("fail") == dict.fromkeys(failing, 2)
    assert processed(samples, "retried") == 3
    # What an operator sees: `dlq dump` says why each message is there.
    code, out, _ = run_cli(capsys, "dlq", "dump", "-c", str(config), "flaky")
    moved = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and sorted(json.loads(m["body"])["n"] for m in moved) == [0, 1, 2]
    for message in moved:
        attributes = message["message_attributes"]
        assert message["reason"] == "RuntimeError: asked to fail"
        assert attributes["SqsSupervisorReceiveCount"]["value"] == "2"
        assert attributes["SqsSupervisorSourceMessageId"]["value"] in failing
    logs = supervisor.logs()
    assert logs.count("dead-lettered after 2 attempts: RuntimeError: asked to fail") == 3
    # The retried attempt is one line; only the final one carries its traceback.
    assert logs.count("Traceback (most recent call last)") == 3


def test_a_finished_message_is_deleted_while_the_next_long_job_of_its_receive_runs(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "serial", visibility=60)
    quick, _ = send_bodies(sqs, url, [{"sleep": 0.1}, {"sleep": 15}])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "serial",
                "queue": "serial",
                "handler": "apphandlers:behave",
                "processes": 1,
                "wait_time_seconds": 2,
            }
        ],
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("start")) == 2, 20, "both received")
    # Deleted by the heartbeat's flush within about a second, not after the 15 s job.
    wait_until(lambda: queue_counts(sqs, url)["in_flight"] == 1, 5, "the quick one's delete")
    assert set(supervisor.ledger.count("end")) <= {quick}
    supervisor.signal(signal.SIGQUIT)
    assert supervisor.wait() == 0


def test_work_a_killed_child_had_finished_is_deleted_by_the_parent_not_run_again(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "finished", visibility=120)
    quick = send_bodies(sqs, url, [{"n": i} for i in range(9)])
    [slow] = send_bodies(sqs, url, [{"sleep": 30}])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "finished",
                "queue": "finished",
                "handler": "apphandlers:behave",
                "processes": 1,
                "wait_time_seconds": 2,
            }
        ],
    )

    supervisor = start_supervisor(config)
    # Nine quick jobs end in a few milliseconds, well inside the batched delete's window.
    wait_until(lambda: len(supervisor.ledger.count("end")) == 9, 20, "the 9 quick jobs")
    [victim] = supervisor.children()
    os.kill(victim, signal.SIGKILL)
    supervisor.wait_for_log("was killed by SIGKILL")
    # The replacement child has taken all that was given back: the slow job (it was running
    # at the kill, so it runs again) and nothing else.
    wait_until(lambda: supervisor.ledger.count("start")[slow] == 2, 20, "the slow job's rerun")
    wait_until(
        lambda: queue_counts(sqs, url) == {"visible": 0, "in_flight": 1, "delayed": 0},
        10,
        "only the slow job left",
    )
    supervisor.signal(signal.SIGQUIT)
    assert supervisor.wait() == 0
    assert {i: supervisor.ledger.count("start")[i] for i in quick} == dict.fromkeys(quick, 1)
    assert "deleted 9 it had finished" in supervisor.logs()
