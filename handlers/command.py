"""``handlers.command:run``: run a program per message, the body on its stdin, metadata in env.

```yaml
handler: handlers.command:run
options:
  argv: [python3, scripts/transcode.py, --fast]   # a list, never a shell line
  cwd: /srv/app
  timeout: 600                  # default: what is left of the binding's timeout, minus 3 s
  permanent_exit_codes: [2]     # these go straight to the dead-letter queue
  env: {MODE: batch}            # on top of the worker's environment (inherit_env: true)
```

Exit 0 deletes the message; an exit code in ``permanent_exit_codes`` dead-letters it; any
other exit, a signal, or the timeout retries it. stdout and stderr are kept up to
``max_output_bytes`` each (head and tail) and logged when the command fails.

Process groups. The command never outlives its job: it runs in a process group of its own,
and on timeout, on a fast stop, or when it exits leaving background processes, the whole
group is ended (SIGTERM, then SIGKILL after ``KILL_GRACE``). The worker itself can be
SIGKILLed (job timeout, OOM) with no chance to clean up, so the group is headed by a tiny
watchdog interpreter (``_WATCHDOG``) that forks the command, mirrors its exit status, and
SIGKILLs the group the moment a pipe from the worker (the "lifeline") reaches end-of-file,
which the kernel guarantees when the worker dies however it dies.

We chose that over ``prctl(PR_SET_PDEATHSIG)`` because PDEATHSIG needs ``preexec_fn``, which
runs Python between fork and exec and can deadlock in a process with threads (the worker has
a heartbeat thread), is Linux-only, and only covers the direct child, not what a script
starts. The cost is one extra small interpreter (~70 ms of start-up, a few MB) per command.
A process that leaves the group on purpose (``setsid``, a daemon) is out of reach.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from handlers._options import reject_unknown
from handlers.decode import isoformat, text_attributes
from supervisor import Context, Message, PermanentError

KILL_GRACE = 2.0  # after SIGTERM, the group has this long before SIGKILL
DEADLINE_MARGIN = KILL_GRACE + 1.0  # finish before the supervisor's own hard timeout
DRAIN_AFTER_EXIT = 1.0  # output still in the pipes when the command exits is read this long
POLL_SECONDS = 0.1  # how often exit is checked where pidfd_open is unavailable
DEFAULT_MAX_OUTPUT = 64 * 1024
ERROR_TAIL_CHARS = 300  # of stderr, in the exception (and so the dead-letter attribute)
METADATA_PREFIX = "SQS_"

_KEYS = (
    "argv",
    "cwd",
    "env",
    "inherit_env",
    "timeout",
    "permanent_exit_codes",
    "max_output_bytes",
    "stdout_as_result",
)
_ENV_NAME = re.compile(r"^[^=\x00]+$")

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


class CommandFailed(Exception):
    """The command exited non-zero (or died of a signal): retried with the binding's backoff."""


@dataclass(frozen=True)
class _Options:
    argv: tuple[str, ...]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    inherit_env: bool = True
    timeout: float | None = None
    permanent_exit_codes: frozenset[int] = frozenset()
    max_output_bytes: int = DEFAULT_MAX_OUTPUT
    stdout_as_result: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> _Options:
        reject_unknown(options, _KEYS)
        cwd = options.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError("cwd must be a directory path")
        timeout = options.get("timeout")
        if timeout is not None and (not _is_number(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds (got {timeout!r})")
        max_output = options.get("max_output_bytes", DEFAULT_MAX_OUTPUT)
        if not isinstance(max_output, int) or isinstance(max_output, bool) or max_output < 1:
            raise ValueError(f"max_output_bytes must be a positive integer (got {max_output!r})")
        return cls(
            argv=_argv(options.get("argv")),
            cwd=cwd,
            env=_static_env(options.get("env", {})),
            inherit_env=_flag(options, "inherit_env", True),
            timeout=float(timeout) if timeout is not None else None,
            permanent_exit_codes=_exit_codes(options.get("permanent_exit_codes", [])),
            max_output_bytes=max_output,
            stdout_as_result=_flag(options, "stdout_as_result", False),
        )


def run(message: Message, ctx: Context) -> Any:
    """Run ``options.argv`` with the body on stdin; exit 0 is success (see the module doc)."""
    opts = _Options.parse(ctx.options)
    env = _environment(opts, message, ctx)
    program = _resolve(opts.argv[0], opts.cwd, env)
    timeout = _time_budget(opts.timeout, ctx.deadline)
    started = time.monotonic()
    with _Group(program, opts, env) as group:
        finished = group.communicate(message.body.encode(), timeout, opts.max_output_bytes)
    name = opts.argv[0]
    if finished.timed_out:
        _log_output(ctx, finished)
        raise TimeoutError(
            f"command {name} ran past its {timeout:.1f} s timeout; its process group was killed"
            + _tail(finished.stderr)
        )
    code = finished.returncode
    if code == 0:
        ctx.logger.debug("command %s exited 0 in %.2f s", name, time.monotonic() - started)
        return _result(finished.stdout) if opts.stdout_as_result else None
    _log_output(ctx, finished)
    problem = f"command {name} {_describe_exit(code)}{_tail(finished.stderr)}"
    if code in opts.permanent_exit_codes:
        raise PermanentError(problem)
    raise CommandFailed(problem)


def validate_options(options: dict[str, Any]) -> None:
    """Called by config loading: raise ValueError describing the first bad option."""
    _Options.parse(options)


run.validate_options = validate_options  # type: ignore[attr-defined]


# -- the process group ---------------------------------------------------------------------------


class _Capture:
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
class _Finished:
    returncode: int
    stdout: _Capture
    stderr: _Capture
    timed_out: bool


class _Group:
    """The watchdog and the command it heads: their pipes, their group, and how to end them.

    The group id is the watchdog's pid, which cannot be reused while the watchdog is an
    unreaped zombie, so it is only signalled before ``wait()`` reaps it.
    """

    def __init__(self, program: str, opts: _Options, env: dict[str, str]) -> None:
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
                    *opts.argv,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=opts.cwd,
                env=env,
                start_new_session=True,
                pass_fds=(lifeline_read,),
            )
        except BaseException:
            os.close(self._lifeline)
            raise
        finally:
            os.close(lifeline_read)

    def __enter__(self) -> _Group:
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

    def communicate(self, body: bytes, timeout: float | None, limit: int) -> _Finished:
        """Feed stdin, collect output, enforce the timeout; return once the group is done."""
        assert self.process.stdin and self.process.stdout and self.process.stderr
        captures = {
            self.process.stdout.fileno(): _Capture(limit),
            self.process.stderr.fileno(): _Capture(limit),
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
        return _Finished(returncode, out, err, timed_out)


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


# -- helpers ------------------------------------------------------------------------------------


def _environment(opts: _Options, message: Message, ctx: Context) -> dict[str, str]:
    env: dict[str, str] = {}
    if opts.inherit_env:
        # A worker may itself run under such a command: never pass on stale message metadata.
        env = {k: v for k, v in os.environ.items() if not _is_metadata(k)}
    env.update(opts.env)
    metadata = {
        "SQS_MESSAGE_ID": message.message_id,
        "SQS_QUEUE_URL": ctx.queue_url,
        "SQS_BINDING": ctx.binding,
        "SQS_RECEIVE_COUNT": str(message.receive_count),
        "SQS_SENT_AT": isoformat(message.sent_at),
        "SQS_FIRST_RECEIVED_AT": isoformat(message.first_received_at),
        "SQS_JOB_ID": message.job_id,
    }
    env.update({k: v for k, v in metadata.items() if v})
    for name, value in text_attributes(message).items():
        env["SQS_ATTR_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()] = value
    return env


def _is_metadata(name: str) -> bool:
    return name.startswith("SQS_ATTR_") or name in {
        "SQS_MESSAGE_ID",
        "SQS_QUEUE_URL",
        "SQS_BINDING",
        "SQS_RECEIVE_COUNT",
        "SQS_SENT_AT",
        "SQS_FIRST_RECEIVED_AT",
        "SQS_JOB_ID",
    }


def _resolve(program: str, cwd: str | None, env: Mapping[str, str]) -> str:
    """The executable's path, looked up here so that "not found" is an error, not exit 127."""
    if os.sep in program:
        path = os.path.join(cwd or os.getcwd(), program)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(errno.ENOENT, "command not found or not executable", path)
        return program  # relative to cwd, where the watchdog runs
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "command not found on PATH", program)
    return os.path.abspath(found)


def _time_budget(timeout: float | None, deadline: float | None) -> float | None:
    """The option, but never past the supervisor's hard timeout (which kills the worker)."""
    limits = [] if timeout is None else [timeout]
    if deadline is not None:
        left = deadline - time.monotonic()
        limits.append(max(0.0, left - DEADLINE_MARGIN, left / 2))
    return min(limits) if limits else None


def _pidfd(pid: int) -> int | None:
    """A descriptor readable when ``pid`` exits (Linux 5.3+), so exit needs no polling."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _result(stdout: _Capture) -> Any:
    text = stdout.text()
    if stdout.truncated:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _log_output(ctx: Context, finished: _Finished) -> None:
    if finished.stdout.total:
        ctx.logger.info("command stdout:\n%s", finished.stdout.text().rstrip())
    if finished.stderr.total:
        ctx.logger.warning("command stderr:\n%s", finished.stderr.text().rstrip())


def _tail(stderr: _Capture) -> str:
    text = " ".join(stderr.text().split())
    if not text:
        return ""
    return f": ...{text[-ERROR_TAIL_CHARS:]}" if len(text) > ERROR_TAIL_CHARS else f": {text}"


def _describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


# -- option validation --------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _argv(argv: Any) -> tuple[str, ...]:
    if argv is None:
        raise ValueError("argv is required (a list such as [python3, job.py])")
    if isinstance(argv, str):
        raise ValueError(
            "argv must be a list such as [python3, job.py], not a string: it is never run "
            "through a shell"
        )
    if not isinstance(argv, list) or not argv:
        raise ValueError("argv must be a non-empty list of strings")
    for index, item in enumerate(argv):
        if not isinstance(item, str) and not _is_number(item):
            raise ValueError(f"argv[{index}] must be a string (got {item!r})")
        if "\x00" in str(item):
            raise ValueError(f"argv[{index}] contains a NUL byte")
    if not str(argv[0]):
        raise ValueError("argv[0] (the program) must not be empty")
    return tuple(str(item) for item in argv)


def _static_env(env: Any) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise ValueError("env must be a mapping of variable name to value")
    checked = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"env: {name!r} is not a valid environment variable name")
        if not isinstance(value, str) and not _is_number(value):
            raise ValueError(f"env.{name} must be a string (quote it: '{value}')")
        if "\x00" in str(value):
            raise ValueError(f"env.{name} contains a NUL byte")
        checked[name] = str(value)
    return checked


def _exit_codes(codes: Any) -> frozenset[int]:
    if not isinstance(codes, list):
        raise ValueError("permanent_exit_codes must be a list of exit codes (1-255)")
    for code in codes:
        if not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= 255:
            raise ValueError(f"permanent_exit_codes: {code!r} is not an exit code (1-255)")
    return frozenset(codes)


def _flag(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false (got {value!r})")
    return value
