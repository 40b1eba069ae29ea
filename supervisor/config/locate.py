"""How a YAML or pydantic error becomes ``file:line: key.path: what was expected``.

Every user mistake should be one line a person can act on without reading a traceback, so this
module maps key paths back to YAML lines and rewrites pydantic's messages in the file's terms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from supervisor.suggest import did_you_mean


class Locator:
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


def describe(
    model: type[BaseModel], error: ErrorDetails, where: tuple[Any, ...], locate: Locator
) -> str:
    """One pydantic error as a line; an unknown key gets a did-you-mean or the allowed keys."""
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
    """The nested model that owns the key at ``loc``, so its fields can be offered as hints."""
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


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error as ``line L, column C: problem`` (PyYAML's own text is multi-line)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem
