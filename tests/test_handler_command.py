"""handlers.command:run with real processes: stdin bytes, env, exit codes, output, groups."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from handlers import command
from handlers.command import CommandFailed, run, validate_options
from supervisor import Context, Message, PermanentError
from supervisor.errors import StopWorker
from support import REPO, make_queue, queue_counts, send_bodies, wait_until, write_config

PY = sys.executable
WRITE_STDIN = "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())"
# Starts a grandchild, writes "own-pid grandchild-pid" to argv[1], then sleeps through SIGTERM.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(["sleep", "300"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def message(body: str = '{"topic": "tides"}', **message_attributes: Any) -> Message:
    return Message(
        message_id="5e2f-77",
        receipt_handle="receipt",
        body=body,
        queue_url="http://sqs.local/000000000000/renders",
        attributes={"ApproximateReceiveCount": "3", "SentTimestamp": "1714566896789"},
        message_attributes=message_attributes,
    )


def context(deadline_in: float | None = 60, **options: Any) -> Context:
    return Context(
        binding="renders",
        queue_url="http://sqs.local/000000000000/renders",
        attempt=3,
        logger=logging.getLogger("test.command"),
        options=options,
        deadline=time.monotonic() + deadline_in if deadline_in is not None else None,
    )


def pids_from(path: Path) -> list[int]:
    wait_until(path.exists, 10, f"{path.name} to be written")
    return [int(pid) for pid in path.read_text().split()]


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where a test command writes its pids; any still running at the end (a failed test) die."""
    path = tmp_path / "pids"
    yield path
    for pid in path.read_text().split() if path.exists() else []:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(int(pid))
            if "300" in " ".join(process.cmdline()):  # ours, not a recycled pid
                process.kill()


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for init to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- input and environment --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [PY, "-c", WRITE_STDIN, "OUT"],
        ["sh", "-c", 'cat > "$1"', "sh", "OUT"],  # even a shell never sees the body as code
    ],
    ids=["python", "sh-cat"],
)
def test_the_body_reaches_stdin_byte_for_byte_and_nothing_in_it_runs(tmp_path, argv):
    out, sentinel = tmp_path / "stdin.bin", tmp_path / "pwned"
    body = (
        f"$(rm -rf /tmp/x); \"quoted\" 'too' && echo pwned > {sentinel}; `touch {sentinel}`\n"
        "| touch {sentinel} ; ünïcødé\r\n\ttabs"
    )
    argv = [str(out) if arg == "OUT" else arg for arg in argv]

    assert run(message(body), context(argv=argv, cwd=str(tmp_path))) is None

    assert out.read_bytes() == body.encode()
    assert not sentinel.exists()


def test_a_large_body_is_fed_while_output_is_read(tmp_path):
    body = "0123456789abcdef" * 64 * 1024  # 1 MiB: far more than a pipe buffer both ways

    result = run(
        message(body), context(argv=["cat"], stdout_as_result=True, max_output_bytes=2**21)
    )

    assert result == body


def test_metadata_arrives_in_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("INHERITED_SETTING", "from-the-worker")
    monkeypatch.setenv("SQS_JOB_ID", "stale-from-an-outer-job")
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    msg = message(Trace_Id="abc", priority=5, Blob=b"\x00")

    env = run(msg, context(argv=[PY, "-c", dump], env={"MODE": "batch"}, stdout_as_result=True))

    assert env["SQS_MESSAGE_ID"] == "5e2f-77"
    assert env["SQS_QUEUE_URL"] == "http://sqs.local/000000000000/renders"
    assert env["SQS_BINDING"] == "renders"
    assert env["SQS_RECEIVE_COUNT"] == "3"
    assert env["SQS_SENT_AT"] == "2024-05-01T12:34:56.789Z"
    assert env["SQS_ATTR_TRACE_ID"] == "abc"
    assert env["SQS_ATTR_PRIORITY"] == "5"
    assert not any(name.startswith("SQS_ATTR_BLOB") for name in env), "binary is skipped"
    assert "SQS_JOB_ID" not in env, "no job id on this message, and the stale one is dropped"
    assert env["MODE"] == "batch"
    assert env["INHERITED_SETTING"] == "from-the-worker"


def test_the_job_id_is_passed_and_inherit_env_false_starts_from_nothing(monkeypatch):
    monkeypatch.setenv("INHERITED_SETTING", "from-the-worker")
    dump = "import json, os; print(json.dumps(dict(os.environ)))"

    env = run(
        message(JobId="job-9"),
        context(argv=[PY, "-c", dump], inherit_env=False, stdout_as_result=True),
    )

    assert env["SQS_JOB_ID"] == "job-9"
    assert "INHERITED_SETTING" not in env
    assert "PATH" not in env


# -- outcomes --------------------------------------------------------------------------------


def test_exit_zero_returns_none_unless_stdout_is_the_result():
    argv = [PY, "-c", "print('{\"frames\": 24}')"]
    assert run(message(), context(argv=argv)) is None
    assert run(message(), context(argv=argv, stdout_as_result=True)) == {"frames": 24}
    text = [PY, "-c", "print('done, not JSON')"]
    assert run(message(), context(argv=text, stdout_as_result=True)) == "done, not JSON\n"


def test_a_failing_exit_code_is_retried_naming_the_code_and_the_stderr_tail(caplog):
    caplog.set_level(logging.INFO, logger="test.command")
    script = "import sys; print('partial work'); sys.exit('render failed: codec missing')"

    with pytest.raises(CommandFailed) as caught:
        run(message(), context(argv=[PY, "-c", script]))

    assert not isinstance(caught.value, PermanentError)
    assert "exited with code 1" in str(caught.value)
    assert "render failed: codec missing" in str(caught.value)
    logged = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert ("INFO", "command stdout:\npartial work") in logged
    assert ("WARNING", "command stderr:\nrender failed: codec missing") in logged


def test_a_permanent_exit_code_goes_to_the_dead_letter_queue():
    argv = [PY, "-c", "import sys; sys.stderr.write('bad input'); sys.exit(2)"]

    with pytest.raises(PermanentError, match="exited with code 2: bad input"):
        run(message(), context(argv=argv, permanent_exit_codes=[2, 65]))


def test_death_by_signal_is_retried():
    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]

    with pytest.raises(CommandFailed, match="killed by SIGSEGV"):
        run(message(), context(argv=argv, permanent_exit_codes=[139]))


def test_a_program_that_is_not_there_is_retried_not_dead_lettered(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        run(message(), context(argv=["no-such-program-xyz"]))
    with pytest.raises(FileNotFoundError):
        run(message(), context(argv=["./no-such-program"], cwd=str(tmp_path)))


def test_output_is_truncated_with_a_marker_and_keeps_head_and_tail(caplog):
    caplog.set_level(logging.INFO, logger="test.command")
    script = (
        "import sys; print('FIRST' + 'x' * 500000 + 'LAST'); "
        "sys.stderr.write('E' * 500000 + 'REASON'); sys.exit(4)"
    )

    with pytest.raises(CommandFailed) as caught:
        run(message(), context(argv=[PY, "-c", script], max_output_bytes=1000))

    assert str(caught.value).endswith("EEREASON")
    assert len(str(caught.value)) < 400
    [stdout] = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert stdout.startswith("command stdout:\nFIRST")
    assert stdout.endswith("xxLAST")
    assert "bytes truncated" in stdout
    assert len(stdout) < 1100


# -- process groups ----------------------------------------------------------------------------


def test_at_the_timeout_the_whole_group_is_killed_even_if_it_ignores_sigterm(pid_file):
    started = time.monotonic()

    with pytest.raises(TimeoutError, match="timeout"):
        run(message(), context(argv=[PY, "-c", STUBBORN, str(pid_file)], timeout=1))

    elapsed = time.monotonic() - started
    assert 1 + command.KILL_GRACE - 0.2 < elapsed < 1 + command.KILL_GRACE + 2
    own, grandchild = pids_from(pid_file)
    wait_until(lambda: gone(own) and gone(grandchild), 5, "the command and its grandchild")


def test_the_default_timeout_stops_short_of_the_supervisors_deadline():
    assert command._time_budget(None, None) is None
    assert command._time_budget(30, None) == 30
    budget = command._time_budget(None, time.monotonic() + 100)
    assert 100 - command.DEADLINE_MARGIN - 1 < budget <= 100 - command.DEADLINE_MARGIN
    assert command._time_budget(30, time.monotonic() + 100) == 30
    assert 1.5 < command._time_budget(None, time.monotonic() + 4) <= 2, "half of a short one"


def test_background_processes_left_behind_are_killed_when_the_command_exits(pid_file):
    script = (
        "import subprocess, sys; p = subprocess.Popen(['sleep', '300']); "
        "open(sys.argv[1], 'w').write(str(p.pid))"
    )
    started = time.monotonic()

    run(message(), context(argv=[PY, "-c", script, str(pid_file)]))

    assert time.monotonic() - started < 5, "did not wait for the leftover"
    [leftover] = pids_from(pid_file)
    wait_until(lambda: gone(leftover), 5, "the leftover sleep")


def test_a_fast_stop_in_the_worker_kills_the_group(pid_file):

    def stop(signum: int, frame: Any) -> None:
        raise StopWorker

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(StopWorker):
            run(message(), context(argv=[PY, "-c", STUBBORN, str(pid_file)]))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    own, grandchild = pids_from(pid_file)
    wait_until(lambda: gone(own) and gone(grandchild), 5, "the command and its grandchild")


def test_the_command_does_not_outlive_a_sigkilled_worker(pid_file):
    worker = f"""
import logging, sys
from handlers.command import run
from supervisor import Context, Message
options = {{"argv": {[PY, "-c", STUBBORN, str(pid_file)]!r}}}
ctx = Context("b", "q", 1, logging.getLogger("w"), options)
run(Message("m", "r", "body", "q"), ctx)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    fake_worker = subprocess.Popen([PY, "-c", worker], env=env, cwd=REPO)
    try:
        own, grandchild = pids_from(pid_file)
        fake_worker.kill()
        fake_worker.wait()
        wait_until(lambda: gone(own) and gone(grandchild), 5, "the orphaned command group")
    finally:
        if fake_worker.poll() is None:
            fake_worker.kill()
            fake_worker.wait()


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "argv is required"),
        ({"argv": "convert $BODY out.png"}, "never run through a shell"),
        ({"argv": []}, "non-empty list"),
        ({"argv": ["ok", None]}, "argv[1] must be a string"),
        ({"argv": [""]}, "must not be empty"),
        ({"argvv": ["x"]}, "unknown option 'argvv' (did you mean 'argv'?)"),
        ({"argv": ["x"], "timeout": -1}, "timeout must be a positive number"),
        ({"argv": ["x"], "permanent_exit_codes": [0]}, "not an exit code"),
        ({"argv": ["x"], "permanent_exit_codes": 2}, "must be a list"),
        ({"argv": ["x"], "env": {"A=B": "1"}}, "not a valid environment variable name"),
        ({"argv": ["x"], "env": {"DEBUG": True}}, "quote it"),
        ({"argv": ["x"], "inherit_env": "yes"}, "true or false"),
        ({"argv": ["x"], "max_output_bytes": 0}, "positive integer"),
        ({"argv": ["x"], "cwd": 5}, "cwd must be"),
    ],
)
def test_validate_options_names_the_problem(options, problem):
    with pytest.raises(ValueError) as caught:
        validate_options(options)
    assert problem in str(caught.value)


def test_validate_options_accepts_a_full_binding_and_is_attached_to_the_handler():
    validate_options(
        {
            "argv": ["sleep", 5],  # YAML gives numbers; they are passed as text
            "cwd": "/srv",
            "env": {"MODE": "batch", "PORT": 8080},
            "inherit_env": False,
            "timeout": 30,
            "permanent_exit_codes": [2, 65],
            "max_output_bytes": 4096,
            "stdout_as_result": True,
        }
    )
    assert run.validate_options is validate_options


# -- end to end -----------------------------------------------------------------------------------


def test_a_message_through_a_real_supervisor_reaches_the_command(sqs, tmp_path, start_supervisor):
    out = tmp_path / "out.bin"
    url = make_queue(sqs, "commands")
    value = {"cmd": "$(touch /tmp/pwned); \"quoted\" 'too' && echo pwned", "text": "ünï"}
    send_bodies(sqs, url, [value])
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "commands",
                "queue": "commands",
                "handler": "handlers.command:run",
                "processes": 1,
                "wait_time_seconds": 1,
                "retry": {"base_seconds": 1, "max_seconds": 5},
                "options": {"argv": [PY, "-c", WRITE_STDIN, str(out)]},
            }
        ],
    )

    supervisor = start_supervisor(config)
    wait_until(
        lambda: out.exists() and queue_counts(sqs, url)["in_flight"] == 0,
        30,
        "the command to run and the message to be deleted",
    )
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert out.read_bytes() == json.dumps(value).encode()
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}
