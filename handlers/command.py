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
group is ended (SIGTERM, then SIGKILL after ``KILL_GRACE``), even when the worker itself is
SIGKILLed; ``handlers._process_group`` explains how. A process that leaves the group on
purpose (``setsid``, a daemon) is out of reach.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers._options import reject_unknown
from handlers._process_group import KILL_GRACE, Capture, Finished, ProcessGroup
from handlers.decode import isoformat, text_attributes
from supervisor import Context, Message, PermanentError

DEADLINE_MARGIN = KILL_GRACE + 1.0  # finish before the supervisor's own hard timeout
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
    with ProcessGroup(program, opts.argv, opts.cwd, env) as group:
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


def _result(stdout: Capture) -> Any:
    text = stdout.text()
    if stdout.truncated:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _log_output(ctx: Context, finished: Finished) -> None:
    if finished.stdout.total:
        ctx.logger.info("command stdout:\n%s", finished.stdout.text().rstrip())
    if finished.stderr.total:
        ctx.logger.warning("command stderr:\n%s", finished.stderr.text().rstrip())


def _tail(stderr: Capture) -> str:
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
