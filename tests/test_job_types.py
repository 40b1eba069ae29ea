"""Several job types on one queue: ``handlers:`` routes each message to its type's handler."""

from __future__ import annotations

import json
import signal

import pytest
from jobstore.pgserver import PostgresServer, find_bindir

from supervisor.cli.main import main
from supervisor.config import load_config
from supervisor.jobs.producer import Producer
from supervisor.jobs.stores import JobStatus, open_store
from supervisor.ops.local import free_port
from support import (
    APPS,
    make_queue,
    queue_counts,
    run_cli,
    scrape,
    total,
    wait_until,
    write_config,
)


def routed(name: str, handlers: dict[str, str], **settings):
    return {
        "name": name,
        "queue": name,
        "handlers": {t: f"apphandlers:{h}" for t, h in handlers.items()},
        "processes": 1,
        "wait_time_seconds": 1,
        "retry": {"base_seconds": 1, "max_seconds": 1},
        "dead_letter": {"queue": f"{name}-dlq", "max_receive_count": 3},
        **settings,
    }


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL cluster for this module (Debian's binaries, started on loopback)."""
    bindir, why = find_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL job store NOT tested end to end: {why}")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """One job store shared by both bindings' children and the producer."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    server = request.getfixturevalue("postgres")
    database = f"types_{tmp_path.name.lower().replace('-', '_')[:40]}"
    server.create_database(database)
    return server.url(database)


def test_two_bindings_route_their_types_and_an_unknown_type_is_dead_lettered_once(
    sqs, tmp_path, start_supervisor, store_url, capsys
):
    port = free_port()
    for name in ("assets", "media"):
        make_queue(sqs, name, dlq=f"{name}-dlq", max_receive=3)
    config = write_config(
        tmp_path / "w.yaml",
        [
            routed("assets", {"image": "make_image", "video": "make_video"}, concurrency=4),
            routed("media", {"image": "make_image", "video": "make_video"}),
        ],
        jobs={"store": store_url},
        metrics={"host": "127.0.0.1", "port": port},
    )
    producer = Producer(load_config(config, import_handlers=False))
    jobs = {}
    for n in range(30):
        binding, job_type = ("assets", "media")[n % 2], ("image", "video")[n // 2 % 2]
        jobs[producer.enqueue(binding, {"n": n}, job_type=job_type)] = job_type
    unknown = producer.enqueue("assets", {"n": 99}, job_type="audio")
    store = open_store(store_url)

    supervisor = start_supervisor(config)
    wait_until(
        lambda: all(store.get(j).status == JobStatus.SUCCEEDED for j in jobs), 60, "30 succeeded"
    )
    wait_until(lambda: store.get(unknown).status == JobStatus.FAILED, 20, "the unknown type")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0

    for job_id, job_type in jobs.items():
        record = store.get(job_id)
        assert (record.result["made"], record.attempts, record.type) == (job_type, 1, job_type)
    failed = store.get(unknown)
    assert failed.error.type == "UnknownJobType"
    assert failed.error.message == (
        "binding 'assets' has no handler for job type 'audio'; it knows image, video"
    )
    dlq = sqs.get_queue_url(QueueName="assets-dlq")["QueueUrl"]
    assert queue_counts(sqs, dlq)["visible"] == 1
    assert supervisor.ledger.count("start").get(unknown) is None  # no handler ran for it
    code, out, _ = run_cli(capsys, "dlq", "dump", "-c", str(config), "assets")
    assert code == 0
    [dumped] = [json.loads(line) for line in out.splitlines()]
    assert dumped["reason"].startswith("UnknownJobType: binding 'assets' has no handler")
    assert main(["jobs", "list", "-c", str(config), "--type", "video", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["id"] for r in listed) == sorted(j for j, t in jobs.items() if t == "video")


def test_type_metrics_are_bounded_to_the_yaml_types(sqs, tmp_path, start_supervisor):
    port = free_port()
    make_queue(sqs, "routed", dlq="routed-dlq")
    config = write_config(
        tmp_path / "w.yaml",
        [routed("routed", {"image": "make_image"})],
        metrics={"host": "127.0.0.1", "port": port},
    )
    producer = Producer(load_config(config, import_handlers=False))
    producer.enqueue_many("routed", [{"n": 1}, {"n": 2}], job_type="image")
    producer.enqueue_many("routed", [{"n": 3}], job_type="sound")
    producer.enqueue_many("routed", [{"n": 4}], job_type="smell")

    supervisor = start_supervisor(config)
    supervisor.wait_for_log("metrics, /healthz and /readyz on")

    def by_type(job_type: str, outcome: str) -> float:
        name = "sqs_supervisor_messages_processed_by_type_total"
        return total(scrape(port), name, binding="routed", job_type=job_type, outcome=outcome)

    wait_until(lambda: by_type("image", "succeeded") == 2, 30, "2 images")
    wait_until(lambda: by_type("unknown", "dead_lettered") == 2, 30, "2 unknown types")
    types = {ls for (n, ls), _ in scrape(port).items() if n.endswith("by_type_total")}
    assert {dict(ls)["job_type"] for ls in types} == {"image", "unknown"}
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_a_raw_message_routes_by_its_job_type_attribute_and_star_takes_the_rest(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "raw", dlq="raw-dlq")
    config = write_config(
        tmp_path / "w.yaml", [routed("raw", {"video": "make_video", "*": "make_anything"})]
    )
    video = sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"n": 1}),
        MessageAttributes={"JobType": {"DataType": "String", "StringValue": "video"}},
    )["MessageId"]
    other = sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 2}))["MessageId"]

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 2, 30, "both messages")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert set(supervisor.ledger.count("end")) == {video, other}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"handlers": {}}, "bindings[0].handlers: give at least one job type: handler entry"),
        (
            {"handlers": {"image": "apphandlers:make_image"}, "handler": "apphandlers:behave"},
            "give handler (one function) or handlers (job type -> function), not both",
        ),
        (
            {"handlers": {"image": "apphandlers:make_imag"}},
            "bindings[0].handlers.image: module 'apphandlers' has no attribute 'make_imag'",
        ),
        (
            {"handlers": {"bad type!": "apphandlers:make_image"}},
            "job type 'bad type!': letters, digits",
        ),
        (
            {"handlers": {"a": "apphandlers:make_image", "b": "apphandlers:behave_async"}},
            "bindings[0].handlers: mixes async def and plain functions",
        ),
        (
            {"handlers": {"a": "apphandlers:batch_fail_some"}, "batch": True},
            "batch: true takes one handler: a batch would mix job types",
        ),
    ],
)
def test_check_validates_every_handler_of_the_mapping(
    entry, expected, tmp_path, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(APPS))
    config = write_config(tmp_path / "w.yaml", [{"name": "t", "queue": "t", **entry}])
    assert main(["check", "-c", str(config)]) == 2
    assert expected in capsys.readouterr().err
