"""What the local endpoint's per-request shortcuts (supervisor/ops/localspeed.py) must keep of
moto's answers: receipt handles of 185 lowercase letters, new at every receive; a request id of
moto's 52 letters and digits on every answer; both still drawn from moto's seedable random; a
log that still has every error line; and a moto lacking a patched function refused by name."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from supervisor.ops import localserver, localspeed
from support import LoggedSqs

RECEIPT_HANDLE = re.compile(r"[a-z]{185}")
REQUEST_ID = re.compile(r"[A-Za-z0-9]{52}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedSqs]:
    endpoint = LoggedSqs(tmp_path_factory.mktemp("localserver_speed") / "stderr.log")
    yield endpoint
    endpoint.stop()


@pytest.fixture
def client(server: LoggedSqs) -> Any:
    return server.client()


def seed(server: LoggedSqs, value: int) -> None:
    request = urllib.request.Request(f"{server.url}/moto-api/seed?a={value}", method="POST")
    urllib.request.urlopen(request, timeout=5).close()


def test_receipt_handles_are_185_lowercase_letters_new_at_every_receive(client: Any) -> None:
    url = client.create_queue(QueueName="handles")["QueueUrl"]
    client.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(10)]
    )
    handles = []
    for _ in range(3):  # the same ten messages, received again each time
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        handles += [message["ReceiptHandle"] for message in got["Messages"]]
    assert len(handles) == 30
    assert all(RECEIPT_HANDLE.fullmatch(handle) for handle in handles), handles[:3]
    assert len(set(handles)) == 30
    deleted = client.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(handles[-10:])],
    )
    assert len(deleted["Successful"]) == 10


def test_every_answer_has_a_request_id_of_moto_s_length(client: Any) -> None:
    url = client.create_queue(QueueName="request-ids")["QueueUrl"]
    answers = [client.get_queue_url(QueueName="request-ids") for _ in range(5)]
    answers.append(client.send_message(QueueUrl=url, MessageBody="x"))
    ids = [answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] for answer in answers]
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids), ids
    assert [answer["ResponseMetadata"]["RequestId"] for answer in answers] == ids
    assert len(set(ids)) == len(ids)


def test_moto_seed_still_repeats_request_ids_and_receipt_handles(
    server: LoggedSqs, client: Any
) -> None:
    url = client.create_queue(QueueName="seeded")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="x")
    drawn = []
    for _ in range(2):
        seed(server, 1234)
        got = client.receive_message(QueueUrl=url, VisibilityTimeout=0)
        drawn.append((got["Messages"][0]["ReceiptHandle"], got["ResponseMetadata"]["RequestId"]))
    assert drawn[0] == drawn[1]
    seed(server, 4321)
    got = client.receive_message(QueueUrl=url, VisibilityTimeout=0)
    assert got["Messages"][0]["ReceiptHandle"] != drawn[0][0]


def test_the_log_keeps_error_lines_and_drops_successful_ones(
    server: LoggedSqs, client: Any
) -> None:
    client.create_queue(QueueName="logged")
    client.get_queue_url(QueueName="logged")
    with pytest.raises(ClientError):
        client.get_queue_url(QueueName="no-such-queue")
    log = Path(server.log).read_text(errors="replace")
    assert re.search(r'"[^"]*POST / HTTP/1\.1[^"]*" 400 ', log), log[-2000:]
    assert not re.search(r'" 200 ', log), log[-2000:]


def test_a_moto_without_a_patched_function_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(localspeed.responses, "method_names_from_class")
    monkeypatch.delattr(localspeed.werkzeug_app.DomainDispatcherApplication, "get_backend_for_host")
    with pytest.raises(localserver.UnsupportedMoto) as refused:
        localserver.check_moto()
    assert "core.responses.method_names_from_class" in str(refused.value)
    assert "DomainDispatcherApplication.get_backend_for_host" in str(refused.value)


def test_install_twice_patches_once() -> None:
    localserver.install()
    first = localspeed.werkzeug_app.DomainDispatcherApplication.get_backend_for_host
    localserver.install()
    assert localspeed.werkzeug_app.DomainDispatcherApplication.get_backend_for_host is first
    assert not hasattr(first.__wrapped__, "__wrapped_by_localserver__")  # type: ignore[attr-defined]
    assert localspeed.responses.gen_amzn_requestid_long is localspeed.request_id
