"""``sqs-supervisor``: a thin command line over the engine. Exit codes: 0 ok, 1 runtime, 2 usage."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from supervisor import __version__
from supervisor.cli.common import RuntimeFailure
from supervisor.cli.queues import add_commands
from supervisor.config import Config, load_config
from supervisor.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, ConfigError

if TYPE_CHECKING:
    from supervisor.parent.arbiter import Arbiter

log = logging.getLogger("sqs_supervisor.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from supervisor.observe.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
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

    run = verbs.add_parser(
        "run", help="run the worker pools of a config file", parents=[after_verb]
    )
    _config_argument(run)
    run.add_argument(
        "--local", action="store_true", help="start a local SQS endpoint and create the queues"
    )
    run.add_argument(
        "--demo",
        type=float,
        metavar="SECONDS",
        help="with --local: send an example message to every binding each SECONDS",
    )
    run.set_defaults(func=cmd_run)

    check = verbs.add_parser(
        "check", help="validate a config file and import its handlers", parents=[after_verb]
    )
    _config_argument(check)
    check.set_defaults(func=cmd_check)

    local = verbs.add_parser("local", help="start only a local SQS endpoint", parents=[after_verb])
    local.add_argument("--port", type=int, default=4566)
    local.add_argument("-c", "--config", help="also create the queues of this config file")
    local.set_defaults(func=cmd_local)

    send = verbs.add_parser("send", help="send test messages to a binding's queue")
    _config_argument(send)
    send.add_argument("binding")
    send.add_argument("--body", required=True, help="message body (JSON)")
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--group-id", help="MessageGroupId for a FIFO queue (default: 'default')")
    send.add_argument(
        "--raw", action="store_true", help="send the body as is, not in a job envelope"
    )
    send.set_defaults(func=cmd_send)

    jobs = verbs.add_parser("jobs", help="read job records (needs jobs.store in the config)")
    jobs_verbs = jobs.add_subparsers(dest="jobs_verb", required=True, metavar="VERB")
    show = jobs_verbs.add_parser("show", help="one job as JSON")
    show.add_argument("job_id")
    listing = jobs_verbs.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--status", choices=[s.value for s in _job_statuses()])
    listing.add_argument("--binding")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for parser_ in (show, listing):
        parser_.add_argument("-c", "--config", help="YAML file (default: $SQS_SUPERVISOR_CONFIG)")
        parser_.set_defaults(func=cmd_jobs)

    add_commands(verbs)
    return parser


def _job_statuses() -> list[Any]:
    from supervisor.jobs.stores import JobStatus

    return list(JobStatus)


def _logging_options(parser: argparse.ArgumentParser, level: str, fmt: str) -> None:
    parser.add_argument("--log-level", default=level, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default=fmt, choices=["text", "json"])


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML file of bindings")


def cmd_check(args: argparse.Namespace) -> int:
    from supervisor.ops.provision import desired_queues

    config = load_config(args.config)
    desired_queues(config)  # queue_attributes mistakes are config mistakes too
    for binding in config.bindings:
        print(
            f"{binding.name}: {binding.queue} -> {binding.handler}"
            f" x{binding.processes} (batch {binding.batch_size},"
            f" visibility {binding.visibility_timeout} s, timeout {binding.timeout:g} s)"
        )
    print(f"{config.path}: OK, {len(config.bindings)} binding(s)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.demo is not None and not args.local:
        raise ConfigError("--demo needs --local (it sends example messages to the local endpoint)")
    with _endpoint(config, args.local) as config:
        from supervisor.parent.arbiter import Arbiter, EndpointError

        arbiter = Arbiter(config)
        _preflight(arbiter)
        with _demo_producer(args, config):
            try:
                return arbiter.run()
            except EndpointError as exc:
                raise RuntimeFailure(str(exc)) from None


@contextlib.contextmanager
def _endpoint(config: Config, local: bool) -> Iterator[Config]:
    if not local:
        yield config
        return
    from supervisor.ops.local import LocalSqs, LocalSqsError, local_environment, with_endpoint
    from supervisor.ops.provision import ProvisionError, apply_config
    from supervisor.sqs import SqsClient

    server = LocalSqs()
    try:
        url = server.start()
    except LocalSqsError as exc:
        raise RuntimeFailure(str(exc)) from None
    try:
        with local_environment(url):
            config = with_endpoint(config, url)
            try:
                names = apply_config(config, SqsClient(config.sqs))
            except ProvisionError as exc:
                raise RuntimeFailure(str(exc)) from None
            log.info("local SQS at %s with queues: %s", url, ", ".join(names))
            yield config
    finally:
        server.stop()


@contextlib.contextmanager
def _demo_producer(args: argparse.Namespace, config: Config) -> Iterator[None]:
    if args.demo is None:
        yield
        return
    command = [
        sys.executable,
        "-m",
        "supervisor.ops.demo",
        "-c",
        args.config,
        "--every",
        str(args.demo),
    ]
    producer = subprocess.Popen(command, start_new_session=True)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            producer.send_signal(signal.SIGTERM)
        producer.wait()


def _preflight(arbiter: Arbiter) -> None:
    """Fail fast on a missing queue; warn about a queue without a dead-letter queue."""
    from supervisor.sqs import SqsError

    for binding in arbiter.config.bindings:
        try:
            url = arbiter.sqs.queue_url(binding.queue)
            attributes = arbiter.sqs.get_attributes(url, ["RedrivePolicy"])
        except SqsError as exc:
            if exc.queue_missing:
                raise RuntimeFailure(
                    f"binding {binding.name!r}: queue {binding.queue!r} does not exist"
                    " (create it with `sqs-supervisor queues apply -c FILE`, or use --local)"
                ) from None
            log.warning("could not check queue %r yet (%s); starting anyway", binding.queue, exc)
            continue
        if "RedrivePolicy" not in attributes:
            log.warning(
                "queue %r has no redrive policy: a message that always fails is retried until"
                " its retention period ends",
                binding.queue,
            )


def cmd_local(args: argparse.Namespace) -> int:
    from supervisor.ops.local import LocalSqs, LocalSqsError, local_environment, with_endpoint
    from supervisor.ops.provision import ProvisionError, apply_config
    from supervisor.sqs import SqsClient

    config = load_config(args.config, import_handlers=False) if args.config else None
    server = LocalSqs(port=args.port)
    try:
        url = server.start()
    except LocalSqsError as exc:
        raise RuntimeFailure(str(exc)) from None
    # Block the stop signals so that sigwait takes them instead of the default handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        if config is not None:
            with local_environment(url):
                local_config = with_endpoint(config, url)
                try:
                    apply_config(local_config, SqsClient(local_config.sqs))
                except ProvisionError as exc:
                    raise RuntimeFailure(str(exc)) from None
        print(f"export AWS_ENDPOINT_URL_SQS={url}", flush=True)
        print("# local SQS is running; Ctrl-C stops it", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    from supervisor.jobs.producer import EnqueueError, Producer
    from supervisor.sqs import SqsClient, SqsError

    config = load_config(args.config, import_handlers=False)
    binding = config.binding(args.binding)
    try:
        payload = json.loads(args.body)
    except ValueError as exc:
        raise ConfigError(f"--body is not valid JSON: {exc}") from None
    if args.count < 1:
        raise ConfigError("--count must be at least 1")
    group = (args.group_id or "default") if binding.is_fifo else None
    if args.raw:
        sqs = SqsClient(config.sqs)
        try:
            url = sqs.queue_url(binding.queue)
            for index in range(args.count):
                dedup = uuid.uuid4().hex if binding.is_fifo else None
                message_id = sqs.send(url, args.body, group_id=group, dedup_id=dedup)
                print(f"sent {index + 1}/{args.count}: message {message_id}")
        except SqsError as exc:
            raise RuntimeFailure(str(exc)) from None
        return EXIT_OK
    producer = Producer(config)
    try:
        job_ids = producer.enqueue_many(binding.name, [payload] * args.count, group_id=group)
    except EnqueueError as exc:
        raise RuntimeFailure(str(exc)) from None
    for index, job_id in enumerate(job_ids):
        print(f"sent {index + 1}/{args.count}: job {job_id}")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    from supervisor.jobs.producer import CONFIG_ENV
    from supervisor.jobs.stores import JobStatus, StoreError, open_store

    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"give -c FILE (or set {CONFIG_ENV}) to find the job store")
    config = load_config(path, import_handlers=False)
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
        records = store.list(status=status, binding=args.binding, limit=args.limit)
    except StoreError as exc:
        raise RuntimeFailure(str(exc)) from None
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return EXIT_OK
    print(f"{'JOB':32}  {'BINDING':14} {'STATUS':10} {'TRIES':>5} {'PROGRESS':>8}  CREATED")
    for r in records:
        print(
            f"{r.id:32}  {(r.binding or '-'):14} {r.status.value:10} {r.attempts:>5}"
            f" {r.progress:>7}%  {r.created_at.isoformat(timespec='seconds')}"
        )
    return EXIT_OK
