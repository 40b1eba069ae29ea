"""The child: long-poll one queue, run the handler, settle each message, report to the parent.

With ``concurrency: 1`` and a plain handler a child runs one handler call at a time, in its
main thread, on the messages of each receive in turn. Otherwise ``slots`` admits jobs into
``concurrency`` slots on a runner (threads, or one event loop for ``async def``), and the main
thread only receives, asking for as many messages as there are free slots. The roles are
separate modules: ``fetch`` receives, ``process`` runs the handler, ``settle`` ends each
message, ``leases`` keeps them alive; this module owns the lifecycle, the signals and the loop
(``initialize``, ``run_once`` until stopped, ``shutdown``: huey's shape, so a test can drive
one iteration).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from supervisor.child.fetch import Fetcher, StopReceiving
from supervisor.child.hooks import JobHooks, NoJobHooks
from supervisor.child.leases import LeaseKeeper
from supervisor.child.process import Processor
from supervisor.child.runners import AsyncRunner, ThreadRunner
from supervisor.child.settle import Settler
from supervisor.child.slots import Slots
from supervisor.config import Binding, JobsSettings, SqsSettings, is_async
from supervisor.errors import EXIT_OK, EXIT_WORKER_BOOT, StopWorker
from supervisor.ipc import Reporter
from supervisor.routing import TypeRouter
from supervisor.sqs import SqsClient, SqsError
from supervisor.timeouts import SoftTimeoutAlarm

log = logging.getLogger("sqs_supervisor.worker")

SqsFactory = Callable[..., SqsClient]


class Worker:
    """One child process's loop over one binding."""

    def __init__(
        self,
        binding: Binding,
        handler: Callable[..., Any],
        reporter: Reporter,
        sqs_settings: SqsSettings,
        *,
        parent_pid: int,
        jobs: JobsSettings | None = None,
        sqs_factory: SqsFactory = SqsClient,
    ) -> None:
        self.binding = binding
        self.handler = handler
        self.reporter = reporter
        self.sqs_settings = sqs_settings
        self.parent_pid = parent_pid
        self.jobs = jobs or JobsSettings()
        self.sqs_factory = sqs_factory
        self.stopping = False
        self.exit_reason: str | None = None
        self.jobs_done = 0
        self.job_limit = _jittered_limit(binding.max_jobs_per_child)
        self.alarm = SoftTimeoutAlarm(binding.soft_timeout)
        self._fast_stop_armed = True
        self._fast = False
        self._count_lock = threading.Lock()  # jobs finish in many threads at once
        self.slots: Slots | None = None
        self.fetcher: Fetcher | None = None
        self.leases: LeaseKeeper | None = None
        self.settler: Settler
        self.processor: Processor

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        try:
            self.initialize()
        except SqsError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_WORKER_BOOT
        if self.leases is None:
            return EXIT_OK  # told to stop while still waiting for the endpoint
        try:
            while not self.stopping:
                self.run_once()
        except StopWorker:
            log.info("fast stop: releasing %d held message(s)", len(self.leases))
        finally:
            self._fast_stop_armed = False
            self.shutdown()
        return EXIT_OK

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_graceful)
        signal.signal(signal.SIGQUIT, self._on_fast)
        self.alarm.install()
        # The parent owns these: a terminal's Ctrl-C or hangup reaches the whole group.
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)

    def initialize(self) -> None:
        """Client, queue URL, leases and heartbeat, settle and run steps; then ``ready``."""
        sqs = self.sqs_factory(
            self.sqs_settings,
            read_timeout=self.binding.wait_time_seconds + 10,
            on_error=lambda exc: self.reporter.sqs_error(exc.operation, exc.code),
            validate_params=False,
        )
        label = self.handler.label if isinstance(self.handler, TypeRouter) else None
        self.fetcher = Fetcher(
            self.binding, sqs, self.reporter, lambda: self.stopping, type_label=label
        )
        queue_url = self.fetcher.resolve_queue_url()
        if queue_url is None:
            return
        self.leases = LeaseKeeper(
            sqs,
            self.binding.visibility_timeout,
            on_extended=self.reporter.extended,
            on_tick=self._tick,
        )
        hooks = self._job_hooks()
        self.settler = Settler(self.binding, queue_url, sqs, self.leases, self.reporter, hooks)
        self.processor = Processor(
            self.binding, self.handler, self.settler, hooks, self.reporter, self.alarm
        )
        if self.binding.concurrency > 1 or is_async(self.handler):
            runner_type = AsyncRunner if is_async(self.handler) else ThreadRunner
            runner = runner_type(self.binding, self.processor, self.leases, self.settler)
            self.slots = Slots(
                self.binding,
                runner,
                self.processor,
                self.leases,
                self.settler,
                on_ran=self._ran,
                on_timed_out=self._timed_out,
            )
        self.leases.start()
        self.reporter.ready()

    def _job_hooks(self) -> JobHooks:
        if not self.jobs.store:
            return NoJobHooks()
        from supervisor.jobs.stores import open_store
        from supervisor.jobs.tracking import JobTracker

        store = open_store(self.jobs.store, retention_days=self.jobs.retention_days)
        return JobTracker(store, self.binding.name, self.binding.queue_name, os.getpid())

    def shutdown(self) -> None:
        """Let running jobs finish (a fast stop does not wait), settle what can be settled,
        release the rest, stop the heartbeat."""
        if self.leases is None:
            return
        if self.slots is not None:
            self._drain_slots()
            self.slots.runner.stop()
        self.settler.flush_all()
        # A finished lease still held had its delete cut short (a fast stop) or refused: the
        # finished log has it, so the parent deletes it once this child is gone. Released
        # here, it could be received and run again before that delete.
        unfinished = [lease.message_id for lease in self.leases.held() if not lease.finished_at]
        self.settler.release(self.leases.take(unfinished))
        self.leases.stop()
        if self.exit_reason:
            self.reporter.exiting(self.exit_reason)

    # -- one iteration ------------------------------------------------------------------------

    def _drain_slots(self) -> None:
        """Wait for running jobs, up to ``drain_timeout`` (the parent kills us after it)."""
        assert self.slots is not None
        deadline = time.monotonic() + self.binding.drain_timeout
        while not self._fast and time.monotonic() < deadline:
            if self.slots.wait_for_idle(0.2):
                return

    def run_once(self) -> None:
        """One receive; then, one job at a time, every message it brought, settled (deletes
        flushed) before return; with slots, its messages admitted to run."""
        assert self.fetcher is not None and self.leases is not None, "initialize() first"
        if self.slots is not None:
            self._admit_once(self.slots)
            return
        messages = self.fetcher.receive(self.leases)
        if self.binding.batch:
            claimed = [(m, self.leases.claim(m.message_id)) for m in messages]
            batch = [(m, lease) for m, lease in claimed if lease is not None]
            if batch:
                self._ran(self.processor.process_batch(batch))
            self.settler.flush_deletes(force=True)
            return
        failed_groups: set[str] = set()
        for index, message in enumerate(messages):
            if self.stopping:
                self.settler.release(self.leases.take(m.message_id for m in messages[index:]))
                break
            if message.group_id is not None and message.group_id in failed_groups:
                # Keep FIFO order: nothing of this group runs after its failed message.
                self.settler.release(self.leases.take([message.message_id]))
                continue
            lease = self.leases.claim(message.message_id)
            if lease is None:
                continue  # released by the heartbeat when a stop arrived
            outcome, duration = self.processor.process(message, lease)
            if duration is not None:
                self._ran(duration)
            if outcome == "retried" and message.group_id is not None:
                failed_groups.add(message.group_id)
            self.settler.flush_deletes()
        self.settler.flush_deletes(force=True)

    def _admit_once(self, slots: Slots) -> None:
        """Receive as many messages as there are free slots (one long poll for them all), and
        admit them; with no slot free, wait for one. With only a few free, wait a moment
        (``gather_window``) for a full receive's worth; short jobs may also hold a few more
        than the slots (``prefetch``), to start as slots free."""
        fetcher = self.fetcher
        assert fetcher is not None and self.leases is not None
        prefetch = fetcher.prefetch(slots.capacity)
        free = slots.free(prefetch)
        if free <= 0:
            fetcher.wait(lambda: slots.wait_for_free(1.0, prefetch=prefetch))
            return
        full = min(slots.capacity + prefetch, fetcher.fetch_size())
        window = fetcher.gather_window()
        if free < full and window > 0:
            fetcher.wait(lambda: slots.wait_for_free(window, count=full, prefetch=prefetch))
            free = slots.free(prefetch)
        messages = fetcher.receive(self.leases, limit=free)
        for index, message in enumerate(messages):
            if self.stopping:
                self.settler.release(self.leases.take(m.message_id for m in messages[index:]))
                break
            slots.offer(message)

    def _ran(self, duration: float) -> None:
        """Bookkeeping after each run: the duration average that sizes fetches, recycling."""
        assert self.fetcher is not None
        self.fetcher.note_duration(duration)
        with self._count_lock:
            self.jobs_done += 1
            if self.job_limit and self.jobs_done >= self.job_limit and not self.stopping:
                log.info("recycling after %d jobs (max_jobs_per_child)", self.jobs_done)
                self.stopping, self.exit_reason = True, "max_jobs"

    def _timed_out(self) -> None:
        """A job overran its hard timeout: take no more work, let the others finish, exit.
        The parent hears it now, so it starts the replacement while this child drains."""
        if self.exit_reason is None:
            self.exit_reason = "timeout"
            self.reporter.exiting("timeout")
        os.kill(os.getpid(), signal.SIGTERM)  # the main thread may be in a long poll

    # -- the heartbeat's tick and the signals -------------------------------------------------

    def _tick(self) -> None:
        """Heartbeat thread: prove liveness; release prefetched work on a stop; watch the parent."""
        if os.getppid() != self.parent_pid:
            log.error("parent %d is gone; stopping", self.parent_pid)
            os.kill(os.getpid(), signal.SIGQUIT)
            return
        if self.stopping and self.leases is not None:
            self.settler.release(self.leases.take_unstarted())
        if self.slots is not None:
            self.slots.sweep(time.monotonic())
        # A finished message is deleted within about a second even while the next (long) job
        # runs: the loop itself flushes only between jobs.
        self.settler.flush_deletes()
        self.processor.running.report(self.reporter)

    def _on_graceful(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.leases is not None:
            self.leases.wake()
        if self.fetcher is not None and self.fetcher.interruptible:
            raise StopReceiving

    def _on_fast(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = self._fast = True
        if self._fast_stop_armed:
            self._fast_stop_armed = False
            raise StopWorker


def _jittered_limit(limit: int) -> int:
    """Spread recycling: each child stops somewhere in [limit, limit * 1.25]."""
    return limit + random.randint(0, limit // 4) if limit else 0
