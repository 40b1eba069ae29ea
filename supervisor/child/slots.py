"""Many jobs at once in one child (``concurrency`` > 1, or an ``async def`` handler).

``Slots`` admits received messages into ``concurrency`` slots and runs them on a runner
(threads for a plain handler, tasks on one event loop for an ``async def`` one; see
``runners``). The receive loop asks for the free slots, so one long poll per child serves
them all; when jobs are short it may take a few more (``prefetch``), which wait here, not in
the runner, until a slot frees: a message that has not started is still released on a stop.
FIFO order holds per MessageGroupId: a group's next message starts only after the
previous one settled, and a failure releases the rest of its group instead of running them;
other groups run side by side.

Timeouts for many jobs: the heartbeat calls ``sweep``. Past ``soft_timeout`` a job is
interrupted inside (an asynchronous ``SoftTimeout`` in its thread, a cancellation of its task).
Past ``timeout`` its lease is taken from it (nobody extends it) and it gets its retry delay at
once; the child then takes no more work and lets its other jobs finish within
``drain_timeout`` before it exits to be replaced. The stuck job's late result is discarded.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from supervisor.child.leases import LeaseKeeper
from supervisor.child.process import Processor
from supervisor.child.settle import Settler
from supervisor.config import Binding
from supervisor.lease import Lease
from supervisor.message import Message

log = logging.getLogger("sqs_supervisor.worker")

Done = Callable[[Message, str, "float | None"], None]  # (message, outcome, run time)


class Runner(Protocol):
    def submit(self, message: Message, lease: Lease, done: Done) -> None: ...

    def interrupt(self, message_id: str) -> None:
        """Raise SoftTimeout inside the job (or cancel its task)."""
        ...

    def abandon(self, message_id: str) -> None:
        """The job overran its hard timeout: stop it if the runner can (a task can)."""
        ...

    def stop(self) -> None: ...


class Slots:
    def __init__(
        self,
        binding: Binding,
        runner: Runner,
        processor: Processor,
        leases: LeaseKeeper,
        settler: Settler,
        *,
        on_ran: Callable[[float], None],
        on_timed_out: Callable[[], None],
    ) -> None:
        self.binding = binding
        self.capacity = binding.concurrency
        self.runner = runner
        self.processor = processor
        self.leases = leases
        self.settler = settler
        self.on_ran = on_ran
        self.on_timed_out = on_timed_out
        # Held directly where nothing waits or wakes: Condition's own ``with`` is a Python
        # call around the same lock, three times per job.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0  # admitted and not finished: running, or waiting (group or slot)
        self._running = 0  # handed to the runner and not finished
        self._ready: deque[Message] = deque()  # may start now, but every slot is taken
        # The receive loop waits for _active to fall to this (-1: it does not wait); a finish
        # wakes it only then, not at every job's end.
        self._wake_at = -1
        self._groups: dict[str, deque[Message]] = {}  # FIFO group -> messages waiting their turn
        self._interrupted: set[str] = set()
        self._abandoned: set[str] = set()  # given up on (hard timeout), still in their thread

    # -- admission ----------------------------------------------------------------------------

    def free(self, prefetch: int = 0) -> int:
        """Messages the receive loop may admit now: free slots, plus ``prefetch`` to wait."""
        with self._lock:
            return self.capacity + prefetch - self._active

    def wait_for_free(self, timeout: float, count: int = 1, prefetch: int = 0) -> bool:
        """Wait until ``free(prefetch)`` is at least ``count`` (or ``timeout`` passed)."""
        room = self.capacity + prefetch - count
        with self._cond:
            self._wake_at = room
            try:
                return self._cond.wait_for(lambda: self._active <= room, timeout)
            finally:
                self._wake_at = -1

    def wait_for_idle(self, timeout: float | None) -> bool:
        """Wait until no job runs, except those given up on: a drain does not wait for them."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active - len(self._abandoned) == 0, timeout)

    def offer(self, message: Message) -> None:
        """Start a received message now, or queue it behind the running one of its group, or
        until a slot frees."""
        with self._lock:
            self._active += 1
            group = message.group_id
            if group is not None:
                if group in self._groups:
                    self._groups[group].append(message)
                    return
                self._groups[group] = deque()
            if not self._take_slot(message):
                return
        self._run(message)

    def _take_slot(self, message: Message) -> bool:
        """Under the lock: a slot for ``message``, or a place in line for the next one."""
        if self._running >= self.capacity:
            self._ready.append(message)
            return False
        self._running += 1
        return True

    def _start(self, message: Message) -> None:
        with self._lock:
            if not self._take_slot(message):
                return
        self._run(message)

    def _run(self, message: Message) -> None:
        lease = self.leases.claim(message.message_id)
        if lease is None:  # released by the heartbeat when a stop arrived
            self._finished(message, "released", None)
            return
        self.runner.submit(message, lease, self._finished)

    def _finished(self, message: Message, outcome: str, duration: float | None) -> None:
        """A job ended (in its thread or task): free its slot, start its group's next one."""
        after: Message | None = None
        released: list[Message] = []
        with self._lock:
            self._active -= 1
            self._running -= 1
            self._interrupted.discard(message.message_id)
            self._abandoned.discard(message.message_id)
            group = message.group_id
            if group is not None and group in self._groups:
                waiting = self._groups[group]
                if outcome in ("retried", "abandoned"):  # FIFO: nothing runs after a failure
                    released, self._active = list(waiting), self._active - len(waiting)
                    waiting.clear()
                if waiting:
                    after = waiting.popleft()
                else:
                    del self._groups[group]
            if after is None and self._ready:
                after = self._ready.popleft()
            if self._active <= self._wake_at or self._active == len(self._abandoned):
                self._cond.notify_all()  # room for the receive loop's wait, or a drain's idle
            idle = after is None and self._active == 0
        if released:
            self.settler.release(self.leases.take(m.message_id for m in released))
        if idle:
            self.settler.flush_deletes(force=True)  # no later job will flush them
        if duration is not None:
            self.on_ran(duration)
        if after is not None:
            self._start(after)

    # -- timeouts -----------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """From the heartbeat: interrupt jobs past their soft timeout, give up on those past
        their hard timeout."""
        soft, hard = self.binding.soft_timeout, self.binding.timeout
        for message_id, started in self.processor.running.snapshot():
            age = now - started
            if age > hard:
                self._give_up(message_id, age)
            elif soft and age > soft and message_id not in self._interrupted:
                self._interrupted.add(message_id)
                self.runner.interrupt(message_id)

    def _give_up(self, message_id: str, age: float) -> None:
        lease = self.leases.abandon(message_id)
        if lease is None:
            return  # already given up on (or it just finished)
        with self._cond:
            self._abandoned.add(message_id)
            self._cond.notify_all()
        message = self.processor.running.messages.get(message_id)
        log.error(
            "job %s exceeded its %g s timeout; it gets its retry delay, and this child takes"
            " no more work and is replaced once its other jobs finish",
            message_id,
            self.binding.timeout,
        )
        error = TimeoutError(f"job exceeded its {self.binding.timeout:g} s timeout")
        self.settler.retry(lease, error, age, lease.receive_count, message=message)
        self.runner.abandon(message_id)
        self.on_timed_out()
