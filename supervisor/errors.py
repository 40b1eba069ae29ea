"""Exceptions and exit codes shared by every layer.

Exceptions that mean "stop now" derive from BaseException so that a handler's
``except Exception`` cannot swallow them.
"""

from __future__ import annotations

# Named exit codes (the CLI contract: 0 ok, 1 runtime failure, 2 bad usage or config).
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
# A child that cannot even start (no queue, no credentials) exits with this, so the parent
# backs off instead of respawning it in a tight loop.
EXIT_WORKER_BOOT = 3


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help: the message goes to the DLQ at once."""


class MessageDecodeError(PermanentError):
    """The body is not what the handler expects (for example not JSON); retrying won't fix it."""


class RetryLater(Exception):
    """Raised by a handler to retry after an explicit delay (for example an HTTP Retry-After)."""

    def __init__(self, message: str, *, delay_seconds: float) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class SoftTimeout(TimeoutError):
    """Raised inside a handler at its ``soft_timeout`` so it can clean up; then it is retried."""


class ConfigError(Exception):
    """A user mistake in the YAML or on the command line; printed without a traceback."""


class StopWorker(BaseException):
    """Delivered into a child by a signal to abandon what it is doing (fast stop)."""
