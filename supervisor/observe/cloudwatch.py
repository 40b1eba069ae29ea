"""CloudWatch's ApproximateAgeOfOldestMessage, for the oldest-message gauge (opt-in).

SQS's own API has no age-of-oldest attribute; CloudWatch has it, a minute late. Only the
parent uses this, on its queue-stats timer, with short timeouts and no retries.
"""

from __future__ import annotations

import datetime as dt
import os

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from supervisor.sqs import SqsError, SqsSettings, region


class CloudWatchAges:
    """ApproximateAgeOfOldestMessage from CloudWatch (AWS/SQS), the one honest source of it."""

    def __init__(self, settings: SqsSettings) -> None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_CLOUDWATCH") or os.environ.get(
            "AWS_ENDPOINT_URL"
        )
        self._client = boto3.session.Session().client(
            "cloudwatch",
            region_name=region(settings),
            endpoint_url=endpoint or None,
            config=BotoConfig(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
        )

    def oldest_age(self, queue_name: str) -> float | None:
        """The latest 1-minute maximum in the last 10 minutes, or None if there is none."""
        now = dt.datetime.now(dt.UTC)
        try:
            response = self._client.get_metric_statistics(
                Namespace="AWS/SQS",
                MetricName="ApproximateAgeOfOldestMessage",
                Dimensions=[{"Name": "QueueName", "Value": queue_name}],
                StartTime=now - dt.timedelta(minutes=10),
                EndTime=now,
                Period=60,
                Statistics=["Maximum"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise SqsError("GetMetricStatistics", type(exc).__name__, str(exc)) from None
        points = sorted(response.get("Datapoints", []), key=lambda p: p["Timestamp"])
        return float(points[-1]["Maximum"]) if points else None
