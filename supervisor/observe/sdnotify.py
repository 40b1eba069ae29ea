"""systemd's notify protocol: a datagram to $NOTIFY_SOCKET (READY=1, WATCHDOG=1, STOPPING=1).

A few lines over a Unix datagram socket, so no dependency. Without NOTIFY_SOCKET every call
does nothing, so the supervisor behaves the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends state lines to systemd; pets the watchdog at half of WatchdogSec."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in Linux's abstract namespace.
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        watchdog_usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid and int(watchdog_pid) != os.getpid():
            watchdog_usec = 0  # the watchdog is meant for another process
        self.watchdog_interval = watchdog_usec / 2_000_000 if watchdog_usec else 0.0
        self._next_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> None:
        if not self._address:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            pass  # systemd gone or socket full: nothing useful to do about it here

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self, now: float | None = None) -> None:
        """Call from the main loop; sends WATCHDOG=1 at most every half WatchdogSec."""
        if not self.watchdog_interval:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_watchdog:
            self._next_watchdog = now + self.watchdog_interval
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
