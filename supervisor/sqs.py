"""Every SQS call goes through here; with observe/cloudwatch.py, the only modules importing boto3.

Clients are created after the fork (in whichever process uses them). Calls raise ``SqsError``
with the operation and error code, so callers can log, count and back off without knowing
botocore's exception zoo. Batch calls return the entries that failed instead of raising.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError

MAX_BATCH = 10
SQS_MAX_VISIBILITY = 43_200  # 12 h: SQS's cap on a message's total visibility
ALL_ATTRIBUTES = ["All"]
# The receipt no longer holds the message: deleted already, or received again by someone else.
RECEIPT_GONE = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})
# Queue depth by state: the names the metrics and `queues status` use, and SQS's attributes.
DEPTH_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}
MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
# Per message (body and attributes) and per SendMessageBatch call (all entries together).
MAX_MESSAGE_BYTES = 1_048_576
MAX_BATCH_BYTES = 1_048_576
# What a loopback endpoint (moto, LocalStack) gets when the user has no credentials: it checks
# none, but botocore refuses to sign without some. Never used for any other endpoint.
LOOPBACK_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class SqsError(Exception):
    """An SQS call failed: ``operation`` and ``code`` say which and why (for logs and metrics)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} failed: {code}: {message}")
        self.operation = operation
        self.code = code

    @property
    def queue_missing(self) -> bool:
        """The queue does not exist: retrying won't help (unlike a connection error)."""
        return self.code in MISSING_QUEUE_CODES


ErrorListener = Callable[[SqsError], None]


class SqsSettings(Protocol):
    """Where to reach SQS: the YAML's ``sqs:`` section (``config.SqsSettings``) fits this."""

    @property
    def region(self) -> str | None: ...

    @property
    def endpoint_url(self) -> str | None: ...


class BatchEntry(NamedTuple):
    """One entry of a batch call: ``key`` is ours (a message id), echoed back on failure.
    A tuple: one is made per message settled, and a frozen dataclass takes twice as long."""

    key: str
    receipt_handle: str
    visibility_timeout: int = 0


def endpoint_url(settings: SqsSettings) -> str | None:
    """The YAML's endpoint, else the standard AWS variables (boto3 reads them too)."""
    return (
        settings.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_SQS")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def region(settings: SqsSettings) -> str:
    return (
        settings.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )


def is_loopback(url: str | None) -> bool:
    """``url`` names this machine (127.0.0.0/8, ::1, localhost): never AWS, so credentials
    made up for it give nothing away and can't reach a real account."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: resolving it could say anything, so it is not trusted
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def credentials_for(url: str | None) -> dict[str, str]:
    """The dummy credentials for a loopback ``url`` when the user has none (else boto3 would
    fail with NoCredentialsError before sending); {} otherwise: the user's own always win."""
    if is_loopback(url) and shared_session().get_credentials() is None:
        return dict(LOOPBACK_CREDENTIALS)
    return {}


def message_size(entry: Mapping[str, Any]) -> int:
    """An entry's size as SQS counts it against its limits: body and attributes, in bytes."""
    size = len(entry["MessageBody"].encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        data = value.get("BinaryValue") or value.get("StringValue", "").encode()
        size += len(name.encode()) + len(value["DataType"].encode()) + len(data)
    return size


_session: boto3.session.Session | None = None


def shared_session() -> boto3.session.Session:
    """One boto3 session per process tree: the parent loads the SQS service model into it
    before forking, so children create their clients from a warm, shared cache instead of
    each parsing the model again (megabytes per child). Clients are still per process."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def _refuse_truncated(response_dict: dict[str, Any], **_: Any) -> None:
    """Fail an answer cut short on the way. botocore turns off urllib3's Content-Length check
    for ordinary answers (botocore issue #3124), so a connection dropped mid-answer parsed as
    an empty success: a receive "brought nothing" (its messages hidden until their visibility
    lapsed), a batch "had no failures", GetQueueUrl raised KeyError. A cut inside the head is
    the same: http.client takes the hang-up for the head's end, so the answer arrives with an
    empty body and without the Content-Length (or chunked framing) every SQS answer has."""
    headers = response_dict["headers"]
    length = headers.get("content-length")
    body = response_dict["body"]
    if not isinstance(body, bytes | bytearray):
        return  # a streamed body: botocore checks those itself
    if length is not None:
        if len(body) < int(length):
            raise IncompleteReadError(actual_bytes=len(body), expected_bytes=int(length))
    elif not body and "transfer-encoding" not in headers:
        raise IncompleteReadError(
            actual_bytes=0, expected_bytes="unknown (the head ended without a Content-Length)"
        )


class SqsClient:
    """A thin, typed wrapper over one boto3 SQS client (thread-safe, as boto3 clients are)."""

    def __init__(
        self,
        settings: SqsSettings,
        *,
        read_timeout: float = 30,
        connect_timeout: float = 3,
        max_attempts: int = 3,
        on_error: ErrorListener | None = None,
        validate_params: bool = True,
    ) -> None:
        """``validate_params=False`` skips botocore's check of each call's parameters against
        the API model: for a child, whose calls this module builds from a validated config
        and SQS's own answers, that check was about 70 us per receive and delete (45k of a
        child's 918k instructions per message, measured); SQS still refuses a malformed call."""
        endpoint = endpoint_url(settings)
        self._client = shared_session().client(
            "sqs",
            region_name=region(settings),
            endpoint_url=endpoint,
            **credentials_for(endpoint),
            config=BotoConfig(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # total_max_attempts counts the first try; botocore's max_attempts does not.
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                max_pool_connections=20,
                parameter_validation=validate_params,
            ),
        )
        self._client.meta.events.register("before-parse.sqs", _refuse_truncated)
        self._urls: dict[str, str] = {}
        self._methods: dict[str, Callable[..., dict[str, Any]]] = {}
        self._on_error = on_error

    def close(self) -> None:
        """Close its pooled connections. In a forked child this closes only the child's copies
        of the parent's sockets (no shutdown), so the parent's connections stay up."""
        self._client.close()

    # -- queues -------------------------------------------------------------------------------

    def queue_url(self, name_or_url: str) -> str:
        if "://" in name_or_url:
            return name_or_url
        if name_or_url not in self._urls:
            response = self._call("GetQueueUrl", QueueName=name_or_url)
            self._urls[name_or_url] = response["QueueUrl"]
        return self._urls[name_or_url]

    def create_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        response = self._call("CreateQueue", QueueName=name, Attributes=dict(attributes))
        self._urls[name] = response["QueueUrl"]
        return response["QueueUrl"]

    def get_attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        response = self._call("GetQueueAttributes", QueueUrl=url, AttributeNames=list(names))
        return response.get("Attributes", {})

    def set_attributes(self, url: str, attributes: Mapping[str, str]) -> None:
        self._call("SetQueueAttributes", QueueUrl=url, Attributes=dict(attributes))

    # -- messages -----------------------------------------------------------------------------

    def receive(
        self, url: str, *, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[dict[str, Any]]:
        response = self._call(
            "ReceiveMessage",
            QueueUrl=url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=ALL_ATTRIBUTES,
            MessageAttributeNames=ALL_ATTRIBUTES,
        )
        return response.get("Messages", [])

    def send(
        self,
        url: str,
        body: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        delay_seconds: int = 0,
    ) -> str:
        params: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
        params.update(_send_options(attributes, group_id, dedup_id, delay_seconds))
        return self._call("SendMessage", **params)["MessageId"]

    def send_batch(self, url: str, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Send up to 10 prepared entries (``Id``, ``MessageBody``, ...); returns the failures."""
        response = self._call("SendMessageBatch", QueueUrl=url, Entries=list(entries))
        return response.get("Failed", [])

    def delete_batch(self, url: str, entries: Iterable[BatchEntry]) -> dict[str, str]:
        """Delete messages, 10 per call; returns {key: error code} of those that failed."""
        return self._batched(
            "DeleteMessageBatch",
            url,
            entries,
            lambda index, e: {"Id": str(index), "ReceiptHandle": e.receipt_handle},
        )

    def change_visibility_batch(self, url: str, entries: Iterable[BatchEntry]) -> dict[str, str]:
        """Set each entry's visibility timeout, 10 per call; returns {key: error code} of
        those that failed (``RECEIPT_GONE`` means the message is no longer held with it)."""
        return self._batched(
            "ChangeMessageVisibilityBatch",
            url,
            entries,
            lambda index, e: {
                "Id": str(index),
                "ReceiptHandle": e.receipt_handle,
                "VisibilityTimeout": e.visibility_timeout,
            },
        )

    def purge(self, url: str) -> None:
        self._call("PurgeQueue", QueueUrl=url)

    def start_message_move_task(self, source_arn: str, destination_arn: str) -> str:
        response = self._call(
            "StartMessageMoveTask", SourceArn=source_arn, DestinationArn=destination_arn
        )
        return response["TaskHandle"]

    def list_message_move_tasks(
        self, source_arn: str, max_results: int = 1
    ) -> list[dict[str, Any]]:
        response = self._call("ListMessageMoveTasks", SourceArn=source_arn, MaxResults=max_results)
        return response.get("Results", [])

    # -- plumbing -----------------------------------------------------------------------------

    def _batched(
        self,
        operation: str,
        url: str,
        entries: Iterable[BatchEntry],
        build: Callable[[int, BatchEntry], dict[str, Any]],
    ) -> dict[str, str]:
        pending = list(entries)
        failed: dict[str, str] = {}
        for start in range(0, len(pending), MAX_BATCH):
            chunk = pending[start : start + MAX_BATCH]
            try:
                response = self._call(
                    operation, QueueUrl=url, Entries=[build(i, e) for i, e in enumerate(chunk)]
                )
            except SqsError as exc:
                failed.update((e.key, exc.code) for e in chunk)
                continue
            for failure in response.get("Failed", []):
                failed[chunk[int(failure["Id"])].key] = failure.get("Code", "Unknown")
        return failed

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        method = self._methods.get(operation)
        if method is None:
            method = self._methods[operation] = getattr(self._client, _snake(operation))
        try:
            return method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            failure = SqsError(operation, error.get("Code", "Unknown"), error.get("Message", ""))
        except BotoCoreError as exc:
            failure = SqsError(operation, type(exc).__name__, str(exc))
        if self._on_error is not None:
            self._on_error(failure)
        raise failure


def _send_options(
    attributes: Mapping[str, Any] | None,
    group_id: str | None,
    dedup_id: str | None,
    delay_seconds: int,
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if attributes:
        options["MessageAttributes"] = encode_attributes(attributes)
    if group_id:
        options["MessageGroupId"] = group_id
    if dedup_id:
        options["MessageDeduplicationId"] = dedup_id
    if delay_seconds:
        options["DelaySeconds"] = delay_seconds
    return options


def send_entry(
    key: str,
    body: str,
    *,
    attributes: Mapping[str, Any] | None = None,
    group_id: str | None = None,
    dedup_id: str | None = None,
    delay_seconds: int = 0,
) -> dict[str, Any]:
    """One ``SendMessageBatch`` entry."""
    return {"Id": key, "MessageBody": body} | _send_options(
        attributes, group_id, dedup_id, delay_seconds
    )


def encode_attributes(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Plain Python values to SQS MessageAttributes (str, int/float as Number, bytes)."""
    encoded: dict[str, dict[str, Any]] = {}
    for name, value in attributes.items():
        if isinstance(value, bytes):
            encoded[name] = {"DataType": "Binary", "BinaryValue": value}
        elif isinstance(value, bool) or not isinstance(value, int | float):
            encoded[name] = {"DataType": "String", "StringValue": str(value)}
        else:
            encoded[name] = {"DataType": "Number", "StringValue": str(value)}
    return encoded


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
