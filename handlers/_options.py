"""Option checks shared by the built-in handlers (their ``validate_options`` hooks)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any


def reject_unknown(options: Any, known: tuple[str, ...], prefix: str = "") -> None:
    """A mapping with only ``known`` keys, else a ValueError with a did-you-mean hint."""
    if not isinstance(options, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'options'} must be a mapping")
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ValueError(f"unknown option '{prefix}{key}'{hint}")
