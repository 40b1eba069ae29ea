"""What /healthz and /readyz answer, decided from the pool's state.

Liveness: the parent's loop runs (it answers at all) and no binding has been stuck in crash
backoff longer than ``health.crash_loop_seconds``: restarting the pod may help then.
Readiness means "this pod is consuming": not draining, and every binding has a live child and
a receive that succeeded within ``2 x wait_time_seconds + 10`` seconds, the latest one included.
"""

from __future__ import annotations

from supervisor.observe.endpoints import Verdict
from supervisor.parent.pool import Pool
from supervisor.sqs import MISSING_QUEUE_CODES


def liveness(pool: Pool, now: float) -> Verdict:
    limit = pool.config.health.crash_loop_seconds
    problems = {}
    for (binding, slot), state in pool.slots.items():
        since = state.backing_off_since
        if since is not None and now - since > limit:
            problems[binding] = f"slot {slot} crash-looping for {now - since:.0f} s"
    return Verdict(not problems, problems)


def readiness(pool: Pool, state: str, now: float) -> Verdict:
    if state != "running":
        return Verdict(False, {"supervisor": f"{state}, not consuming"})
    problems = {}
    for binding in pool.config.bindings:
        if pool.target(binding.name) == 0:
            continue
        live = [c for c in pool.of(binding.name) if c.ready and not c.retiring]
        window = 2 * binding.wait_time_seconds + 10
        receives = pool.receives.get(binding.name)
        last = receives.last_ok_at if receives else None
        if receives and receives.failing:  # first: a child waiting for SQS is not ready yet
            missing = receives.error in MISSING_QUEUE_CODES
            problems[binding.name] = (
                f"queue {binding.queue!r} does not exist ({receives.error})"
                if missing
                else f"the latest receive failed ({receives.error})"
            )
        elif not live:
            problems[binding.name] = "no live child"
        elif last is None or now - last > window:
            problems[binding.name] = f"no successful receive in the last {window:.0f} s"
    return Verdict(not problems, problems)
