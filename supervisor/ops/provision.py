"""Queues from the YAML: plan what differs from SQS, then apply it, dead-letter queues first.

The YAML is the source of truth for the attributes it names (``visibility_timeout``,
``dead_letter``, ``queue_attributes``); attributes it does not name are left alone, so a
setting tuned by hand survives until someone writes it down. Queues given by URL belong to
someone else: they are checked and their drift reported, never created or changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.config import Config, queue_name
from supervisor.errors import ConfigError
from supervisor.sqs import DEPTH_ATTRIBUTES, SqsClient, SqsError
from supervisor.suggest import did_you_mean

Action = Literal["create", "update", "ok", "drift", "missing", "refuse"]


class ProvisionError(Exception):
    """The plan cannot be carried out for a runtime reason (a queue missing, a call failing)."""


# -- what SQS accepts ---------------------------------------------------------------------------


def _integer(low: int, high: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, bool) or not str(value).strip().isdigit():
            raise ValueError(f"expected a whole number from {low} to {high}")
        if not low <= int(value) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return str(int(value))

    return check


def _boolean(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower()
    raise ValueError("expected true or false")


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of: {', '.join(choices)}")
        return str(value)

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _json_text(value: Any) -> str:
    try:
        json.loads(_text(value))
    except ValueError:
        raise ValueError("expected a JSON document (as a string)") from None
    return value


# Every attribute CreateQueue / SetQueueAttributes accepts, with its value check. SQS raised
# MaximumMessageSize to 1 MiB in 2025; older endpoints stop at 262144 and say so themselves.
SETTABLE: dict[str, Callable[[Any], str]] = {
    "DelaySeconds": _integer(0, 900),
    "MaximumMessageSize": _integer(1024, 1_048_576),
    "MessageRetentionPeriod": _integer(60, 1_209_600),
    "ReceiveMessageWaitTimeSeconds": _integer(0, 20),
    "VisibilityTimeout": _integer(0, 43_200),
    "Policy": _json_text,
    "RedrivePolicy": _json_text,
    "RedriveAllowPolicy": _json_text,
    "KmsMasterKeyId": _text,
    "KmsDataKeyReusePeriodSeconds": _integer(60, 86_400),
    "SqsManagedSseEnabled": _boolean,
    "FifoQueue": _boolean,
    "ContentBasedDeduplication": _boolean,
    "DeduplicationScope": _choice("messageGroup", "queue"),
    "FifoThroughputLimit": _choice("perQueue", "perMessageGroupId"),
}
FIFO_ONLY = {"ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"}
JSON_VALUED = {"Policy", "RedrivePolicy", "RedriveAllowPolicy"}
BOOLEAN_DEFAULT_FALSE = {"FifoQueue", "ContentBasedDeduplication"}


# -- desired state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redrive:
    target: str  # the dead-letter queue's name
    max_receive_count: int


@dataclass
class QueueSpec:
    """One queue as the YAML wants it (several bindings may name the same queue)."""

    name: str
    ref: str  # as written in the YAML: a name, or a URL
    roles: list[str]
    attributes: dict[str, str] = field(default_factory=dict)
    redrive: Redrive | None = None

    @property
    def managed(self) -> bool:
        return "://" not in self.ref

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


def desired_queues(config: Config) -> list[QueueSpec]:
    """Every queue the config names, merged by name, each after its dead-letter queue.

    Raises ConfigError for unknown attribute names, bad values, a name that contradicts
    FifoQueue, or two bindings asking different things of one queue.
    """
    specs: dict[str, QueueSpec] = {}
    for index, binding in enumerate(config.bindings):
        where = f"{config.path}: bindings[{index}]"
        if binding.dead_letter:
            dead_letter = binding.dead_letter
            _merge(
                specs,
                dead_letter.queue,
                f"dead-letter queue of {binding.name}",
                _attributes(
                    dead_letter.queue_attributes, dead_letter.queue, f"{where}.dead_letter"
                ),
                None,
                f"{where}.dead_letter.queue",
            )
        attributes = _attributes(
            binding.queue_attributes, binding.queue, where, source_of=binding.name
        )
        attributes["VisibilityTimeout"] = str(binding.visibility_timeout)
        redrive = (
            Redrive(queue_name(binding.dead_letter.queue), binding.dead_letter.max_receive_count)
            if binding.dead_letter
            else None
        )
        _merge(specs, binding.queue, f"queue of {binding.name}", attributes, redrive, where)
    return _dependency_order(specs, config)


def _attributes(
    given: dict[str, str | int | bool], queue: str, where: str, *, source_of: str | None = None
) -> dict[str, str]:
    """Validate a ``queue_attributes`` mapping and turn its values into SQS's strings."""
    fifo = queue_name(queue).endswith(".fifo")
    result = {"FifoQueue": "true"} if fifo else {}
    for name, value in given.items():
        key = f"{where}.queue_attributes.{name}"
        if name not in SETTABLE:
            raise ConfigError(f"{key}: not an SQS queue attribute{did_you_mean(name, SETTABLE)}")
        if source_of and name == "VisibilityTimeout":
            raise ConfigError(f"{key}: set visibility_timeout on the binding instead")
        if name == "RedrivePolicy":
            raise ConfigError(f"{key}: set dead_letter on the binding instead")
        try:
            result[name] = SETTABLE[name](value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc} (got {value!r})") from None
        if name in FIFO_ONLY and not fifo:
            raise ConfigError(f"{key}: only FIFO queues (names ending in .fifo) take {name}")
    if result.get("FifoQueue", "false") != ("true" if fifo else "false"):
        raise ConfigError(
            f"{where}.queue_attributes.FifoQueue: a FIFO queue's name must end in .fifo and"
            f" only FIFO queues' names may ({queue_name(queue)!r}); SQS cannot change an"
            " existing queue's type, so a FIFO queue needs a new name"
        )
    if result.get("KmsMasterKeyId") and result.get("SqsManagedSseEnabled") == "true":
        raise ConfigError(
            f"{where}.queue_attributes: KmsMasterKeyId and SqsManagedSseEnabled: true exclude"
            " each other (choose KMS or SQS-managed encryption)"
        )
    return result


def _merge(
    specs: dict[str, QueueSpec],
    ref: str,
    role: str,
    attributes: dict[str, str],
    redrive: Redrive | None,
    where: str,
) -> None:
    name = queue_name(ref)
    spec = specs.setdefault(name, QueueSpec(name=name, ref=ref, roles=[]))
    if "://" in ref:
        spec.ref = ref  # named by URL anywhere means someone else's queue
    for key, value in attributes.items():
        if spec.attributes.get(key, value) != value:
            raise ConfigError(
                f"{where}: queue {name!r} gets {key}={value} here but"
                f" {key}={spec.attributes[key]} as the {spec.roles[0]}"
            )
        spec.attributes[key] = value
    if redrive is not None:
        if spec.redrive not in (None, redrive):
            raise ConfigError(
                f"{where}: queue {name!r} is given two different dead_letter settings"
            )
        spec.redrive = redrive
    spec.roles.append(role)


def _dependency_order(specs: dict[str, QueueSpec], config: Config) -> list[QueueSpec]:
    """Each queue after its redrive target, so a target's ARN exists when it is needed."""
    ordered: list[QueueSpec] = []
    placed: set[str] = set()
    pending = list(specs.values())
    while pending:
        ready = [s for s in pending if s.redrive is None or s.redrive.target in placed]
        if not ready:
            names = ", ".join(s.name for s in pending)
            raise ConfigError(f"{config.path}: dead-letter queues form a cycle ({names})")
        for spec in ready:
            ordered.append(spec)
            placed.add(spec.name)
        pending = [s for s in pending if s.name not in placed]
    return ordered


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


# -- status -------------------------------------------------------------------------------------


def depths(sqs: SqsClient, ref: str) -> dict[str, int] | None:
    """Visible, in-flight and delayed counts of one queue, or None if it does not exist."""
    url = existing_url(sqs, ref)
    if url is None:
        return None
    attributes = sqs.get_attributes(url, list(DEPTH_ATTRIBUTES.values()))
    return {state: int(attributes.get(name, 0)) for state, name in DEPTH_ATTRIBUTES.items()}


def status(config: Config, sqs: SqsClient) -> list[dict[str, Any]]:
    """One row per binding: its queue's depths and its dead-letter queue's.

    No age of the oldest message: SQS's API has no such attribute, and deriving it would mean
    receiving (and so disturbing) messages; CloudWatch's ApproximateAgeOfOldestMessage has it.
    """
    rows: list[dict[str, Any]] = []
    for binding in config.bindings:
        row: dict[str, Any] = {
            "binding": binding.name,
            "queue": queue_name(binding.queue),
            "messages": depths(sqs, binding.queue),
            "dead_letter_queue": None,
            "dead_letter_messages": None,
        }
        if binding.dead_letter:
            row["dead_letter_queue"] = queue_name(binding.dead_letter.queue)
            row["dead_letter_messages"] = depths(sqs, binding.dead_letter.queue)
        rows.append(row)
    return rows


def missing_queues(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The queues a status report found missing."""
    missing = []
    for row in rows:
        if row["messages"] is None:
            missing.append(row["queue"])
        if row["dead_letter_queue"] and row["dead_letter_messages"] is None:
            missing.append(row["dead_letter_queue"])
    return missing
