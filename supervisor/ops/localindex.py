"""An index over each of moto's SQS queues, so that message operations cost O(batch), not O(depth).

moto keeps a queue's messages in one list and scans it in every operation: a receive filters
the whole list for visible ones, a delete or visibility change looks for the receipt handle
message by message (a delete then rebuilds the list), a send computes the queue's attributes,
which count every message three times, and a FIFO send compares its deduplication id with
every message. Measured over HTTP (tests/benchmarks/localdepth.py): a send-batch-10 took
89 ms at depth 200 and 2.2 s at 5000 (filling 5000: 9 minutes), a receive-10 + delete-batch
22 ms and 150 ms; now about 8 and 14 ms at any depth up to 20,000, HTTP's cost.

So each queue gets a ``QueueIndex`` beside moto's objects (which stay the messages' truth:
``visible_at``, ``delayed_until``, receipt handles, counts): receipt handle -> message; ready
messages in a heap by arrival order (FIFO: one heap per group, and a heap of the groups with
nothing in flight); delayed and in-flight ones in a heap by due time, moved to ready when due;
counts per state for the Approximate* attributes. Heap entries carry a stamp; a message that
changed state since has a new one, so a stale entry is skipped when it surfaces. moto's
``Queue._messages`` becomes a view of the index, so moto code that still uses the list
(purge, a Lambda event source mapping's send) keeps working.

Where moto's semantics were not SQS's, this follows SQS: a FIFO deduplication id is
remembered for five minutes even after its message is deleted (moto forgot it at once), and a
message past the retention period is deleted (moto counted it received, returned nothing and
stopped the receive there). All of it runs under ``LOCK``: supervisor/ops/localserver.py holds
it around every backend call, and the index takes it again (it is re-entrant) for the attribute
reads that advance it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from moto.core.utils import unix_time_millis
from moto.sqs.exceptions import ReceiptHandleIsInvalid
from moto.sqs.models import Message, Queue

LOCK = threading.RLock()
TAKEN, READY, DELAYED, INFLIGHT = range(4)  # TAKEN: picked by a receive that is running
DEDUPLICATION_WINDOW_MS = 300_000
_STAMPS = itertools.count(1)
_KEY = "_localindex"
APPROXIMATE = {  # moto's Queue.approximate_<name> properties: the count of a state
    "number_of_messages": READY,
    "number_of_messages_delayed": DELAYED,
    "number_of_messages_not_visible": INFLIGHT,
}


@dataclass(slots=True)
class _Slot:
    seq: int  # arrival order in this queue
    where: int = TAKEN
    stamp: int = 0


Entry = tuple[float, int, Message]  # (arrival order or due time, stamp, message)


class QueueIndex:
    """Where each message of one queue is, and what a receive may take next."""

    def __init__(self, fifo: bool, wake: threading.Condition) -> None:
        self.fifo = fifo
        self.wake = wake  # the queue's condition: long polls wait on it for `version`
        self.version = 0  # bumped whenever a receive could find something new
        self.members: OrderedDict[Message, _Slot] = OrderedDict()
        self.handles: dict[str, Message] = {}  # every receipt handle of every member
        self.counts = [0, 0, 0, 0]  # by state
        self.timed: list[Entry] = []  # delayed and in flight, by due time
        self.ready: list[Entry] = []  # standard queues, by arrival
        self.groups: dict[str, list[Entry]] = {}  # FIFO: each group's ready messages
        self.busy: dict[str, int] = {}  # FIFO: in-flight messages per group
        self.open: list[tuple[int, str]] = []  # FIFO: (head's arrival, group) with none busy
        self.seen: dict[tuple[str | None, str], int] = {}  # deduplication key: sent ms
        self.seen_order: deque[tuple[int, tuple[str | None, str]]] = deque()
        self._arrivals = itertools.count()

    def add(self, message: Message, now: float) -> None:
        self.members[message] = _Slot(next(self._arrivals))
        for handle in message.all_receipt_handles:
            if handle is not None:
                self.handles[handle] = message
        self.place(message, now)

    def remove(self, message: Message) -> None:
        slot = self.members.pop(message, None)
        if slot is None:
            return
        self._leave(message, slot)
        for handle in message.all_receipt_handles:
            self.handles.pop(handle, None)  # type: ignore[arg-type]

    def leased(self, message: Message) -> None:
        """A receive gave ``message`` a new receipt handle."""
        self.handles[message.receipt_handle] = message  # type: ignore[index]

    def place(self, message: Message, now: float) -> None:
        """File ``message`` by its own times, after any change to them."""
        slot = self.members[message]
        if message.delayed_until > now:
            self._set(message, slot, DELAYED, message.delayed_until)
        elif message.visible_at > now:
            self._set(message, slot, INFLIGHT, message.visible_at)
        else:
            self._set(message, slot, READY)

    def advance(self, now: float, retention_ms: int) -> None:
        """Drop what outlived the retention period, make ready what is due."""
        while self.members:
            first = next(iter(self.members))
            if first.sent_timestamp + retention_ms > now:  # type: ignore[operator]
                break
            self.remove(first)
        while self.timed and self.timed[0][0] <= now:
            _, stamp, message = heapq.heappop(self.timed)
            slot = self.members.get(message)
            if slot is not None and slot.stamp == stamp:
                self.place(message, now)

    def next_due(self) -> float | None:
        """When the next delayed or in-flight message becomes ready (ms), if any."""
        while self.timed and not self._valid(self.timed[0]):
            heapq.heappop(self.timed)
        return self.timed[0][0] if self.timed else None

    def pop_ready(self, group: str | None = None) -> Message | None:
        """The oldest message a receive may take, now TAKEN. FIFO: from ``group`` (one this
        receive already takes from) while it has any, then from the group with the oldest
        head among those with nothing in flight."""
        if not self.fifo:
            while self.ready:
                entry = heapq.heappop(self.ready)
                if self._valid(entry):
                    self._set(entry[2], self.members[entry[2]], TAKEN)
                    return entry[2]
            return None
        if group is not None and (message := self._pop_group(group)) is not None:
            return message
        while self.open:
            seq, name = heapq.heappop(self.open)
            head = self._head(name)
            if head is None or self.busy.get(name):
                continue  # filed again when a message is ready and nothing in flight
            if head[0] > seq:  # its head left without a receive (deleted, expired): requeue
                heapq.heappush(self.open, (int(head[0]), name))
                continue
            return self._pop_group(name)
        return None

    def duplicate(self, message: Message, per_group: bool) -> bool:
        """Whether a FIFO send repeats a deduplication id of the last five minutes; if not,
        its id is remembered from now on."""
        sent: int = message.sent_timestamp  # type: ignore[assignment]
        while self.seen_order and self.seen_order[0][0] + DEDUPLICATION_WINDOW_MS <= sent:
            at, old = self.seen_order.popleft()
            if self.seen.get(old) == at:
                del self.seen[old]
        key = (message.group_id if per_group else None, message.deduplication_id or "")
        if key in self.seen:
            return True
        self.seen[key] = sent
        self.seen_order.append((sent, key))
        return False

    def _set(self, message: Message, slot: _Slot, where: int, due: float = 0.0) -> None:
        if slot.where != where or where in (TAKEN, READY):
            self._leave(message, slot)
            self.counts[where] += 1
            slot.where = where
            if where == INFLIGHT and self.fifo:
                self.busy[message.group_id] = self.busy.get(message.group_id, 0) + 1  # type: ignore[index]
        slot.stamp = next(_STAMPS)
        if where == READY:
            self._file_ready(message, slot)
        elif where != TAKEN:
            self._push(self.timed, (due, slot.stamp, message))

    def _leave(self, message: Message, slot: _Slot) -> None:
        self.counts[slot.where] -= 1
        if slot.where == INFLIGHT and self.fifo:
            group: str = message.group_id  # type: ignore[assignment]
            left = self.busy.pop(group) - 1
            if left:
                self.busy[group] = left
            elif (head := self._head(group)) is not None:
                heapq.heappush(self.open, (int(head[0]), group))
                self._bump()
        slot.where = TAKEN

    def _file_ready(self, message: Message, slot: _Slot) -> None:
        entry = (slot.seq, slot.stamp, message)
        if not self.fifo:
            self._push(self.ready, entry)
            self._bump()
            return
        group: str = message.group_id  # type: ignore[assignment]
        head = self._head(group)
        heapq.heappush(self.groups.setdefault(group, []), entry)
        if not self.busy.get(group) and (head is None or slot.seq < head[0]):
            heapq.heappush(self.open, (slot.seq, group))
            self._bump()

    def _pop_group(self, group: str) -> Message | None:
        if self._head(group) is None:
            return None
        message = heapq.heappop(self.groups[group])[2]
        self._set(message, self.members[message], TAKEN)
        return message

    def _head(self, group: str) -> Entry | None:
        heap = self.groups.get(group)
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        if not heap:
            self.groups.pop(group, None)
            return None
        return heap[0]

    def _valid(self, entry: Entry) -> bool:
        slot = self.members.get(entry[2])
        return slot is not None and slot.stamp == entry[1]

    def _push(self, heap: list[Entry], entry: Entry) -> None:
        heapq.heappush(heap, entry)
        if len(heap) > 2 * len(self.members) + 64:  # stale entries: rebuild, O(1) amortized
            heap[:] = [e for e in heap if self._valid(e)]
            heapq.heapify(heap)

    def _bump(self) -> None:
        with self.wake:
            self.version += 1
            self.wake.notify_all()


class _Messages:
    """moto's ``Queue._messages`` list, as a view of the index, for moto code that uses it."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def __iter__(self) -> Any:
        return iter(list(index_of(self.queue).members))

    def __len__(self) -> int:
        return len(index_of(self.queue).members)

    def append(self, message: Message) -> None:
        index_of(self.queue).add(message, unix_time_millis())

    def remove(self, message: Message) -> None:
        index_of(self.queue).remove(message)


def current(queue: Queue) -> QueueIndex | None:
    """The queue's index, if it has one yet (a purge replaces it)."""
    return queue.__dict__.get(_KEY)


def index_of(queue: Queue) -> QueueIndex:
    index = queue.__dict__.get(_KEY)
    if index is None:
        index = queue.__dict__[_KEY] = QueueIndex(queue.fifo_queue, queue._messages_lock)
    return index


def _set_messages(queue: Queue, messages: list[Message]) -> None:
    """moto's ``queue._messages = [...]`` (its constructor, PurgeQueue): a new index."""
    with LOCK:
        queue.__dict__.pop(_KEY, None)
        for message in messages:
            _Messages(queue).append(message)


def _advanced(queue: Queue) -> QueueIndex:
    index = index_of(queue)
    index.advance(unix_time_millis(), int(queue.message_retention_period) * 1000)  # type: ignore[attr-defined]
    return index


def _count(state: int) -> property:
    def count(queue: Queue) -> int:
        with LOCK:
            return _advanced(queue).counts[state]

    return property(count)


def enqueue(queue: Queue, message: Message, deduplicate: bool = True) -> None:
    """``Queue.add_message``: O(1), FIFO deduplication included. A queue with a Lambda event
    source mapping takes moto's own path, which receives from within the send."""
    if queue.lambda_event_source_mappings:
        _original_add_message(queue, message)
        return
    index = index_of(queue)
    per_group = getattr(queue, "deduplication_scope", "queue") == "messageGroup"
    fifo = deduplicate and queue.fifo_queue and message.deduplication_id
    if fifo and index.duplicate(message, per_group):
        return
    index.add(message, unix_time_millis())


def delete_message(queue: Queue, receipt_handle: str) -> None:
    """``Queue.delete_message``, by the handle index (moto's answers kept)."""
    if receipt_handle in queue.deleted_messages:
        return  # already deleted: SQS accepts it again
    index = index_of(queue)
    message = index.handles.get(receipt_handle)
    if message is None:
        raise ReceiptHandleIsInvalid()
    index.remove(message)
    queue.deleted_messages.update(message.all_receipt_handles)  # type: ignore[arg-type]


def missing() -> list[str]:
    """What the index needs of moto and this moto lacks."""
    probe = Queue("probe", "us-east-1", "123456789012")
    condition = probe.__dict__.get("_messages_lock")
    needs = {
        "Queue._messages list": isinstance(probe.__dict__.get("_messages"), list)
        or isinstance(Queue.__dict__.get("_messages"), property),  # or already installed
        "Queue._messages_lock": callable(getattr(condition, "wait_for", None)),
    }
    for name in (
        "message_retention_period",
        "deleted_messages",
        "dead_letter_queue",
        "lambda_event_source_mappings",
        "fifo_queue",
    ):
        needs[f"Queue.{name}"] = hasattr(probe, name)
    for name in ("add_message", "delete_message", *(f"approximate_{n}" for n in APPROXIMATE)):
        needs[f"Queue.{name}"] = hasattr(Queue, name)
    message = Message("probe", "")
    for name in ("visible_at", "delayed_until", "all_receipt_handles", "approximate_receive_count"):
        needs[f"Message.{name}"] = hasattr(message, name)
    for name in ("mark_received", "change_visibility"):
        needs[f"Message.{name}"] = callable(getattr(message, name, None))
    return [name for name, present in needs.items() if not present]


def install() -> None:
    """Put the index under moto's Queue (the backend's own methods are set by localserver)."""
    Queue._messages = property(lambda queue: _Messages(queue), _set_messages)  # type: ignore[assignment]
    Queue.add_message = enqueue  # type: ignore[method-assign]
    Queue.delete_message = delete_message  # type: ignore[method-assign]
    for name, state in APPROXIMATE.items():
        setattr(Queue, f"approximate_{name}", _count(state))


_original_add_message = Queue.add_message
