"""The verbs for trying things by hand: ``local`` (a local SQS endpoint) and ``send``.

Thin: neither imports handlers, since neither runs one. ``local`` serves until SIGINT or
SIGTERM; ``send`` goes through the job Producer unless ``--raw`` asks for the body as is.
"""

from __future__ import annotations

import argparse
import json
import signal
import uuid

from supervisor.cli.common import RuntimeFailure, add_config_argument, load_without_handlers
from supervisor.errors import EXIT_OK, ConfigError


def add_commands(
    verbs: argparse._SubParsersAction, logging_options: argparse.ArgumentParser
) -> None:
    """Add ``local`` and ``send``; ``logging_options`` repeats the log flags after the verb."""
    local = verbs.add_parser(
        "local", help="start only a local SQS endpoint", parents=[logging_options]
    )
    local.add_argument("--port", type=int, default=4566)
    local.add_argument("-c", "--config", help="also create the queues of this config file")
    local.set_defaults(func=cmd_local)

    send = verbs.add_parser("send", help="send test messages to a binding's queue")
    add_config_argument(send)
    send.add_argument("binding")
    send.add_argument(
        "--body", required=True, help="the job payload (JSON), or with --raw any text"
    )
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--group-id", help="MessageGroupId for a FIFO queue (default: 'default')")
    send.add_argument(
        "--raw", action="store_true", help="send the body as is, not in a job envelope"
    )
    send.set_defaults(func=cmd_send)


def cmd_local(args: argparse.Namespace) -> int:
    from supervisor.ops.local import LocalSqs, LocalSqsError, dummy_environment, with_endpoint
    from supervisor.ops.provision import ProvisionError, apply_config
    from supervisor.sqs import SqsClient, region

    config = load_without_handlers(args.config) if args.config else None
    server = LocalSqs(port=args.port)
    try:
        url = server.start()
    except LocalSqsError as exc:
        raise RuntimeFailure(str(exc)) from None
    # Block the stop signals so that sigwait takes them instead of the default handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        # moto keeps queues per region: other tools must ask the one the queues are made in.
        queue_region = region(config.sqs) if config is not None else "us-east-1"
        if config is not None:
            local_config = with_endpoint(config, url)
            try:
                apply_config(local_config, SqsClient(local_config.sqs))
            except ProvisionError as exc:
                raise RuntimeFailure(str(exc)) from None
        exports = {"AWS_ENDPOINT_URL_SQS": url, **dummy_environment(url, queue_region)}
        for name, value in exports.items():
            print(f"export {name}={value}", flush=True)
        if "AWS_ACCESS_KEY_ID" not in exports:
            print("# using your own AWS credentials (the local endpoint accepts any)", flush=True)
        print("# local SQS is running; Ctrl-C stops it", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    from supervisor.jobs.producer import EnqueueError, Producer
    from supervisor.sqs import SqsClient, SqsError

    config = load_without_handlers(args.config)
    binding = config.binding(args.binding)
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
    # Only the job envelope needs JSON (its payload is a value); --raw sends any text.
    try:
        payload = json.loads(args.body)
    except ValueError as exc:
        raise ConfigError(
            f"--body is not valid JSON: {exc} (--raw sends it as is, without a job envelope)"
        ) from None
    producer = Producer(config)
    try:
        job_ids = producer.enqueue_many(binding.name, [payload] * args.count, group_id=group)
    except EnqueueError as exc:
        raise RuntimeFailure(str(exc)) from None
    for index, job_id in enumerate(job_ids):
        print(f"sent {index + 1}/{args.count}: job {job_id}")
    return EXIT_OK
