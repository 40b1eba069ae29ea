"""Metrics that add up across processes, health that means "consuming", recycling."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from supervisor.ops.local import free_port
from support import (
    TcpProxy,
    http_status,
    make_queue,
    queue_counts,
    scrape,
    send_bodies,
    total,
    wait_until,
    write_config,
)

HANDLER = "apphandlers:behave"


def config_with_metrics(tmp_path, bindings, port, **top):
    return write_config(
        tmp_path / "w.yaml",
        bindings,
        metrics={"host": "127.0.0.1", "port": port, "queue_poll_seconds": 1},
        **top,
    )


def wait_for_metrics(port: int) -> None:
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/metrics")[0] == 200, 20, "metrics")


def binding(name, queue, **settings):
    return {"name": name, "queue": queue, "handler": HANDLER, "wait_time_seconds": 1, **settings}


def test_processed_counter_is_exact_and_monotonic_when_a_child_is_sigkilled(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "counted", visibility=120)
    send_bodies(sqs, url, [{"sleep": 0.05, "n": i} for i in range(100)])
    port = free_port()
    config = config_with_metrics(
        tmp_path, [binding("counted", "counted", processes=3, visibility_timeout=120)], port
    )
    supervisor = start_supervisor(config)
    readings: list[float] = []

    def succeeded() -> float:
        value = total(scrape(port), "sqs_supervisor_messages_processed_total", outcome="succeeded")
        readings.append(value)
        return value

    wait_for_metrics(port)
    wait_until(lambda: succeeded() >= 25, 60, "a quarter processed")
    victim = supervisor.ledger.events("start")[-1]["pid"]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    wait_until(lambda: succeeded() == 100, 90, "100 processed")
    samples = scrape(port)
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert readings == sorted(readings), "a scrape read lower than the one before"
    assert total(samples, "sqs_supervisor_worker_restarts_total", reason="crash") == 1
    assert total(samples, "sqs_supervisor_messages_received_total") >= 100
    assert total(samples, "sqs_supervisor_handler_duration_seconds_count") >= 100
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_readyz_follows_the_endpoint_and_drops_at_once_on_sigterm(
    sqs, sqs_endpoint, tmp_path, start_supervisor
):
    url = make_queue(sqs, "ready", visibility=60)
    proxy = TcpProxy(int(sqs_endpoint.rsplit(":", 1)[1]))
    proxy.start()
    port = free_port()
    config = config_with_metrics(tmp_path, [binding("ready", "ready", processes=1)], port)
    supervisor = start_supervisor(config, env={"AWS_ENDPOINT_URL_SQS": proxy.url})
    readyz = f"http://127.0.0.1:{port}/readyz"
    wait_until(lambda: http_status(readyz)[0] == 200, 20, "ready")
    proxy.stop()
    wait_until(lambda: http_status(readyz)[0] == 503, 5, "not ready while SQS is down")
    assert "the latest receive failed" in http_status(readyz)[1]
    assert http_status(f"http://127.0.0.1:{port}/healthz")[0] == 200, "alive all the same"
    proxy.start()
    # Back within one receive: the error backoff is capped at 5 s, the long poll is 1 s.
    wait_until(lambda: http_status(readyz)[0] == 200, 10, "ready again")
    send_bodies(sqs, url, [{"sleep": 4}])
    wait_until(lambda: supervisor.ledger.count("start"), 10, "a job to start")
    supervisor.signal(signal.SIGTERM)
    signalled = time.monotonic()

    wait_until(lambda: http_status(readyz)[0] == 503, 1, "not ready on SIGTERM", interval=0.02)
    assert time.monotonic() - signalled < 1
    assert '"draining' in http_status(readyz)[1]
    assert supervisor.wait() == 0
    proxy.stop()


def test_a_child_over_max_memory_is_recycled_after_its_job(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "hog", visibility=60)
    port = free_port()
    config = config_with_metrics(
        tmp_path, [binding("hog", "hog", processes=1, max_memory_mb=100)], port
    )
    supervisor = start_supervisor(config)
    wait_for_metrics(port)
    send_bodies(sqs, url, [{"hoard_mb": 200}])

    wait_until(
        lambda: total(scrape(port), "sqs_supervisor_worker_restarts_total", reason="memory") == 1,
        30,
        "a memory recycle",
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert len(supervisor.ledger.count("end")) == 1, "the job finished before the recycle"
    assert "> max_memory_mb 100; recycling after its job" in supervisor.logs()


def test_max_jobs_per_child_recycles_children_with_jitter(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "recycle", visibility=60)
    port = free_port()
    config = config_with_metrics(
        tmp_path, [binding("recycle", "recycle", processes=2, max_jobs_per_child=5)], port
    )
    send_bodies(sqs, url, [{"n": i} for i in range(50)])
    supervisor = start_supervisor(config)

    wait_until(lambda: len(supervisor.ledger.count("end")) == 50, 60, "50 messages")
    wait_until(lambda: queue_counts(sqs, url)["in_flight"] == 0, 10, "settled")
    samples = scrape(port)
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    recycled = total(samples, "sqs_supervisor_worker_restarts_total", reason="max_jobs")
    # Each child stops after 5 or 6 jobs (jitter of up to 25 %): 50 jobs make 8 to 10 recycles.
    assert 8 <= recycled <= 10
    assert len({row["pid"] for row in supervisor.ledger.events("end")}) >= 9


def test_queue_gauges_match_get_queue_attributes(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "depth", visibility=60, dlq="depth-dlq")
    dlq_url = sqs.get_queue_url(QueueName="depth-dlq")["QueueUrl"]
    send_bodies(sqs, url, [{"n": i} for i in range(7)])
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody="{}", DelaySeconds=900)
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=600)
    send_bodies(sqs, dlq_url, [{"dead": i} for i in range(4)])
    port = free_port()
    config = config_with_metrics(
        tmp_path,
        [binding("depth", "depth", processes=0, dead_letter={"queue": "depth-dlq"})],
        port,
    )
    start_supervisor(config)
    wait_for_metrics(port)

    def gauges():
        samples = scrape(port)
        return {
            queue: {
                state: total(samples, "sqs_supervisor_queue_messages", queue=queue, state=state)
                for state in ("visible", "in_flight", "delayed")
            }
            for queue in ("depth", "depth-dlq")
        }

    expected = {"depth": queue_counts(sqs, url), "depth-dlq": queue_counts(sqs, dlq_url)}
    assert expected == {
        "depth": {"visible": 4, "in_flight": 3, "delayed": 2},
        "depth-dlq": {"visible": 4, "in_flight": 0, "delayed": 0},
    }
    wait_until(lambda: gauges() == expected, 20, f"gauges equal to {expected}")


def test_metrics_speak_openmetrics_when_asked(sqs, tmp_path, start_supervisor):
    make_queue(sqs, "om")
    port = free_port()
    start_supervisor(config_with_metrics(tmp_path, [binding("om", "om", processes=1)], port))
    wait_for_metrics(port)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert http_status(f"http://127.0.0.1:{port}/nope")[0] == 404


@pytest.mark.skipif(not shutil.which("prometheus"), reason="Debian's prometheus is not installed")
def test_prometheus_scrapes_the_supervisor_and_promtool_accepts_the_exposition(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "scraped", dlq="scraped-dlq")
    send_bodies(sqs, url, [{"n": i} for i in range(12)])
    port = free_port()
    config = config_with_metrics(
        tmp_path,
        [binding("scraped", "scraped", processes=2, dead_letter={"queue": "scraped-dlq"})],
        port,
    )
    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 12, 30, "12 messages")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        exposition = response.read()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: sqs-supervisor\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    query = (
        f"http://127.0.0.1:{prom_port}/api/v1/query?query="
        "sum(sqs_supervisor_messages_processed_total%7Boutcome%3D%22succeeded%22%7D)"
    )

    def answered() -> float | None:
        import json

        status, body = http_status(query)
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        assert wait_until(lambda: answered() == 12, 60, "Prometheus to answer 12")
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=10)
