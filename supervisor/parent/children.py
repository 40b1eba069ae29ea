"""What the parent knows of each child, slot and binding: plain state the steps act on."""

from __future__ import annotations

from dataclasses import dataclass, field

from supervisor.finished import FinishedLog
from supervisor.ipc import ReportReader
from supervisor.lease import HeldLease
from supervisor.observe.metrics import ChildMetrics


@dataclass
class Child:
    """What the parent knows about one live child."""

    pid: int
    binding: str
    slot: int
    reader: ReportReader
    started_at: float
    last_seen: float
    ready: bool = False
    leases: dict[str, HeldLease] = field(default_factory=dict)
    labels_job_types: bool = False  # its binding routes by job type: leases carry the label
    metrics: ChildMetrics | None = None  # what its reports move, resolved at the first one
    # Finished (their run time), their delete batched: deleted by the parent if the child dies.
    # Most are in ``finished``, shared with the child and read once it is gone; ``deleting``
    # has those reported over the pipe (the log was full).
    finished: FinishedLog | None = None
    deleting: dict[str, float | None] = field(default_factory=dict)
    jobs: dict[str, float] = field(default_factory=dict)  # running: message id -> start
    retiring: bool = False  # no longer counts for its slot (drain, reload, recycle)
    exit_reason: str | None = None  # why we stopped it, or why it said it stops
    kill_at: float | None = None
    timed_out: set[str] = field(default_factory=set)  # message ids that exceeded the timeout

    def finished_jobs(self) -> dict[str, float | None]:
        """Every finished message whose delete had not gone out (id -> run time): only once
        the child is gone, since it may still be writing ``finished``."""
        logged = self.finished.read() if self.finished is not None else {}
        return logged | self.deleting


@dataclass
class Slot:
    failures: int = 0
    next_start_at: float = 0.0
    backing_off_since: float | None = None


@dataclass
class ReceiveState:
    """Per binding, for readiness: when a receive last succeeded, and whether the latest did."""

    last_ok_at: float | None = None
    failing: bool = False
    error: str = ""  # the latest failure's code, for /readyz
