"""The parent's pool: which children live, in which slots, and the restart policy.

Every binding has ``processes`` slots (adjusted by SIGTTIN/SIGTTOU). A slot whose child
crashes is restarted after 1 s, doubling to 60 s while it keeps crashing; a minute of health
resets it. How a child is started (``spawner``) and reaped (``waitpid``) is injected, so a
unit test can drive the pool without forking.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
from collections.abc import Callable, Iterable

import psutil

from supervisor.config import Binding, Config, is_async
from supervisor.errors import EXIT_WORKER_BOOT
from supervisor.finished import FinishedLog
from supervisor.ipc import ReportReader
from supervisor.observe.metrics import Metrics
from supervisor.parent.children import Child, ReceiveState, Slot
from supervisor.parent.releases import Releases
from supervisor.parent.subreaper import Leftovers
from supervisor.timeouts import hard_limit, liveness_lost, overdue_jobs

log = logging.getLogger("sqs_supervisor.arbiter")

BACKOFF_START, BACKOFF_MAX = 1.0, 60.0
HEALTHY_AFTER = 60.0  # a child that lived this long resets its slot's crash backoff
MEMORY_CHECK_SECONDS = 5.0

# (binding, slot, the child's finished log) -> (pid, report fd)
Spawner = Callable[[Binding, int, FinishedLog], tuple[int, int]]
Waiter = Callable[[], tuple[int, int]]  # os.waitpid(-1, WNOHANG): (0, 0) when none is ready


def waitpid_any() -> tuple[int, int]:
    return os.waitpid(-1, os.WNOHANG)


class Pool:
    """Children by pid, slots by (binding, index), and the steps that keep them right."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        releases: Releases,
        spawner: Spawner,
        selector: selectors.BaseSelector,
        *,
        waitpid: Waiter = waitpid_any,
    ) -> None:
        self.config = config
        self._by_name: dict[str, Binding] = {}
        self._by_name_of: Config | None = None
        self.metrics = metrics
        self.releases = releases
        self.spawner = spawner
        self.selector = selector
        self.waitpid = waitpid
        self.children: dict[int, Child] = {}
        self.slots: dict[tuple[str, int], Slot] = {}
        self.extra: dict[str, int] = {}  # SIGTTIN/SIGTTOU adjustments per binding
        self.receives: dict[str, ReceiveState] = {}
        self._next_memory_check = 0.0
        # Only a real reaper's pids are real: a unit test's fake ones must not make us signal
        # the test runner's own processes.
        self.leftovers = Leftovers(active=waitpid is waitpid_any)

    def binding(self, child: Child) -> Binding | None:
        """The child's binding in the current config (None once a reload removed it); looked
        up by name for every report that counts messages, so by a dict kept per config."""
        if self._by_name_of is not self.config:
            self._by_name = {binding.name: binding for binding in self.config.bindings}
            self._by_name_of = self.config
        return self._by_name.get(child.binding)

    def target(self, binding: str) -> int:
        configured = self.config.binding(binding).processes
        return max(0, configured + self.extra.get(binding, 0))

    def scale(self, step: int) -> None:
        for binding in self.config.bindings:
            current = self.target(binding.name)
            self.extra[binding.name] = max(1, current + step) - binding.processes
        log.info(
            "processes per binding now: %s",
            ", ".join(f"{b.name}={self.target(b.name)}" for b in self.config.bindings),
        )

    # -- starting and stopping ----------------------------------------------------------------

    def manage(self, now: float) -> None:
        """Start children for empty slots (respecting backoff); retire surplus ones."""
        for binding in self.config.bindings:
            target = self.target(binding.name)
            active = {
                c.slot: c
                for c in self.children.values()
                if c.binding == binding.name and not c.retiring
            }
            for slot_index, child in active.items():
                if slot_index >= target:
                    self.retire(child, "scale_down", signal.SIGTERM, now + binding.drain_timeout)
            for slot_index in range(target):
                slot = self.slots.setdefault((binding.name, slot_index), Slot())
                if slot_index not in active and now >= slot.next_start_at:
                    self.spawn(binding, slot_index, now)
                elif (
                    slot_index in active
                    and slot.failures
                    and now - active[slot_index].started_at >= HEALTHY_AFTER
                ):
                    slot.failures, slot.backing_off_since = 0, None

    def spawn(self, binding: Binding, slot: int, now: float) -> Child:
        finished = FinishedLog()
        try:
            pid, fd = self.spawner(binding, slot, finished)
        except BaseException:
            finished.close()
            raise
        child = Child(pid, binding.name, slot, ReportReader(fd), now, now, finished=finished)
        self.children[pid] = child
        self.selector.register(fd, selectors.EVENT_READ, pid)
        log.info("started child %d for %s (slot %d)", pid, binding.name, slot)
        return child

    def retire_all(
        self, reason: str, signum: int, kill_at: Callable[[Binding | None], float]
    ) -> None:
        """Signal every child to stop; each keeps the reason it already had, if any."""
        for child in self.children.values():
            self.retire(child, reason, signum, kill_at(self.binding(child)))

    def retire(self, child: Child, reason: str, signum: int, kill_at: float | None) -> None:
        child.retiring = True
        child.exit_reason = child.exit_reason or reason
        if kill_at is not None:
            child.kill_at = min(child.kill_at or kill_at, kill_at)
        _signal(child.pid, signum)

    def kill(self, child: Child) -> None:
        child.retiring = True
        child.kill_at = None
        _signal(child.pid, signal.SIGKILL)

    def nothing_left(self) -> bool:
        """No child, and nothing a dead child left behind: the parent may exit."""
        return not self.children and not self.leftovers

    def forget(self, child: Child) -> None:
        """Stop watching a child's pipe (it closed, or the child was reaped)."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(child.reader.fd)

    # -- reaping ------------------------------------------------------------------------------

    def reap(self) -> list[tuple[Child, int]]:
        """Every child that has exited, with its wait status; other pids (what a dead child left
        behind, or an orphan we adopted as PID 1) are reaped and dropped."""
        exited = []
        while True:
            try:
                pid, status = self.waitpid()
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self.children.pop(pid, None)
            if child is not None:
                exited.append((child, status))
            else:
                self.leftovers.reaped(pid)
        return exited

    def exited(self, child: Child, status: int, now: float, *, restarting: bool) -> None:
        """Log why a child ended, release what it held, and schedule its slot's restart."""
        self.forget(child)
        child.reader.close()
        self.leftovers.child_exited(child.pid)
        reason = child.exit_reason or "crash"
        if child.exit_reason is None:
            log.error(_describe_crash(child, os.waitstatus_to_exitcode(status)))
        else:
            log.info("child %d (%s) stopped (%s)", child.pid, child.binding, reason)
        binding = self.binding(child)
        self.releases.release(child, binding)
        if child.finished is not None:
            child.finished.close()
        if binding is None or reason in ("shutdown", "scale_down") or not restarting:
            return
        self.metrics.worker_restarts.labels(child.binding, reason).inc()
        if reason == "reload":
            return
        slot = self.slots.setdefault((child.binding, child.slot), Slot())
        if reason != "crash":
            slot.next_start_at = now
            return
        slot.failures = 1 if now - child.started_at >= HEALTHY_AFTER else slot.failures + 1
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

    # -- deadlines, memory, gauges ------------------------------------------------------------

    def murder(self, now: float) -> None:
        """Kill children past a deadline (job timeout, lost liveness, or drain time), and what
        dead children left behind."""
        self.leftovers.sweep(now, self.children)
        liveness = self.config.health.liveness_timeout
        for child in list(self.children.values()):
            binding = self.binding(child)
            overdue = overdue_jobs(child.jobs, self.hard_limit(binding), now) if binding else []
            if child.kill_at is not None and now >= child.kill_at:
                log.warning(
                    "child %d (%s) did not stop in time; killing it", child.pid, child.binding
                )
                self.kill(child)
            elif binding and overdue:
                for message_id in overdue:
                    log.error(
                        "child %d (%s): job %s exceeded its %.0f s timeout; killing the child",
                        child.pid,
                        child.binding,
                        message_id,
                        self.hard_limit(binding),
                    )
                child.timed_out.update(overdue)
                child.exit_reason = "timeout"
                self.kill(child)
            elif liveness_lost(child.last_seen, liveness, now) and child.exit_reason != "hung":
                log.error(
                    "child %d (%s) sent nothing for %.0f s; killing it as hung",
                    child.pid,
                    child.binding,
                    now - child.last_seen,
                )
                child.exit_reason = child.exit_reason or "hung"
                self.kill(child)

    def many_jobs(self, binding: Binding) -> bool:
        """Does a child of this binding run many jobs at once (it then times them out itself)?"""
        handler = self.config.handlers.get(binding.name)
        return binding.concurrency > 1 or (handler is not None and is_async(handler))

    def hard_limit(self, binding: Binding) -> float:
        many = self.many_jobs(binding)
        return hard_limit(binding.timeout, binding.drain_timeout, many_jobs=many)

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
            binding = self.binding(child)
            limit = binding.max_memory_mb * 1024 * 1024 if binding else 0
            if limit and rss > limit and not child.retiring:
                log.warning(
                    "child %d (%s) uses %d MB > max_memory_mb %d; recycling after its job",
                    child.pid,
                    child.binding,
                    rss // (1024 * 1024),
                    limit // (1024 * 1024),
                )
                self.retire(child, "memory", signal.SIGTERM, None)

    def update_gauges(self, now: float) -> None:
        for binding in self.config.bindings:
            counts: dict[str, int] = {}
            inflight = busy = slots = 0
            for child in self.of(binding.name):
                state = "draining" if child.retiring else "running" if child.ready else "starting"
                counts[state] = counts.get(state, 0) + 1
                inflight += len(child.leases)
                busy += len(child.jobs)
                if state == "running":
                    slots += binding.concurrency
            for index in range(self.target(binding.name)):
                slot = self.slots.get((binding.name, index))
                if slot and slot.next_start_at > now:
                    counts["backoff"] = counts.get("backoff", 0) + 1
            self.metrics.set_workers(binding.name, counts)
            self.metrics.inflight.labels(binding.name).set(inflight)
            self.metrics.busy_slots.labels(binding.name).set(busy)
            self.metrics.slots.labels(binding.name).set(slots)

    def of(self, binding: str) -> Iterable[Child]:
        return (c for c in self.children.values() if c.binding == binding)


def _describe_crash(child: Child, code: int) -> str:
    who = f"child {child.pid} ({child.binding})"
    if code == -signal.SIGKILL:
        return f"{who} was killed by SIGKILL; perhaps out of memory?"
    if code == EXIT_WORKER_BOOT:
        return f"{who} could not start (see its log above)"
    if code < 0:
        return f"{who} died of {signal.Signals(-code).name}"
    return f"{who} exited unexpectedly with code {code}"


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
