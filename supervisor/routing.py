"""Several job types on one queue: a binding's ``handlers:`` maps each type to its handler.

The type is the producer envelope's ``type`` (``Producer.enqueue(..., job_type=...)``), or for
a raw message its ``JobType`` message attribute. Message content only ever selects among the
handlers the YAML names; a type with none (and no ``"*"`` entry) is a permanent failure: the
message goes to the DLQ after one attempt with an error naming its type and the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from supervisor.errors import PermanentError
from supervisor.message import Context, Message

JOB_TYPE_ATTRIBUTE = "JobType"
FALLBACK = "*"  # the entry that takes every type the mapping does not name
UNKNOWN = "unknown"  # the metric label of a type no entry takes: types stay a bounded set

Handler = Callable[..., Any]


class UnknownJobType(PermanentError):
    """A message whose job type the binding has no handler for."""


def job_type_of(message: Message) -> str | None:
    job_type = message.job_type
    if job_type is None:
        value = message.message_attributes.get(JOB_TYPE_ATTRIBUTE)
        job_type = value if isinstance(value, str) and value else None
    return job_type


class TypeRouter:
    """A handler that hands each message to the handler of its job type."""

    def __init__(self, binding: str, routes: Mapping[str, Handler]) -> None:
        self.binding = binding
        self.routes = dict(routes)
        self.fallback = self.routes.get(FALLBACK)
        self.known = sorted(t for t in self.routes if t != FALLBACK)

    def label(self, message: Message) -> str:
        """The type as a metric label: a YAML key, ``*`` for the fallback, else ``unknown``."""
        job_type = job_type_of(message)
        if job_type is not None and job_type != FALLBACK and job_type in self.routes:
            return job_type
        return FALLBACK if self.fallback is not None else UNKNOWN

    def resolve(self, message: Message) -> Handler:
        job_type = job_type_of(message)
        handler = self.routes.get(job_type) if job_type and job_type != FALLBACK else None
        handler = handler or self.fallback
        if handler is None:
            shown = repr(job_type) if job_type else "(none: no envelope type, no JobType attribute)"
            raise UnknownJobType(
                f"binding {self.binding!r} has no handler for job type {shown};"
                f" it knows {', '.join(self.known)}"
            )
        return handler

    def __call__(self, message: Message, ctx: Context) -> Any:
        return self.resolve(message)(message, ctx)


class AsyncTypeRouter(TypeRouter):
    """The same, for a binding whose handlers are all ``async def``."""

    async def __call__(self, message: Message, ctx: Context) -> Any:
        return await self.resolve(message)(message, ctx)
