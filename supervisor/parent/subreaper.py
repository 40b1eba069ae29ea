"""What a dead child leaves behind: its handler's processes, brought back to the parent.

The parent is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``; as a container's PID 1 it
is init, which amounts to the same), so when a child exits, every process of its tree that is
still running (a ``subprocess.Popen`` never waited for, a ``multiprocessing`` helper, a
double-forked daemon) becomes the parent's own child instead of init's. ``Leftovers`` finds
those after a child exits: the parent's children that are not live workers and not among the
processes it had before it started the pool. They get SIGTERM, then SIGKILL after a grace, and
the pool's ``waitpid(-1)`` reaps them.

Spared: what the process running the arbiter started before ``start()`` (``run --local``'s
SQS server and demo producer) and any process in one of their sessions (both run in a session
of their own, so their own helpers are spared too if they are orphaned). Matching on the pid
alone would miss those helpers; matching on our own session would spare every handler's process,
since children share the parent's session so that a terminal's Ctrl-C reaches them.

The parent itself starts no other process after ``start()``. An orphan whose own parent died
while its child still runs (a daemon double-forked by a live child) also comes to us; it is
stopped at the next exit of any child, since nothing tells whose it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Collection

import psutil

log = logging.getLogger("sqs_supervisor.arbiter")

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
LEFTOVER_GRACE = 1.0  # SIGTERM, then SIGKILL this much later
GIVE_UP_AFTER = 5.0  # after the SIGKILL: a process stuck in the kernel is no reason to hang


def become_subreaper() -> bool:
    """Have orphaned descendants reparented to this process rather than to init."""
    if not sys.platform.startswith("linux"):
        log.debug("no child subreaper on %s: a handler's orphans go to init", sys.platform)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0) != 0:
        log.warning(
            "cannot become a child subreaper (%s): a handler's orphans go to init",
            os.strerror(ctypes.get_errno()),
        )
        return False
    return True


class Leftovers:
    """Stops and tracks the processes dead children left behind, until they are reaped."""

    def __init__(self, *, active: bool, grace: float = LEFTOVER_GRACE) -> None:
        self.active = active  # False when the pool's pids are a unit test's fakes
        self.grace = grace
        self._spared: set[tuple[int, float]] = set()  # (pid, create time)
        self._spared_sessions: set[int] = set()
        self._exited: list[int] = []  # children gone since the last sweep
        self._owners: list[int] = []  # whose leftovers are being stopped
        self._stopping: dict[int, float] = {}  # pid -> when to SIGKILL it
        self._killed: dict[int, float] = {}  # pid -> when to stop waiting for it
        self._given_up: set[int] = set()  # SIGKILLed long ago and still there: left alone
        self._count = 0
        self._look_again = False  # one of them died: its own children may have come to us

    def __bool__(self) -> bool:
        """Is anything left to stop or to reap? The parent does not exit before it is not."""
        return bool(self._exited or self._look_again or self._stopping or self._killed)

    def start(self) -> None:
        """Before the first fork: become a subreaper, note the processes we must spare."""
        if not self.active:
            return
        become_subreaper()
        own_session = os.getsid(0)
        for process in psutil.Process().children():
            with contextlib.suppress(psutil.Error, OSError):
                self._spared.add((process.pid, process.create_time()))
                self._spared_sessions.add(os.getsid(process.pid))
        self._spared_sessions.discard(own_session)

    def child_exited(self, pid: int) -> None:
        if self.active:
            self._exited.append(pid)

    def sweep(self, now: float, workers: Collection[int]) -> None:
        """One step of the housekeeping timer: find, signal, escalate, give up."""
        if not self.active or not self:
            return
        # As each stopped process dies, its own children come to us: look again while busy.
        self._owners += self._exited
        self._exited.clear()
        self._look_again = False
        for process in self._strays(workers):
            known = process.pid in self._stopping or process.pid in self._killed
            if not known and _signal(process.pid, signal.SIGTERM):
                self._stopping[process.pid] = now + self.grace
                self._count += 1
        for pid, kill_at in list(self._stopping.items()):
            if now >= kill_at:
                del self._stopping[pid]
                _signal(pid, signal.SIGKILL)
                self._killed[pid] = now + GIVE_UP_AFTER
        for pid, give_up_at in list(self._killed.items()):
            if now >= give_up_at:
                log.warning("leftover process %d did not end after SIGKILL; no longer waiting", pid)
                del self._killed[pid]
                self._given_up.add(pid)
        self._report()

    def reaped(self, pid: int) -> None:
        """The pool's waitpid returned a pid that is not a worker's."""
        self._given_up.discard(pid)
        if self._stopping.pop(pid, None) is not None or self._killed.pop(pid, None) is not None:
            self._look_again = True

    def kill_all(self) -> None:
        """The parent is exiting: no grace left for what is still running."""
        for pid in [*self._stopping, *self._killed]:
            _signal(pid, signal.SIGKILL)

    def _strays(self, workers: Collection[int]) -> list[psutil.Process]:
        strays = []
        for process in psutil.Process().children():
            if process.pid in workers or process.pid in self._given_up:
                continue
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue  # already over: the next waitpid reaps it
                spared = (process.pid, process.create_time()) in self._spared
                if spared or os.getsid(process.pid) in self._spared_sessions:
                    continue
            except (psutil.Error, OSError):
                continue
            strays.append(process)
        return strays

    def _report(self) -> None:
        if self or not self._owners:
            return
        if self._count:
            whose = ", ".join(map(str, self._owners))
            log.info(
                "killed %d leftover process(es) of child%s %s",
                self._count,
                "ren" if len(self._owners) > 1 else "",
                whose,
            )
        self._owners.clear()
        self._count = 0


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
