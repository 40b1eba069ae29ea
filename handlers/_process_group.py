"""The process group a command runs in, so that the command never outlives its job.

A command runs in a process group of its own, and on timeout, on a fast stop, or when it
exits leaving background processes, the whole group is ended (SIGTERM, then SIGKILL after
``KILL_GRACE``). The worker itself can be SIGKILLed (job timeout, OOM) with no chance to
clean up, so the group is headed by a tiny watchdog interpreter (``_WATCHDOG``) that forks
the command, mirrors its exit status, and SIGKILLs the group the moment a pipe from the
worker (the "lifeline") reaches end-of-file, which the kernel guarantees when the worker dies
however it dies.

We chose that over ``prctl(PR_SET_PDEATHSIG)`` because PDEATHSIG needs ``preexec_fn``, which
runs Python between fork and exec and can deadlock in a process with threads (the worker has
a heartbeat thread), is Linux-only, and only covers the direct child, not what a script
starts. The cost is one extra small interpreter (~70 ms of start-up, a few MB) per command.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

KILL_GRACE = 2.0  # after SIGTERM, the group has this long before SIGKILL
DRAIN_AFTER_EXIT = 1.0  # output still in the pipes when the command exits is read this long
POLL_SECONDS = 0.1  # how often exit is checked where pidfd_open is unavailable

# Runs as ``python -I -S -c _WATCHDOG LIFELINE_FD PROGRAM ARGV...``, leader of a new session.
# It is single-threaded when it forks, so the fork is safe; its SIGTERM handler is a no-op
# (reset by exec, so the command still gets SIGTERM) so that it stays to report the exit.
_WATCHDOG = r"""
import os, signal, sys, threading
lifeline, program, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
os.set_inheritable(lifeline, False)
signal.signal(signal.SIGTERM, lambda signum, frame: None)
pid = os.fork()
if pid == 0:
    try:
        os.execv(program, argv)
    except OSError as exc:
        os.write(2, f"sqs-supervisor: cannot run {program}: {exc.strerror}\n".encode())
    os._exit(127)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
def watch():
    os.read(lifeline, 1)  # returns only at end-of-file: the worker is gone
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if code < 0:
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -code)
os._exit(code if code >= 0 else 128 - code)
"""


class Capture:
    """Keeps the first and last ``limit / 2`` bytes of a stream, counting what it drops."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        del self.tail[: max(0, len(self.tail) - self.tail_limit)]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        marker = f"\n[... {dropped} bytes truncated ...]\n".encode() if dropped else b""
        return bytes(self.head + marker + self.tail).decode(errors="replace")


@dataclass
class Finished:
    returncode: int
    stdout: Capture
    stderr: Capture
    timed_out: bool


class ProcessGroup:
    """The watchdog and the command it heads: their pipes, their group, and how to end them.

    The group id is the watchdog's pid, which cannot be reused while the watchdog is an
    unreaped zombie, so it is only signalled before ``wait()`` reaps it.
    """

    def __init__(
        self, program: str, argv: tuple[str, ...], cwd: str | None, env: dict[str, str]
    ) -> None:
        lifeline_read, self._lifeline = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _WATCHDOG,
                    str(lifeline_read),
                    program,
                    *argv,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
                pass_fds=(lifeline_read,),
            )
        except BaseException:
            os.close(self._lifeline)
            raise
        finally:
            os.close(lifeline_read)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Whatever happened (including StopWorker on a fast stop), nothing is left running.
        if self.process.returncode is None:
            self.signal(signal.SIGKILL)
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        os.close(self._lifeline)

    def signal(self, signum: int) -> None:
        if self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def exited(self) -> bool:
        """Has the watchdog exited? Checked without reaping it, so its group id stays ours."""
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def communicate(self, body: bytes, timeout: float | None, limit: int) -> Finished:
        """Feed stdin, collect output, enforce the timeout; return once the group is done."""
        assert self.process.stdin and self.process.stdout and self.process.stderr
        captures = {
            self.process.stdout.fileno(): Capture(limit),
            self.process.stderr.fileno(): Capture(limit),
        }
        out, err = captures.values()
        selector = selectors.DefaultSelector()
        exit_fd = _pidfd(self.process.pid)
        try:
            for fd in captures:
                selector.register(fd, selectors.EVENT_READ)
            if exit_fd is not None:
                selector.register(exit_fd, selectors.EVENT_READ)
            feeder = _Feeder(self.process.stdin, body, selector)
            now = time.monotonic()
            term_at = now + timeout if timeout is not None else None
            kill_at = drain_until = None
            timed_out = False
            while True:
                now = time.monotonic()
                if drain_until is None and self.exited():
                    # Whatever it left behind goes too (and so lets go of the pipes).
                    self.signal(signal.SIGKILL)
                    feeder.close()
                    if exit_fd is not None:
                        selector.unregister(exit_fd)  # it stays readable from now on
                    drain_until = now + DRAIN_AFTER_EXIT
                if drain_until is not None:
                    if not captures or now >= drain_until:
                        break
                elif term_at is not None and now >= term_at and not timed_out:
                    timed_out, kill_at = True, now + KILL_GRACE
                    self.signal(signal.SIGTERM)
                elif kill_at is not None and now >= kill_at:
                    self.signal(signal.SIGKILL)
                    kill_at = None  # once is enough: the exit follows at once
                wake = [t for t in (term_at, kill_at, drain_until) if t is not None and t > now]
                if exit_fd is None:
                    wake.append(now + POLL_SECONDS)
                wait = max(0.0, min(wake) - now) if wake else None
                for key, _ in selector.select(wait):
                    if key.fd in captures:
                        chunk = os.read(key.fd, 64 * 1024)
                        if chunk:
                            captures[key.fd].add(chunk)
                        else:
                            selector.unregister(key.fd)
                            del captures[key.fd]
                    elif key.fd == feeder.fd:
                        feeder.write()
            feeder.close()
        finally:
            selector.close()
            if exit_fd is not None:
                os.close(exit_fd)
        self.signal(signal.SIGKILL)  # anything still holding the pipes after the drain
        returncode = self.process.wait()
        return Finished(returncode, out, err, timed_out)


class _Feeder:
    """Writes the body to stdin without blocking, so output is read while it is written."""

    def __init__(self, stdin: Any, body: bytes, selector: selectors.BaseSelector) -> None:
        self.stdin = stdin
        self.fd = stdin.fileno()
        self.pending = memoryview(body)
        self.selector = selector
        self.open = True
        if self.pending:
            os.set_blocking(self.fd, False)
            selector.register(self.fd, selectors.EVENT_WRITE)
        else:
            self.close()

    def write(self) -> None:
        try:
            written = os.write(self.fd, self.pending[: 64 * 1024])
        except BlockingIOError:
            return
        except BrokenPipeError:
            written = len(self.pending)  # the command stopped reading: its choice
        self.pending = self.pending[written:]
        if not self.pending:
            self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            if self.fd in self.selector.get_map():
                self.selector.unregister(self.fd)
            self.stdin.close()


def _pidfd(pid: int) -> int | None:
    """A descriptor readable when ``pid`` exits (Linux 5.3+), so exit needs no polling."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
