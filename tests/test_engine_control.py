"""The engine's control paths: timeouts, hangs, permanent failures, FIFO, reload, scaling."""

from __future__ import annotations

import json
import os
import signal

import yaml

from support import make_queue, queue_counts, send_bodies, wait_until, write_config

HANDLER = "apphandlers:behave"


def binding(name, queue, **settings):
    return {"name": name, "queue": queue, "handler": HANDLER, "wait_time_seconds": 1, **settings}


def test_a_job_past_its_timeout_kills_the_child_and_the_message_is_retried(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "slow", visibility=60)
    [message_id] = send_bodies(sqs, url, [{"sleep": 30}])
    config = write_config(
        tmp_path / "w.yaml",
        [binding("slow", "slow", processes=1, timeout=2, retry={"base_seconds": 1})],
    )
    supervisor = start_supervisor(config)

    wait_until(lambda: supervisor.ledger.count("start")[message_id] >= 2, 20, "a second attempt")
    supervisor.signal(signal.SIGQUIT)
    assert supervisor.wait() == 0
    logs = supervisor.logs()
    assert f"job {message_id} exceeded its 2 s timeout; killing the child" in logs
    first, second = supervisor.ledger.events("start")[:2]
    assert first["pid"] != second["pid"]
    # Retried after the retry delay (1 s), not at once and not after the 60 s visibility.
    assert 2.5 < second["at"] - first["at"] < 8


def test_a_child_that_stops_reporting_is_killed_as_hung(sqs, tmp_path, start_supervisor):
    make_queue(sqs, "frozen")
    config = write_config(
        tmp_path / "w.yaml",
        [binding("frozen", "frozen", processes=1)],
        health={"liveness_timeout": 3},
    )
    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.children(), 20, "a child")
    [child] = supervisor.children()
    os.kill(child, signal.SIGSTOP)

    supervisor.wait_for_log(f"child {child} (frozen) sent nothing for", timeout=15)
    wait_until(
        lambda: supervisor.children() and supervisor.children() != [child],
        15,
        "a replacement child",
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_permanent_error_sends_the_message_to_the_dlq_with_the_error(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "perm", dlq="perm-dlq", max_receive=5)
    dlq_url = sqs.get_queue_url(QueueName="perm-dlq")["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"permanent": True}),
        MessageAttributes={"Tenant": {"DataType": "String", "StringValue": "acme"}},
    )
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding(
                "perm",
                "perm",
                processes=1,
                dead_letter={"queue": "perm-dlq", "max_receive_count": 5},
            )
        ],
    )
    supervisor = start_supervisor(config)

    wait_until(lambda: queue_counts(sqs, dlq_url)["visible"] == 1, 20, "the message in the DLQ")
    wait_until(lambda: queue_counts(sqs, url)["in_flight"] == 0, 5, "the source settled")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    [dead] = sqs.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"])["Messages"]
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert json.loads(dead["Body"]) == {"permanent": True}
    assert attributes["Tenant"] == "acme"
    assert attributes["SqsSupervisorError"] == "PermanentError: asked to fail permanently"
    assert len(supervisor.ledger.events("permanent")) == 1, "one attempt, no retries"
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_non_json_body_goes_to_the_dlq_after_one_attempt(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "garbled", dlq="garbled-dlq", max_receive=5)
    dlq_url = sqs.get_queue_url(QueueName="garbled-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{not json")
    config = write_config(
        tmp_path / "w.yaml",
        [binding("garbled", "garbled", processes=1, dead_letter={"queue": "garbled-dlq"})],
    )
    supervisor = start_supervisor(config)
    wait_until(lambda: queue_counts(sqs, dlq_url)["visible"] == 1, 20, "the message in the DLQ")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert "MessageDecodeError: message body is not valid JSON" in supervisor.logs()


def test_fifo_failure_releases_later_messages_of_its_group_in_order(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "orders.fifo", visibility=30)
    bodies = [{"n": 0}, {"n": 1, "fail": True}, {"n": 2}, {"n": 3}]
    for i, body in enumerate(bodies):
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(body),
            MessageGroupId="g",
            MessageDeduplicationId=str(i),
        )
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding(
                "orders", "orders.fifo", processes=1, retry={"base_seconds": 30, "max_seconds": 30}
            )
        ],
    )
    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.events("fail"), 20, "the failure")
    wait_until(lambda: queue_counts(sqs, url)["in_flight"] == 1, 10, "only the failed one held")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    started = [row["id"] for row in supervisor.ledger.events("start")]
    assert len(started) == 2, "messages 2 and 3 were released, not run after the failure"
    assert queue_counts(sqs, url) == {"visible": 2, "in_flight": 1, "delayed": 0}


def test_sighup_reloads_and_a_bad_file_keeps_the_running_config(sqs, tmp_path, start_supervisor):
    make_queue(sqs, "reload")
    path = write_config(tmp_path / "w.yaml", [binding("reload", "reload", processes=1)])
    supervisor = start_supervisor(path)
    wait_until(lambda: len(supervisor.children()) == 1, 20, "one child")
    first = supervisor.children()

    document = yaml.safe_load(path.read_text())
    document["bindings"][0]["processes"] = 3
    path.write_text(yaml.safe_dump(document))
    supervisor.signal(signal.SIGHUP)
    wait_until(
        lambda: len(supervisor.children()) == 3 and not set(first) & set(supervisor.children()),
        20,
        "three new children",
    )

    path.write_text(path.read_text().replace("processes: 3", "procesess: 3"))
    supervisor.signal(signal.SIGHUP)
    supervisor.wait_for_log("reload refused, keeping the running configuration")
    assert "bindings[0].procesess: unknown key" in supervisor.logs()
    assert len(supervisor.children()) == 3

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_ttin_and_ttou_add_and_remove_a_process_per_binding(sqs, tmp_path, start_supervisor):
    make_queue(sqs, "scale")
    path = write_config(tmp_path / "w.yaml", [binding("scale", "scale", processes=1)])
    supervisor = start_supervisor(path)
    wait_until(lambda: len(supervisor.children()) == 1, 20, "one child")
    supervisor.signal(signal.SIGTTIN)
    wait_until(lambda: len(supervisor.children()) == 2, 20, "two children")
    supervisor.signal(signal.SIGTTOU)
    wait_until(lambda: len(supervisor.children()) == 1, 20, "one child again")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_fast_stop_releases_running_jobs_at_once(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "abandon", visibility=300)
    send_bodies(sqs, url, [{"sleep": 60}])
    config = write_config(tmp_path / "w.yaml", [binding("abandon", "abandon", processes=1)])
    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("start"), 20, "the job to start")
    supervisor.signal(signal.SIGTERM)
    supervisor.wait_for_log("SIGTERM: draining")  # two pending SIGTERMs would merge into one
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    assert "second stop signal: fast stop" in supervisor.logs()
    assert queue_counts(sqs, url) == {"visible": 1, "in_flight": 0, "delayed": 0}


def test_json_logs_are_one_object_per_line_with_binding_pid_and_message_id(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "jsonlog", dlq="jsonlog-dlq")
    send_bodies(sqs, url, [{"permanent": True}])
    config = write_config(
        tmp_path / "w.yaml",
        [binding("jsonlog", "jsonlog", processes=1, dead_letter={"queue": "jsonlog-dlq"})],
    )
    supervisor = start_supervisor(config, "--log-format", "json")
    wait_until(lambda: supervisor.ledger.events("permanent"), 20, "the failure")
    supervisor.wait_for_log("permanent failure")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    records = [json.loads(line) for line in supervisor.logs().splitlines() if line.strip()]
    [failure] = [r for r in records if r["message"].startswith("permanent failure")]
    [event] = supervisor.ledger.events("permanent")
    assert (failure["binding"], failure["message_id"], failure["pid"]) == (
        "jsonlog",
        event["id"],
        event["pid"],
    )
    assert "PermanentError: asked to fail permanently" in failure["exception"]
    assert "apphandlers.py" in failure["exception"]  # the traceback, not only the message
