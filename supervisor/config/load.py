"""Reading a config file: parse YAML, expand ``${VAR:-default}``, merge defaults, validate.

The steps run in that order so every later step sees plain values, and each one raises a single
``ConfigError`` worded by ``locate``; this is the only module that knows the order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from supervisor.config.handlers import import_handler
from supervisor.config.locate import Locator, describe, yaml_problem
from supervisor.config.schema import Binding, BindingSettings, Config, _Document
from supervisor.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")

M = TypeVar("M", bound=BaseModel)


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
        raise ConfigError(f"{path}: invalid YAML: {yaml_problem(exc)}") from None
    locate = Locator(path, node)
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
        {b.name: import_handler(i, b, locate) for i, b in enumerate(bindings)}
        if import_handlers
        else {}
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


def _binding(
    index: int,
    entry: Any,
    defaults: BindingSettings,
    locate: Locator,
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


def _check_unique_names(bindings: tuple[Binding, ...], locate: Locator) -> None:
    seen: dict[str, int] = {}
    for index, binding in enumerate(bindings):
        if binding.name in seen:
            raise ConfigError(
                f"{locate(('bindings', index, 'name'))}: duplicate binding name {binding.name!r}"
                f" (also bindings[{seen[binding.name]}].name)"
            )
        seen[binding.name] = index


def _validate(model: type[M], data: Any, where: tuple[Any, ...], locate: Locator) -> M:
    """Validate ``data`` found at ``where``; all of pydantic's complaints become one ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [describe(model, error, where, locate) for error in exc.errors()]
        raise ConfigError("\n".join(problems)) from None


def _expand(value: Any, where: tuple[Any, ...], locate: Locator) -> Any:
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
