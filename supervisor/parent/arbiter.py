"""The parent: one loop that owns the signals and drives the pool, its reports and releases.

Single-threaded, so forking is safe: one ``select`` waits on the signal wake-up pipe, every
child's report pipe and the HTTP socket. Signal handlers only enqueue; ``run_once`` routes
reports as they arrive, dispatches signals to ``handle_<signal>``, and on a 0.25 s timer (or
at once after a signal or a closed pipe) runs the housekeeping steps: reap, murder, manage,
check memory, retry releases, poll queue stats, update gauges, pet the watchdog. Starting and
reaping children are injected, so a unit test drives ``run_once`` without forking.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from supervisor.config import Config, load_config
from supervisor.errors import EXIT_OK, ConfigError
from supervisor.observe.endpoints import Endpoints
from supervisor.observe.metrics import Metrics
from supervisor.observe.queuestats import QueueStats
from supervisor.observe.sdnotify import Notifier
from supervisor.parent import health
from supervisor.parent.fork import Forker
from supervisor.parent.pool import Pool, Spawner, Waiter, waitpid_any
from supervisor.parent.releases import Releases
from supervisor.parent.reports import ReportRouter
from supervisor.routing import FALLBACK, UNKNOWN
from supervisor.sqs import SqsClient
from supervisor.timeouts import FAST_STOP_GRACE

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
HOUSEKEEPING_SECONDS = 0.25  # reaping, deadlines, spawning, gauges: at most this often


class EndpointError(RuntimeError):
    """The HTTP port could not be opened (in use, not permitted)."""


class Arbiter:
    """Keeps ``processes`` healthy children per binding until told to stop."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        spawner: Spawner | None = None,
        waitpid: Waiter = waitpid_any,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.state = "starting"  # starting, running, draining, stopping, stopped
        self.notifier = Notifier()
        self._announced_ready = False
        self._signals: deque[int] = deque()
        self._saved_handlers: dict[int, Any] = {}
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._extra_fds: list[int] = []  # other fds the children must not inherit
        self._housekeeping_at = 0.0
        self._sqs: SqsClient | None = None
        self._pid = os.getpid()
        self.endpoints: Endpoints | None = None
        self.releases = Releases(lambda: self.sqs, self.metrics, clock)
        spawner = spawner or Forker(lambda: self.config, self._pid, self._shed_parent)
        self.pool = Pool(
            config, self.metrics, self.releases, spawner, self._selector, waitpid=waitpid
        )
        self.queue_stats = QueueStats.for_settings(
            self.metrics,
            lambda: self.sqs,
            config.metrics.queue_poll_seconds,
            config.metrics.cloudwatch,
            config.sqs,
        )
        self.reports = ReportRouter(
            self.pool, self.metrics, self.queue_stats, clock, announce_ready=self._all_ready
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
            self._saved_handlers[signum] = signal.signal(signum, self._enqueue_signal)
        self._declare_metrics(self.config)
        self.pool.leftovers.start()  # a subreaper, sparing what the CLI started before us
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
        self.pool.manage(self.clock())

    def open_endpoints(self) -> None:
        """Bind the HTTP port before the first fork, so children can close their copy."""
        settings = self.config.metrics
        try:
            self.endpoints = Endpoints(
                settings.host,
                settings.port,
                self.metrics.registry,
                liveness=lambda: health.liveness(self.pool, self.clock()),
                readiness=lambda: health.readiness(self.pool, self.state, self.clock()),
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
        self.endpoints.attach(self.register, self.unregister)
        log.info(
            "metrics, /healthz and /readyz on http://%s:%d", settings.host, self.endpoints.port
        )

    def register(
        self, fd: int, callback: Callable[[], None], events: int = selectors.EVENT_READ
    ) -> None:
        """Let another part of the parent (the HTTP endpoint) share the select loop."""
        self._selector.register(fd, events, callback)
        self._extra_fds.append(fd)

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)
        self._extra_fds.remove(fd)

    def run_once(self, timeout: float = 1.0) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data == "wakeup":
                _drain_pipe(self._wakeup_r)
                self._housekeeping_at = 0.0  # a signal (SIGCHLD among them): act now
            elif callable(key.data):
                key.data()
            elif self.reports.read(self.pool.children.get(key.data)):
                self._housekeeping_at = 0.0  # the child is gone or going: reap it now
        self.handle_signals()
        now = self.clock()
        # Reports wake the loop many times a second under load; the rest runs on a timer.
        if now < self._housekeeping_at:
            return
        self._housekeeping_at = now + HOUSEKEEPING_SECONDS
        self.reap_children(now)
        self.pool.murder(now)
        if self.state == "running":
            self.pool.manage(now)
        self.pool.check_memory(now)
        self.releases.retry(now)
        self.queue_stats.poll(self.config.bindings, now)
        self.pool.update_gauges(now)
        self.notifier.watchdog(now)
        if self.endpoints is not None:
            self.endpoints.reap(now)  # idle HTTP clients past their deadline
        if self.state in ("draining", "stopping") and self.pool.nothing_left():
            self.state = "stopped"

    def reap_children(self, now: float) -> None:
        for child, status in self.pool.reap():
            self.reports.read(child)  # what it said before it died
            self.pool.exited(child, status, now, restarting=self.state == "running")

    def teardown(self) -> None:
        if self.releases.pending:
            self.releases.retry(self.clock(), force=True)
        self.pool.leftovers.kill_all()
        signal.set_wakeup_fd(-1)
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler)
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
        self.pool.scale(+1)

    def handle_ttou(self) -> None:
        self.pool.scale(-1)

    def handle_chld(self) -> None:
        """Nothing to do here: every loop reaps."""

    def drain(self, why: str) -> None:
        """Stop receiving; let in-flight jobs finish within each binding's drain_timeout."""
        log.info("%s: draining %d children", why, len(self.pool.children))
        self.state = "draining"
        self.notifier.stopping(f"draining {len(self.pool.children)} children")
        now = self.clock()
        self.pool.retire_all(
            "shutdown", signal.SIGTERM, lambda b: now + (b.drain_timeout if b else 0)
        )

    def stop_fast(self, why: str) -> None:
        """Abandon running jobs; children release everything they hold, at once."""
        log.warning("%s: fast stop, abandoning in-flight jobs", why)
        self.state = "stopping"
        self.notifier.stopping("fast stop")
        deadline = self.clock() + FAST_STOP_GRACE
        self.pool.retire_all("shutdown", signal.SIGQUIT, lambda b: deadline)

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
        log.info(
            "SIGHUP: reloading %s; replacing %d children", config.path, len(self.pool.children)
        )
        self.notifier.notify("RELOADING=1", "STATUS=reloading")
        self._announced_ready = False
        now = self.clock()
        self.pool.retire_all(
            "reload", signal.SIGTERM, lambda b: now + (b.drain_timeout if b else 0)
        )
        removed = {b.name for b in self.config.bindings} - {b.name for b in config.bindings}
        for name in removed:
            self.metrics.forget_binding(name, range(self.pool.target(name)))
        self.config = self.pool.config = config
        self._sqs = None
        self.pool.slots.clear()
        self._declare_metrics(config)

    def _declare_metrics(self, config: Config) -> None:
        self.metrics.declare((b.name, b.queue_name) for b in config.bindings)
        for binding in config.bindings:
            if binding.handlers is not None:
                types = set(binding.handlers)
                self.metrics.declare_types(
                    binding.name, sorted(types if FALLBACK in types else {*types, UNKNOWN})
                )

    def _all_ready(self) -> None:
        if not self._announced_ready:
            self._announced_ready = True
            self.notifier.ready(f"consuming with {len(self.pool.children)} children")

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

    def _shed_parent(self) -> None:
        """In a new child: drop the parent's signal handlers and every fd it must not keep."""
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        self._selector.close()
        if self._sqs is not None:  # the parent's kept connections: the child has its own client
            self._sqs.close()
            self._sqs = None
        fds = [self._wakeup_r, self._wakeup_w, *self._extra_fds]
        fds += [c.reader.fd for c in self.pool.children.values()]
        for sibling in self.pool.children.values():  # not the new child: it is not added yet
            if sibling.finished is not None:
                sibling.finished.close()
        for fd in fds:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
