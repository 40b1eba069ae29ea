"""The verbs that run or vet worker pools: ``run`` and ``check``.

Thin: load the config (handlers imported, since these verbs are about running them), optionally
start a local endpoint with the queues, check the queues exist, then hand over to the Arbiter.
Engine modules are imported inside the verbs so that building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from supervisor.cli.common import RuntimeFailure, add_config_argument
from supervisor.config import Binding, Config, Handler, is_async, load_config
from supervisor.errors import EXIT_OK, ConfigError

if TYPE_CHECKING:
    from supervisor.parent.arbiter import Arbiter

log = logging.getLogger("sqs_supervisor.cli")


def add_commands(
    verbs: argparse._SubParsersAction, logging_options: argparse.ArgumentParser
) -> None:
    """Add ``run`` and ``check``; ``logging_options`` repeats the log flags after the verb."""
    run = verbs.add_parser(
        "run", help="run the worker pools of a config file", parents=[logging_options]
    )
    add_config_argument(run)
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
        "check", help="validate a config file and import its handlers", parents=[logging_options]
    )
    add_config_argument(check)
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from supervisor.ops.queue_spec import desired_queues

    config = load_config(args.config)
    desired_queues(config)  # queue_attributes mistakes are config mistakes too
    for binding in config.bindings:
        print(
            f"{binding.name}: {binding.queue} -> {_handlers(binding)}"
            f" x{binding.processes} (batch {binding.batch_size},"
            f" visibility {binding.visibility_timeout} s, timeout {binding.timeout:g} s)"
            f"{_capacity(binding, config.handlers[binding.name])}"
        )
    print(f"{config.path}: OK, {len(config.bindings)} binding(s)")
    return EXIT_OK


def _handlers(binding: Binding) -> str:
    if binding.handlers is None:
        return str(binding.handler)
    return "{" + ", ".join(f"{t}: {spec}" for t, spec in binding.handlers.items()) + "}"


def _capacity(binding: Binding, handler: Handler) -> str:
    """How many jobs the binding runs at once, and on what, when that is not one per child."""
    if is_async(handler):
        runs_on = "tasks on one event loop per child"
    elif binding.concurrency > 1:
        runs_on = "threads per child"
    else:
        return ""
    slots = binding.processes * binding.concurrency
    return f", {binding.concurrency} jobs at once on {runs_on}: {slots} slots"


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
