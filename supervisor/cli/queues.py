"""The queue verbs of the command line: ``queues``, ``dlq`` and ``iam-policy``.

Thin, like the other verb modules: parse, load the config (handlers are not imported: these
verbs run none), call provision / queue_status / redrive / iam, print. User mistakes raise
ConfigError (exit 2); SQS failures raise RuntimeFailure (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from supervisor.cli.common import RuntimeFailure, add_config_argument, load_without_handlers
from supervisor.config import Binding, Config, queue_name
from supervisor.errors import EXIT_OK, ConfigError

if TYPE_CHECKING:
    from supervisor.sqs import SqsClient

AGE_HELP = (
    "SQS's API has no age-of-oldest-message attribute and reading one would mean receiving"
    " (disturbing) messages, so the age column is n/a; CloudWatch's"
    " ApproximateAgeOfOldestMessage metric has it."
)


def add_commands(verbs: argparse._SubParsersAction) -> None:
    """Add ``queues``, ``dlq`` and ``iam-policy`` to the main parser's verbs."""
    queues = verbs.add_parser("queues", help="plan, apply, inspect or purge the config's queues")
    actions = queues.add_subparsers(dest="action", required=True, metavar="ACTION")
    plan = add_config_argument(actions.add_parser("plan", help="print what `apply` would change"))
    plan.set_defaults(func=cmd_plan)
    apply = add_config_argument(
        actions.add_parser("apply", help="create and update queues and DLQs to match the file")
    )
    apply.set_defaults(func=cmd_apply)
    status = add_config_argument(
        actions.add_parser(
            "status",
            help="messages visible, in flight and delayed per binding, and DLQ depth",
            description=AGE_HELP,
        )
    )
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.set_defaults(func=cmd_status)
    purge = add_config_argument(actions.add_parser("purge", help="delete every message of a queue"))
    purge.add_argument("binding")
    purge.add_argument("--dlq", action="store_true", help="purge the dead-letter queue instead")
    purge.add_argument("--yes", action="store_true", help="really purge (required)")
    purge.set_defaults(func=cmd_purge)

    dlq = verbs.add_parser("dlq", help="move or read a binding's dead-letter queue messages")
    dlq_actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    redrive = add_config_argument(
        dlq_actions.add_parser("redrive", help="move DLQ messages back to the source queue")
    )
    redrive.add_argument("binding")
    redrive.add_argument("--max", type=int, metavar="N", help="move at most N messages")
    redrive.add_argument(
        "--dry-run", action="store_true", help="list what would move and move nothing"
    )
    redrive.set_defaults(func=cmd_redrive)
    dump = add_config_argument(
        dlq_actions.add_parser("dump", help="print DLQ messages as JSON lines, leaving them")
    )
    dump.add_argument("binding")
    dump.add_argument("--max", type=int, metavar="N", help="print at most N messages")
    dump.set_defaults(func=cmd_dump)

    iam = add_config_argument(
        verbs.add_parser("iam-policy", help="print the least-privilege IAM policy (JSON)")
    )
    iam.add_argument(
        "--producer",
        action="store_true",
        help="the policy of a producer (send to the source queues) instead of the workers'",
    )
    iam.add_argument(
        "--account-id",
        default="*",
        metavar="ID",
        help="the AWS account owning queues given by name (default '*': any account;"
        " `aws sts get-caller-identity` prints yours)",
    )
    iam.add_argument("--region", help="the queues' region (default: the file's sqs.region)")
    iam.set_defaults(func=cmd_iam_policy)


@contextlib.contextmanager
def _runtime_failures() -> Iterator[None]:
    """SQS and provisioning failures become RuntimeFailure (exit 1) with their message."""
    from supervisor.ops.provision import ProvisionError
    from supervisor.ops.redrive import RedriveError
    from supervisor.sqs import SqsError

    try:
        yield
    except (SqsError, ProvisionError, RedriveError) as exc:
        raise RuntimeFailure(str(exc)) from None


def _client(config: Config, **options: Any) -> SqsClient:
    from supervisor.sqs import SqsClient

    return SqsClient(config.sqs, **options)


# -- queues -------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from supervisor.ops import provision

    config = load_without_handlers(args.config)
    with _runtime_failures():
        result = provision.plan(config, _client(config))
    print(provision.render(result))
    with _runtime_failures():
        provision.check_applicable(config, result)
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from supervisor.ops import provision

    config = load_without_handlers(args.config)
    sqs = _client(config)
    with _runtime_failures():
        result = provision.plan(config, sqs)
        print(provision.render(result))
        provision.check_applicable(config, result)
        if not result.has_changes:
            return EXIT_OK
        done = provision.apply(config, sqs, result)
    print(f"applied: {len(done)} queue(s) created or updated ({', '.join(done)})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from supervisor.ops import queue_status

    config = load_without_handlers(args.config)
    with _runtime_failures():
        rows = queue_status.status(config, _client(config))
    if args.json:
        print(json.dumps({"bindings": rows}, indent=2))  # no age: see AGE_HELP
    else:
        print(_status_table(rows))
    missing = queue_status.missing_queues(rows)
    if missing:
        raise RuntimeFailure(
            f"queue(s) do not exist: {', '.join(missing)} (create them with `queues apply`)"
        )
    return EXIT_OK


def _status_table(rows: list[dict[str, Any]]) -> str:
    table = [("BINDING", "QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "DLQ", "DLQ DEPTH", "AGE")]
    for row in rows:
        counts = row["messages"] or {}
        dlq = row["dead_letter_messages"]
        if row["dead_letter_queue"] is None:
            dlq_depth = "-"
        else:
            dlq_depth = "missing" if dlq is None else str(sum(dlq.values()))
        table.append(
            (
                row["binding"],
                row["queue"],
                *(
                    str(counts.get(state, "missing"))
                    for state in ("visible", "in_flight", "delayed")
                ),
                row["dead_letter_queue"] or "-",
                dlq_depth,
                "n/a",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.append("age n/a: see `queues status --help`")
    return "\n".join(line.rstrip() for line in lines)


def cmd_purge(args: argparse.Namespace) -> int:
    from supervisor.ops import provision, queue_status

    config = load_without_handlers(args.config)
    binding = config.binding(args.binding)
    queue = _dead_letter(binding) if args.dlq else binding.queue
    label = f"{'dead-letter queue' if args.dlq else 'queue'} {queue_name(queue)!r}"
    sqs = _client(config)
    with _runtime_failures():
        counts = queue_status.depths(sqs, queue)
        if counts is None:
            raise provision.ProvisionError(f"{label} does not exist")
        total = sum(counts.values())
        if not args.yes:
            raise ConfigError(
                f"refusing to purge {label} of binding {binding.name!r} ({total} message(s)"
                " visible, in flight or delayed) without --yes"
            )
        sqs.purge(sqs.queue_url(queue))
    print(f"purged {label} ({total} message(s) deleted)")
    return EXIT_OK


# -- dlq ----------------------------------------------------------------------------------------


def cmd_redrive(args: argparse.Namespace) -> int:
    from supervisor.ops import redrive

    config = load_without_handlers(args.config)
    binding = config.binding(args.binding)
    dead_letter = _dead_letter(binding)
    _check_max(args.max)
    source, target = queue_name(dead_letter), queue_name(binding.queue)
    sqs = _client(config)
    with _runtime_failures():
        dlq_url, source_url = _url(sqs, dead_letter), _url(sqs, binding.queue)
        result = redrive.redrive(
            sqs,
            dlq_url,
            source_url,
            fifo=binding.is_fifo,
            max_messages=args.max,
            dry_run=args.dry_run,
            mover=_client(config, max_attempts=1),
        )
    if args.dry_run:
        for preview in result.previews:
            print(json.dumps(_preview(preview)))
        print(
            f"dry run: would move {len(result.previews)} message(s) from {source} to {target};"
            " nothing moved"
        )
        return EXIT_OK
    print(f"moved {result.moved} message(s) from {source} to {target}")
    if result.failed or result.undeleted:
        raise RuntimeFailure(
            f"{len(result.failed)} message(s) were not moved and stay in {source};"
            f" {len(result.undeleted)} were sent but could not be deleted from it (duplicates)"
        )
    return EXIT_OK


def _preview(message: dict[str, Any]) -> dict[str, Any]:
    body = message["body"]
    return {
        "id": message["id"],
        "receive_count": message["receive_count"],
        "sent_timestamp": message["sent_timestamp"],
        "body": body if len(body) <= 200 else body[:200] + "...",
    }


def cmd_dump(args: argparse.Namespace) -> int:
    from supervisor.ops import redrive

    config = load_without_handlers(args.config)
    binding = config.binding(args.binding)
    dead_letter = _dead_letter(binding)
    _check_max(args.max)
    sqs = _client(config)
    with _runtime_failures():
        for message in redrive.peek(sqs, _url(sqs, dead_letter), max_messages=args.max):
            print(json.dumps(message), flush=True)
    return EXIT_OK


def _dead_letter(binding: Binding) -> str:
    if binding.dead_letter is None:
        raise ConfigError(f"binding {binding.name!r} has no dead_letter queue")
    return binding.dead_letter.queue


def _check_max(value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError("--max must be at least 1")


def _url(sqs: SqsClient, queue: str) -> str:
    from supervisor.ops import provision

    url = provision.existing_url(sqs, queue)
    if url is None:
        raise provision.ProvisionError(
            f"queue {queue_name(queue)!r} does not exist"
            " (create it with `sqs-supervisor queues apply -c FILE`)"
        )
    return url


# -- iam ----------------------------------------------------------------------------------------


def cmd_iam_policy(args: argparse.Namespace) -> int:
    from supervisor.ops.iam import build_policy
    from supervisor.sqs import region

    config = load_without_handlers(args.config)
    policy = build_policy(
        config,
        region=args.region or region(config.sqs),
        account_id=args.account_id,
        producer=args.producer,
    )
    print(json.dumps(policy, indent=2))
    return EXIT_OK
