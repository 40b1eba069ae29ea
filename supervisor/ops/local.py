"""A local SQS endpoint for development and tests: moto's server on loopback, as a subprocess.

boto3 talks to it over HTTP exactly as to AWS. It runs in its own session so that a Ctrl-C in
the terminal reaches the supervisor (which drains and releases messages through it) but not
the endpoint itself, which is stopped last. It needs no credentials: ``sqs.credentials_for``
gives our clients dummy ones for a loopback endpoint, and ``dummy_environment`` says what other
tools need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from supervisor.config import Config, SqsSettings
from supervisor.sqs import LOOPBACK_CREDENTIALS, credentials_for, shared_session

log = logging.getLogger("sqs_supervisor.local")

START_TIMEOUT = 30.0
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": LOOPBACK_CREDENTIALS["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": LOOPBACK_CREDENTIALS["aws_secret_access_key"],
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
        """Kill the server: all it holds is in memory and meant to go, and a SIGTERM only bought
        a graceful interpreter teardown of moto (0.3 s here, seconds on a busy machine) that
        the user sat through in silence after the supervisor had stopped."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.process = None
        log.info("local SQS at %s stopped", self.url)

    def __enter__(self) -> LocalSqs:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dummy_environment(url: str, region: str) -> dict[str, str]:
    """What other tools (the AWS CLI, your own boto3 code) need to reach ``url``: the dummy
    credentials and ``region`` only where the user has none, so exporting them never replaces
    credentials of their own (a LocalStack account key, or real ones in that shell)."""
    missing: dict[str, str] = {}
    if credentials_for(url):
        missing["AWS_ACCESS_KEY_ID"] = DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]
        missing["AWS_SECRET_ACCESS_KEY"] = DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    if not (os.environ.get("AWS_REGION") or shared_session().region_name):
        missing["AWS_DEFAULT_REGION"] = region
    return missing


@contextlib.contextmanager
def local_environment(
    url: str, region: str = DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"]
) -> Iterator[None]:
    """Point boto3 at the local endpoint, for this process and the ones it starts (children's
    handlers, the demo producer), with ``dummy_environment``'s variables."""
    saved = dict(os.environ)
    missing = dummy_environment(url, region)
    os.environ["AWS_ENDPOINT_URL_SQS"] = url
    os.environ.update(missing)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def with_endpoint(config: Config, url: str) -> Config:
    """The same config, talking to ``url`` whatever its YAML said."""
    from dataclasses import replace

    return replace(config, sqs=SqsSettings(region=config.sqs.region, endpoint_url=url))
