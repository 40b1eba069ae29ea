"""Option checks shared by the built-in handlers (their ``validate_options`` hooks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.suggest import did_you_mean


def reject_unknown(options: Any, known: tuple[str, ...], prefix: str = "") -> None:
    """A mapping with only ``known`` keys, else a ValueError with a did-you-mean hint."""
    if not isinstance(options, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'options'} must be a mapping")
    for key in options:
        if key not in known:
            hint = did_you_mean(str(key), known, prefix=prefix)
            raise ValueError(f"unknown option '{prefix}{key}'{hint}")
