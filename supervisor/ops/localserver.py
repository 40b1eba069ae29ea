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

Below the lock, supervisor/ops/localindex.py indexes each queue's messages, so that receive,
delete, visibility changes, send and the Approximate* counts cost O(batch), not O(depth): moto
scans the whole queue in each of them (a send-batch-10 took 2.2 s at depth 5000). A receive
attempt (``receive_now``) takes from the index; the wait ends on a send, on any change that
makes a message receivable (a visibility set to 0, a FIFO group freed), or when the next
in-flight or delayed message is due. Some constant costs of moto's go
too: a send read all the queue's attributes, converting 14 names from camel case each time
(0.9 ms of each message sent), and every request listed moto's package directory (a stat per
service, 0.5 ms) to find its backend. supervisor/ops/localspeed.py takes out more per-request
costs of moto's HTTP layer and serializer, and supervisor/ops/localkeepalive.py keeps
connections open (werkzeug closed each after one answer).

Run as ``python -m supervisor.ops.localserver`` with moto_server's arguments.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable
from copy import copy
from typing import Any

from moto import backends
from moto.core.utils import unix_time_millis
from moto.server import main as moto_main
from moto.sqs import models
from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid
from moto.sqs.models import Message, Queue, SQSBackend

from supervisor.ops import localindex, localkeepalive, localspeed

TESTED_MOTO = ((5, 2), (5, 3))  # >= 5.2, < 5.3: keep in step with pyproject.toml's pins
MAX_VISIBILITY_MS = 43_200_000  # moto's limit on a visibility counted from the send
POLL_SLICE = 1.0  # the longest a waiting receive sleeps before looking again, just in case

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

_lock = localindex.LOCK
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
    attempt = _atomic(receive_now)
    deadline = time.monotonic() + wait_seconds_timeout
    while True:
        result = attempt(self, queue_name, count, visibility_timeout, message_attribute_names)
        remaining = deadline - time.monotonic()
        # Called from inside a locked call (moto's Lambda event-source mapping receives from
        # within SendMessage): never wait there, it would hold the lock.
        if result or remaining <= 0 or getattr(_depth, "n", 0):
            return result
        with _lock:
            queue = self.get_queue(queue_name)
            index = localindex.index_of(queue)
            version, due = index.version, index.next_due()
        if due is not None:
            remaining = min(remaining, max(0.0, due / 1000 - time.time()) + 0.001)
        _wait(queue, index, version, min(remaining, POLL_SLICE))


def _wait(queue: Queue, index: localindex.QueueIndex, version: int, timeout: float) -> None:
    """Outside the lock, on the queue's condition, until the index says a receive may find
    something new (the check comes first, so a send just before is not missed)."""

    def changed() -> bool:
        return index.version != version or localindex.current(queue) is not index

    with queue._messages_lock:
        queue._messages_lock.wait_for(changed, timeout)


def change_message_visibility(
    backend: SQSBackend, queue_name: str, receipt_handle: str, visibility_timeout: int
) -> None:
    """``SQSBackend.change_message_visibility``, by the handle index (moto's limit kept)."""
    queue = backend.get_queue(queue_name)
    index = localindex.index_of(queue)
    message = index.handles.get(receipt_handle)
    if message is None:
        raise ReceiptHandleIsInvalid
    given = unix_time_millis() + int(visibility_timeout) * 1000
    if given - message.sent_timestamp > MAX_VISIBILITY_MS:  # type: ignore[operator]
        raise InvalidParameterValue(
            f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason:"
            " Total VisibilityTimeout for the message is beyond the limit [43200 seconds]"
        )
    message.change_visibility(visibility_timeout)
    index.place(message, unix_time_millis())  # 0: ready at once, and long polls woken


def receive_now(
    backend: SQSBackend,
    queue_name: str,
    count: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None,
) -> list[Message]:
    """One pass of moto's ReceiveMessage, without its wait: up to ``count`` messages, oldest
    first, each marked received; one that reached the redrive policy's maxReceiveCount moves
    to the dead-letter queue instead. Returns copies, attributes filtered, as moto does."""
    queue = backend.get_queue(queue_name)
    index = localindex.index_of(queue)
    now = unix_time_millis()
    retention_ms = int(queue.message_retention_period) * 1000  # type: ignore[attr-defined]
    index.advance(now, retention_ms)
    dlq = queue.dead_letter_queue
    limit = queue.redrive_policy["maxReceiveCount"] if dlq is not None else None  # type: ignore[attr-defined]
    result: list[Message] = []
    released: list[Message] = []  # received with visibility 0: ready again after this pass
    group: str | None = None
    while len(result) < count and (message := index.pop_ready(group)) is not None:
        group = message.group_id
        if message.sent_timestamp + retention_ms <= now:  # type: ignore[operator]
            index.remove(message)
            continue
        if limit is not None and message.approximate_receive_count >= limit:
            index.remove(message)
            localindex.enqueue(dlq, message, deduplicate=False)  # type: ignore[arg-type]
            continue
        message.mark_received(visibility_timeout=visibility_timeout)
        index.leased(message)
        if message.visible_at > now:
            index.place(message, now)
        else:
            released.append(message)
        # moto deep-copied, old receipt handles and all; the filter only rebinds the copy's
        # message_attributes, so a shallow copy keeps the message as it is.
        answer = copy(message)
        models._filter_message_attributes(answer, message_attribute_names or [])
        result.append(answer)
    for message in released:
        index.place(message, now)
    return result


def check_moto() -> None:
    """Refuse a moto whose internals the patch relies on have changed: the backend methods it
    wraps, receive's signature (moto's responses call it so), what the index reads and
    replaces (localindex.missing). The version is only warned about: the pins keep installs
    within the tested range, and a moto that still has all this is worth a try."""
    from importlib.metadata import version

    installed = version("moto")
    missing = [name for name in (*LOCKED, "receive_message") if not hasattr(SQSBackend, name)]
    missing += localindex.missing() + localspeed.missing()
    used = ("_filter_message_attributes", "camelcase_to_underscores")
    missing += [f"sqs.models.{name}" for name in used if not callable(getattr(models, name, None))]
    if not callable(getattr(backends, "list_of_moto_modules", None)):
        missing.append("backends.list_of_moto_modules")
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
            " (tested: 5.2.x); its atomicity and index patches applied, but check the results",
            file=sys.stderr,
        )


def install() -> None:
    """Patch moto's SQS backend, once."""
    if getattr(SQSBackend.send_message, "__wrapped_by_localserver__", False):
        return
    check_moto()
    localindex.install()
    models.camelcase_to_underscores = functools.lru_cache(maxsize=512)(
        models.camelcase_to_underscores
    )
    modules = tuple(backends.list_of_moto_modules())  # moto's own directories: fixed
    backends.list_of_moto_modules = lambda: modules
    localspeed.install()
    localkeepalive.install()
    SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]
    for name in LOCKED:
        setattr(SQSBackend, name, _atomic(getattr(SQSBackend, name)))
    SQSBackend.receive_message = _receive_message  # type: ignore[method-assign]


if __name__ == "__main__":
    try:
        install()
    except UnsupportedMoto as error:
        sys.exit(f"error: {error}")
    moto_main()
