"""The report channel from a child to the parent: one pipe per child, one JSON object per line.

Children say what they hold (leases with receipt handles), when a job starts and ends, how it
ended, and that they are alive. The parent needs the leases to release a dead child's messages
at once, and the job times to kill a child whose job overruns its ``timeout``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

Report = dict[str, Any]


class Reporter:
    """Child side: writes reports; safe to call from the worker and its heartbeat thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        data = (json.dumps({"t": kind, **fields}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]


class ReportReader:
    """Parent side: non-blocking reads of one child's pipe, split into whole reports."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def read(self) -> Iterator[Report]:
        """Every complete report available now; sets ``closed`` once the child's end is gone."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line:
                yield json.loads(line)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
