"""Every timer that bounds a job or a process, and who enforces it (rq's one-module idea).

- soft timeout (binding ``soft_timeout``): the child, by ``SoftTimeoutAlarm`` (SIGALRM);
  ``SoftTimeout`` is raised inside the handler, and the message is retried.
- hard timeout (binding ``timeout``), one job per child: the parent, by ``overdue_jobs`` on
  the jobs the child reports; the child is SIGKILLed and the job's message gets its retry
  delay. Many jobs per child: the child itself (``child.slots``) gives up on the job (retry
  delay at once, no more extensions), takes no more work and exits once its other jobs end;
  the parent kills it only past ``hard_limit`` (timeout + drain_timeout + ``GIVE_UP_GRACE``).
- liveness (``health.liveness_timeout``): the parent, by ``liveness_lost``; a child that sent
  nothing for that long is killed as hung.
- drain (binding ``drain_timeout``): the parent; a child still running that long after its
  SIGTERM is SIGKILLed.
- fast-stop grace (``FAST_STOP_GRACE``): the parent; after SIGQUIT, children left are killed.
- delete flush (``DELETE_FLUSH_SECONDS``): the child's settle step; finished messages wait at
  most that long for their batched delete.
- command budget (``handlers.command``'s ``timeout`` option): the handler itself kills the
  command's process group, always before the hard timeout would kill the worker.
- visibility (binding ``visibility_timeout``): the child's heartbeat extends it at half-time,
  so it never lapses while a job runs.

The clocks are ``time.monotonic``, which a forked child shares with its parent, so a start
time a child reports compares directly with the parent's ``now``.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

from supervisor.errors import SoftTimeout

FAST_STOP_GRACE = 5.0  # after a fast stop, children get this long to release before SIGKILL
DELETE_FLUSH_SECONDS = 0.5  # a finished message waits at most this long for a batched delete


GIVE_UP_GRACE = 5.0  # many jobs per child: the parent's backstop past the child's own give-up


def hard_limit(timeout: float, drain_timeout: float, *, many_jobs: bool) -> float:
    """How long a job may run before the parent kills its child."""
    return timeout + drain_timeout + GIVE_UP_GRACE if many_jobs else timeout


def overdue_jobs(jobs: dict[str, float], timeout: float, now: float) -> list[str]:
    """The running jobs (message id -> start) that have exceeded the hard ``timeout``."""
    return [message_id for message_id, started in jobs.items() if now - started > timeout]


def liveness_lost(last_seen: float, limit: float, now: float) -> bool:
    return now - last_seen > limit


class SoftTimeoutAlarm:
    """Raises ``SoftTimeout`` inside the handler ``seconds`` after it starts (SIGALRM).

    The signal arrives in the main thread, which is where a child with one job at a time runs
    its handler; outside a handler call the alarm is disarmed and a late signal is ignored.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._armed = False

    def install(self) -> None:
        signal.signal(signal.SIGALRM, self._fire)

    def __enter__(self) -> SoftTimeoutAlarm:
        if self.seconds:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._armed = False

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            raise SoftTimeout(f"soft timeout of {self.seconds:g} s exceeded")
