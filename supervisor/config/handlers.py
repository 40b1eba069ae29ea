"""Importing a binding's ``module:attribute`` handler at load time.

Loading imports every handler so a typo or a broken user module stops the supervisor before it
forks, with the binding's key path and the real cause instead of a child crash loop.
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from typing import Any

from supervisor.config.locate import Locator
from supervisor.config.schema import Binding, Handler
from supervisor.errors import ConfigError
from supervisor.suggest import did_you_mean


def import_handler(index: int, binding: Binding, locate: Locator) -> Handler:
    """Import a binding's handler and let it check its ``options`` (built-in handlers do)."""
    handler = resolve_handler(binding.handler, where=locate(("bindings", index, "handler")))
    validate = getattr(handler, "validate_options", None)
    if callable(validate):
        try:
            validate(binding.options)
        except ValueError as exc:
            raise ConfigError(f"{locate(('bindings', index, 'options'))}: {exc}") from None
    if binding.batch and is_async(handler):
        raise ConfigError(
            f"{locate(('bindings', index, 'handler'))}: a batch handler cannot be async def"
            " (write a plain function, or set batch: false and use concurrency)"
        )
    return handler


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
