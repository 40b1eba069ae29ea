"""Handlers the benchmarks bind to (``concurrency.py`` puts this directory on PYTHONPATH).

The slow-call handlers GET the URL in their binding's ``options.url``: a loopback server that
answers after a fixed delay, so a job is pure waiting, like an API call.
"""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit

import requests

from supervisor import Context, Message

_local = threading.local()


def _session() -> requests.Session:
    """One ``requests.Session`` per thread (made in the child, after the fork)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def slow_get(message: Message, ctx: Context) -> None:
    """A plain handler: one blocking GET with ``requests``."""
    response = _session().get(ctx.options["url"], timeout=(5, 120))
    response.raise_for_status()


async def slow_get_async(message: Message, ctx: Context) -> None:
    """An ``async def`` handler: one HTTP/1.1 GET over ``asyncio.open_connection``."""
    url = urlsplit(ctx.options["url"])
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
    try:
        head = f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n"
        writer.write(f"{head}\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 120)
        await reader.read()  # headers and body, until the server closes
    finally:
        writer.close()
        await writer.wait_closed()
    parts = status.split()
    if len(parts) < 2 or parts[1] != b"200":
        raise RuntimeError(f"slow server answered {status!r}")


def noop(message: Message, ctx: Context) -> None:
    """Does nothing: the engine's own cost per message."""
