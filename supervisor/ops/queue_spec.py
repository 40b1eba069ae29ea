"""The queues the YAML wants: each ``queue_attributes`` value checked, bindings merged by name.

This module owns what SQS accepts (the SETTABLE table and its value checks) and the desired
state built from a config: one QueueSpec per queue name, however many bindings name it, each
ordered after its dead-letter queue. It reads no SQS; every mistake it finds is a ConfigError
naming the file and key, so ``check`` reports it before anything is planned or applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.config import Config, queue_name
from supervisor.errors import ConfigError
from supervisor.suggest import did_you_mean

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
# How SQS answers them back, for comparing: JSON by content; an absent boolean means false.
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
