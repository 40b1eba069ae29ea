"""Entry point of the local SQS endpoint: moto's server, made atomic.

moto's SQS backend changes a queue's message list from many request threads without a lock:
a receive checks that a message is visible and then marks it received, a delete rebuilds the
list from a copy (dropping a message sent or moved meanwhile, or bringing back one another
delete removed), the move to the dead-letter queue removes from a list a delete replaced
(``ValueError: list.remove(x)``, HTTP 500, after that receive already counted its messages).
Seen here: a message delivered to two children 70 ms apart; in a poison burst, 10 to 41
messages received once instead of twice, deleted messages delivered again, spurious
ReceiptHandleIsInvalid. Real SQS does none of that.

So every call of the backend that reads or changes messages or queues runs under one
re-entrant lock (a batch call, which calls the single one per entry, is atomic as a whole).
ReceiveMessage is the exception: moto's own receive loops sleeping for WaitTimeSeconds; here
each attempt runs under the lock with no wait, and the long-poll wait happens outside it, on
the queue's condition (a send wakes it at once), so a long poll never holds up other clients.

It also makes moto's retention check (run for every message a receive returns) read the queue's
retention period directly: moto computed all the queue's attributes for it, counting every
message, which made a receive of 10 at depth 300 take 0.3-0.7 s, all of it under the lock now.

Run as ``python -m supervisor.ops.localserver`` with moto_server's arguments.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.core.utils import unix_time
from moto.server import main as moto_main
from moto.sqs.models import Message, Queue, SQSBackend

TESTED_MOTO = ((5, 2), (5, 3))  # >= 5.2, < 5.3: keep in step with pyproject.toml's pins
POLL_SLICE = 1.0  # the longest a waiting receive sleeps before looking again

# Every backend method that touches messages or the queue registry. Not the tags and
# permissions calls: they only set a queue's own dicts.
LOCKED = (
    "create_queue",
    "get_queue_url",
    "list_queues",
    "delete_queue",
    "get_queue_attributes",
    "set_queue_attributes",
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
    "list_dead_letter_source_queues",
)
RECEIVE_PARAMETERS = [
    "self",
    "queue_name",
    "count",
    "wait_seconds_timeout",
    "visibility_timeout",
    "message_attribute_names",
]

_lock = threading.RLock()
_depth = threading.local()  # how many locked calls this thread is inside


class UnsupportedMoto(RuntimeError):
    pass


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            _depth.n = getattr(_depth, "n", 0) + 1
            try:
                return method(*args, **kwargs)
            finally:
                _depth.n -= 1

    locked.__wrapped_by_localserver__ = True  # type: ignore[attr-defined]
    return locked


def _receive_message(
    self: SQSBackend,
    queue_name: str,
    count: int,
    wait_seconds_timeout: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None = None,
) -> list[Any]:
    attempt = _atomic(_original_receive)
    deadline = time.monotonic() + wait_seconds_timeout
    while True:
        # Wait 0: moto makes one pass (selection, marking, the DLQ move) and returns.
        result = attempt(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        remaining = deadline - time.monotonic()
        # Called from inside a locked call (moto's Lambda event-source mapping receives from
        # within SendMessage): never wait there, it would hold the lock.
        if result or remaining <= 0 or getattr(_depth, "n", 0):
            return result
        # Outside the lock. Woken at once by a send to this queue (moto notifies the queue's
        # condition); a message whose visibility lapses is seen after at most a slice.
        with _lock:
            queue = self.get_queue(queue_name)
        queue.wait_for_messages(min(remaining, POLL_SLICE))  # type: ignore[arg-type]


def _retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
    period = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
    return message.sent_timestamp / 1000 + period > unix_time()  # type: ignore[operator]


def check_moto() -> None:
    """Refuse a moto whose internals the patch relies on have changed: the backend methods it
    wraps, receive's signature (it calls it with a zero wait), the queue's condition wait
    and retention attribute. The version is only warned about: the pins keep installs within
    the tested range, and a moto that still has all this is worth a try."""
    from importlib.metadata import version

    installed = version("moto")
    missing = [name for name in (*LOCKED, "receive_message") if not hasattr(SQSBackend, name)]
    if not hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        missing.append("is_message_valid_based_on_retention_period")
    if not callable(getattr(Queue, "wait_for_messages", None)):
        missing.append("Queue.wait_for_messages")
    if not hasattr(Queue("probe", "us-east-1", "123456789012"), "message_retention_period"):
        missing.append("Queue.message_retention_period")
    parameters = list(inspect.signature(SQSBackend.receive_message).parameters)
    if parameters != RECEIVE_PARAMETERS:
        missing.append(f"SQSBackend.receive_message{tuple(RECEIVE_PARAMETERS[1:])}")
    if missing:
        raise UnsupportedMoto(
            f"moto {installed} is not supported by the local SQS endpoint: it lacks"
            f" {', '.join(missing)}. Install a tested release:"
            " pip install 'sqs-supervisor[local]' (moto[server]>=5.2.5,<5.3)."
        )
    major_minor = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
    if not TESTED_MOTO[0] <= major_minor < TESTED_MOTO[1]:
        print(
            f"warning: moto {installed} is untested with the local SQS endpoint"
            " (tested: 5.2.x); its atomicity patch applied, but check the results",
            file=sys.stderr,
        )


def install() -> None:
    """Patch moto's SQS backend, once."""
    if getattr(SQSBackend.send_message, "__wrapped_by_localserver__", False):
        return
    check_moto()
    for name in LOCKED:
        setattr(SQSBackend, name, _atomic(getattr(SQSBackend, name)))
    SQSBackend.receive_message = _receive_message  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign]


_original_receive = SQSBackend.receive_message

if __name__ == "__main__":
    try:
        install()
    except UnsupportedMoto as error:
        sys.exit(f"error: {error}")
    moto_main()
