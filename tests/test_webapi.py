"""examples/webapi end to end: uvicorn, the local SQS and a supervisor, all real, over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import load_config
from supervisor.jobs.producer import CONFIG_ENV
from supervisor.jobs.stores import open_store
from supervisor.ops.local import free_port
from supervisor.ops.provision import apply_config
from supervisor.sqs import SqsClient
from support import REPO, http_status, queue_counts, wait_until

CONFIG = REPO / "examples" / "webapi" / "workers.yaml"


def call(method: str, url: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request with a JSON body (or raw bytes); the status, the answer, the headers."""
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _decoded(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, _decoded(error.read()), dict(error.headers)


def _decoded(raw: bytes) -> Any:
    # A 500 from a crashed route is plain text: keep it, so the failing assertion shows it.
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@pytest.fixture
def webapi_env(sqs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example's config against the local SQS, its queues created; returns the job DB."""
    jobs_db = tmp_path / "jobs.db"
    # Set here, so the web API and the supervisor (both started with os.environ) agree.
    monkeypatch.setenv(CONFIG_ENV, str(CONFIG))
    monkeypatch.setenv("JOBS_DB", str(jobs_db))
    monkeypatch.setenv("METRICS_PORT", str(free_port()))
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # the region the `sqs` client asks
    config = load_config(CONFIG, import_handlers=False)
    assert sorted(apply_config(config, SqsClient(config.sqs))) == [
        "webapi-articles",
        "webapi-articles-dlq",
        "webapi-thumbnails",
        "webapi-thumbnails-dlq",
    ]
    return jobs_db


@pytest.fixture
def start_web(request, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Start the example app under uvicorn on a free loopback port; returns its base URL."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start() -> str:
        port = free_port()
        log_path = tmp_path / f"uvicorn-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "examples.webapi.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,  # the example is run from the repo root, not installed
                env=dict(os.environ),
            )
        started.append((process, log_path))
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: process.poll() is not None or http_status(f"{url}/openapi.json")[0] == 200,
            20,
            "uvicorn to answer",
        )
        assert process.poll() is None, f"uvicorn exited:\n{log_path.read_text()}"
        return url

    yield start
    for process, log_path in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if getattr(request.node, "test_failed", False):
            print(f"\n--- uvicorn's log ---\n{log_path.read_text()[-4000:]}")


def accepted(base: str, path: str, body: dict[str, Any]) -> str:
    """POST a job, check the 202 and its links; returns the status URL."""
    status, answer, headers = call("POST", f"{base}{path}", body)
    assert status == 202, (status, answer)
    assert set(answer) == {"jobId", "status_url"}
    assert answer["status_url"] == f"/jobs/{answer['jobId']}" == headers["location"]
    return answer["status_url"]


def finished(base: str, status_url: str) -> dict[str, Any]:
    """Poll the status URL until the job has succeeded or failed; returns the record."""

    def done() -> dict[str, Any] | None:
        status, record, _ = call("GET", f"{base}{status_url}")
        assert status == 200, (status, record)
        return record if record["status"] in ("succeeded", "failed", "dead") else None

    return wait_until(done, 20, f"{status_url} to finish", interval=0.2)


def test_jobs_posted_to_the_web_api_are_done_by_the_workers_and_polled_to_the_end(
    webapi_env: Path, sqs, start_supervisor, start_web
) -> None:
    start_supervisor(CONFIG)  # boots while uvicorn does
    base = start_web()

    articles = {
        accepted(base, "/articles", {"topic": topic, "words": words}): (topic, words)
        for topic, words in (("SQS", 800), ("pre-fork", 1200))
    }
    thumbnail = accepted(
        base, "/thumbnails", {"image_url": "https://example.com/a.png", "width": 640}
    )
    doomed = accepted(base, "/articles", {"topic": "fail", "words": 100})

    for status_url, (topic, words) in articles.items():
        record = finished(base, status_url)
        assert (record["status"], record["type"], record["binding"], record["attempts"]) == (
            "succeeded",
            "article",
            "articles",
            1,
        )
        assert record["result"] == {
            "topic": topic,
            "words": words,
            "title": f"{words} words on {topic}",
        }
    record = finished(base, thumbnail)
    assert (record["status"], record["type"], record["queue"]) == (
        "succeeded",
        "thumbnail",
        "webapi-thumbnails",
    )
    assert record["result"] == {
        "image_url": "https://example.com/a.png",
        "width": 640,
        "height": 360,
    }

    record = finished(base, doomed)
    assert (record["status"], record["attempts"], record["result"]) == ("failed", 1, None)
    assert record["error"]["type"] == "PermanentError"
    assert "cannot write about 'fail'" in record["error"]["message"]
    dlq = sqs.get_queue_url(QueueName="webapi-articles-dlq")["QueueUrl"]
    wait_until(lambda: queue_counts(sqs, dlq)["visible"] == 1, 10, "the failed job in the DLQ")

    status, answer, _ = call("GET", f"{base}/jobs/no-such-job")
    assert (status, answer) == (404, {"detail": "no job 'no-such-job'"})


def test_a_bad_payload_is_422_and_a_missing_queue_is_503_with_the_reason(
    webapi_env: Path, sqs, start_web
) -> None:
    base = start_web()

    for path, body in (
        ("/articles", {"topic": "SQS", "words": 1_000_000}),
        ("/articles", {"words": 800}),
        ("/thumbnails", {"image_url": "not a url"}),
        ("/articles", b"{not json"),
    ):
        status, answer, _ = call("POST", f"{base}{path}", body)
        assert status == 422, (path, body, status, answer)
        assert answer["detail"], answer
    store = open_store(f"sqlite:///{webapi_env}")
    assert store.list() == []  # a refused payload never became a job

    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName="webapi-thumbnails")["QueueUrl"])
    status, answer, _ = call(
        "POST", f"{base}/thumbnails", {"image_url": "https://example.com/b.png"}
    )
    assert status == 503, (status, answer)
    assert "could not enqueue to 'webapi-thumbnails'" in answer["detail"]
    assert "does not exist" in answer["detail"] or "NonExistentQueue" in answer["detail"]
    # The record the producer wrote before the send says why it failed, and never `queued`.
    [record] = store.list()
    assert (record.type, record.status, record.error.type) == ("thumbnail", "failed", "SendFailed")
    # The other job type still works: one missing queue fails only its own route.
    accepted(base, "/articles", {"topic": "SQS", "words": 800})
