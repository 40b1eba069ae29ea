"""Importing a binding's ``module:attribute`` handler at load time.

Loading imports every handler and checks it can be called as ``handler(message, ctx)``, so a
typo, a broken user module or a wrong function stops the supervisor before it forks, with the
binding's key path and the real cause instead of a child crash loop.
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from typing import Any

from supervisor.config.locate import Locator
from supervisor.config.schema import Binding, Handler
from supervisor.errors import ConfigError
from supervisor.routing import AsyncTypeRouter, TypeRouter
from supervisor.suggest import did_you_mean


def import_handler(index: int, binding: Binding, locate: Locator) -> Handler:
    """Import a binding's handler (or each of its ``handlers:``), check each can be called, and
    let it check its ``options``. A binding with ``handlers:`` gets a router over them."""
    problems: list[str] = []
    imported: dict[str | None, Handler] = {}
    for job_type, spec in binding.handler_specs.items():
        key = ("handler",) if job_type is None else ("handlers", job_type)
        where = locate(("bindings", index, *key))
        try:
            handler = resolve_handler(spec, where=where)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        reason = _call_problem(handler)
        if reason:
            first = "messages" if binding.batch else "message"
            problems.append(f"{where}: {spec} cannot be called as handler({first}, ctx): {reason}")
        validate = getattr(handler, "validate_options", None)
        if callable(validate):
            try:
                validate(binding.options)
            except ValueError as exc:
                problem = f"{locate(('bindings', index, 'options'))}: {exc}"
                if problem not in problems:
                    problems.append(problem)
        imported[job_type] = handler
    kinds = {is_async(handler) for handler in imported.values()}
    if binding.batch and True in kinds:
        problems.append(
            f"{locate(('bindings', index, 'handler'))}: a batch handler cannot be async def"
            " (write a plain function, or set batch: false and use concurrency)"
        )
    if len(kinds) > 1:
        problems.append(
            f"{locate(('bindings', index, 'handlers'))}: mixes async def and plain functions;"
            " one binding's handlers run on one kind of runner, so make them all one kind"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    if binding.handlers is None:
        return imported[None]
    router = AsyncTypeRouter if True in kinds else TypeRouter
    return router(binding.name, {str(t): h for t, h in imported.items()})


def _call_problem(handler: Handler) -> str | None:
    """Why calling ``handler(message, ctx)`` would raise TypeError before it runs, or None.

    Children call every handler with two positional arguments (a list of messages for a batch:
    the count is the same); refusing here beats a TypeError on every message after the fork.
    A callable whose signature cannot be read (some C functions, Cython without binding) is
    accepted: it may well be a good handler, and refusing would leave its author no way round.
    """
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, None)
    except TypeError as exc:
        return _unbindable(signature) or str(exc)
    return None


def _unbindable(signature: inspect.Signature) -> str | None:
    """What in ``signature`` refuses two positional arguments, in the caller's words."""
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        plural = "" if len(positional) == 1 else "s"
        return f"takes {len(positional)} positional argument{plural}"
    required = [p for p in positional if p.default is p.empty]
    if len(required) > 2:
        return f"requires {len(required)} positional arguments"
    keywords = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if keywords:
        plural = "" if len(keywords) == 1 else "s"
        return f"requires keyword-only argument{plural} {', '.join(map(repr, keywords))}"
    return None


def is_async(handler: Handler) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one: run on an event loop."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004
    )


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


def _brief(exc: BaseException) -> str:
    """One line for an exception raised in user code: type, message and where it happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        place = f" ({exc.filename}:{exc.lineno})"
    return f"{type(exc).__name__}: {exc}{place}"
