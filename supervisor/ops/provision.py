"""Queues from the YAML: plan what differs from SQS, then apply it, dead-letter queues first.

The YAML is the source of truth for the attributes it names (``visibility_timeout``,
``dead_letter``, ``queue_attributes``); attributes it does not name are left alone, so a
setting tuned by hand survives until someone writes it down. Queues given by URL belong to
someone else: they are checked and their drift reported, never created or changed. This module
owns the plan (comparing ``queue_spec``'s desired queues with SQS), applying it, and printing
it; what the YAML may ask for is ``queue_spec``'s, and queue depths are ``queue_status``'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from supervisor.config import Config
from supervisor.errors import ConfigError
from supervisor.ops.queue_spec import (
    BOOLEAN_DEFAULT_FALSE,
    JSON_VALUED,
    QueueSpec,
    Redrive,
    desired_queues,
)
from supervisor.sqs import SqsClient, SqsError

Action = Literal["create", "update", "ok", "drift", "missing", "refuse"]


class ProvisionError(Exception):
    """The plan cannot be carried out for a runtime reason (a queue missing, a call failing)."""


# -- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    attribute: str
    current: str | None
    desired: str


@dataclass(frozen=True)
class Change:
    queue: QueueSpec
    action: Action
    differences: tuple[Difference, ...] = ()
    url: str | None = None
    reason: str = ""


@dataclass
class Plan:
    changes: list[Change]
    arns: dict[str, str]  # queue name -> ARN, for the queues that exist already

    def with_action(self, *actions: Action) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    @property
    def has_changes(self) -> bool:
        return bool(self.with_action("create", "update"))


def plan(config: Config, sqs: SqsClient) -> Plan:
    """Compare every queue the YAML names with SQS; reads only, changes nothing."""
    specs = desired_queues(config)
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for spec in specs:
        url = existing_url(sqs, spec.ref)
        if url is not None:
            found[spec.name] = (url, sqs.get_attributes(url, ["All"]))
    arns = {name: attributes["QueueArn"] for name, (_, attributes) in found.items()}
    return Plan([_change(spec, found.get(spec.name), arns) for spec in specs], arns)


def existing_url(sqs: SqsClient, ref: str) -> str | None:
    """The queue's URL, or None if SQS says it does not exist."""
    try:
        url = sqs.queue_url(ref)
        if "://" in ref:  # a URL is taken on trust by queue_url: ask SQS whether it exists
            sqs.get_attributes(url, ["QueueArn"])
    except SqsError as exc:
        if exc.queue_missing:
            return None
        raise
    return url


def _change(
    spec: QueueSpec, existing: tuple[str, dict[str, str]] | None, arns: dict[str, str]
) -> Change:
    if existing is None:
        if spec.managed:
            return Change(spec, "create", _creation(spec, arns))
        return Change(spec, "missing", reason="given by URL, so not created here")
    url, current = existing
    is_fifo = current.get("FifoQueue", "false").lower() == "true"
    if is_fifo != spec.fifo:
        kinds = ("FIFO", "standard") if is_fifo else ("standard", "FIFO")
        return Change(
            spec,
            "refuse",
            url=url,
            reason=f"it is a {kinds[0]} queue and the YAML makes it {kinds[1]}; SQS cannot change"
            " a queue's type: give the binding a new queue (FIFO names end in .fifo)",
        )
    differences = [
        Difference(name, current.get(name), value)
        for name, value in spec.attributes.items()
        if name != "FifoQueue" and not _same(name, current.get(name), value)
    ]
    if spec.redrive is not None:
        desired = _redrive_policy(spec.redrive, _target_arn(spec, current["QueueArn"], arns))
        if not _same("RedrivePolicy", current.get("RedrivePolicy"), desired):
            differences.append(Difference("RedrivePolicy", current.get("RedrivePolicy"), desired))
    if not differences:
        return Change(spec, "ok", url=url)
    if not spec.managed:
        return Change(spec, "drift", tuple(differences), url, "given by URL, so not changed here")
    return Change(spec, "update", tuple(differences), url)


def _creation(spec: QueueSpec, arns: dict[str, str]) -> tuple[Difference, ...]:
    values = dict(spec.attributes)
    if spec.redrive is not None:
        target = arns.get(spec.redrive.target, f"<ARN of {spec.redrive.target}>")
        values["RedrivePolicy"] = _redrive_policy(spec.redrive, target)
    return tuple(Difference(name, None, value) for name, value in values.items())


def _target_arn(spec: QueueSpec, own_arn: str, arns: dict[str, str]) -> str:
    """The DLQ's ARN; one still to be created will share this queue's account and region."""
    assert spec.redrive is not None
    return arns.get(spec.redrive.target) or f"{own_arn.rsplit(':', 1)[0]}:{spec.redrive.target}"


def _redrive_policy(redrive: Redrive, target_arn: str) -> str:
    return json.dumps(
        {"deadLetterTargetArn": target_arn, "maxReceiveCount": redrive.max_receive_count}
    )


def _same(name: str, current: str | None, desired: str) -> bool:
    """Compare as SQS means it: JSON by content, numbers by value, booleans by case."""
    if current is None:
        return name in BOOLEAN_DEFAULT_FALSE and desired == "false"
    if name in JSON_VALUED:
        try:
            return _json_canonical(name, current) == _json_canonical(name, desired)
        except ValueError:
            return False
    if desired.isdigit() and current.strip().isdigit():
        return int(current) == int(desired)
    if desired in {"true", "false"}:
        return current.lower() == desired
    return current == desired


def _json_canonical(name: str, text: str) -> Any:
    value = json.loads(text)
    if name == "RedrivePolicy" and isinstance(value, dict) and "maxReceiveCount" in value:
        # SQS answers maxReceiveCount as a string or a number depending on how it was set.
        value = {**value, "maxReceiveCount": int(value["maxReceiveCount"])}
    return value


# -- apply --------------------------------------------------------------------------------------


def apply(config: Config, sqs: SqsClient, plan: Plan) -> list[str]:
    """Carry out ``plan``; return the names of the queues created or updated, in order.

    Nothing is changed if any part of the plan is refused (ConfigError: SQS cannot do what the
    YAML asks) or a queue given by URL is missing (ProvisionError).
    """
    check_applicable(config, plan)
    arns = dict(plan.arns)
    done: list[str] = []
    for change in plan.with_action("create", "update"):
        try:
            _apply_one(sqs, change, arns)
        except SqsError as exc:
            so_far = f"; already applied: {', '.join(done)}" if done else "; nothing was changed"
            raise ProvisionError(f"queue {change.queue.name!r}: {exc}{so_far}") from None
        done.append(change.queue.name)
    return done


def check_applicable(config: Config, plan: Plan) -> None:
    """Raise ConfigError if SQS cannot do what the file asks, ProvisionError if a URL is gone."""
    refused = plan.with_action("refuse")
    if refused:
        raise ConfigError(
            "\n".join(f"{config.path}: queue {c.queue.name!r}: {c.reason}" for c in refused)
            + "\nnothing was changed"
        )
    missing = plan.with_action("missing")
    if missing:
        names = ", ".join(c.queue.ref for c in missing)
        raise ProvisionError(f"queue(s) given by URL do not exist: {names}; nothing was changed")


def _apply_one(sqs: SqsClient, change: Change, arns: dict[str, str]) -> None:
    spec = change.queue
    values = {d.attribute: d.desired for d in change.differences if d.attribute != "RedrivePolicy"}
    if spec.redrive is not None and (
        change.action == "create" or any(d.attribute == "RedrivePolicy" for d in change.differences)
    ):
        values["RedrivePolicy"] = _redrive_policy(spec.redrive, arns[spec.redrive.target])
    if change.action == "create":
        url = sqs.create_queue(spec.name, values)
        arns[spec.name] = sqs.get_attributes(url, ["QueueArn"])["QueueArn"]
    else:
        assert change.url is not None
        sqs.set_attributes(change.url, values)


def apply_config(config: Config, sqs: SqsClient) -> list[str]:
    """Plan and apply in one call (local mode); returns the queues created or updated."""
    return apply(config, sqs, plan(config, sqs))


# -- rendering ----------------------------------------------------------------------------------

_SYMBOLS: dict[Action, str] = {
    "create": "+",
    "update": "~",
    "ok": "=",
    "drift": "!",
    "missing": "?",
    "refuse": "x",
}


def render(plan: Plan) -> str:
    """The plan as text: one line per queue, one indented line per attribute that changes."""
    lines: list[str] = []
    for change in plan.changes:
        spec = change.queue
        head = f"{_SYMBOLS[change.action]} {change.action} {spec.name} ({'; '.join(spec.roles)})"
        lines.append(f"{head}: {change.reason}" if change.reason else head)
        for difference in change.differences:
            if difference.current is None:
                lines.append(f"    {difference.attribute} = {difference.desired}")
            else:
                lines.append(
                    f"    {difference.attribute}: {difference.current} -> {difference.desired}"
                )
    lines.append(summary(plan))
    return "\n".join(lines)


def summary(plan: Plan) -> str:
    counts = {action: len(plan.with_action(action)) for action in _SYMBOLS}
    if not plan.has_changes and not counts["refuse"] and not counts["missing"]:
        drift = f"; {counts['drift']} queue(s) given by URL differ" if counts["drift"] else ""
        return f"no changes ({counts['ok']} queue(s) as declared{drift})"
    parts = [
        f"{counts['create']} to create",
        f"{counts['update']} to update",
        f"{counts['ok']} unchanged",
    ]
    parts += [f"{counts[a]} {a}" for a in ("drift", "missing", "refuse") if counts[a]]
    return "plan: " + ", ".join(parts)
