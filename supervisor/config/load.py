"""Reading a config file: parse YAML, expand ``${VAR:-default}``, merge defaults, validate.

The steps run in that order so every later step sees plain values. Each step records its
problems, worded by ``locate``, and carries on where the next step can still find more; the
lot is raised as one ``ConfigError``, so one run of ``check`` shows every mistake. This is the
only module that knows the order.
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
from supervisor.config.schema import Binding, BindingSettings, Config, Handler, _Document
from supervisor.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")

M = TypeVar("M", bound=BaseModel)


def load_config(path: str | os.PathLike[str], *, import_handlers: bool = True) -> Config:
    """Read and validate a config file; raise one ConfigError listing every problem found.

    Its text is one ``file:line: key.path: problem`` line per mistake, in this order: unset
    variables (then stop: later steps would see holes), the top level, ``defaults``, each
    binding, duplicate names, then the handlers of the bindings whose settings were valid.
    """
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
    problems: list[str] = []
    raw = _expand(raw, (), locate, problems)
    _raise_if(problems)  # an unset variable leaves a hole every later step would trip over
    document, raw_defaults, entries = _document(raw, locate, problems)
    defaults = _defaults(raw_defaults, locate, problems)
    bindings: dict[int, Binding] = {}
    for index, entry in entries:
        binding = _binding(index, entry, defaults, locate, problems)
        if binding is not None:
            bindings[index] = binding
    _check_unique_names(bindings, locate, problems)
    handlers: dict[str, Handler] = {}
    if import_handlers:
        for index, binding in bindings.items():
            try:
                handlers[binding.name] = import_handler(index, binding, locate)
            except ConfigError as exc:
                problems.append(str(exc))
    if problems or document is None:  # no document means its problems are listed
        raise ConfigError("\n".join(problems))
    return Config(
        path=path,
        sqs=document.sqs,
        metrics=document.metrics,
        health=document.health,
        jobs=document.jobs,
        bindings=tuple(bindings.values()),
        handlers=handlers,
    )


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ConfigError("\n".join(problems))


def _document(
    raw: dict[str, Any], locate: Locator, problems: list[str]
) -> tuple[_Document | None, dict[str, Any], list[tuple[int, Any]]]:
    """Validate the top level; return it with ``defaults`` and the numbered binding entries.

    A mistake elsewhere at the top level (``metrics.port: x``) must not hide the bindings' own
    mistakes, so what the top level's errors leave intact is still handed on to be checked.
    """
    try:
        document = _Document.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        problems.extend(describe(_Document, error, (), locate) for error in errors)
        broken = {tuple(error["loc"][:2]) for error in errors}
        defaults = (
            {} if any(loc[:1] == ("defaults",) for loc in broken) else raw.get("defaults", {})
        )
        if ("bindings",) in broken:  # missing, not a list, or empty: no entries to check
            return None, defaults, []
        entries = [
            (index, entry)
            for index, entry in enumerate(raw["bindings"])
            if ("bindings", index) not in broken
        ]
        return None, defaults, entries
    return document, document.defaults, list(enumerate(document.bindings))


def _defaults(raw: dict[str, Any], locate: Locator, problems: list[str]) -> BindingSettings:
    """Validate ``defaults``; a key with a mistake is reported, then left out of every binding.

    Merging the bad value instead would repeat its error once per binding, at a line that is
    not where the mistake is; the bindings are still checked against the valid rest.
    """
    try:
        return BindingSettings.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        problems.extend(describe(BindingSettings, e, ("defaults",), locate) for e in errors)
        broken = {error["loc"][0] for error in errors if error["loc"]}
        try:
            return BindingSettings.model_validate(
                {key: value for key, value in raw.items() if key not in broken}
            )
        except ValidationError:  # a problem no single key owns: merge nothing
            return BindingSettings()


def _binding(
    index: int,
    entry: Any,
    defaults: BindingSettings,
    locate: Locator,
    problems: list[str],
) -> Binding | None:
    """Merge ``defaults`` under one binding entry (nested mappings key by key) and validate."""
    where = ("bindings", index)
    if not isinstance(entry, dict):
        problems.append(f"{locate(where)}: expected a mapping (name, queue, handler, ...)")
        return None
    merged = defaults.model_dump(exclude_unset=True)
    for key, value in entry.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return _validate(Binding, merged, where, locate, problems)


def _check_unique_names(bindings: dict[int, Binding], locate: Locator, problems: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, binding in bindings.items():
        if binding.name in seen:
            problems.append(
                f"{locate(('bindings', index, 'name'))}: duplicate binding name {binding.name!r}"
                f" (also bindings[{seen[binding.name]}].name)"
            )
        else:
            seen[binding.name] = index


def _validate(
    model: type[M], data: Any, where: tuple[Any, ...], locate: Locator, problems: list[str]
) -> M | None:
    """Validate ``data`` found at ``where``; each of pydantic's complaints becomes a problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(describe(model, error, where, locate) for error in exc.errors())
        return None


def _expand(value: Any, where: tuple[Any, ...], locate: Locator, problems: list[str]) -> Any:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in every string value.

    An unset variable is a problem and expands to nothing, so every one is found in one pass.
    """
    if isinstance(value, dict):
        return {k: _expand(v, (*where, k), locate, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*where, i), locate, problems) for i, v in enumerate(value)]
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
            problems.append(
                f"{locate(where)}: environment variable {name} is not set"
                f" (write ${{{name}:-default}} to give a default)"
            )
            return ""
        return current

    expanded = _ENV_PATTERN.sub(substitute, value)
    # A whole-value reference such as ${ENDPOINT:-} that expands to nothing means "unset".
    return None if expanded == "" and _ENV_PATTERN.fullmatch(value) else expanded
