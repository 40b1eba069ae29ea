"""Job tracking end to end: producer, worker transitions, duplicates, CLI and HTTP."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest

from supervisor.cli.main import main
from supervisor.config import load_config
from supervisor.jobs.producer import EnqueueError, Producer
from supervisor.jobs.stores import JobStatus, open_store
from supervisor.ops.local import free_port
from support import http_status, make_queue, queue_counts, scrape, total, wait_until, write_config

TOKEN = "s3cret-token"


@pytest.fixture
def jobs_config(tmp_path, sqs):
    """A config with a SQLite job store, the HTTP job endpoint, and queues that exist."""

    def build(handler="apphandlers:behave", **binding_settings):
        make_queue(sqs, "articles", dlq="articles-dlq", max_receive=3)
        port = free_port()
        path = write_config(
            tmp_path / "w.yaml",
            [
                {
                    "name": "articles",
                    "queue": "articles",
                    "handler": handler,
                    "wait_time_seconds": 1,
                    "retry": {"base_seconds": 1, "max_seconds": 5},
                    "dead_letter": {"queue": "articles-dlq", "max_receive_count": 3},
                    **binding_settings,
                }
            ],
            metrics={"host": "127.0.0.1", "port": port},
            jobs={"store": f"sqlite:///{tmp_path / 'jobs.db'}", "http_token": TOKEN},
        )
        return path, port

    return build


def store_of(path):
    config = load_config(path, import_handlers=False)
    return open_store(config.jobs.store)


def get_job(port, job_id, token=TOKEN):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/jobs/{job_id}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_job_goes_queued_processing_progress_succeeded(
    jobs_config, tmp_path, start_supervisor, capsys
):
    path, port = jobs_config(handler="apphandlers:gated_article", processes=1)
    gate = tmp_path / "gate"
    job_id = Producer(load_config(path, import_handlers=False)).enqueue("articles", {"topic": "x"})
    store = store_of(path)
    assert store.get(job_id).status == JobStatus.QUEUED

    start_supervisor(path, env={"GATE": str(gate)})
    wait_until(lambda: store.get(job_id).progress == 40, 20, "progress 40")
    running = store.get(job_id)
    assert (running.status, running.progress_note, running.attempts) == (
        "processing",
        "drafting",
        1,
    )
    assert main(["jobs", "show", job_id, "-c", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["progress"]) == ("processing", 40)
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/readyz")[0] == 200, 10, "ready")
    status, body = get_job(port, job_id)
    assert (status, body["status"], body["progress"]) == (200, "processing", 40)

    gate.touch()
    wait_until(lambda: store.get(job_id).status == JobStatus.SUCCEEDED, 20, "success")
    done = store.get(job_id)
    assert done.result == {"words": 1500}
    assert done.attempts == 1 and done.pid and done.host
    assert done.created_at <= done.started_at <= done.finished_at
    assert get_job(port, job_id)[1]["result"] == {"words": 1500}
    assert main(["jobs", "list", "-c", str(path), "--status", "succeeded"]) == 0
    assert job_id in capsys.readouterr().out


def test_http_jobs_need_the_bearer_token(jobs_config, start_supervisor):
    path, port = jobs_config(processes=0)
    job_id = Producer(load_config(path, import_handlers=False)).enqueue("articles", {})
    start_supervisor(path)
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/healthz")[0] == 200, 20, "up")

    assert get_job(port, job_id, token=None) == (401, {"error": "unauthorized"})
    assert get_job(port, job_id, token="wrong")[0] == 401
    assert get_job(port, "nope")[0] == 404
    status, body = get_job(port, job_id)
    assert (status, body["id"], body["status"]) == (200, job_id, "queued")


def test_an_always_failing_job_retries_with_counted_attempts_then_dies(
    jobs_config, start_supervisor
):
    path, _ = jobs_config(processes=1)
    job_id = Producer(load_config(path, import_handlers=False)).enqueue("articles", {"fail": True})
    store = store_of(path)
    start_supervisor(path)
    seen = set()

    def dead():
        record = store.get(job_id)
        seen.add((record.status.value, record.attempts))
        return record.status == JobStatus.DEAD

    try:
        wait_until(dead, 30, "the job to die", interval=0.05)
    except AssertionError as timeout:
        raise AssertionError(
            f"{timeout}; states seen {sorted(seen)}; {store.get(job_id)}"
        ) from None
    record = store.get(job_id)
    assert {("retrying", 1), ("retrying", 2)} <= seen
    assert record.attempts == 3
    assert (record.error.type, record.error.message) == ("RuntimeError", "asked to fail")
    assert "apphandlers.py" in record.error.traceback


def test_a_redelivered_envelope_of_a_succeeded_job_does_not_run_again(
    jobs_config, sqs, start_supervisor
):
    path, port = jobs_config(processes=1)
    job_id = Producer(load_config(path, import_handlers=False)).enqueue("articles", {"n": 1})
    url = sqs.get_queue_url(QueueName="articles")["QueueUrl"]
    [original] = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0
    )["Messages"]
    store = store_of(path)
    supervisor = start_supervisor(path)
    wait_until(lambda: store.get(job_id).status == JobStatus.SUCCEEDED, 20, "success")

    sqs.send_message(
        QueueUrl=url, MessageBody=original["Body"], MessageAttributes=original["MessageAttributes"]
    )
    wait_until(
        lambda: (
            total(scrape(port), "sqs_supervisor_messages_processed_total", outcome="duplicate") == 1
        ),
        20,
        "the duplicate settled",
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert len(supervisor.ledger.events("start")) == 1
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert f"job {job_id} already succeeded; deleting the duplicate unrun" in supervisor.logs()


def test_a_send_to_a_missing_queue_leaves_the_job_failed_and_raises(jobs_config):
    path, _ = jobs_config(processes=0)
    producer = Producer(load_config(path, import_handlers=False))
    with pytest.raises(EnqueueError, match="could not enqueue to 'no-such-queue'") as caught:
        producer.enqueue("no-such-queue", {"n": 1})
    [job_id] = caught.value.job_ids
    record = store_of(path).get(job_id)
    assert record.status == JobStatus.FAILED
    assert "NonExistentQueue" in record.error.message


def test_enqueue_many_sends_in_batches_and_records_every_job(jobs_config, sqs, capsys):
    path, _ = jobs_config(processes=0)
    producer = Producer(load_config(path, import_handlers=False))
    job_ids = producer.enqueue_many("articles", [{"n": i} for i in range(50)])
    url = sqs.get_queue_url(QueueName="articles")["QueueUrl"]
    assert queue_counts(sqs, url)["visible"] == 50
    store = store_of(path)
    assert len(set(job_ids)) == 50
    assert all(store.get(job_id).status == JobStatus.QUEUED for job_id in job_ids)

    assert main(["send", "-c", str(path), "articles", "--body", '{"n": 99}', "--count", "3"]) == 0
    assert capsys.readouterr().out.count(": job ") == 3
    assert queue_counts(sqs, url)["visible"] == 53


def test_enqueue_many_fails_an_oversized_payload_alone_and_sends_the_rest(jobs_config, sqs):
    path, _ = jobs_config(processes=0)
    producer = Producer(load_config(path, import_handlers=False))
    payloads = [{"n": i} for i in range(9)] + [{"blob": "x" * 1_100_000}]
    with pytest.raises(EnqueueError) as caught:
        producer.enqueue_many("articles", payloads)
    message = str(caught.value)
    assert message.startswith("1 of 10 job(s) could not be enqueued to 'articles'")
    assert "1,048,576 bytes" in message
    url = sqs.get_queue_url(QueueName="articles")["QueueUrl"]
    assert queue_counts(sqs, url)["visible"] == 9
    store = store_of(path)
    [too_big] = caught.value.job_ids
    assert store.get(too_big).status == JobStatus.FAILED
    assert "1,048,576 bytes" in store.get(too_big).error.message
    assert len(caught.value.sent_ids) == 9
    assert all(store.get(job_id).status == JobStatus.QUEUED for job_id in caught.value.sent_ids)


def test_enqueue_many_packs_batches_by_size_as_well_as_by_count(jobs_config, sqs):
    path, _ = jobs_config(processes=0)
    producer = Producer(load_config(path, import_handlers=False))
    # Ten payloads of 300 KB: one batch of ten would be 3 MB, over SQS's 1 MiB per call.
    job_ids = producer.enqueue_many("articles", [{"blob": "x" * 300_000}] * 10)
    assert len(job_ids) == 10
    url = sqs.get_queue_url(QueueName="articles")["QueueUrl"]
    assert queue_counts(sqs, url)["visible"] == 10


def test_a_refused_batch_records_its_reason_once(jobs_config, sqs_endpoint):
    path, _ = jobs_config(processes=0)
    producer = Producer(load_config(path, import_handlers=False))
    # A queue URL is used as given (no lookup), so the batch call itself is what fails.
    target = f"{sqs_endpoint}/123456789012/no-such-queue"
    with pytest.raises(EnqueueError) as caught:
        producer.enqueue_many(target, [{"n": 1}, {"n": 2}])
    assert str(caught.value).count("SendMessageBatch failed") == 1
    for job_id in caught.value.job_ids:
        error = store_of(path).get(job_id).error.message
        assert error.startswith("SendMessageBatch failed: ")
        assert error.count("SendMessageBatch failed") == 1, error


def test_four_processes_track_200_jobs_without_losing_an_update(jobs_config, sqs, start_supervisor):
    path, _ = jobs_config(processes=4)
    job_ids = Producer(load_config(path, import_handlers=False)).enqueue_many(
        "articles", [{"n": i} for i in range(200)]
    )
    store = store_of(path)
    supervisor = start_supervisor(path)
    wait_until(
        lambda: len(store.list(status=JobStatus.SUCCEEDED, limit=500)) == 200, 90, "200 succeeded"
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    records = [store.get(job_id) for job_id in job_ids]
    assert {(r.status.value, r.attempts, r.progress) for r in records} == {("succeeded", 1, 100)}
    assert len({r.pid for r in records}) == 4


@pytest.mark.parametrize("handler", ["apphandlers:stepping", "apphandlers:behave_async"])
def test_jobs_run_side_by_side_are_each_recorded_by_their_own_thread_or_task(
    handler, jobs_config, start_supervisor
):
    path, _ = jobs_config(handler=handler, processes=1, concurrency=5)
    producer = Producer(load_config(path, import_handlers=False))
    ok = producer.enqueue_many("articles", [{"sleep": 0.5}] * 8)
    [failing] = producer.enqueue_many("articles", [{"sleep": 0.5, "permanent": True}])
    store = store_of(path)

    supervisor = start_supervisor(path)
    wait_until(
        lambda: all(store.get(i).status == JobStatus.SUCCEEDED for i in ok), 30, "8 succeeded"
    )
    wait_until(lambda: store.get(failing).status == JobStatus.FAILED, 10, "one failed")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert {store.get(i).attempts for i in ok} == {1}
    assert store.get(failing).error.type == "PermanentError"
    assert len(supervisor.ledger.count("end")) == 8
