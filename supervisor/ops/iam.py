"""The least-privilege IAM policy for a config's workers (or for its producers).

No call is made to AWS: the account comes from ``--account-id`` (default ``*``, any account),
or from the queue URL where the YAML gives one. Batch calls need no actions of their own: IAM
authorises SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch by
sqs:SendMessage, sqs:DeleteMessage and sqs:ChangeMessageVisibility.
"""

from __future__ import annotations

import re
from typing import Any

from supervisor.config import Config, queue_name

WORKER_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",  # the start-up redrive check and the queue-depth gauges
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
)
DEAD_LETTER_ACTIONS = ("sqs:GetQueueUrl", "sqs:SendMessage")  # PermanentError dead-lettering
DEAD_LETTER_METRICS_ACTIONS = ("sqs:GetQueueAttributes",)  # DLQ depth gauges (metrics on)
PRODUCER_ACTIONS = ("sqs:GetQueueUrl", "sqs:SendMessage")
CLOUDWATCH_ACTIONS = ("cloudwatch:GetMetricStatistics",)  # metrics.cloudwatch: message age
_SQS_HOST = re.compile(r"^(?:sqs\.([a-z0-9-]+)\.|([a-z0-9-]+)\.queue\.)amazonaws\.com")
_ACCOUNT = re.compile(r"^\d{12}$")


def queue_arn(queue: str, *, region: str, account_id: str) -> str:
    """``arn:aws:sqs:REGION:ACCOUNT:NAME``; a URL's own region and account win."""
    name = queue_name(queue)
    if "://" in queue:
        host, _, path = queue.split("://", 1)[1].partition("/")
        owner = path.split("/")[0]
        account_id = owner if _ACCOUNT.match(owner) else account_id
        match = _SQS_HOST.match(host)
        if match:
            region = match.group(1) or match.group(2)
    return f"arn:{_partition(region)}:sqs:{region}:{account_id}:{name}"


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def build_policy(
    config: Config, *, region: str, account_id: str = "*", producer: bool = False
) -> dict[str, Any]:
    """An IAM policy document naming every queue ARN and only the actions the role needs."""

    def arns(queues: list[str]) -> list[str]:
        unique = dict.fromkeys(queue_arn(q, region=region, account_id=account_id) for q in queues)
        return list(unique)

    sources = arns([b.queue for b in config.bindings])
    if producer:
        statements = [_statement("SendToQueues", PRODUCER_ACTIONS, sources)]
        return {"Version": "2012-10-17", "Statement": statements}
    statements = [_statement("ConsumeQueues", WORKER_ACTIONS, sources)]
    dead_letters = arns([b.dead_letter.queue for b in config.bindings if b.dead_letter])
    if dead_letters:
        actions = DEAD_LETTER_ACTIONS
        if config.metrics.enabled:
            actions += DEAD_LETTER_METRICS_ACTIONS
        statements.append(_statement("DeadLetterQueues", actions, dead_letters))
    if config.metrics.enabled and config.metrics.cloudwatch:
        # CloudWatch has no resource-level permissions for reading metric statistics.
        statements.append(_statement("ReadQueueAgeMetrics", CLOUDWATCH_ACTIONS, ["*"]))
    return {"Version": "2012-10-17", "Statement": statements}


def _statement(sid: str, actions: tuple[str, ...], resources: list[str]) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": resources,
    }
