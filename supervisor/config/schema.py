"""The YAML contract: load, expand ``${VAR:-default}``, merge defaults, validate, import handlers.

Every user mistake becomes one ``ConfigError`` whose text names the file, the line where the
YAML can tell, the key path (``bindings[0].procesess``) and what was expected.
"""

from __future__ import annotations

import importlib
import os
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from supervisor.errors import ConfigError
from supervisor.sqs import SQS_MAX_VISIBILITY
from supervisor.suggest import did_you_mean

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqsSettings(_Strict):
    region: str | None = None
    endpoint_url: str | None = None


class MetricsSettings(_Strict):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9102, ge=0, le=65535)
    queue_poll_seconds: float = Field(15, gt=0, le=3600)
    cloudwatch: bool = False


class HealthSettings(_Strict):
    crash_loop_seconds: float = Field(300, gt=0)
    liveness_timeout: float = Field(60, gt=0)


class JobsSettings(_Strict):
    store: str | None = None
    retention_days: int = Field(30, ge=1)
    http_token: str | None = Field(None, repr=False)


class RetrySettings(_Strict):
    base_seconds: float = Field(10, ge=0, le=SQS_MAX_VISIBILITY)
    max_seconds: float = Field(900, ge=0, le=SQS_MAX_VISIBILITY)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.max_seconds < self.base_seconds:
            raise ValueError("max_seconds must be >= base_seconds")
        return self


class DeadLetter(_Strict):
    queue: str = Field(min_length=1)
    max_receive_count: int = Field(3, ge=1, le=1000)
    queue_attributes: dict[str, str | int | bool] = Field(default_factory=dict)


class BindingSettings(_Strict):
    """What ``defaults`` may set and each binding may override."""

    processes: int = Field(2, ge=0, le=512)
    batch_size: int = Field(10, ge=1, le=10)
    wait_time_seconds: int = Field(20, ge=0, le=20)
    visibility_timeout: int = Field(300, ge=1, le=SQS_MAX_VISIBILITY)
    timeout: float = Field(900, gt=0, le=SQS_MAX_VISIBILITY)
    soft_timeout: float | None = Field(None, gt=0)
    drain_timeout: float = Field(30, ge=0, le=3600)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    max_jobs_per_child: int = Field(0, ge=0)
    max_memory_mb: int = Field(0, ge=0)
    batch: bool = False


class Binding(BindingSettings):
    name: str = Field(pattern=_NAME_PATTERN)
    queue: str = Field(min_length=1)
    handler: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    dead_letter: DeadLetter | None = None
    queue_attributes: dict[str, str | int | bool] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Binding:
        if self.soft_timeout is not None and self.soft_timeout >= self.timeout:
            raise ValueError("soft_timeout must be shorter than timeout")
        if self.dead_letter and self.is_fifo != self.dead_letter.queue.endswith(".fifo"):
            raise ValueError("a FIFO queue needs a FIFO dead-letter queue (.fifo), and vice versa")
        return self

    @property
    def is_fifo(self) -> bool:
        return self.queue.endswith(".fifo")

    @property
    def queue_name(self) -> str:
        return queue_name(self.queue)


class _Document(_Strict):
    sqs: SqsSettings = Field(default_factory=SqsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    defaults: dict[str, Any] = Field(default_factory=dict)
    bindings: list[dict[str, Any]] = Field(min_length=1)


Handler = Callable[..., Any]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Config:
    """A validated configuration; ``handlers`` maps binding names to imported callables."""

    path: Path
    sqs: SqsSettings
    metrics: MetricsSettings
    health: HealthSettings
    jobs: JobsSettings
    bindings: tuple[Binding, ...]
    handlers: Mapping[str, Handler]

    def binding(self, name: str) -> Binding:
        for binding in self.bindings:
            if binding.name == name:
                return binding
        known = ", ".join(b.name for b in self.bindings)
        raise ConfigError(f"{self.path}: no binding named {name!r} (bindings: {known})")


def queue_name(queue: str) -> str:
    """A queue's name whether the YAML gives a name or a URL (metrics label queues by name)."""
    return queue.rstrip("/").rsplit("/", 1)[-1]


def load_config(path: str | os.PathLike[str], *, import_handlers: bool = True) -> Config:
    """Read and validate a config file; raise ConfigError describing the first problems found."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from None
    locate = _Locator(path, node)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'bindings' list at the top level")
    raw = _expand(raw, (), locate)
    document = _validate(_Document, raw, (), locate)
    defaults = _validate(BindingSettings, document.defaults, ("defaults",), locate)
    bindings = tuple(
        _binding(index, entry, defaults, locate) for index, entry in enumerate(document.bindings)
    )
    _check_unique_names(bindings, locate)
    handlers = (
        {b.name: _handler(i, b, locate) for i, b in enumerate(bindings)} if import_handlers else {}
    )
    return Config(
        path=path,
        sqs=document.sqs,
        metrics=document.metrics,
        health=document.health,
        jobs=document.jobs,
        bindings=bindings,
        handlers=handlers,
    )


def _handler(index: int, binding: Binding, locate: _Locator) -> Handler:
    """Import a binding's handler and let it check its ``options`` (built-in handlers do)."""
    handler = resolve_handler(binding.handler, where=locate(("bindings", index, "handler")))
    validate = getattr(handler, "validate_options", None)
    if callable(validate):
        try:
            validate(binding.options)
        except ValueError as exc:
            raise ConfigError(f"{locate(('bindings', index, 'options'))}: {exc}") from None
    return handler


def resolve_handler(spec: str, *, where: str = "handler") -> Handler:
    """Import ``module:attribute``; failures name the binding key and the real cause."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"{where}: cannot import module {module_name!r}: no such module"
            ) from None
        raise ConfigError(f"{where}: importing {module_name!r} failed: {_brief(exc)}") from None
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(f"{where}: importing {module_name!r} failed: {_brief(exc)}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"{where}: module {module_name!r} has no attribute {attribute!r}"
                + did_you_mean(part, [n for n in dir(target) if not n.startswith("_")])
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    return target


def _binding(
    index: int,
    entry: Any,
    defaults: BindingSettings,
    locate: _Locator,
) -> Binding:
    """Merge ``defaults`` under one binding entry (nested mappings key by key) and validate."""
    where = ("bindings", index)
    if not isinstance(entry, dict):
        raise ConfigError(f"{locate(where)}: expected a mapping (name, queue, handler, ...)")
    merged = defaults.model_dump(exclude_unset=True)
    for key, value in entry.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return _validate(Binding, merged, where, locate)


def _check_unique_names(bindings: tuple[Binding, ...], locate: _Locator) -> None:
    seen: dict[str, int] = {}
    for index, binding in enumerate(bindings):
        if binding.name in seen:
            raise ConfigError(
                f"{locate(('bindings', index, 'name'))}: duplicate binding name {binding.name!r}"
                f" (also bindings[{seen[binding.name]}].name)"
            )
        seen[binding.name] = index


def _validate(model: type[M], data: Any, where: tuple[Any, ...], locate: _Locator) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(model, error, where, locate) for error in exc.errors()]
        raise ConfigError("\n".join(problems)) from None


def _describe(model: type[BaseModel], error: Any, where: tuple[Any, ...], locate: _Locator) -> str:
    loc = where + tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        owner = _model_at(model, tuple(error["loc"])[:-1])
        allowed = sorted(owner.model_fields) if owner else []
        hint = did_you_mean(str(loc[-1]), allowed) or f" (expected one of: {', '.join(allowed)})"
        return f"{locate(loc)}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{locate(loc)}: required key is missing"
    given = error.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{locate(loc)}: {message}{shown}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _expand(value: Any, where: tuple[Any, ...], locate: _Locator) -> Any:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in every string value."""
    if isinstance(value, dict):
        return {k: _expand(v, (*where, k), locate) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*where, i), locate) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3)
        current = os.environ.get(name)
        if operator == ":-" and not current:
            return default
        if operator == "-" and current is None:
            return default
        if current is None:
            raise ConfigError(
                f"{locate(where)}: environment variable {name} is not set"
                f" (write ${{{name}:-default}} to give a default)"
            )
        return current

    expanded = _ENV_PATTERN.sub(substitute, value)
    # A whole-value reference such as ${ENDPOINT:-} that expands to nothing means "unset".
    return None if expanded == "" and _ENV_PATTERN.fullmatch(value) else expanded


class _Locator:
    """Turns a key path into ``file:line: a.b[0].c`` using the YAML node tree."""

    def __init__(self, path: Path, root: yaml.Node | None) -> None:
        self.path = path
        self.root = root

    def __call__(self, loc: tuple[Any, ...]) -> str:
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        line = self._line(loc)
        place = f"{self.path}:{line}" if line else str(self.path)
        return f"{place}: {dotted}" if dotted else place

    def _line(self, loc: tuple[Any, ...]) -> int | None:
        node, line = self.root, None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        child, line = value, key.start_mark.line + 1
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem


def _brief(exc: BaseException) -> str:
    """One line for an exception raised in user code: type, message and where it happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        place = f" ({exc.filename}:{exc.lineno})"
    return f"{type(exc).__name__}: {exc}{place}"
