"""The oldest-message-age derivation, driven poll by poll with a fake queue."""

from __future__ import annotations

from supervisor.config import Binding
from supervisor.observe.metrics import Metrics
from supervisor.observe.queuestats import QueueStats


class FakeSqs:
    def __init__(self) -> None:
        self.visible = 0

    def queue_url(self, name: str) -> str:
        return f"http://sqs.local/000000000000/{name}"

    def get_attributes(self, url: str, names: list[str]) -> dict[str, str]:
        return {
            "ApproximateNumberOfMessages": str(self.visible),
            "ApproximateNumberOfMessagesNotVisible": "1",
            "ApproximateNumberOfMessagesDelayed": "0",
        }


def age(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value(
        "sqs_supervisor_oldest_message_age_seconds", {"queue": "jobs"}
    )


def test_oldest_age_is_the_largest_received_then_grows_while_messages_wait():
    metrics, sqs = Metrics(), FakeSqs()
    stats = QueueStats(metrics, lambda: sqs, interval=15)
    bindings = [Binding(name="jobs", queue="http://sqs.local/000000000000/jobs", handler="m:f")]

    sqs.visible = 40
    stats.note_received("jobs", [3.0, 42.5, 7.0])
    stats.note_received("jobs", [12.0])
    stats.poll(bindings, now=100)
    assert age(metrics) == 42.5
    assert (
        metrics.registry.get_sample_value(
            "sqs_supervisor_queue_messages", {"queue": "jobs", "state": "visible"}
        )
        == 40
    )

    # Nothing received for a window while messages wait: a lower bound, growing with time.
    stats.poll(bindings, now=115)
    assert age(metrics) == 57.5

    # A fresh window replaces the value; it is not a running maximum.
    stats.note_received("jobs", [1.0])
    stats.poll(bindings, now=130)
    assert age(metrics) == 1.0

    # Nothing visible and nothing received: nothing is waiting.
    sqs.visible = 0
    stats.poll(bindings, now=145)
    assert age(metrics) == 0


def test_polls_are_spaced_by_the_interval():
    metrics, sqs = Metrics(), FakeSqs()
    stats = QueueStats(metrics, lambda: sqs, interval=15)
    bindings = [Binding(name="jobs", queue="jobs", handler="m:f")]
    sqs.visible = 3
    stats.poll(bindings, now=0)
    sqs.visible = 9
    stats.poll(bindings, now=10)
    value = {"queue": "jobs", "state": "visible"}
    assert metrics.registry.get_sample_value("sqs_supervisor_queue_messages", value) == 3
    stats.poll(bindings, now=15)
    assert metrics.registry.get_sample_value("sqs_supervisor_queue_messages", value) == 9
