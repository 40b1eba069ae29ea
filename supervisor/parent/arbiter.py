"""The parent: owns the children, their leases, the signals and the restart policy.

Single-threaded, so forking is safe: one ``select`` waits on the signal wake-up pipe, every
child's report pipe and the HTTP socket. Signal handlers only enqueue; ``run_once`` dispatches
to ``handle_<signal>`` and then runs small steps (read reports, reap, murder, manage) that a
test can drive one at a time.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psutil

from supervisor.child.retry import retry_delay
from supervisor.child.worker import Worker
from supervisor.config import Binding, Config, load_config
from supervisor.errors import EXIT_OK, EXIT_RUNTIME, EXIT_WORKER_BOOT, ConfigError
from supervisor.ipc import Report, Reporter, ReportReader
from supervisor.observe.endpoints import Endpoints
from supervisor.observe.logs import set_log_context
from supervisor.observe.metrics import Metrics
from supervisor.observe.queuestats import QueueStats
from supervisor.observe.sdnotify import Notifier
from supervisor.parent import health
from supervisor.sqs import RECEIPT_GONE, BatchEntry, SqsClient

log = logging.getLogger("sqs_supervisor.arbiter")

HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)
BACKOFF_START, BACKOFF_MAX = 1.0, 60.0
HEALTHY_AFTER = 60.0  # a child that lived this long resets its slot's crash backoff
FAST_STOP_GRACE = 5.0  # after a fast stop, children get this long to release before SIGKILL
MEMORY_CHECK_SECONDS = 5.0
RELEASE_RETRY_SECONDS = 2.0
HOUSEKEEPING_SECONDS = 0.25  # reaping, deadlines, spawning, gauges: at most this often


class EndpointError(RuntimeError):
    """The HTTP port could not be opened (in use, not permitted)."""


@dataclass
class Child:
    """What the parent knows about one live child."""

    pid: int
    binding: str
    slot: int
    reader: ReportReader
    started_at: float
    last_seen: float
    ready: bool = False
    leases: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)  # handled; their delete is under way
    job: tuple[str, float] | None = None
    retiring: bool = False  # no longer counts for its slot (drain, reload, recycle)
    exit_reason: str | None = None  # why we stopped it, or why it said it stops
    kill_at: float | None = None
    timed_out: str | None = None  # message id whose run exceeded the timeout


@dataclass
class Slot:
    failures: int = 0
    next_start_at: float = 0.0
    backing_off_since: float | None = None


@dataclass
class _Unreleased:
    queue_url: str
    entries: list[BatchEntry]
    give_up_at: float


class Arbiter:
    """Keeps ``processes`` healthy children per binding until told to stop."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.children: dict[int, Child] = {}
        self.slots: dict[tuple[str, int], Slot] = {}
        self.extra: dict[str, int] = {}  # SIGTTIN/SIGTTOU adjustments per binding
        # Per binding: when a receive last succeeded, and whether the latest one did.
        self.last_receive: dict[str, float] = {}
        self.receive_failing: dict[str, bool] = {}
        self.state = "starting"  # starting, running, draining, stopping
        self.started_at = clock()
        self.stop_deadline: float | None = None
        self.notifier = Notifier()
        self._announced_ready = False
        self._signals: deque[int] = deque()
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._extra_fds: list[int] = []  # other fds the children must not inherit
        self._unreleased: list[_Unreleased] = []
        self._next_release_retry = 0.0
        self._next_memory_check = 0.0
        self._housekeeping_at = 0.0
        self._sqs: SqsClient | None = None
        self._pid = os.getpid()
        self.endpoints: Endpoints | None = None
        self.queue_stats = QueueStats.for_settings(
            self.metrics,
            lambda: self.sqs,
            config.metrics.queue_poll_seconds,
            config.metrics.cloudwatch,
            config.sqs,
        )

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> int:
        self.setup()
        try:
            while self.state != "stopped":
                self.run_once()
        finally:
            self.teardown()
        return EXIT_OK

    def setup(self) -> None:
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, "wakeup")
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._enqueue_signal)
        self.metrics.declare((b.name, b.queue_name) for b in self.config.bindings)
        if self.config.metrics.enabled:
            self.open_endpoints()
        self.state = "running"
        log.info(
            "supervisor %d starting %s",
            self._pid,
            ", ".join(f"{b.name}={b.processes}" for b in self.config.bindings),
        )
        # Objects that exist now are shared with every child; keep the collector from
        # touching (and so copying) their pages in each one.
        gc.freeze()
        self.manage_children(self.clock())

    def open_endpoints(self) -> None:
        """Bind the HTTP port before the first fork, so children can close their copy."""
        settings = self.config.metrics
        try:
            self.endpoints = Endpoints(
                settings.host,
                settings.port,
                self.metrics.registry,
                liveness=lambda: health.liveness(self, self.clock()),
                readiness=lambda: health.readiness(self, self.clock()),
            )
        except OSError as exc:
            raise EndpointError(
                f"cannot serve metrics on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        jobs = self.config.jobs
        if jobs.store and jobs.http_token:
            from supervisor.jobs.stores import open_store
            from supervisor.observe.endpoints import job_route

            store = open_store(jobs.store, retention_days=jobs.retention_days)

            def lookup(job_id: str) -> dict[str, Any] | None:
                record = store.get(job_id)
                return record.to_dict() if record else None

            self.endpoints.prefix_routes["/jobs/"] = job_route(lookup, jobs.http_token)
        self.register(self.endpoints.fileno(), self.endpoints.handle_one)
        log.info(
            "metrics, /healthz and /readyz on http://%s:%d", settings.host, self.endpoints.port
        )

    def register(self, fd: int, callback: Callable[[], None]) -> None:
        """Let another part of the parent (the HTTP endpoint) share the select loop."""
        self._selector.register(fd, selectors.EVENT_READ, callback)
        self._extra_fds.append(fd)

    def run_once(self, timeout: float = 1.0) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data == "wakeup":
                _drain_pipe(self._wakeup_r)
                self._housekeeping_at = 0.0  # a signal (SIGCHLD among them): act now
            elif callable(key.data):
                key.data()
            else:
                self.read_reports(self.children.get(key.data))
        self.handle_signals()
        now = self.clock()
        # Reports wake the loop many times a second under load; the rest runs on a timer.
        if now < self._housekeeping_at:
            return
        self._housekeeping_at = now + HOUSEKEEPING_SECONDS
        self.reap_children()
        self.murder_children(now)
        self.manage_children(now)
        self.check_memory(now)
        self.retry_releases(now)
        self.queue_stats.poll(self.config.bindings, now)
        self.update_gauges()
        self.notifier.watchdog(now)
        if self.state in ("draining", "stopping") and not self.children:
            self.state = "stopped"

    def teardown(self) -> None:
        if self._unreleased:
            self.retry_releases(self.clock(), force=True)
        signal.set_wakeup_fd(-1)
        self._selector.close()
        if self.endpoints is not None:
            self.endpoints.close()
        self.notifier.close()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        log.info("supervisor %d stopped", self._pid)

    # -- signals ------------------------------------------------------------------------------

    def _enqueue_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            handler = getattr(self, f"handle_{signal.Signals(signum).name[3:].lower()}")
            handler()

    def handle_term(self) -> None:
        if self.state in ("draining", "stopping"):
            self.stop_fast("second stop signal")
        else:
            self.drain("SIGTERM")

    def handle_int(self) -> None:
        if self.state in ("draining", "stopping"):
            self.stop_fast("second interrupt")
        else:
            self.drain("SIGINT")

    def handle_quit(self) -> None:
        self.stop_fast("SIGQUIT")

    def handle_hup(self) -> None:
        self.reload()

    def handle_ttin(self) -> None:
        self._scale(+1)

    def handle_ttou(self) -> None:
        self._scale(-1)

    def handle_chld(self) -> None:
        """Nothing to do here: every loop reaps."""

    def drain(self, why: str) -> None:
        """Stop receiving; let in-flight jobs finish within each binding's drain_timeout."""
        log.info("%s: draining %d children", why, len(self.children))
        self.state = "draining"
        self.notifier.stopping(f"draining {len(self.children)} children")
        now = self.clock()
        for child in self.children.values():
            binding = self._binding(child)
            self._retire(
                child, "shutdown", signal.SIGTERM, now + (binding.drain_timeout if binding else 0)
            )

    def stop_fast(self, why: str) -> None:
        """Abandon running jobs; children release everything they hold, at once."""
        log.warning("%s: fast stop, abandoning in-flight jobs", why)
        self.state = "stopping"
        self.notifier.stopping("fast stop")
        deadline = self.clock() + FAST_STOP_GRACE
        for child in self.children.values():
            self._retire(child, child.exit_reason or "shutdown", signal.SIGQUIT, deadline)

    def reload(self) -> None:
        if self.state != "running":
            return
        try:
            config = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        if config.metrics != self.config.metrics:
            log.warning("metrics settings changed; they take effect on restart, not on reload")
        log.info("SIGHUP: reloading %s; replacing %d children", config.path, len(self.children))
        self.notifier.notify("RELOADING=1", "STATUS=reloading")
        self._announced_ready = False
        now = self.clock()
        for child in self.children.values():
            binding = self._binding(child)
            self._retire(
                child, "reload", signal.SIGTERM, now + (binding.drain_timeout if binding else 0)
            )
        removed = {b.name for b in self.config.bindings} - {b.name for b in config.bindings}
        for name in removed:
            self.metrics.forget_binding(name, range(self.target(name)))
        self.config = config
        self._sqs = None
        self.slots.clear()
        self.metrics.declare((b.name, b.queue_name) for b in config.bindings)

    def _scale(self, step: int) -> None:
        for binding in self.config.bindings:
            current = self.target(binding.name)
            self.extra[binding.name] = max(1, current + step) - binding.processes
        log.info(
            "processes per binding now: %s",
            ", ".join(f"{b.name}={self.target(b.name)}" for b in self.config.bindings),
        )

    # -- children -----------------------------------------------------------------------------

    def target(self, binding: str) -> int:
        configured = self.config.binding(binding).processes
        return max(0, configured + self.extra.get(binding, 0))

    def read_reports(self, child: Child | None) -> None:
        if child is None:
            return
        now = self.clock()
        for report in child.reader.read():
            child.last_seen = now
            self._on_report(child, report, now)
        if child.reader.closed:
            self._unregister(child)
            self._housekeeping_at = 0.0  # the child is gone or going: reap it now

    def _on_report(self, child: Child, report: Report, now: float) -> None:
        kind = report["t"]
        binding = self._binding(child)
        queue = binding.queue_name if binding else "-"
        if kind == "received":
            self.receive_failing[child.binding] = not report["ok"]
            if report["ok"]:
                self.last_receive[child.binding] = now
                for message_id, receipt, count in report.get("leases", []):
                    child.leases[message_id] = (report["q"], receipt, count)
                ages = report.get("ages", [])
                self.metrics.received(child.binding, queue, report["n"], ages)
                self.queue_stats.note_received(queue, ages)
            else:
                self.metrics.receive_requests.labels(child.binding, "error").inc()
        elif kind == "alive":
            # The child's monotonic clock is the system's, so its start time is ours too.
            job = report.get("job")
            child.job = (job[0], job[1]) if job else None
        elif kind == "deleting":
            child.deleting.update(report["ids"])
        elif kind == "done":
            settled = report["m"]
            for message_id, _ in settled:
                child.leases.pop(message_id, None)
                child.deleting.discard(message_id)
                if child.job and child.job[0] == message_id:
                    child.job = None
            self.metrics.settled(child.binding, queue, report["o"], (d for _, d in settled))
        elif kind == "ready":
            child.ready = True
            if not self._announced_ready and all(c.ready for c in self.children.values()):
                self._announced_ready = True
                self.notifier.ready(f"consuming with {len(self.children)} children")
        elif kind == "extended":
            self.metrics.visibility_extensions.labels(child.binding).inc(report["n"])
            self.metrics.visibility_requests.labels(child.binding).inc(report["calls"])
        elif kind == "sqs_error":
            self.metrics.sqs_errors.labels(report["op"], report["code"]).inc()
        elif kind == "exiting":
            child.exit_reason = child.exit_reason or report["reason"]
            child.retiring = True

    def reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue  # an orphan we adopted as PID 1, or a helper process: just reaped
            self.read_reports(child)
            self._unregister(child)
            child.reader.close()
            self._on_exit(child, status)

    def _on_exit(self, child: Child, status: int) -> None:
        now = self.clock()
        lived = now - child.started_at
        reason = child.exit_reason
        code = os.waitstatus_to_exitcode(status)
        if reason is None:
            reason = "crash"
            if code == -signal.SIGKILL:
                log.error(
                    "child %d (%s) was killed by SIGKILL; perhaps out of memory?",
                    child.pid,
                    child.binding,
                )
            elif code == EXIT_WORKER_BOOT:
                log.error(
                    "child %d (%s) could not start (see its log above)", child.pid, child.binding
                )
            elif code < 0:
                log.error(
                    "child %d (%s) died of %s", child.pid, child.binding, signal.Signals(-code).name
                )
            else:
                log.error(
                    "child %d (%s) exited unexpectedly with code %d", child.pid, child.binding, code
                )
        else:
            log.info("child %d (%s) stopped (%s)", child.pid, child.binding, reason)
        self.release_leases(child)
        binding = self._binding(child)
        if binding is None or reason in ("shutdown", "scale_down") or self.state != "running":
            return
        self.metrics.worker_restarts.labels(child.binding, reason).inc()
        if reason == "reload":
            return
        slot = self.slots.setdefault((child.binding, child.slot), Slot())
        if reason == "crash":
            slot.failures = 1 if lived >= HEALTHY_AFTER else slot.failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (slot.failures - 1))
            slot.next_start_at = now + delay
            if slot.backing_off_since is None:
                slot.backing_off_since = now
            log.warning(
                "restarting %s slot %d in %.0f s (crash %d in a row, backing off)",
                child.binding,
                child.slot,
                delay,
                slot.failures,
            )
        else:
            slot.next_start_at = now

    def release_leases(self, child: Child) -> None:
        """Make a gone child's messages visible now; a timed-out one waits its retry delay.

        A message the child was deleting when it died, whose receipt SQS now calls gone,
        was deleted: it is counted as succeeded, not released.
        """
        if not child.leases:
            return
        binding = self._binding(child)
        by_queue: dict[str, list[BatchEntry]] = {}
        delayed: set[str] = set()
        for message_id, (queue_url, receipt, count) in child.leases.items():
            delay = 0
            if message_id == child.timed_out and binding is not None:
                delay = retry_delay(count, binding.retry)
                delayed.add(message_id)
            by_queue.setdefault(queue_url, []).append(BatchEntry(message_id, receipt, delay))
        held = set(child.leases)
        child.leases.clear()
        give_up_at = self.clock() + (binding.visibility_timeout if binding else 300)
        gone: set[str] = set()
        for queue_url, entries in by_queue.items():
            gone |= self._change_visibility(_Unreleased(queue_url, entries, give_up_at))
        deleted = gone & child.deleting
        queue = binding.queue_name if binding else "-"
        outcomes = {
            "succeeded": len(deleted),
            "failed": len(delayed - deleted),
            "released": len(held - delayed - deleted),
        }
        for outcome, count in outcomes.items():
            if count:
                self.metrics.settled(child.binding, queue, outcome, [None] * count)
        log.info(
            "released %d message(s) held by child %d%s",
            len(held - deleted),
            child.pid,
            f" ({len(deleted)} had been deleted as it died)" if deleted else "",
        )

    def murder_children(self, now: float) -> None:
        """Kill children past a deadline: job timeout, lost liveness, or drain time."""
        liveness = self.config.health.liveness_timeout
        for child in list(self.children.values()):
            binding = self._binding(child)
            if child.kill_at is not None and now >= child.kill_at:
                log.warning(
                    "child %d (%s) did not stop in time; killing it", child.pid, child.binding
                )
                self._kill(child)
            elif binding and child.job and now - child.job[1] > binding.timeout:
                log.error(
                    "child %d (%s): job %s exceeded its %.0f s timeout; killing the child",
                    child.pid,
                    child.binding,
                    child.job[0],
                    binding.timeout,
                )
                child.timed_out, child.exit_reason = child.job[0], "timeout"
                self._kill(child)
            elif now - child.last_seen > liveness and child.exit_reason != "hung":
                log.error(
                    "child %d (%s) sent nothing for %.0f s; killing it as hung",
                    child.pid,
                    child.binding,
                    now - child.last_seen,
                )
                child.exit_reason = child.exit_reason or "hung"
                self._kill(child)

    def manage_children(self, now: float) -> None:
        """Start children for empty slots (respecting backoff); retire surplus ones."""
        if self.state != "running":
            return
        for binding in self.config.bindings:
            target = self.target(binding.name)
            active = {
                c.slot: c
                for c in self.children.values()
                if c.binding == binding.name and not c.retiring
            }
            for slot_index, child in active.items():
                if slot_index >= target:
                    self._retire(child, "scale_down", signal.SIGTERM, now + binding.drain_timeout)
            for slot_index in range(target):
                slot = self.slots.setdefault((binding.name, slot_index), Slot())
                if slot_index not in active and now >= slot.next_start_at:
                    self.spawn_child(binding, slot_index)
                elif (
                    slot_index in active
                    and slot.failures
                    and now - active[slot_index].started_at >= HEALTHY_AFTER
                ):
                    slot.failures, slot.backing_off_since = 0, None

    def spawn_child(self, binding: Binding, slot: int) -> Child:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            code = EXIT_RUNTIME
            try:
                os.close(read_fd)
                self._become_child(binding)
                worker = Worker(
                    binding,
                    self.config.handlers[binding.name],
                    Reporter(write_fd),
                    self.config.sqs,
                    parent_pid=self._pid,
                    jobs=self.config.jobs,
                )
                code = worker.run()
            except BaseException:
                log.exception("worker crashed")
            finally:
                os._exit(code)
        os.close(write_fd)
        now = self.clock()
        child = Child(pid, binding.name, slot, ReportReader(read_fd), now, now)
        self.children[pid] = child
        self._selector.register(read_fd, selectors.EVENT_READ, pid)
        log.info("started child %d for %s (slot %d)", pid, binding.name, slot)
        return child

    def _become_child(self, binding: Binding) -> None:
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        self._selector.close()
        fds = [self._wakeup_r, self._wakeup_w, *self._extra_fds]
        fds += [c.reader.fd for c in self.children.values()]
        for fd in fds:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
        set_log_context(binding=binding.name)

    def check_memory(self, now: float) -> None:
        """Gauge each child's RSS; recycle one above max_memory_mb after its current job."""
        if now < self._next_memory_check:
            return
        self._next_memory_check = now + MEMORY_CHECK_SECONDS
        for child in list(self.children.values()):
            try:
                rss = psutil.Process(child.pid).memory_info().rss
            except psutil.Error:
                continue
            self.metrics.worker_memory.labels(child.binding, str(child.slot)).set(rss)
            binding = self._binding(child)
            limit = binding.max_memory_mb * 1024 * 1024 if binding else 0
            if limit and rss > limit and not child.retiring:
                log.warning(
                    "child %d (%s) uses %d MB > max_memory_mb %d; recycling after its job",
                    child.pid,
                    child.binding,
                    rss // (1024 * 1024),
                    limit // (1024 * 1024),
                )
                self._retire(child, "memory", signal.SIGTERM, None)

    def update_gauges(self) -> None:
        now = self.clock()
        for binding in self.config.bindings:
            counts: dict[str, int] = {}
            inflight = 0
            for child in self.children.values():
                if child.binding != binding.name:
                    continue
                state = "draining" if child.retiring else "running" if child.ready else "starting"
                counts[state] = counts.get(state, 0) + 1
                inflight += len(child.leases)
            for index in range(self.target(binding.name)):
                slot = self.slots.get((binding.name, index))
                if slot and slot.next_start_at > now:
                    counts["backoff"] = counts.get("backoff", 0) + 1
            self.metrics.set_workers(binding.name, counts)
            self.metrics.inflight.labels(binding.name).set(inflight)

    # -- SQS on the parent's side -------------------------------------------------------------

    @property
    def sqs(self) -> SqsClient:
        if self._sqs is None:
            # One short attempt: these calls run on the parent's loop, which must keep turning
            # (signals, reaping, the watchdog); what fails is retried on a later pass.
            self._sqs = SqsClient(
                self.config.sqs,
                read_timeout=3,
                connect_timeout=1,
                max_attempts=1,
                on_error=lambda exc: self.metrics.sqs_errors.labels(exc.operation, exc.code).inc(),
            )
        return self._sqs

    def _change_visibility(self, batch: _Unreleased) -> set[str]:
        """Apply a batch; keep what failed for a retry, except receipts SQS calls gone.
        Returns the keys whose receipt is gone."""
        failed = self.sqs.change_visibility_batch(batch.queue_url, batch.entries)
        gone = {key for key, code in failed.items() if code in RECEIPT_GONE}
        retry = [e for e in batch.entries if e.key in failed and e.key not in gone]
        if retry:
            batch.entries = retry
            self._unreleased.append(batch)
        return gone

    def retry_releases(self, now: float, *, force: bool = False) -> None:
        if not self._unreleased or (now < self._next_release_retry and not force):
            return
        self._next_release_retry = now + RELEASE_RETRY_SECONDS
        pending, self._unreleased = self._unreleased, []
        for batch in pending:
            if now < batch.give_up_at:
                self._change_visibility(batch)

    # -- helpers ------------------------------------------------------------------------------

    def _binding(self, child: Child) -> Binding | None:
        for binding in self.config.bindings:
            if binding.name == child.binding:
                return binding
        return None

    def _retire(self, child: Child, reason: str, signum: int, kill_at: float | None) -> None:
        child.retiring = True
        child.exit_reason = child.exit_reason or reason
        if kill_at is not None:
            child.kill_at = min(child.kill_at or kill_at, kill_at)
        _signal(child.pid, signum)

    def _kill(self, child: Child) -> None:
        child.retiring = True
        child.kill_at = None
        _signal(child.pid, signal.SIGKILL)

    def _unregister(self, child: Child) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.reader.fd)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
