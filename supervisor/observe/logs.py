"""Logging for the parent and every child, to the parent's stderr.

Children inherit stderr. Each record is written with one ``os.write`` so that lines from many
processes never interleave (writes up to PIPE_BUF are atomic on a pipe, and records are short).
We don't use multiprocessing-logging: it runs a receiver thread in the parent, which would make
the parent multi-threaded when it forks, and its queue lock can be held by a child that is
SIGKILLed mid-write, which blocks every other child's logging.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar, Token
from typing import Any

_binding = "-"
# Per thread and per asyncio task: a child running many jobs at once tags each one's lines.
_message_id: ContextVar[str | None] = ContextVar("message_id", default=None)


def set_log_context(**fields: Any) -> None:
    """Tag records with ``binding`` (this process) or ``message_id`` (this thread or task)."""
    global _binding
    if "binding" in fields:
        _binding = fields["binding"]
    if "message_id" in fields:
        _message_id.set(fields["message_id"])


def tag_message(message_id: str) -> Token[str | None]:
    """Tag this thread's (or task's) records with ``message_id`` until ``untag_message``: the
    pair a child calls around every job (``set_log_context`` does more work per call)."""
    return _message_id.set(message_id)


def untag_message(token: Token[str | None]) -> None:
    _message_id.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.binding = _binding
        record.message_id = _message_id.get()
        return True


class _AtomicStderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            os.write(sys.stderr.fileno(), data)
        except Exception:
            self.handleError(record)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)-7s [%(binding)s %(process)d] %(name)s: %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        message_id = getattr(record, "message_id", None)
        if message_id:
            first, sep, rest = text.partition("\n")
            text = f"{first} (message {message_id}){sep}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "binding": getattr(record, "binding", "-"),
            "message": record.getMessage(),
        }
        if getattr(record, "message_id", None):
            entry["message_id"] = record.message_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = _AtomicStderrHandler()
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # boto's own chatter (credential lookups, retries) is noise at INFO.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
