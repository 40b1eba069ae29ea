"""A local SQS endpoint for development and tests: moto's server on loopback, as a subprocess.

boto3 talks to it over HTTP exactly as to AWS. It runs in its own session so that a Ctrl-C in
the terminal reaches the supervisor (which drains and releases messages through it) but not
the endpoint itself, which is stopped last.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from supervisor.config import Config, SqsSettings

START_TIMEOUT = 30.0
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalSqsError(RuntimeError):
    pass


class LocalSqs:
    """Starts and stops one moto server; ``url`` is its endpoint."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor.ops.localserver",
                "-H",
                self.host,
                "-p",
                str(self.port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalSqsError(
                    f"the local SQS server exited with code {self.process.returncode};"
                    " is moto[server] installed (pip install 'sqs-supervisor[local]')?"
                )
            if self.healthy():
                return self.url
            time.sleep(0.1)
        self.stop()
        raise LocalSqsError(f"the local SQS server did not answer on {self.url} within 30 s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LocalSqs:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_environment(url: str) -> Iterator[None]:
    """Point boto3 at the local endpoint, with dummy credentials where none are set."""
    saved = dict(os.environ)
    os.environ["AWS_ENDPOINT_URL_SQS"] = url
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def with_endpoint(config: Config, url: str) -> Config:
    """The same config, talking to ``url`` whatever its YAML said."""
    from dataclasses import replace

    return replace(config, sqs=SqsSettings(region=config.sqs.region, endpoint_url=url))
