"""The engine end to end: real forked children against moto's server over HTTP."""

from __future__ import annotations

import signal
import threading
import time

import psutil

from support import (
    Faults,
    TcpProxy,
    make_queue,
    queue_counts,
    send_bodies,
    wait_until,
    write_config,
)

HANDLER = "apphandlers:behave"


def binding(name: str, queue: str, **settings):
    return {"name": name, "queue": queue, "handler": HANDLER, "wait_time_seconds": 1, **settings}


def test_200_messages_on_two_processes_each_handled_exactly_once(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "bulk")
    ids = send_bodies(sqs, url, [{"n": i} for i in range(200)])
    config = write_config(tmp_path / "w.yaml", [binding("bulk", "bulk", processes=2)])

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 200, 90, "200 messages handled")
    wait_until(
        lambda: queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0},
        10,
        "an empty queue",
    )
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    starts = supervisor.ledger.count("start")
    assert set(starts) == set(ids)
    twice = [row for row in supervisor.ledger.events("start") if starts[row["id"]] > 1]
    assert not twice, f"handled more than once: {twice}"
    assert len({row["pid"] for row in supervisor.ledger.events("end")}) == 2


def test_jobs_longer_than_the_visibility_timeout_run_once(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "long", visibility=4)
    send_bodies(sqs, url, [{"sleep": 12}, {"sleep": 12}])
    config = write_config(
        tmp_path / "w.yaml",
        [binding("long", "long", processes=2, visibility_timeout=4, batch_size=1)],
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) == 2, 40, "two 12 s jobs")
    wait_until(lambda: queue_counts(sqs, url)["in_flight"] == 0, 5, "deletes")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert sorted(supervisor.ledger.count("start").values()) == [1, 1]
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_child_that_exits_mid_job_is_replaced_and_its_message_retried_at_once(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "crashy", visibility=120)
    [message_id] = send_bodies(sqs, url, [{"exit_first": 7}])
    config = write_config(
        tmp_path / "w.yaml", [binding("crashy", "crashy", processes=1, visibility_timeout=120)]
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("end")[message_id] == 1, 20, "the retry to succeed")
    first, second = supervisor.ledger.events("start")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert first["pid"] != second["pid"], "the retry ran in a replacement child"
    assert second["at"] - first["at"] < 5, "retried within seconds, not after 120 s"
    assert "exited unexpectedly with code 7" in supervisor.logs()
    assert "released 1 message(s)" in supervisor.logs()


def test_always_failing_messages_go_to_the_dlq_after_three_tries(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "work", visibility=30, dlq="work-dlq", max_receive=3)
    dlq_url = sqs.get_queue_url(QueueName="work-dlq")["QueueUrl"]
    failing = send_bodies(sqs, url, [{"fail": True, "n": i} for i in range(4)])
    healthy = send_bodies(sqs, url, [{"n": i} for i in range(6)])
    config = write_config(
        tmp_path / "w.yaml",
        [
            binding(
                "work",
                "work",
                processes=2,
                retry={"base_seconds": 1, "max_seconds": 10},
                dead_letter={"queue": "work-dlq", "max_receive_count": 3},
            )
        ],
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: queue_counts(sqs, dlq_url)["visible"] == 4, 60, "4 messages in the DLQ")
    wait_until(
        lambda: queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0},
        10,
        "an empty source queue",
    )
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    tries = supervisor.ledger.count("fail")
    assert {message_id: tries[message_id] for message_id in failing} == dict.fromkeys(failing, 3)
    assert supervisor.ledger.count("end") == dict.fromkeys(healthy, 1)
    # The retries were spaced by the backoff: 1 s, then 2 s (minus at most 20 % jitter).
    for message_id in failing:
        times = [r["at"] for r in supervisor.ledger.events("start") if r["id"] == message_id]
        assert times[1] - times[0] >= 0.8 and times[2] - times[1] >= 1.6, times


def test_sigterm_finishes_the_running_job_and_releases_prefetched_ones(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "drain", visibility=300)
    ids = send_bodies(sqs, url, [{"sleep": 5}] + [{"n": i} for i in range(5)])
    config = write_config(
        tmp_path / "w.yaml", [binding("drain", "drain", processes=1, visibility_timeout=300)]
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: supervisor.ledger.count("start"), 20, "the first job to start")
    assert queue_counts(sqs, url)["in_flight"] == 6, "the child holds the job and 5 prefetched"
    sent_at = time.monotonic()
    supervisor.signal(signal.SIGTERM)

    wait_until(lambda: queue_counts(sqs, url)["visible"] == 5, 3, "5 released messages")
    released_after = time.monotonic() - sent_at
    assert supervisor.wait(timeout=30) == 0
    exited_after = time.monotonic() - sent_at
    assert supervisor.ledger.count("end") == {ids[0]: 1}, "the running job finished"
    assert queue_counts(sqs, url) == {"visible": 5, "in_flight": 0, "delayed": 0}
    assert released_after < 2.0
    assert 3.0 < exited_after < 10.0


def test_a_child_that_keeps_dying_backs_off_instead_of_spinning(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "doom", visibility=30)
    send_bodies(sqs, url, [{"exit": 9}] * 10)
    config = write_config(tmp_path / "w.yaml", [binding("doom", "doom", processes=1)])

    supervisor = start_supervisor(config)
    supervisor.wait_for_log("restarting doom slot 0 in 4 s (crash 3 in a row", timeout=30)
    parent_cpu = psutil.Process(supervisor.pid).cpu_times()
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    logs = supervisor.logs()
    assert "restarting doom slot 0 in 1 s (crash 1 in a row" in logs
    assert "restarting doom slot 0 in 2 s (crash 2 in a row" in logs
    # Three crashes in ~3 s of backoff: the parent slept instead of spinning.
    assert parent_cpu.user + parent_cpu.system < 5
    assert len(supervisor.ledger.events("start")) <= 4


def test_sigkilled_child_messages_are_retried_and_nothing_is_lost(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "victim", visibility=120)
    ids = send_bodies(sqs, url, [{"sleep": 0.2, "n": i} for i in range(30)])
    config = write_config(
        tmp_path / "w.yaml", [binding("victim", "victim", processes=2, visibility_timeout=120)]
    )

    supervisor = start_supervisor(config)
    wait_until(lambda: len(supervisor.ledger.count("end")) >= 5, 20, "some progress")
    victim = supervisor.ledger.events("start")[-1]["pid"]
    psutil.Process(victim).kill()
    wait_until(lambda: set(supervisor.ledger.count("end")) == set(ids), 60, "all 30 handled")
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert "was killed by SIGKILL; perhaps out of memory?" in supervisor.logs()
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_replacement_child_holds_none_of_the_parents_sqs_connections(
    sqs, sqs_endpoint, tmp_path, start_supervisor
):
    """A child forked after the parent has talked to SQS (queue polls, releases) must not keep
    the parent's kept connection open: its server side would live until every child exits."""
    make_queue(sqs, "fds", visibility=30)
    config = write_config(tmp_path / "w.yaml", [binding("fds", "fds", processes=1)])
    port = int(sqs_endpoint.rsplit(":", 1)[1])

    def sqs_sockets(pid: int) -> set:
        return {
            (c.laddr, c.raddr)
            for c in psutil.Process(pid).net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        }

    supervisor = start_supervisor(config)
    parent = supervisor.process.pid
    wait_until(lambda: sqs_sockets(parent), 20, "the parent's own SQS connection")
    first = wait_until(supervisor.children, 20, "a child")[0]
    psutil.Process(first).kill()
    replacement = wait_until(
        lambda: [pid for pid in supervisor.children() if pid != first], 20, "a replacement"
    )[0]
    wait_until(lambda: sqs_sockets(replacement), 20, "the replacement's own connection")

    assert sqs_sockets(parent), "the parent's connection is still up"
    assert not sqs_sockets(parent) & sqs_sockets(replacement)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_a_fast_stop_during_a_delete_leaves_the_finished_messages_to_the_parent(
    sqs, sqs_endpoint, tmp_path, start_supervisor
):
    """SIGQUIT while a receive's batched delete is on its way: the child must not release
    the messages it finished (visible again, another consumer would run them before the
    parent's delete); it leaves them to the parent, which deletes them from the child's
    finished log."""
    proxy = TcpProxy(int(sqs_endpoint.rsplit(":", 1)[1]))
    proxy.faults = Faults(hold=(("DeleteMessageBatch", 3.0),))
    proxy.start()
    url = make_queue(sqs, "cutshort", visibility=60)
    ids = send_bodies(sqs, url, [{"n": i} for i in range(3)])
    config = write_config(tmp_path / "w.yaml", [binding("cutshort", "cutshort")])
    supervisor = start_supervisor(config, env={"AWS_ENDPOINT_URL_SQS": proxy.url})
    wait_until(lambda: proxy.counts()["DeleteMessageBatch"] == 1, 30, "the delete on its way")
    assert set(supervisor.ledger.count("end")) == set(ids)
    # The parent's delete is held too, for the other consumer's chance to steal, but well
    # inside the parent's 3 s read timeout: a timed-out delete would be released instead.
    proxy.faults = Faults(hold=(("DeleteMessageBatch", 1.0),))

    stolen: list[dict] = []  # another consumer, polling while the parent's delete is held
    other = threading.Thread(
        target=lambda: stolen.extend(
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=4).get(
                "Messages", []
            )
        )
    )
    supervisor.signal(signal.SIGQUIT)
    other.start()
    assert supervisor.wait(timeout=30) == 0
    other.join()
    proxy.stop()
    assert stolen == []
    assert proxy.counts()["DeleteMessageBatch"] == 2  # the child's, cut short; the parent's
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert sum(supervisor.ledger.count("end").values()) == 3
