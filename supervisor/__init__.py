"""sqs-supervisor: pre-fork worker pools consuming AWS SQS queues."""

from supervisor.errors import MessageDecodeError, PermanentError, RetryLater
from supervisor.message import Context, Message

__all__ = ["Context", "Message", "MessageDecodeError", "PermanentError", "RetryLater"]
__version__ = "0.1.0"
