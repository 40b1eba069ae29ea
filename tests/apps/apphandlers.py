"""Handlers the end-to-end tests bind to: behaviour chosen by the test's message body.

Every call appends ``event<TAB>message_id<TAB>pid<TAB>receive_count<TAB>time`` to the file
named by $LEDGER, one write per line, so the test can count what really ran.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from supervisor import Context, Message, PermanentError

_hoard: list[bytearray] = []


def _ledger(event: str, message: Message) -> None:
    path = os.environ.get("LEDGER")
    if not path:
        return
    fields = (event, message.message_id, os.getpid(), message.receive_count, f"{time.time():.3f}")
    line = "\t".join(map(str, fields)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _fail_if_asked(spec: dict[str, Any], message: Message) -> None:
    """The body's ``fail`` (retried) or ``permanent`` (dead-lettered), noted in the ledger."""
    if spec.get("fail"):
        _ledger("fail", message)
        raise RuntimeError("asked to fail")
    if spec.get("permanent"):
        _ledger("permanent", message)
        raise PermanentError("asked to fail permanently")


def behave(message: Message, ctx: Context) -> Any:
    """Do what the body says: sleep, fail, fail permanently, exit the process, hoard memory."""
    spec = message.payload() if message.body.startswith("{") else {}
    _ledger("start", message)
    if spec.get("exit_first") and message.receive_count == 1:
        os._exit(spec["exit_first"])
    if "exit" in spec:
        os._exit(spec["exit"])
    if spec.get("sleep"):
        time.sleep(spec["sleep"])
    if spec.get("hoard_mb"):
        block = bytearray(spec["hoard_mb"] * 1024 * 1024)
        for offset in range(0, len(block), 4096):
            block[offset] = 1  # touch every page so it is resident
        _hoard.append(block)
    _fail_if_asked(spec, message)
    _ledger("end", message)
    return {"ok": True}


def noop(message: Message, ctx: Context) -> None:
    """Does nothing: for throughput."""


def gated_article(message: Message, ctx: Context) -> Any:
    """Reports 40 % and waits for the test to open the gate file, so the test sees it running."""
    _ledger("start", message)
    ctx.progress(40, "drafting")
    gate = os.environ["GATE"]
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    _ledger("end", message)
    return {"words": 1500}


def batch_fail_some(messages: list[Message], ctx: Context) -> list[str]:
    """Batch handler: fails exactly the messages whose payload says ``fail``."""
    for message in messages:
        _ledger("start", message)
    return [m.message_id for m in messages if m.payload().get("fail")]


def soft_timeout_aware(message: Message, ctx: Context) -> None:
    """Sleeps as told; on the soft timeout it notes it, then obeys or ignores it."""
    spec = message.payload()
    _ledger("start", message)
    try:
        time.sleep(spec["sleep"])
    except TimeoutError:
        _ledger("soft", message)
        if spec.get("ignore_soft_timeout"):
            time.sleep(60)
        raise
    _ledger("end", message)


def record_latency(message: Message, ctx: Context) -> None:
    """Appends ``message_id latency`` (handler start minus SentTimestamp) to $LATENCY_LOG."""
    started = time.time()
    sent = message.sent_at.timestamp() if message.sent_at else started
    fd = os.open(os.environ["LATENCY_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{message.message_id} {started - sent:.4f}\n".encode())
    finally:
        os.close(fd)


def chaos(message: Message, ctx: Context) -> None:
    """The chaos test's handler: runs as long as the payload says, noting start and end."""
    _ledger("start", message)
    time.sleep(message.payload()["seconds"])
    _ledger("end", message)


def stepping(message: Message, ctx: Context) -> None:
    """Sleeps as told in 0.1 s steps, so a thread's soft timeout (an asynchronous exception,
    raised between bytecodes) reaches it; notes a soft timeout, then lets it propagate."""
    spec = message.payload()
    _ledger("start", message)
    seconds = spec.get("sleep", 0)
    if message.receive_count == 1:
        seconds += spec.get("sleep_first", 0)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
    except TimeoutError:
        _ledger("soft", message)
        raise
    _fail_if_asked(spec, message)
    _ledger("end", message)


async def behave_async(message: Message, ctx: Context) -> Any:
    """``behave`` as an ``async def``: sleeps on the loop, or blocks it when told to."""
    spec = message.payload()
    _ledger("start", message)
    try:
        if spec.get("sleep_first") and message.receive_count == 1:
            await asyncio.sleep(spec["sleep_first"])
        if spec.get("sleep"):
            await asyncio.sleep(spec["sleep"])
        if spec.get("block"):
            time.sleep(spec["block"])  # what an async handler must not do
    except asyncio.CancelledError:
        _ledger("soft", message)
        raise
    _fail_if_asked(spec, message)
    ctx.progress(100, "done")
    _ledger("end", message)
    return {"ok": True}


def make_image(message: Message, ctx: Context) -> Any:
    """A job type's handler: says which handler ran, for the routing tests."""
    _ledger("start", message)
    _ledger("end", message)
    return {"made": "image", "n": message.payload().get("n")}


def make_video(message: Message, ctx: Context) -> Any:
    _ledger("start", message)
    _ledger("end", message)
    return {"made": "video", "n": message.payload().get("n")}


def make_anything(message: Message, ctx: Context) -> Any:
    """The ``"*"`` entry: every type the mapping does not name."""
    _ledger("start", message)
    _ledger("end", message)
    return {"made": "anything", "type": message.job_type}


def fork_sleeper(message: Message, ctx: Context) -> None:
    """Starts ``sleep 300`` in the child's own session and group (as most handlers would) and
    returns without waiting; appends ``sleeper_pid worker_pid`` to the file $SLEEPERS names."""
    import subprocess

    _ledger("start", message)
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=False)
    fd = os.open(os.environ["SLEEPERS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{sleeper.pid} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    _ledger("end", message)


def fork_burst(message: Message, ctx: Context) -> None:
    """Leaves orphans behind: forks a process that forks ``count`` short-lived grandchildren and
    exits at once, so they are reparented (to PID 1 in a container) and must be reaped there."""
    _ledger("start", message)
    count = message.payload().get("count", 5) if message.body.startswith("{") else 5
    middle = os.fork()
    if middle == 0:
        for _ in range(count):
            if os.fork() == 0:
                time.sleep(0.2)
                os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
    _ledger("end", message)
