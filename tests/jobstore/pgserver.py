"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temp cluster, trust auth.

The cluster lives in a temp dir owned by `postgres`, because the server refuses to run as
root and the tests (like CI) run as root; as any other user it runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

START_TIMEOUT_SECONDS = 60


def find_bindir() -> tuple[Path | None, str]:
    """The directory holding initdb and pg_ctl (newest Debian version first), or why none."""
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(re.sub(r"\D", "", Path(path).parent.parent.name) or 0),
    )
    found = debian[-1] if debian else shutil.which("initdb")
    if found is None:
        return None, "initdb not found (install Debian's postgresql: apt-get install postgresql)"
    bindir = Path(found).parent
    if not (bindir / "pg_ctl").exists():
        return None, f"{bindir}/pg_ctl not found next to initdb"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root but there is no 'postgres' user to run the server as"
    return bindir, ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster on 127.0.0.1:port; `stop()` and `start()` may be called again mid-test."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sqs-supervisor-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.version = ""
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str, password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # No fsync: the data is thrown away. Commits still reach the OS before they return, so
        # they survive the immediate stop (a crash of the server, not of the machine).
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(START_TIMEOUT_SECONDS), "start",
        )  # fmt: skip
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.version = row[0] if row else "?"

    def stop(self) -> None:
        """Stop at once, as a crash would: backends are killed, clients see their sockets close."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def is_running(self) -> bool:
        status = self._command("pg_ctl", "-D", str(self.data), "status")
        return subprocess.run(status, capture_output=True, check=False).returncode == 0

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        if self.is_running():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _command(self, program: str, *args: str) -> list[str]:
        runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return [*runas, str(self.bindir / program), *args]

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            self._command(program, *args),
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT_SECONDS + 30,
        )
        if done.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}\n{log}"
            )
