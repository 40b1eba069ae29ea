"""The two ways a child runs many jobs at once: a thread pool, or one asyncio event loop.

Both run the same steps as the one-at-a-time path (``Processor.begin``, the handler,
``Processor.end``), settle from the job's own thread (boto3 clients are thread-safe), and call
``done`` exactly once per job, whatever happens, so the slot count stays true.

- Threads (a plain handler): ``concurrency`` threads taking jobs from one queue. A soft
  timeout is an asynchronous exception (``PyThreadState_SetAsyncExc``): ``SoftTimeout`` is
  raised in the handler's thread at its next Python bytecode, so a handler blocked inside one
  C call (a socket read without a timeout) sees it only when that call returns.
- Async (an ``async def`` handler): one event loop in its own thread, one task per job. The
  blocking parts (job store, settle calls) run in the loop's executor, never on the loop. A
  soft timeout cancels the task (``CancelledError`` inside it, so ``finally`` and ``async
  with`` clean up) and the outcome is recorded as ``SoftTimeout``. A handler that blocks the
  loop is named in a warning once the loop lags ``LOOP_LAG_WARNING`` seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from supervisor.child.leases import LeaseKeeper
from supervisor.child.process import Processor, Run
from supervisor.child.settle import Settler
from supervisor.child.slots import Done
from supervisor.config import Binding
from supervisor.errors import SoftTimeout
from supervisor.lease import Lease
from supervisor.message import Message
from supervisor.observe.logs import set_log_context, tag_message, untag_message

log = logging.getLogger("sqs_supervisor.worker")

LOOP_LAG_WARNING = 3.0  # seconds the event loop may be blocked before we name the handler


class _Job:
    """What both runners share: the steps around the handler call, and the one ``done``."""

    def __init__(
        self, binding: Binding, processor: Processor, leases: LeaseKeeper, settler: Settler
    ) -> None:
        self.binding = binding
        self.processor = processor
        self.leases = leases
        self.settler = settler

    def soft_timeout_error(self) -> SoftTimeout:
        return SoftTimeout(f"soft timeout of {self.binding.soft_timeout:g} s exceeded")

    def settle(self, run: Run, result: Any, error: BaseException | None, done: Done) -> None:
        """After the handler: settle, unless the job was given up on meanwhile."""
        message = run.message
        if self.leases.finish(message.message_id) is None:
            log.warning(
                "job %s finished after it was given up on (timeout or stop); its result is"
                " discarded",
                message.message_id,
            )
            done(message, "abandoned", None)
            return
        outcome, duration = self.processor.end(run, result, error)
        done(message, outcome, duration)  # the slot is free before the delete goes out
        self.settler.flush_deletes()


class ThreadRunner(_Job):
    def __init__(
        self, binding: Binding, processor: Processor, leases: LeaseKeeper, settler: Settler
    ) -> None:
        super().__init__(binding, processor, leases, settler)
        # Slots hands over a job only when a slot is free, so no job ever waits in here: a
        # queue and up to ``concurrency`` threads do what a ThreadPoolExecutor would, without
        # a Future per job (measured: a few microseconds of each job's hand-off). A thread is
        # started when every one there is has a job, so short jobs keep a few threads busy
        # and a binding with ``concurrency: 1000`` does not start 1000 at once.
        self._jobs: queue.SimpleQueue[tuple[Message, Lease, Done] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # jobs submitted and not yet ended
        self._busy_lock = threading.Lock()
        self._soft_error: type[SoftTimeout] | None = None
        if binding.soft_timeout:
            text = str(self.soft_timeout_error())

            def init(exc: SoftTimeout) -> None:
                SoftTimeout.__init__(exc, text)

            # An asynchronous exception is raised as its class: bake the message into one.
            self._soft_error = type("SoftTimeout", (SoftTimeout,), {"__init__": init})

    def submit(self, message: Message, lease: Lease, done: Done) -> None:
        thread = None
        with self._busy_lock:  # jobs also submit the next one as they end, from their threads
            self._busy += 1  # (then counting themselves still: hence the cap)
            started = len(self._threads)
            if self._busy > started and started < self.binding.concurrency:
                thread = threading.Thread(target=self._serve, name=f"job_{started}", daemon=True)
                self._threads.append(thread)
        if thread is not None:
            thread.start()
        self._jobs.put((message, lease, done))

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._run(*job)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _run(self, message: Message, lease: Lease, done: Done) -> None:
        token = tag_message(message.message_id)
        running = self.processor.running
        try:
            run = self.processor.begin(message, lease)
            if run is None:
                done(message, "duplicate", None)
                return
            result = error = None
            try:
                try:
                    running.enter(message, threading.get_ident())
                    result = self.processor.handler(message, run.ctx)
                except (Exception, SystemExit, KeyboardInterrupt) as exc:
                    error = exc
            finally:
                self._leave(message.message_id)
            self.settle(run, result, error, done)
        except BaseException:
            self._leave(message.message_id)
            log.exception("job %s: the supervisor failed around the handler", message.message_id)
            done(message, "abandoned", None)
        finally:
            untag_message(token)

    def _leave(self, message_id: str) -> None:
        """Leave the running set; a soft timeout that fired in this instant is cleared, since
        the handler it meant to interrupt has already returned."""
        while True:
            try:
                self.processor.running.leave(message_id, self._clear)
                return
            except SoftTimeout:
                continue

    def interrupt(self, message_id: str) -> None:
        running = self.processor.running
        with running.lock:  # the job cannot leave meanwhile, so the exception hits its handler
            ident = running.owners.get(message_id)
            if ident is None or self._soft_error is None:
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(self._soft_error)
            )

    def _clear(self, ident: Any) -> None:
        if self._soft_error is not None and isinstance(ident, int):
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def abandon(self, message_id: str) -> None:
        """A thread cannot be stopped from outside; its lease is gone, its result is void."""

    def stop(self) -> None:
        """Let each thread end after its job (daemon threads: a hung job does not hold the
        child's exit)."""
        for _ in self._threads:
            self._jobs.put(None)


class AsyncRunner(_Job):
    def __init__(
        self, binding: Binding, processor: Processor, leases: LeaseKeeper, settler: Settler
    ) -> None:
        super().__init__(binding, processor, leases, settler)
        self.loop = asyncio.new_event_loop()
        # Store and settle calls block: they run here, as many at once as jobs can finish.
        self.loop.set_default_executor(
            ThreadPoolExecutor(min(32, binding.concurrency + 4), thread_name_prefix="settle")
        )
        self._soft_cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._serve, name="event-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._watch_lag())
        self.loop.run_forever()

    def submit(self, message: Message, lease: Lease, done: Done) -> None:
        self.loop.call_soon_threadsafe(self._spawn, message, lease, done)

    def _spawn(self, message: Message, lease: Lease, done: Done) -> None:
        self.loop.create_task(self._run(message, lease, done))

    async def _run(self, message: Message, lease: Lease, done: Done) -> None:
        set_log_context(message_id=message.message_id)
        running, message_id = self.processor.running, message.message_id
        try:
            run = await asyncio.to_thread(self.processor.begin, message, lease)
            if run is None:
                done(message, "duplicate", None)
                return
            result = error = None
            running.enter(message, asyncio.current_task())
            try:
                result = await self.processor.handler(message, run.ctx)
            except asyncio.CancelledError:
                if message_id not in self._soft_cancelled:
                    raise  # given up on (hard timeout) or the child is stopping
                error = self.soft_timeout_error()
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                error = exc
            finally:
                running.leave(message_id)
                self._soft_cancelled.discard(message_id)
            await asyncio.to_thread(self.settle, run, result, error, done)
        except asyncio.CancelledError:
            done(message, "abandoned", None)
        except BaseException:
            log.exception("job %s: the supervisor failed around the handler", message_id)
            done(message, "abandoned", None)

    def interrupt(self, message_id: str) -> None:
        self.loop.call_soon_threadsafe(self._cancel, message_id, True)

    def abandon(self, message_id: str) -> None:
        self.loop.call_soon_threadsafe(self._cancel, message_id, False)

    def _cancel(self, message_id: str, soft: bool) -> None:
        task = self.processor.running.owners.get(message_id)
        if isinstance(task, asyncio.Task) and not task.done():
            if soft:
                self._soft_cancelled.add(message_id)
            task.cancel()

    async def _watch_lag(self) -> None:
        """Name the handler when something blocks the loop (every job on it waits then)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(1.0)
            lag = time.monotonic() - before - 1.0
            if lag > LOOP_LAG_WARNING:
                log.warning(
                    "the event loop was blocked for %.1f s: handler %s makes blocking calls"
                    " (run them with asyncio.to_thread, or use a plain handler)",
                    lag,
                    ", ".join(self.binding.handler_specs.values()),
                )

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
