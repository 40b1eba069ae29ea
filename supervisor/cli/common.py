"""What every verb group shares: the failure that means "exit 1"."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Something outside the config went wrong (endpoint unreachable, queue missing)."""
