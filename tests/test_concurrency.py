"""Many jobs per child (``concurrency``): threads for plain handlers, one event loop for
``async def`` ones. Real forked children against the local SQS over HTTP."""

from __future__ import annotations

import os
import signal
import time

import pytest

from supervisor.cli.main import main
from supervisor.ops.local import free_port
from support import (
    APPS,
    Faults,
    TcpProxy,
    make_queue,
    queue_counts,
    scrape,
    send_bodies,
    total,
    wait_until,
    write_config,
)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}


def binding(name: str, handler: str, **settings):
    return {
        "name": name,
        "queue": name,
        "handler": f"apphandlers:{handler}",
        "processes": 1,
        "wait_time_seconds": 1,
        **settings,
    }


def most_at_once(events: list[dict]) -> int:
    """The largest number of jobs running at the same moment, from start/end ledger rows."""
    steps = sorted(
        (row["at"], 1 if row["event"] == "start" else -1)
        for row in events
        if row["event"] in ("start", "end", "fail", "permanent")
    )
    running = peak = 0
    for _, step in steps:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("handler", ["stepping", "behave_async"])
def test_one_child_runs_its_slots_at_once_and_never_holds_more(
    handler, sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "many", visibility=60)
    ids = send_bodies(sqs, url, [{"sleep": 1.5} for _ in range(30)])
    config = write_config(tmp_path / "w.yaml", [binding("many", handler, concurrency=10)])

    supervisor = start_supervisor(config)
    held = []
    started = time.monotonic()

    def done() -> bool:
        held.append(queue_counts(sqs, url)["in_flight"])
        return len(supervisor.ledger.count("end")) == 30

    wait_until(done, 60, "30 jobs")
    elapsed = time.monotonic() - started
    wait_until(lambda: queue_counts(sqs, url) == EMPTY, 10, "an empty queue")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert sorted(supervisor.ledger.count("start").values()) == [1] * 30
    assert set(supervisor.ledger.count("end")) == set(ids)
    assert len({row["pid"] for row in supervisor.ledger.events("start")}) == 1
    assert 8 <= most_at_once(supervisor.ledger.events()) <= 10
    # In flight at SQS: the 10 running, plus finished ones whose batched delete is under way
    # (flushed within 0.5 s); never a backlog of prefetched ones (test_slots.py asks exactly).
    assert max(held) <= 20, "the child received more messages than it had free slots"
    assert elapsed < 30, "30 jobs of 1.5 s on 10 slots ran one after another"


@pytest.mark.parametrize("handler", ["stepping", "behave_async"])
def test_each_job_settles_on_its_own_outcome(handler, sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "mixed", visibility=30, dlq="mixed-dlq", max_receive=5)
    dlq = sqs.get_queue_url(QueueName="mixed-dlq")["QueueUrl"]
    bodies = [{"sleep": 0.5}] * 6 + [{"fail": True}] * 2 + [{"permanent": True}] * 2
    ids = send_bodies(sqs, url, bodies)
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding(
                "mixed",
                handler,
                concurrency=5,
                retry={"base_seconds": 1, "max_seconds": 1},
                dead_letter={"queue": "mixed-dlq", "max_receive_count": 5},
            )
        ],
    )

    supervisor = start_supervisor(config)
    failing = set(ids[6:8])
    wait_until(
        lambda: all(supervisor.ledger.count("fail")[i] >= 2 for i in failing), 30, "two retries"
    )
    wait_until(lambda: queue_counts(sqs, dlq)["visible"] == 2, 10, "two dead-lettered")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert set(supervisor.ledger.count("end")) == set(ids[:6])
    assert set(supervisor.ledger.count("permanent")) == set(ids[8:])
    assert all(supervisor.ledger.count("permanent")[i] == 1 for i in ids[8:])
    retried = [r for r in supervisor.ledger.events("fail") if r["id"] in failing]
    assert {r["receive_count"] for r in retried} >= {1, 2}


def test_fifo_groups_run_in_order_one_at_a_time_and_side_by_side(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "orders.fifo", visibility=60)
    sent = {}
    for group in ("a", "b", "c"):
        for n in range(4):
            response = sqs.send_message(
                QueueUrl=url,
                MessageBody='{"sleep": 0.4}',
                MessageGroupId=group,
                MessageDeduplicationId=f"{group}{n}",
            )
            sent[response["MessageId"]] = (group, n)
    config = write_config(
        tmp_path / "w.yaml", [binding("orders", "stepping", queue="orders.fifo", concurrency=6)]
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 12, 40, "12 messages")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    events = supervisor.ledger.events()
    for group in ("a", "b", "c"):
        rows = [r for r in events if sent[r["id"]][0] == group]
        assert [sent[r["id"]][1] for r in rows if r["event"] == "start"] == [0, 1, 2, 3]
        assert most_at_once(rows) == 1, f"group {group} ran two messages at once"
    assert most_at_once(events) >= 2, "the groups did not run side by side"


@pytest.mark.parametrize("handler", ["stepping", "behave_async"])
def test_a_job_past_its_timeout_is_retried_at_once_and_the_others_finish(
    handler, sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "stuck", visibility=120)
    [stuck] = send_bodies(sqs, url, [{"sleep_first": 60}])
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding(
                "stuck",
                handler,
                concurrency=4,
                timeout=5,
                drain_timeout=20,
                retry={"base_seconds": 1, "max_seconds": 1},
            )
        ],
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("start")[stuck], 20, "the stuck job's start")
    # Three more that start ~3 s into the stuck one and are still running when it times out.
    others = send_bodies(sqs, url, [{"sleep": 4.5}] * 3)
    ids = [stuck, *others]
    wait_until(lambda: supervisor.ledger.count("end")[stuck] == 1, 40, "the stuck job's retry")
    wait_until(lambda: len(supervisor.ledger.count("end")) == 4, 20, "every job")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    starts = supervisor.ledger.events("start")
    first, retry = [r for r in starts if r["id"] == ids[0]][:2]
    assert retry["at"] - first["at"] < 20, "the stuck job waited out its visibility timeout"
    # The other three ran once each, to their end, in the child that gave up on the stuck one.
    assert all(supervisor.ledger.count("start")[i] == 1 for i in ids[1:])
    assert {r["pid"] for r in supervisor.ledger.events("end") if r["id"] in ids[1:]} == {
        first["pid"]
    }
    logs = supervisor.logs()
    assert f"job {stuck} exceeded its 5 s timeout; it gets its retry delay" in logs
    assert "killing the child" not in logs
    assert queue_counts(sqs, url) == EMPTY


@pytest.mark.parametrize("handler", ["stepping", "behave_async"])
def test_a_soft_timeout_interrupts_one_job_inside_and_retries_it(
    handler, sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "soft", visibility=60)
    slow, quick = send_bodies(sqs, url, [{"sleep_first": 30}, {"sleep": 0.3}])
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding(
                "soft",
                handler,
                concurrency=2,
                soft_timeout=1,
                timeout=20,
                retry={"base_seconds": 1, "max_seconds": 1},
            )
        ],
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("end")[slow] == 1, 30, "the retried job's end")
    wait_until(lambda: supervisor.ledger.count("end")[quick] == 1, 10, "the quick job")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert supervisor.ledger.count("soft") == {slow: 1}
    assert "SoftTimeout: soft timeout of 1 s exceeded" in supervisor.logs()
    assert len({r["pid"] for r in supervisor.ledger.events("start")}) == 1, "no child was killed"


def test_sigterm_lets_every_running_job_finish_and_leaves_the_rest_queued(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "drain", visibility=60)
    send_bodies(sqs, url, [{"sleep": 3}] * 12)
    config = write_config(tmp_path / "w.yaml", [binding("drain", "stepping", concurrency=5)])

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("start")) == 5, 20, "5 running jobs")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait(timeout=30) == 0
    assert len(supervisor.ledger.count("end")) == 5
    assert len(supervisor.ledger.count("start")) == 5, "a job started after SIGTERM"
    assert queue_counts(sqs, url) == {"visible": 7, "in_flight": 0, "delayed": 0}


def test_sigterm_waits_for_a_delete_already_on_its_way(
    sqs, sqs_endpoint, tmp_path, start_supervisor
):
    """The last job to end sends the batched delete from its own thread; the main thread's
    shutdown must wait for it, not find nothing pending, release the finished messages and
    exit while that delete has not left (they would all run again)."""
    proxy = TcpProxy(int(sqs_endpoint.rsplit(":", 1)[1]))
    proxy.faults = Faults(hold=(("DeleteMessageBatch", 2.0),))
    proxy.start()
    url = make_queue(sqs, "inflight", visibility=60)
    send_bodies(sqs, url, [{"sleep": 1}] * 12)
    config = write_config(tmp_path / "w.yaml", [binding("inflight", "stepping", concurrency=5)])

    supervisor = start_supervisor(config, env={"AWS_ENDPOINT_URL_SQS": proxy.url})
    wait_until(lambda: len(supervisor.ledger.count("start")) == 5, 20, "5 running jobs")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait(timeout=30) == 0
    proxy.stop()
    assert len(supervisor.ledger.count("end")) == 5
    assert proxy.counts()["DeleteMessageBatch"] >= 1
    assert queue_counts(sqs, url) == {"visible": 7, "in_flight": 0, "delayed": 0}


def test_a_killed_child_has_all_its_running_jobs_retried_in_seconds(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "kill", visibility=120)
    ids = send_bodies(sqs, url, [{"sleep_first": 30}] * 5)
    config = write_config(tmp_path / "w.yaml", [binding("kill", "stepping", concurrency=5)])

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("start")) == 5, 20, "5 running jobs")
    victim = supervisor.ledger.events("start")[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 5, 30, "all 5 retried")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert {r["receive_count"] for r in supervisor.ledger.events("end")} == {2}
    assert set(supervisor.ledger.count("end")) == set(ids)


def test_slot_gauges_show_capacity_and_the_busy_slots(sqs, tmp_path, start_supervisor):
    port = free_port()
    url = make_queue(sqs, "gauged", visibility=60)
    send_bodies(sqs, url, [{"sleep": 8}] * 3)
    config = write_config(
        tmp_path / "w.yaml",
        [binding("gauged", "stepping", processes=2, concurrency=4)],
        metrics={"host": "127.0.0.1", "port": port},
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("start")) == 3, 20, "3 running jobs")

    def gauges() -> tuple[float, float]:
        samples = scrape(port)
        return (
            total(samples, "sqs_supervisor_slots", binding="gauged"),
            total(samples, "sqs_supervisor_busy_slots", binding="gauged"),
        )

    wait_until(lambda: gauges() == (8, 3), 10, "8 slots, 3 busy")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_an_async_handler_that_blocks_the_loop_is_named_and_its_jobs_still_finish(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "blocking", visibility=60)
    ids = send_bodies(sqs, url, [{"block": 4.5}, {"sleep": 0.1}])
    config = write_config(tmp_path / "w.yaml", [binding("blocking", "behave_async", concurrency=2)])

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 2, 30, "both jobs")
    supervisor.wait_for_log("the event loop was blocked for", timeout=10)
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert set(supervisor.ledger.count("end")) == set(ids)
    assert "handler apphandlers:behave_async makes blocking calls" in supervisor.logs()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"concurrency": 0}, "bindings[0].concurrency: Input should be greater than or equal to 1"),
        ({"concurrency": 5000}, "at most 1000 jobs at once per child; for more, add processes"),
        (
            {"handler": "apphandlers:behave_async", "batch": True},
            "bindings[0].handler: a batch handler cannot be async def",
        ),
    ],
)
def test_check_refuses_bad_concurrency(settings, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    config = write_config(tmp_path / "w.yaml", [{**binding("bad", "behave"), **settings}])
    assert main(["check", "-c", str(config)]) == 2
    assert expected in capsys.readouterr().err


def test_check_says_how_many_jobs_run_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding("threads", "stepping", processes=2, concurrency=50),
            binding("tasks", "behave_async", processes=2, concurrency=50),
        ],
    )
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "50 jobs at once on threads per child: 100 slots" in out
    assert "50 jobs at once on tasks on one event loop per child: 100 slots" in out
