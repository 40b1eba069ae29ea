"""``sqs-supervisor``: a thin command line over the engine. Exit codes: 0 ok, 1 runtime, 2 usage.

This module owns the top-level parser, the logging options and the mapping of errors to exit
codes; each verb group registers its own sub-parser from its module (run, local, jobs, queues),
and none of those imports this one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from supervisor import __version__
from supervisor.cli import jobs, local, queues, run
from supervisor.cli.common import RuntimeFailure
from supervisor.errors import EXIT_CONFIG, EXIT_RUNTIME, ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    # Handlers live in the user's project: its directory is importable, as with gunicorn and
    # celery (``python -m`` does this already; the console script does not).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = build_parser()
    args = parser.parse_args(argv)
    from supervisor.observe.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        return args.func(args)
    except ConfigError as exc:
        # Config loading lists every mistake, one per line: each is an error of its own.
        for line in str(exc).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except RuntimeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqs-supervisor", description="Run pools of worker processes consuming SQS queues."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _logging_options(parser, "INFO", "text")
    # The same options after the verb too (`run -c F --log-format json`), not overriding.
    after_verb = argparse.ArgumentParser(add_help=False)
    _logging_options(after_verb, argparse.SUPPRESS, argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    # Registration order is the order `--help` lists the verbs in.
    run.add_commands(verbs, after_verb)
    local.add_commands(verbs, after_verb)
    jobs.add_commands(verbs)
    queues.add_commands(verbs)
    return parser


def _logging_options(parser: argparse.ArgumentParser, level: str, fmt: str) -> None:
    parser.add_argument("--log-level", default=level, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default=fmt, choices=["text", "json"])
