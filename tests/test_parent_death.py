"""The parent is SIGKILLed (OOM killer, kill -9): its children notice, give back what they
hold and exit; a new supervisor started at once takes over."""

from __future__ import annotations

import signal

import psutil

from support import make_queue, queue_counts, send_bodies, wait_until, write_config


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_children_of_a_killed_parent_release_their_messages_and_exit(
    sqs, tmp_path, start_supervisor
):
    url = make_queue(sqs, "orphaned", visibility=120)
    ids = send_bodies(sqs, url, [{"sleep_first": 60}] * 4)
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "orphaned",
                "queue": "orphaned",
                "handler": "apphandlers:stepping",
                "processes": 2,
                "concurrency": 2,
                "wait_time_seconds": 1,
            }
        ],
    )

    first = start_supervisor(config)
    wait_until(lambda: len(first.ledger.count("start")) == 4, 20, "4 running jobs")
    children = first.children()
    assert len(children) == 2
    first.signal(signal.SIGKILL)
    first.wait()

    # Within a few seconds: no child left consuming, every message visible again (released,
    # not waiting out its 120 s visibility timeout).
    wait_until(lambda: all(gone(pid) for pid in children), 10, "the orphaned children to exit")
    wait_until(lambda: queue_counts(sqs, url)["visible"] == 4, 10, "the 4 messages released")

    second = start_supervisor(config)
    wait_until(lambda: len(second.ledger.count("end")) == 4, 30, "the new supervisor's runs")
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert set(second.ledger.count("end")) == set(ids)
