"""What only the PostgreSQL store has: a server that goes away and comes back, a versioned
schema, one connection per process that forked children leave alone. Against the real server
conftest.py starts; the shared behaviour is in test_contract.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobstore.pgserver import PostgresServer, free_port
from supervisor.config import load_config
from supervisor.jobs.producer import Producer
from supervisor.jobs.stores import JobStatus, StoreError
from supervisor.jobs.stores import postgresql as pg
from supervisor.jobs.stores.postgresql import PostgresJobStore
from support import make_queue, wait_until, write_config

WRITERS = 4


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database: its URL, with a password (ignored by trust auth) to mask."""
    name = f"sqs_supervisor_test_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    yield postgres_server.url(name, password="hunter2")
    if not postgres_server.is_running():
        postgres_server.start()
    postgres_server.drop_database(name)


def _start(store: PostgresJobStore, job_id: str) -> Any:
    return store.mark_started(job_id, binding="b", queue="q", host="h", pid=os.getpid())


def _assert_masked(error: StoreError, url: str) -> None:
    message = str(error)
    assert message.startswith(f"PostgreSQL job store {url.replace('hunter2', '***')}: "), message
    assert "hunter2" not in message
    assert "\n" not in message, "one log line"
    assert error.__cause__ is None and error.__suppress_context__


def test_a_store_fails_fast_while_the_server_is_down_and_reconnects_when_it_is_back(
    postgres_server: PostgresServer, database: str
) -> None:
    store = PostgresJobStore(database)
    store.create("before")
    postgres_server.stop()
    try:
        calls = [
            lambda: store.get("before"),
            lambda: _start(store, "before"),
            lambda: store.mark_progress("before", 10),
            lambda: store.create("during"),
            lambda: store.list(),
        ]
        for call in calls:
            began = time.monotonic()
            with pytest.raises(StoreError) as caught:
                call()
            assert time.monotonic() - began < 5, "fails within the connect timeout"
            _assert_masked(caught.value, database)
    finally:
        postgres_server.start()

    # The same object, no reopening: the connection that died is replaced on the next call.
    assert store.get("before").status == JobStatus.QUEUED  # type: ignore[union-attr]
    assert _start(store, "before").attempts == 1
    # A restart the store did not see (idle all along) costs no failed call either.
    postgres_server.stop()
    postgres_server.start()
    store.mark_succeeded("before", {"ok": True})
    assert store.get("before").result == {"ok": True}  # type: ignore[union-attr]
    store.close()


def test_a_server_that_accepts_but_never_answers_fails_within_the_connect_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads
        url = f"postgresql://user:hunter2@127.0.0.1:{silent.getsockname()[1]}/jobs"
        store = PostgresJobStore(url)
        began = time.monotonic()
        with pytest.raises(StoreError, match="timeout") as caught:
            store.get("j1")
        elapsed = time.monotonic() - began
    assert 2 < elapsed < 8, f"took {elapsed:.1f} s; connect_timeout is 3 s"
    _assert_masked(caught.value, url)


def test_an_unreachable_server_is_a_store_error_naming_the_url_without_its_password() -> None:
    url = f"postgresql://user:hunter2@127.0.0.1:{free_port()}/jobs"
    with pytest.raises(StoreError, match="Connection refused") as caught:
        PostgresJobStore(url).create("j1")
    _assert_masked(caught.value, url)


def test_the_schema_is_created_once_versioned_and_indexed(database: str) -> None:
    with PostgresJobStore(database) as first, PostgresJobStore(database) as second:
        first.create("j1")
        assert second.get("j1") is not None
    with psycopg.connect(database) as conn:
        versions = conn.execute("SELECT version FROM sqs_supervisor_schema").fetchall()
        indexed = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = 'sqs_supervisor_jobs'::regclass"
        ).fetchall()
    assert versions == [(pg.SCHEMA_VERSION,)]
    assert {column for (column,) in indexed} >= {
        "id",
        "status",
        "binding",
        "type",
        "created_at",
        "finished_at",
    }


def test_a_later_version_migrates_an_existing_database_and_keeps_its_jobs(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresJobStore(database) as old:
        old.create("j1", binding="kept")
    later = pg.SCHEMA_VERSION + 1
    alter = f"ALTER TABLE {pg.JOBS} ADD COLUMN tenant text NOT NULL DEFAULT 'none'"
    monkeypatch.setitem(pg._MIGRATIONS, later, [alter])
    monkeypatch.setattr(pg, "SCHEMA_VERSION", later)
    with PostgresJobStore(database) as new:
        assert new.get("j1").binding == "kept"  # type: ignore[union-attr]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT version FROM sqs_supervisor_schema").fetchall() == [(later,)]
        assert conn.execute(f"SELECT tenant FROM {pg.JOBS}").fetchall() == [("none",)]


def test_a_schema_newer_than_this_release_is_refused(database: str) -> None:
    with PostgresJobStore(database) as store:
        store.create("j1")
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE sqs_supervisor_schema SET version = version + 1")
    with pytest.raises(StoreError, match="newer than this sqs-supervisor's") as caught:
        PostgresJobStore(database).get("j1")
    assert "hunter2" not in str(caught.value)


def _first_use(url: str, writer: int, start: Any) -> None:
    start.wait(timeout=60)
    store = PostgresJobStore(url)
    _start(store, f"job-{writer}")
    _start(store, "shared")


def test_processes_opening_a_new_database_at_once_create_the_schema_once(database: str) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WRITERS)
    writers = [
        context.Process(target=_first_use, args=(database, n, start)) for n in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [writer.exitcode for writer in writers] == [0] * WRITERS
    with PostgresJobStore(database) as store:
        assert store.get("shared").attempts == WRITERS  # type: ignore[union-attr]
        assert len(store.list(limit=10)) == WRITERS + 1


def _use_and_close(store: PostgresJobStore, job_id: str) -> None:
    store.close()  # before any use: what it would close is the parent's connection
    _start(store, job_id)
    store.close()
    os._exit(0)  # as a supervisor's child ends: no interpreter teardown


def _backend_pid(store: PostgresJobStore) -> int:
    assert store._conn is not None
    return store._conn.info.backend_pid


def test_forked_children_never_touch_the_parents_connection(database: str) -> None:
    store = PostgresJobStore(database)
    store.create("parent")
    before = _backend_pid(store)
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_use_and_close, args=(store, f"child-{n}")) for n in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0] * 3
    records = store.list(limit=10)
    assert _backend_pid(store) == before, "the parent's session survived its children"
    assert sorted(record.id for record in records) == ["child-0", "child-1", "child-2", "parent"]
    assert {record.pid for record in records if record.id != "parent"} == {
        child.pid for child in children
    }
    store.close()


def test_a_child_forked_while_a_thread_is_inside_a_store_call_does_not_deadlock(
    database: str,
) -> None:
    store = PostgresJobStore(database)
    store.create("busy")
    with psycopg.connect(database) as blocker:
        # Hold the row so that a thread's update waits in the server, holding the store's lock.
        blocker.execute(f"SELECT 1 FROM {pg.JOBS} WHERE id = 'busy' FOR UPDATE")
        waiting = threading.Thread(target=store.mark_progress, args=("busy", 50))
        waiting.start()
        wait_until(lambda: store._lock.locked(), 10, "the thread inside the store call")
        child = multiprocessing.get_context("fork").Process(
            target=_use_and_close, args=(store, "child")
        )
        child.start()
        child.join(timeout=20)
        exitcode = child.exitcode
        if exitcode is None:
            child.kill()
    waiting.join(timeout=20)
    assert exitcode == 0, "the child must not wait for a lock its parent's thread held"
    assert store.get("child").pid == child.pid  # type: ignore[union-attr]
    assert store.get("busy").progress == 50  # type: ignore[union-attr]
    store.close()


def test_a_supervisor_works_on_while_the_store_is_down_and_records_again_after(
    postgres_server: PostgresServer,
    database: str,
    sqs: Any,
    start_supervisor: Any,
    tmp_path: Path,
) -> None:
    queue_url = make_queue(sqs, "articles")
    binding = {
        "name": "articles",
        "queue": "articles",
        "handler": "apphandlers:behave",
        "processes": 2,
        "wait_time_seconds": 1,
    }
    config = write_config(tmp_path / "w.yaml", [binding], jobs={"store": database})
    producer = Producer(load_config(config, import_handlers=False))
    store = PostgresJobStore(database)

    def succeeded(job_ids: list[str]) -> bool:
        return all(store.get(i).status == JobStatus.SUCCEEDED for i in job_ids)  # type: ignore[union-attr]

    supervisor = start_supervisor(config)
    before = producer.enqueue_many("articles", [{"n": n} for n in range(5)])
    wait_until(lambda: succeeded(before), 30, "the first 5 jobs succeeded")

    postgres_server.stop()
    try:
        # The producer needs the store, so these come as raw envelopes naming unrecorded jobs.
        for n in range(5):
            body = {"jobId": f"down-{n}", "payload": {"n": n}}
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
        wait_until(lambda: len(supervisor.ledger.events("end")) == 10, 30, "10 handler runs")
        supervisor.wait_for_log("job store unavailable")
        wait_until(lambda: _drained(sqs, queue_url), 30, "the queue drained")
    finally:
        postgres_server.start()

    after = producer.enqueue_many("articles", [{"n": n} for n in range(5)])
    wait_until(lambda: succeeded(after), 30, "5 jobs after the restart succeeded")
    assert {store.get(i).attempts for i in after} == {1}  # type: ignore[union-attr]
    assert store.get("down-0") is None, "nothing was recorded while the server was down"
    assert "hunter2" not in supervisor.logs()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    store.close()


def _drained(sqs: Any, queue_url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return all(attributes["Attributes"][name] == "0" for name in names)
