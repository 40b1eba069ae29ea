"""The ``jobs`` verb: read job records (``show`` one, ``list`` recent) from the job store.

Thin: find the config (``-c`` or $SQS_SUPERVISOR_CONFIG, as producers do), open the store it
names, print. A config without ``jobs.store`` is a config mistake (exit 2), not an empty list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from supervisor.cli.common import RuntimeFailure, load_without_handlers
from supervisor.errors import EXIT_OK, EXIT_RUNTIME, ConfigError


def add_commands(verbs: argparse._SubParsersAction) -> None:
    """Add ``jobs`` with its ``show`` and ``list`` sub-verbs."""
    jobs = verbs.add_parser("jobs", help="read job records (needs jobs.store in the config)")
    jobs_verbs = jobs.add_subparsers(dest="jobs_verb", required=True, metavar="VERB")
    show = jobs_verbs.add_parser("show", help="one job as JSON")
    show.add_argument("job_id")
    listing = jobs_verbs.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--status", choices=[s.value for s in _job_statuses()])
    listing.add_argument("--binding")
    listing.add_argument("--type", dest="job_type", help="only jobs of this job type")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for parser in (show, listing):
        parser.add_argument("-c", "--config", help="YAML file (default: $SQS_SUPERVISOR_CONFIG)")
        parser.set_defaults(func=cmd_jobs)


def _job_statuses() -> list[Any]:
    from supervisor.jobs.stores import JobStatus

    return list(JobStatus)


def cmd_jobs(args: argparse.Namespace) -> int:
    from supervisor.jobs.producer import CONFIG_ENV
    from supervisor.jobs.stores import JobStatus, StoreError, open_store

    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"give -c FILE (or set {CONFIG_ENV}) to find the job store")
    config = load_without_handlers(path)
    if not config.jobs.store:
        raise ConfigError(f"{config.path}: jobs.store is not set, so no jobs are tracked")
    try:
        store = open_store(config.jobs.store, retention_days=config.jobs.retention_days)
        if args.jobs_verb == "show":
            record = store.get(args.job_id)
            if record is None:
                print(f"error: no job {args.job_id!r}", file=sys.stderr)
                return EXIT_RUNTIME
            print(json.dumps(record.to_dict(), indent=2))
            return EXIT_OK
        status = JobStatus(args.status) if args.status else None
        records = store.list(
            status=status, binding=args.binding, job_type=args.job_type, limit=args.limit
        )
    except StoreError as exc:
        raise RuntimeFailure(str(exc)) from None
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return EXIT_OK
    print(
        f"{'JOB':32}  {'BINDING':14} {'TYPE':12} {'STATUS':10} {'TRIES':>5} {'PROGRESS':>8}"
        "  CREATED"
    )
    for r in records:
        print(
            f"{r.id:32}  {(r.binding or '-'):14} {(r.type or '-'):12} {r.status.value:10}"
            f" {r.attempts:>5} {r.progress:>7}%  {r.created_at.isoformat(timespec='seconds')}"
        )
    return EXIT_OK
