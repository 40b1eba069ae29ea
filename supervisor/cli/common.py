"""What every verb group shares: the failure that means "exit 1", and how a verb takes its config.

Verb modules import this, never ``cli.main``: main imports them to register their parsers.
"""

from __future__ import annotations

import argparse

from supervisor.config import Config, load_config


class RuntimeFailure(Exception):
    """Something outside the config went wrong (endpoint unreachable, queue missing)."""


def add_config_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The required ``-c/--config FILE`` of the verbs that read bindings; returns ``parser``."""
    parser.add_argument("-c", "--config", required=True, help="YAML file of bindings")
    return parser


def load_without_handlers(path: str) -> Config:
    """The config for a verb that runs no handler, so it need not import (or fail on) them."""
    return load_config(path, import_handlers=False)
