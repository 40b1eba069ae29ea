"""sqs-supervisor: pre-fork worker pools consuming AWS SQS queues."""

from supervisor.errors import MessageDecodeError, PermanentError, RetryLater, SoftTimeout
from supervisor.message import Context, Message

__all__ = [
    "Context",
    "EnqueueError",
    "Message",
    "MessageDecodeError",
    "PermanentError",
    "Producer",
    "RetryLater",
    "SoftTimeout",
    "enqueue",
    "enqueue_many",
]
__version__ = "0.1.0"

_PRODUCER_NAMES = {"EnqueueError", "Producer", "enqueue", "enqueue_many"}


def __getattr__(name: str) -> object:
    # The producer pulls in boto3; handlers that only need Message should not pay for it.
    if name in _PRODUCER_NAMES:
        from supervisor.jobs import producer

        return getattr(producer, name)
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
