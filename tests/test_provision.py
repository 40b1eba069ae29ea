"""`queues plan|apply|status`: the YAML makes the queues, against the local SQS server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import SqsSettings, load_config
from supervisor.errors import ConfigError
from supervisor.ops.provision import _same, apply_config
from supervisor.ops.queue_spec import desired_queues
from supervisor.sqs import SqsClient
from support import queue_counts, run_cli, write_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.yaml"))
VIDEO_SITE = REPO / "config" / "examples" / "video-site.yaml"
HANDLER = "handlers.examples:make_thumbnail"

# name -> (VisibilityTimeout, MessageRetentionPeriod, maxReceiveCount) in video-site.yaml
VIDEO_SITE_QUEUES = {
    "t-video-processing": ("900", "345600", 3),
    "t-thumbnail-generation": ("300", "86400", 3),
    "t-email": ("60", "172800", 5),
    "t-analytics": ("30", "86400", 2),
}


@pytest.fixture
def prefix(monkeypatch) -> str:
    monkeypatch.setenv("QUEUE_PREFIX", "t")
    return "t"


def attributes(sqs, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def queue_names(sqs) -> set[str]:
    return {url.rsplit("/", 1)[-1] for url in sqs.list_queues().get("QueueUrls", [])}


def test_apply_creates_exactly_the_declared_queues_with_their_attributes(sqs, prefix, capsys):
    code, out, _ = run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))
    assert code == 0, out
    assert "8 queue(s) created or updated" in out
    assert queue_names(sqs) == set(VIDEO_SITE_QUEUES) | {f"{q}-dlq" for q in VIDEO_SITE_QUEUES}
    for name, (visibility, retention, max_receive) in VIDEO_SITE_QUEUES.items():
        source, dlq = attributes(sqs, name), attributes(sqs, f"{name}-dlq")
        assert source["VisibilityTimeout"] == visibility
        assert source["MessageRetentionPeriod"] == retention
        assert source["ReceiveMessageWaitTimeSeconds"] == "20"
        policy = json.loads(source["RedrivePolicy"])
        assert policy["deadLetterTargetArn"] == dlq["QueueArn"]
        assert int(policy["maxReceiveCount"]) == max_receive
        assert dlq["MessageRetentionPeriod"] == "1209600"
        assert "RedrivePolicy" not in dlq
    assert attributes(sqs, "t-video-processing")["SqsManagedSseEnabled"] == "true"


def test_a_second_apply_changes_nothing_and_says_so(sqs, prefix, capsys):
    assert run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))[0] == 0
    before = {name: attributes(sqs, name) for name in queue_names(sqs)}
    code, out, _ = run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))
    assert code == 0
    assert "no changes (8 queue(s) as declared)" in out
    assert "applied" not in out
    after = {name: attributes(sqs, name) for name in queue_names(sqs)}
    assert after == before  # LastModifiedTimestamp included: nothing was written
    assert (
        apply_config(load_config(VIDEO_SITE, import_handlers=False), SqsClient(SqsSettings())) == []
    )


def test_drifted_attributes_are_planned_then_corrected(sqs, prefix, capsys):
    assert run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))[0] == 0
    email = sqs.get_queue_url(QueueName="t-email")["QueueUrl"]
    dlq_arn = attributes(sqs, "t-email-dlq")["QueueArn"]
    sqs.set_queue_attributes(
        QueueUrl=email,
        Attributes={
            "VisibilityTimeout": "5",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 9}),
        },
    )
    code, out, _ = run_cli(capsys, "queues", "plan", "-c", str(VIDEO_SITE))
    assert code == 0
    assert "~ update t-email" in out
    assert "VisibilityTimeout: 5 -> 60" in out
    assert "plan: 0 to create, 1 to update, 7 unchanged" in out
    assert attributes(sqs, "t-email")["VisibilityTimeout"] == "5"  # plan changes nothing

    code, out, _ = run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))
    assert code == 0
    assert "1 queue(s) created or updated (t-email)" in out
    fixed = attributes(sqs, "t-email")
    assert fixed["VisibilityTimeout"] == "60"
    assert json.loads(fixed["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": 5,
    }
    assert "no changes" in run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))[1]


def test_redrive_policies_compare_by_meaning():
    arn = "arn:aws:sqs:us-east-1:123456789012:jobs-dlq"
    desired = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
    assert _same(
        "RedrivePolicy", f'{{"maxReceiveCount":"3","deadLetterTargetArn":"{arn}"}}', desired
    )
    assert not _same(
        "RedrivePolicy", f'{{"deadLetterTargetArn":"{arn}","maxReceiveCount":4}}', desired
    )
    assert _same("SqsManagedSseEnabled", "True", "true")
    assert _same("MessageRetentionPeriod", "0345600", "345600")


@pytest.mark.parametrize(
    ("existing", "declared", "expected"),
    [
        ("orders.fifo", "orders.fifo", "it is a standard queue and the YAML makes it FIFO"),
        ("orders", "orders", "it is a FIFO queue and the YAML makes it standard"),
    ],
)
def test_changing_a_queue_type_is_refused_before_anything_changes(
    sqs, tmp_path, capsys, existing, declared, expected
):
    # Real SQS ties the type to the name; moto does not, which lets us build the conflict.
    url = sqs.create_queue(QueueName=existing)["QueueUrl"]
    if not existing.endswith(".fifo"):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "true"})
    other = sqs.create_queue(QueueName="other", Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
    config = write_config(
        tmp_path / "w.yaml",
        [
            {"name": "other", "queue": "other", "handler": HANDLER, "visibility_timeout": 60},
            {"name": "orders", "queue": declared, "handler": HANDLER},
        ],
    )
    for verb in ("plan", "apply"):
        code, out, _ = run_cli(capsys, "queues", verb, "-c", str(config))
        assert code == 2, out
        assert expected in out
        assert "SQS cannot change a queue's type" in out
        assert "nothing was changed" in out
    assert queue_names(sqs) == {existing, "other"}
    other_now = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["VisibilityTimeout"])
    assert other_now["Attributes"]["VisibilityTimeout"] == "5"


def test_fifo_queues_are_created_with_fifo_settings(sqs, tmp_path, capsys):
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "orders",
                "queue": "orders.fifo",
                "handler": HANDLER,
                "queue_attributes": {"ContentBasedDeduplication": True, "DelaySeconds": 2},
                "dead_letter": {"queue": "orders-dlq.fifo", "max_receive_count": 4},
            }
        ],
    )
    assert run_cli(capsys, "queues", "apply", "-c", str(config))[0] == 0
    source, dlq = attributes(sqs, "orders.fifo"), attributes(sqs, "orders-dlq.fifo")
    assert (source["FifoQueue"], dlq["FifoQueue"]) == ("true", "true")
    assert (source["ContentBasedDeduplication"], source["DelaySeconds"]) == ("true", "2")
    assert json.loads(source["RedrivePolicy"])["deadLetterTargetArn"] == dlq["QueueArn"]
    assert "no changes" in run_cli(capsys, "queues", "apply", "-c", str(config))[1]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"queue": "orders", "queue_attributes": {"FifoQueue": True}},
            "queue_attributes.FifoQueue: a FIFO queue's name must end in .fifo",
        ),
        (
            {"queue": "orders.fifo", "queue_attributes": {"FifoQueue": False}},
            "queue_attributes.FifoQueue: a FIFO queue's name must end in .fifo",
        ),
        (
            {"queue_attributes": {"MessageRetentionPeriode": 60}},
            "MessageRetentionPeriode: not an SQS queue attribute"
            " (did you mean 'MessageRetentionPeriod'?)",
        ),
        (
            {"queue_attributes": {"MessageRetentionPeriod": 10}},
            "MessageRetentionPeriod: expected a whole number from 60 to 1209600 (got 10)",
        ),
        (
            {"queue_attributes": {"SqsManagedSseEnabled": "yes"}},
            "SqsManagedSseEnabled: expected true or false",
        ),
        (
            {"queue_attributes": {"VisibilityTimeout": 30}},
            "VisibilityTimeout: set visibility_timeout on the binding instead",
        ),
        (
            {"queue_attributes": {"ContentBasedDeduplication": True}},
            "only FIFO queues (names ending in .fifo) take ContentBasedDeduplication",
        ),
        (
            {"dead_letter": {"queue": "q-dlq", "queue_attributes": {"Bogus": 1}}},
            "bindings[0].dead_letter.queue_attributes.Bogus: not an SQS queue attribute",
        ),
    ],
)
def test_queue_attributes_are_validated_with_the_key_path(tmp_path, entry, message):
    binding = {"name": "orders", "queue": "q", "handler": HANDLER, **entry}
    config = load_config(write_config(tmp_path / "w.yaml", [binding]), import_handlers=False)
    with pytest.raises(ConfigError) as caught:
        desired_queues(config)
    assert message in str(caught.value)
    assert str(tmp_path / "w.yaml") in str(caught.value)


def test_two_bindings_sharing_a_dlq_must_agree_on_it(tmp_path):
    dlq = {"queue": "shared-dlq", "queue_attributes": {"MessageRetentionPeriod": 600}}
    other = {**dlq, "queue_attributes": {"MessageRetentionPeriod": 900}}
    bindings = [
        {"name": "a", "queue": "a", "handler": HANDLER, "dead_letter": dlq},
        {"name": "b", "queue": "b", "handler": HANDLER, "dead_letter": dlq},
    ]
    config = load_config(write_config(tmp_path / "ok.yaml", bindings), import_handlers=False)
    assert [s.name for s in desired_queues(config)] == ["shared-dlq", "a", "b"]
    bindings[1]["dead_letter"] = other
    config = load_config(write_config(tmp_path / "bad.yaml", bindings), import_handlers=False)
    with pytest.raises(ConfigError, match="MessageRetentionPeriod=900 here but"):
        desired_queues(config)


def test_queues_given_by_url_are_checked_but_never_created_or_changed(
    sqs, sqs_endpoint, tmp_path, capsys
):
    url = f"{sqs_endpoint}/123456789012/theirs"
    config = write_config(
        tmp_path / "w.yaml",
        [
            {"name": "theirs", "queue": url, "handler": HANDLER, "visibility_timeout": 60},
            {"name": "ours", "queue": "ours", "handler": HANDLER},
        ],
    )
    code, out, _ = run_cli(capsys, "queues", "apply", "-c", str(config))
    assert code == 1
    assert "? missing theirs" in out
    assert f"queue(s) given by URL do not exist: {url}" in out
    assert queue_names(sqs) == set()  # not even ours: nothing is changed

    sqs.create_queue(QueueName="theirs", Attributes={"VisibilityTimeout": "5"})
    code, out, _ = run_cli(capsys, "queues", "apply", "-c", str(config))
    assert code == 0, out
    assert "! drift theirs" in out and "VisibilityTimeout: 5 -> 60" in out
    assert attributes(sqs, "theirs")["VisibilityTimeout"] == "5"
    assert attributes(sqs, "ours")["VisibilityTimeout"] == "300"


def test_status_reports_depths_per_binding_and_dlq(sqs, prefix, capsys):
    assert run_cli(capsys, "queues", "apply", "-c", str(VIDEO_SITE))[0] == 0
    email = sqs.get_queue_url(QueueName="t-email")["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName="t-email-dlq")["QueueUrl"]
    for index in range(3):
        sqs.send_message(QueueUrl=email, MessageBody=str(index))
    sqs.send_message(QueueUrl=email, MessageBody="later", DelaySeconds=60)
    sqs.send_message(QueueUrl=dlq, MessageBody="dead")
    sqs.send_message(QueueUrl=dlq, MessageBody="dead too")
    sqs.receive_message(QueueUrl=email, MaxNumberOfMessages=1, VisibilityTimeout=60)

    code, out, _ = run_cli(capsys, "queues", "status", "-c", str(VIDEO_SITE), "--json")
    assert code == 0
    rows = {row["binding"]: row for row in json.loads(out)["bindings"]}
    assert rows["email"]["messages"] == {"visible": 2, "in_flight": 1, "delayed": 1}
    assert rows["email"]["dead_letter_queue"] == "t-email-dlq"
    assert rows["email"]["dead_letter_messages"] == {"visible": 2, "in_flight": 0, "delayed": 0}
    assert rows["analytics"]["messages"] == {"visible": 0, "in_flight": 0, "delayed": 0}

    code, out, _ = run_cli(capsys, "queues", "status", "-c", str(VIDEO_SITE))
    assert code == 0
    email_line = next(line for line in out.splitlines() if line.startswith("email "))
    assert email_line.split() == ["email", "t-email", "2", "1", "1", "t-email-dlq", "2", "n/a"]


def test_status_of_missing_queues_fails_with_exit_1(sqs, prefix, capsys):
    code, out, _ = run_cli(capsys, "queues", "status", "-c", str(VIDEO_SITE))
    assert code == 1
    assert "missing" in out
    assert "queue(s) do not exist: t-video-processing, t-video-processing-dlq" in out


def test_status_help_says_why_there_is_no_message_age(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "queues", "status", "--help")
    assert "no age-of-oldest-message attribute" in capsys.readouterr().out


def test_local_mode_can_create_queues_with_apply_config(sqs, prefix):
    client = SqsClient(SqsSettings())
    config = load_config(VIDEO_SITE, import_handlers=False)
    created = apply_config(config, client)
    assert created[:4] == [f"{q}-dlq" for q in VIDEO_SITE_QUEUES]
    assert created[4:] == list(VIDEO_SITE_QUEUES)
    assert queue_counts(sqs, sqs.get_queue_url(QueueName="t-email")["QueueUrl"])["visible"] == 0


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads_and_plans(path):
    config = load_config(path)  # imports the handlers too, as `sqs-supervisor check` does
    specs = desired_queues(config)
    assert all(s.managed for s in specs)
    assert all(s.attributes.get("MessageRetentionPeriod") for s in specs)


def test_the_examples_are_the_ones_promised():
    names = {p.name for p in EXAMPLES}
    assert {"content-generator.yaml", "video-download.yaml", "video-site.yaml"} <= names
    download = load_config(REPO / "config" / "examples" / "video-download.yaml")
    assert [(b.name, b.processes) for b in download.bindings] == [("video-download", 2)]
    content = load_config(REPO / "config" / "examples" / "content-generator.yaml")
    assert [b.name for b in content.bindings] == ["articles", "images", "videos"]
