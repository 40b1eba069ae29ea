"""Example handlers for the demo config: stand-ins for real slow work."""

from __future__ import annotations

import random
import time
from typing import Any

from supervisor import Context, Message


def generate_article(message: Message, ctx: Context) -> dict[str, Any]:
    """An AI article-generation stand-in: a few seconds of work, reported as progress."""
    data = message.payload()
    topic = data.get("topic", "untitled") if isinstance(data, dict) else "untitled"
    seconds = float(data.get("seconds", 3)) if isinstance(data, dict) else 3.0
    for percent, step in ((10, "outlining"), (40, "drafting"), (80, "editing")):
        ctx.progress(percent, step)
        time.sleep(seconds / 3)
    ctx.progress(100, "done")
    return {"topic": topic, "words": 1500}


def make_thumbnail(message: Message, ctx: Context) -> dict[str, Any]:
    """An image stand-in: half a second of work."""
    data = message.payload()
    time.sleep(0.5)
    ctx.logger.info("thumbnail made for %s", data.get("topic") if isinstance(data, dict) else data)
    return {"width": 320, "height": 180}


def flaky(message: Message, ctx: Context) -> None:
    """Fails one time in three, so the demo shows retries and, eventually, the DLQ."""
    if random.random() < 1 / 3:
        raise RuntimeError("upstream service unavailable (simulated)")
    ctx.logger.info("flaky job succeeded on attempt %d", ctx.attempt)


def always_fails(message: Message, ctx: Context) -> None:
    """Never succeeds: shows retries with backoff and the dead-letter queue."""
    raise RuntimeError("this handler always fails")
