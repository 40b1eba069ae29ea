"""The CLI frictions a new user hits first (issue 14): each test is what the user saw fail."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import boto3

from supervisor.cli.main import main
from supervisor.ops.local import free_port
from support import APPS, REPO, make_queue, queue_counts, wait_until, write_config

CLI = [sys.executable, "-m", "supervisor.cli"]


def one_binding(tmp_path: Path, queue: str, **settings: object) -> Path:
    binding = {"name": "jobs", "queue": queue, "handler": "apphandlers:behave", **settings}
    return write_config(tmp_path / "w.yaml", [binding])


def test_send_raw_sends_a_plain_text_body_as_is(sqs, tmp_path, capsys):
    url = make_queue(sqs, "raw-text")
    path = one_binding(tmp_path, "raw-text")

    assert main(["send", "-c", str(path), "jobs", "--raw", "--body", "plain text"]) == 0
    assert "sent 1/1: message " in capsys.readouterr().out
    [message] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert message["Body"] == "plain text"

    # Without --raw the body goes into a job envelope, so it must be JSON; say how to avoid it.
    assert main(["send", "-c", str(path), "jobs", "--body", "plain text"]) == 2
    assert "--body is not valid JSON" in capsys.readouterr().err
    assert queue_counts(sqs, url)["visible"] == 0


# -- no AWS credentials at all ------------------------------------------------------------------


def bare_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's shell with no AWS credentials anywhere: no AWS_* variables and no ~/.aws."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), **extra)
    return env


class LocalVerb:
    """``sqs-supervisor local`` as the user runs it; its stdout is what they copy."""

    def __init__(self, tmp_path: Path, config: Path, env: dict[str, str]) -> None:
        self.out = tmp_path / f"local-{time.monotonic_ns()}.out"
        with self.out.open("wb") as sink:
            self.process = subprocess.Popen(
                [*CLI, "local", "--port", str(free_port()), "-c", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )

    def exports(self) -> dict[str, str]:
        """The ``export NAME=value`` lines, once it says the endpoint is running."""
        wait_until(lambda: "local SQS is running" in self.text(), 30, "the local endpoint")
        return dict(re.findall(r"^export (\w+)=(\S+)$", self.text(), re.MULTILINE))

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=15)


def send(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "send", "-c", str(config), "jobs", "--body", '{"n": 1}'],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


def test_local_then_send_works_on_a_machine_without_aws_credentials(tmp_path):
    config = one_binding(tmp_path, "no-creds")
    local = LocalVerb(tmp_path, config, bare_environment(tmp_path))
    try:
        exports = local.exports()
        endpoint = exports["AWS_ENDPOINT_URL_SQS"]
        assert endpoint.startswith("http://127.0.0.1:")
        # What it tells the user to export makes any AWS tool work against it...
        assert exports["AWS_ACCESS_KEY_ID"] and exports["AWS_SECRET_ACCESS_KEY"]
        assert exports["AWS_DEFAULT_REGION"] == "us-east-1"
        exported = send(config, bare_environment(tmp_path, **exports))
        assert (exported.returncode, exported.stderr) == (0, "")
        # ...and our own verbs need only the endpoint, however loopback is spelled.
        for host in ("127.0.0.1", "localhost"):
            alone = bare_environment(
                tmp_path, AWS_ENDPOINT_URL_SQS=endpoint.replace("127.0.0.1", host)
            )
            result = send(config, alone)
            assert (result.returncode, result.stderr) == (0, ""), host
            assert "sent 1/1: job " in result.stdout

        client = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        url = client.get_queue_url(QueueName="no-creds")["QueueUrl"]
        assert queue_counts(client, url)["visible"] == 3
    finally:
        local.stop()


def test_local_does_not_tell_a_user_with_credentials_to_replace_them(tmp_path):
    config = one_binding(tmp_path, "own-creds")
    env = bare_environment(
        tmp_path, AWS_ACCESS_KEY_ID="AKIAOWNKEY", AWS_SECRET_ACCESS_KEY="own-secret"
    )
    local = LocalVerb(tmp_path, config, env)
    try:
        exports = local.exports()
        assert "AWS_ENDPOINT_URL_SQS" in exports
        assert "AWS_ACCESS_KEY_ID" not in exports
        assert "AWS_SECRET_ACCESS_KEY" not in exports
    finally:
        local.stop()


def test_a_non_loopback_endpoint_never_gets_the_dummy_credentials(tmp_path):
    config = one_binding(tmp_path, "remote")
    # 192.0.2.0/24 is TEST-NET-1: nothing answers there, and signing fails before any send.
    env = bare_environment(tmp_path, AWS_ENDPOINT_URL_SQS="http://192.0.2.1:4566")
    result = send(config, env)
    assert result.returncode == 1
    assert "Unable to locate credentials" in result.stderr


# -- run --local stops promptly -----------------------------------------------------------------


def log_time(line: str) -> float:
    """The epoch time of a text log line (``2026-11-23 06:15:22,170 INFO ...``)."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def test_run_local_stops_its_endpoint_promptly_and_says_so(tmp_path):
    config = one_binding(tmp_path, "stops", processes=1, wait_time_seconds=20)
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*CLI, "run", "--local", "-c", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(APPS), str(REPO)])},
            cwd=REPO,
        )
    try:
        # A child in its 20 s long poll: the endpoint has a request open when it is stopped.
        wait_until(lambda: "started child" in log.read_text(), 30, "a child")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        exited = time.time()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = log.read_text().splitlines()
    [stopped] = [line for line in lines if re.search(r"supervisor \d+ stopped", line)]
    [endpoint] = [line for line in lines if re.search(r"local SQS at \S+ stopped", line)]
    assert lines.index(endpoint) > lines.index(stopped)
    # Measured here: 0.27-0.32 s for the endpoint before the fix (moto's interpreter teardown
    # after SIGTERM), a few ms after; the whole tail was 0.3-0.5 s before and ~0.05 s after.
    assert log_time(endpoint) - log_time(stopped) < 0.15
    assert exited - log_time(stopped) < 1.0


# -- pip install --------------------------------------------------------------------------------


def test_building_the_package_prints_no_license_deprecation(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("supervisor", "handlers"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    # What pip does on `pip install .`: an isolated build with the setuptools pyproject asks for.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "w"), "."],
        capture_output=True,
        text=True,
        cwd=source,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "project.license" not in output
    [wheel] = (tmp_path / "w").glob("sqs_supervisor-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: MIT" in archive.read(metadata).decode().splitlines()
