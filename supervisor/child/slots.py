"""Many jobs at once in one child (``concurrency`` > 1, or an ``async def`` handler).

``Slots`` admits received messages into ``concurrency`` slots and runs them on a runner
(threads for a plain handler, tasks on one event loop for an ``async def`` one; see
``runners``). The receive loop asks only for free slots, so one long poll per child serves
them all. FIFO order holds per MessageGroupId: a group's next message starts only after the
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
        self._cond = threading.Condition()
        self._active = 0  # admitted and not finished: running, or waiting behind its group
        self._groups: dict[str, deque[Message]] = {}  # FIFO group -> messages waiting their turn
        self._interrupted: set[str] = set()
        self._abandoned: set[str] = set()  # given up on (hard timeout), still in their thread

    # -- admission ----------------------------------------------------------------------------

    def free(self) -> int:
        with self._cond:
            return self.capacity - self._active

    def wait_for_free(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._active < self.capacity, timeout)

    def wait_for_idle(self, timeout: float | None) -> bool:
        """Wait until no job runs, except those given up on: a drain does not wait for them."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active - len(self._abandoned) == 0, timeout)

    def offer(self, message: Message) -> None:
        """Start a received message now, or queue it behind the running one of its group."""
        with self._cond:
            self._active += 1
            group = message.group_id
            if group is not None:
                if group in self._groups:
                    self._groups[group].append(message)
                    return
                self._groups[group] = deque()
        self._start(message)

    def _start(self, message: Message) -> None:
        lease = self.leases.claim(message.message_id)
        if lease is None:  # released by the heartbeat when a stop arrived
            self._finished(message, "released", None)
            return
        self.runner.submit(message, lease, self._finished)

    def _finished(self, message: Message, outcome: str, duration: float | None) -> None:
        """A job ended (in its thread or task): free its slot, start its group's next one."""
        after: Message | None = None
        released: list[Message] = []
        with self._cond:
            self._active -= 1
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
            self._cond.notify_all()
        if released:
            self.settler.release(self.leases.take(m.message_id for m in released))
        if after is None and self.free() == self.capacity:
            self.settler.flush_deletes(force=True)  # idle: no later job will flush them
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
