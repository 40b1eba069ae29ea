"""`iam-policy`: every queue ARN, and no action beyond what workers (or producers) call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import load_config
from supervisor.ops.iam import build_policy, queue_arn
from support import run_cli, write_config

HANDLER = "handlers.examples:make_thumbnail"
VIDEO_SITE = Path(__file__).resolve().parent.parent / "config" / "examples" / "video-site.yaml"
ACCOUNT = "123456789012"


def config_with(tmp_path: Path, **metrics: bool):
    bindings = [
        {
            "name": "articles",
            "queue": "articles",
            "handler": HANDLER,
            "dead_letter": {"queue": "articles-dlq"},
        },
        {
            "name": "theirs",
            "queue": "https://sqs.eu-west-1.amazonaws.com/111122223333/theirs",
            "handler": HANDLER,
        },
    ]
    path = write_config(tmp_path / "w.yaml", bindings, metrics=metrics)
    return load_config(path, import_handlers=False)


def statements(policy: dict) -> dict[str, tuple[set[str], list[str]]]:
    assert policy["Version"] == "2012-10-17"
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    return {s["Sid"]: (set(s["Action"]), s["Resource"]) for s in policy["Statement"]}


def test_worker_policy_grants_exactly_the_calls_workers_make(tmp_path):
    policy = build_policy(
        config_with(tmp_path, enabled=False), region="us-east-1", account_id=ACCOUNT
    )
    assert statements(policy) == {
        "ConsumeQueues": (
            {
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
            },
            [
                f"arn:aws:sqs:us-east-1:{ACCOUNT}:articles",
                "arn:aws:sqs:eu-west-1:111122223333:theirs",
            ],
        ),
        "DeadLetterQueues": (
            {"sqs:SendMessage", "sqs:GetQueueUrl"},
            [f"arn:aws:sqs:us-east-1:{ACCOUNT}:articles-dlq"],
        ),
    }


def test_metrics_add_only_what_the_queue_gauges_read(tmp_path):
    policy = build_policy(
        config_with(tmp_path, enabled=True, cloudwatch=True), region="us-east-1", account_id="*"
    )
    found = statements(policy)
    assert found["DeadLetterQueues"] == (
        {"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"},
        ["arn:aws:sqs:us-east-1:*:articles-dlq"],
    )
    assert found["ReadQueueAgeMetrics"] == ({"cloudwatch:GetMetricStatistics"}, ["*"])
    assert set(found) == {"ConsumeQueues", "DeadLetterQueues", "ReadQueueAgeMetrics"}


def test_producer_policy_only_sends_to_the_source_queues(tmp_path):
    policy = build_policy(
        config_with(tmp_path), region="us-east-1", account_id=ACCOUNT, producer=True
    )
    assert statements(policy) == {
        "SendToQueues": (
            {"sqs:SendMessage", "sqs:GetQueueUrl"},
            [
                f"arn:aws:sqs:us-east-1:{ACCOUNT}:articles",
                "arn:aws:sqs:eu-west-1:111122223333:theirs",
            ],
        )
    }


@pytest.mark.parametrize(
    ("queue", "region", "expected"),
    [
        ("jobs", "us-east-1", "arn:aws:sqs:us-east-1:*:jobs"),
        ("jobs.fifo", "cn-north-1", "arn:aws-cn:sqs:cn-north-1:*:jobs.fifo"),
        ("jobs", "us-gov-west-1", "arn:aws-us-gov:sqs:us-gov-west-1:*:jobs"),
        (
            "https://sqs.ap-south-1.amazonaws.com/111122223333/jobs",
            "us-east-1",
            "arn:aws:sqs:ap-south-1:111122223333:jobs",
        ),
        (
            "https://eu-west-2.queue.amazonaws.com/111122223333/jobs",
            "us-east-1",
            "arn:aws:sqs:eu-west-2:111122223333:jobs",
        ),
        (
            "http://localhost:4566/000000000000/jobs",
            "us-east-1",
            "arn:aws:sqs:us-east-1:000000000000:jobs",
        ),
    ],
)
def test_queue_arns(queue, region, expected):
    assert queue_arn(queue, region=region, account_id="*") == expected


def test_the_command_prints_a_policy_naming_every_queue(monkeypatch, capsys):
    monkeypatch.setenv("QUEUE_PREFIX", "prod")
    code, out, _ = run_cli(
        capsys,
        "iam-policy",
        "-c",
        str(VIDEO_SITE),
        "--account-id",
        ACCOUNT,
        "--region",
        "eu-west-1",
    )
    assert code == 0
    policy = json.loads(out)
    named = {arn for s in policy["Statement"] for arn in s["Resource"]}
    names = ["prod-video-processing", "prod-thumbnail-generation", "prod-email", "prod-analytics"]
    assert named == {
        f"arn:aws:sqs:eu-west-1:{ACCOUNT}:{n}{suffix}" for n in names for suffix in ("", "-dlq")
    }
    code, out, _ = run_cli(capsys, "iam-policy", "-c", str(VIDEO_SITE), "--producer")
    assert {s["Sid"] for s in json.loads(out)["Statement"]} == {"SendToQueues"}
