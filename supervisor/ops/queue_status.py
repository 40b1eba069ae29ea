"""How full the config's queues are: visible, in-flight and delayed counts, DLQs included.

This module owns the read-only status report behind ``queues status`` (and the depth check
``queues purge`` makes first): one row per binding, with None for a queue that does not exist,
so the caller decides how to report a missing queue. It never receives messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from supervisor.config import Config, queue_name
from supervisor.ops.provision import existing_url
from supervisor.sqs import DEPTH_ATTRIBUTES, SqsClient


def depths(sqs: SqsClient, ref: str) -> dict[str, int] | None:
    """Visible, in-flight and delayed counts of one queue, or None if it does not exist."""
    url = existing_url(sqs, ref)
    if url is None:
        return None
    attributes = sqs.get_attributes(url, list(DEPTH_ATTRIBUTES.values()))
    return {state: int(attributes.get(name, 0)) for state, name in DEPTH_ATTRIBUTES.items()}


def status(config: Config, sqs: SqsClient) -> list[dict[str, Any]]:
    """One row per binding: its queue's depths and its dead-letter queue's.

    No age of the oldest message: SQS's API has no such attribute, and deriving it would mean
    receiving (and so disturbing) messages; CloudWatch's ApproximateAgeOfOldestMessage has it.
    """
    rows: list[dict[str, Any]] = []
    for binding in config.bindings:
        row: dict[str, Any] = {
            "binding": binding.name,
            "queue": queue_name(binding.queue),
            "messages": depths(sqs, binding.queue),
            "dead_letter_queue": None,
            "dead_letter_messages": None,
        }
        if binding.dead_letter:
            row["dead_letter_queue"] = queue_name(binding.dead_letter.queue)
            row["dead_letter_messages"] = depths(sqs, binding.dead_letter.queue)
        rows.append(row)
    return rows


def missing_queues(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The queues a status report found missing."""
    missing = []
    for row in rows:
        if row["messages"] is None:
            missing.append(row["queue"])
        if row["dead_letter_queue"] and row["dead_letter_messages"] is None:
            missing.append(row["dead_letter_queue"])
    return missing
