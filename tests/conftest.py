"""Shared fixtures: one moto server (real HTTP) per session, reset before each test."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from supervisor.ops.local import DUMMY_CREDENTIALS, LocalSqs
from support import SupervisorProcess

# Loaded here, not by tests/jobstore/conftest.py: pytest-xdist's controller prints the summary.
pytest_plugins = ["jobstore.summary"]


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    server = LocalSqs()
    url = server.start()
    saved = dict(os.environ)
    os.environ.update(DUMMY_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL_SQS"] = url
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


@pytest.fixture
def sqs(sqs_endpoint: str):
    """A raw boto3 client on a freshly reset local server, for arranging and asserting."""
    request = urllib.request.Request(f"{sqs_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.test_failed = report.failed


@pytest.fixture
def supervisors(request, tmp_path: Path) -> Iterator[list[SupervisorProcess]]:
    """Supervisors started by a test; stopped at the end, their logs shown if it failed."""
    started: list[SupervisorProcess] = []
    yield started
    for supervisor in started:
        supervisor.stop()
        if getattr(request.node, "test_failed", False):
            tail = "\n".join(supervisor.logs().splitlines()[-60:])
            print(f"\n--- last lines of supervisor {supervisor.pid}'s log ---\n{tail}")


@pytest.fixture
def start_supervisor(supervisors, tmp_path: Path):
    def start(config: Path, *extra: str, env: dict[str, str] | None = None) -> SupervisorProcess:
        supervisor = SupervisorProcess(config, tmp_path, *extra, env=env)
        supervisors.append(supervisor)
        return supervisor

    return start
