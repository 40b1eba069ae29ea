"""Per-message hooks the child's run and settle steps call: job tracking plugs in here.

dramatiq's middleware idea, cut to what we need: the path calls the same methods whether or
not a job store is configured, and ``NoJobHooks`` (no store) does nothing, so the loop has no
``if tracking`` branches. ``supervisor.jobs.tracking.JobTracker`` is the real implementation;
a hook must never raise (a store that is down is logged there, and work goes on).
"""

from __future__ import annotations

from typing import Any, Protocol

from supervisor.message import Message


class JobHooks(Protocol):
    def is_duplicate(self, message: Message) -> bool:
        """True if this message's job already succeeded: it is deleted without running."""
        ...

    def started(self, message: Message) -> int | None:
        """The run begins; returns the attempts the store counted, when it knows them."""
        ...

    def progress(self, message: Message, percent: int, note: str) -> None: ...

    def succeeded(self, message: Message, result: Any) -> None: ...

    def retrying(self, message: Message, exc: BaseException, delay: int, *, final: bool) -> None:
        """A failed run; ``final`` when SQS's redrive policy takes it at its next receive."""
        ...

    def failed(self, message: Message, exc: BaseException) -> None:
        """A permanent failure, sent to the dead-letter queue."""
        ...

    def dead(self, message: Message, exc: BaseException) -> None:
        """Failed on its last allowed attempt, sent to the dead-letter queue."""
        ...


class NoJobHooks:
    """No job store: nothing to record."""

    def is_duplicate(self, message: Message) -> bool:
        return False

    def started(self, message: Message) -> int | None:
        return None

    def progress(self, message: Message, percent: int, note: str) -> None:
        pass

    def succeeded(self, message: Message, result: Any) -> None:
        pass

    def retrying(self, message: Message, exc: BaseException, delay: int, *, final: bool) -> None:
        pass

    def failed(self, message: Message, exc: BaseException) -> None:
        pass

    def dead(self, message: Message, exc: BaseException) -> None:
        pass
