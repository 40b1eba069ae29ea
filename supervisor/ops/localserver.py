"""Entry point of the local SQS endpoint: moto's server with one race fixed.

moto's ReceiveMessage checks that a message is visible and then marks it received without a
lock, so two concurrent receives (two workers) can both get the same message. Seen here: one
message received by two children 70 ms apart, with ApproximateReceiveCount 1 and 2, on a
30-second visibility timeout. Real SQS doesn't do that, and it makes exactly-once tests flaky.
Here the selection step runs under one lock (with no wait), and the long-poll wait happens
outside it, so waiting consumers don't queue behind each other. Run as
``python -m supervisor.ops.localserver`` with moto_server's arguments.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from moto.server import main as moto_main
from moto.sqs.models import SQSBackend

_selection_lock = threading.Lock()
_original_receive = SQSBackend.receive_message
POLL_SLICE = 1.0  # the longest a waiting receive sleeps before looking again


def _receive_message(
    self: SQSBackend,
    queue_name: str,
    count: int,
    wait_seconds_timeout: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None = None,
) -> list[Any]:
    deadline = time.monotonic() + wait_seconds_timeout
    while True:
        with _selection_lock:
            result = _original_receive(
                self, queue_name, count, 0, visibility_timeout, message_attribute_names
            )
        remaining = deadline - time.monotonic()
        if result or remaining <= 0:
            return result
        # Woken at once by a send to this queue; otherwise look again after a slice.
        self.get_queue(queue_name).wait_for_messages(min(remaining, POLL_SLICE))  # type: ignore[arg-type]


SQSBackend.receive_message = _receive_message  # type: ignore[method-assign]

if __name__ == "__main__":
    moto_main()
