"""What /healthz and /readyz answer, decided from the arbiter's state.

Liveness: the parent's loop runs (it answers at all) and no binding has been stuck in crash
backoff longer than ``health.crash_loop_seconds``: restarting the pod may help then.
Readiness means "this pod is consuming": not draining, and every binding has a live child and
a receive that succeeded within ``2 x wait_time_seconds + 10`` seconds, the latest one included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.parent.arbiter import Arbiter


@dataclass
class Verdict:
    ok: bool
    problems: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unavailable", "problems": self.problems}


def liveness(arbiter: Arbiter, now: float) -> Verdict:
    limit = arbiter.config.health.crash_loop_seconds
    problems = {}
    for (binding, slot), state in arbiter.slots.items():
        since = state.backing_off_since
        if since is not None and now - since > limit:
            problems[binding] = f"slot {slot} crash-looping for {now - since:.0f} s"
    return Verdict(not problems, problems)


def readiness(arbiter: Arbiter, now: float) -> Verdict:
    if arbiter.state != "running":
        return Verdict(False, {"supervisor": f"{arbiter.state}, not consuming"})
    problems = {}
    for binding in arbiter.config.bindings:
        if arbiter.target(binding.name) == 0:
            continue
        live = [
            c for c in arbiter.children.values()
            if c.binding == binding.name and c.ready and not c.retiring
        ]  # fmt: skip
        window = 2 * binding.wait_time_seconds + 10
        last = arbiter.last_receive.get(binding.name)
        if not live:
            problems[binding.name] = "no live child"
        elif arbiter.receive_failing.get(binding.name):
            problems[binding.name] = "the latest receive failed"
        elif last is None or now - last > window:
            problems[binding.name] = f"no successful receive in the last {window:.0f} s"
    return Verdict(not problems, problems)
