"""The Celery side of ``celery_peer.py``: app, settings, the task, and the producer.

Runs in Celery's own venv (celery[sqs], requests), never in the project's: the workers are
``celery -A celery_peer_app worker``, and ``python celery_peer_app.py enqueue N URL`` sends
the tasks. Settings come from the environment that ``celery_peer.py`` sets:

    CELERY_PEER_BROKER  sqs://test:test@127.0.0.1:PORT (the proxy for workers, the endpoint
                        itself for the producer)
    CELERY_PEER_QUEUE   the SQS queue (Celery's default queue, so created on first send)

The settings are the ones a user would write for SQS, defaults wherever Celery has one.
"""

from __future__ import annotations

import os
import sys
import threading

import requests
from celery import Celery

app = Celery("celery_peer")
app.conf.update(
    broker_url=os.environ.get("CELERY_PEER_BROKER", "sqs://test:test@127.0.0.1:4566"),
    broker_connection_retry_on_startup=True,  # unset, Celery 5.3+ warns at every start
    broker_transport_options={
        "region": "us-east-1",
        "is_secure": False,  # the loopback endpoint is plain HTTP
        "visibility_timeout": 60,  # set on the queue when Celery creates it (default 1800)
        "polling_interval": 1,  # the default: after an empty receive, wait 1 s more
        "wait_time_seconds": 20,  # long polls (kombu's default is 10)
    },
    task_default_queue=os.environ.get("CELERY_PEER_QUEUE", "celery-peer"),
    task_acks_late=False,  # the default: a message is deleted as its task starts
    worker_prefetch_multiplier=4,  # the default: 4 x concurrency messages held per worker
    task_ignore_result=True,  # no result backend
)

_local = threading.local()


@app.task(name="celery_peer.slow_get")
def slow_get(url: str) -> None:
    """One blocking GET with ``requests`` (a session per pool thread), as ``benchhandlers``."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    session.get(url, timeout=(5, 120)).raise_for_status()


def enqueue(count: int, url: str) -> None:
    """``count`` tasks, one SendMessage each (apply_async), over one producer connection."""
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            slow_get.apply_async((url,), producer=producer)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "enqueue":
        sys.exit("usage: celery_peer_app.py enqueue COUNT URL")
    enqueue(int(sys.argv[2]), sys.argv[3])
