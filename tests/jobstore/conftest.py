"""Real servers for the job-store contract. What each backend ran against (or why it did not
run) goes into ``jobstore.summary``'s records, which print the summary."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import PyMongoError

from jobstore.pgserver import PostgresServer, find_bindir, free_port
from jobstore.summary import not_run as _not_run
from jobstore.summary import servers as _servers

START_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster started for this session, stopped (immediate) at its end."""
    bindir, why = find_bindir()
    if bindir is None:
        _not_run["postgresql"] = why
        pytest.skip(f"PostgreSQL job-store contract NOT run: {why}")
    server = PostgresServer(bindir)
    try:
        server.start()
        version = server.version.split()[0]
        _servers["postgresql"] = f"PostgreSQL {version} at 127.0.0.1:{server.port}"
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def mongo_wire_server() -> Iterator[str]:
    """nx-27017 (MongoDB's wire protocol over SQLite, not mongod) on a loopback port: its URL."""
    program = shutil.which("nx-27017", path=f"{Path(sys.executable).parent}{os.pathsep}")
    program = program or shutil.which("nx-27017")
    if program is None:
        _not_run["mongo-wire"] = "nx-27017 is not installed (pip install -e '.[test]')"
        pytest.skip(_not_run["mongo-wire"])
    workdir = Path(tempfile.mkdtemp(prefix="sqs-supervisor-nx-"))
    port = free_port()
    with (workdir / "output.log").open("wb") as output:
        server = subprocess.Popen(
            [program, "--host", "127.0.0.1", "--port", str(port), "--data-dir",
             str(workdir / "data"), "--log-file", str(workdir / "server.log"),
             "--pid-file", str(workdir / "server.pid")],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    url = f"mongodb://127.0.0.1:{port}"
    try:
        why = _wait_for_ping(url, server)
        if why:
            tail = (workdir / "output.log").read_text(errors="replace")[-1500:]
            _not_run["mongo-wire"] = f"nx-27017 did not start: {why}"
            pytest.skip(f"{_not_run['mongo-wire']}\n{tail}")
        version = importlib.metadata.version("nx-27017")
        _servers["mongo-wire"] = f"nx-27017 {version} at 127.0.0.1:{port} (not mongod)"
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_ping(url: str, server: subprocess.Popen[bytes]) -> str:
    """Empty once `url` answers ping; otherwise why it did not within the deadline."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = ""
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"exited with status {server.returncode}"
        try:
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
                return ""
        except PyMongoError as exc:
            last = str(exc)
        time.sleep(0.1)
    return f"no answer to ping within {START_TIMEOUT_SECONDS} s: {last}"
