"""The shape of the YAML file: one pydantic model per section, and the validated ``Config``.

Only types and their own invariants live here, so a new key is one field on one model; loading,
error wording and handler importing are in ``load``, ``locate`` and ``handlers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from supervisor.errors import ConfigError
from supervisor.sqs import SQS_MAX_VISIBILITY

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
# A validator, not a Field pattern, so a mistake reads "expected module:function", not a regex.
_HANDLER_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_JOB_TYPE = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9_.:/-]{0,79}")

Handler = Callable[..., Any]


MAX_CONCURRENCY = 1000  # jobs at once per child; past this, add processes instead


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqsSettings(_Strict):
    region: str | None = None
    endpoint_url: str | None = None


class MetricsSettings(_Strict):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9102, ge=0, le=65535)
    queue_poll_seconds: float = Field(15, gt=0, le=3600)
    cloudwatch: bool = False


class HealthSettings(_Strict):
    crash_loop_seconds: float = Field(300, gt=0)
    liveness_timeout: float = Field(60, gt=0)


class JobsSettings(_Strict):
    store: str | None = None
    retention_days: int = Field(30, ge=1)
    http_token: str | None = Field(None, repr=False)


class RetrySettings(_Strict):
    base_seconds: float = Field(10, ge=0, le=SQS_MAX_VISIBILITY)
    max_seconds: float = Field(900, ge=0, le=SQS_MAX_VISIBILITY)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.max_seconds < self.base_seconds:
            raise ValueError("max_seconds must be >= base_seconds")
        return self


class DeadLetter(_Strict):
    queue: str = Field(min_length=1)
    max_receive_count: int = Field(3, ge=1, le=1000)
    queue_attributes: dict[str, str | int | bool] = Field(default_factory=dict)


class BindingSettings(_Strict):
    """What ``defaults`` may set and each binding may override."""

    processes: int = Field(2, ge=0, le=512)
    batch_size: int = Field(10, ge=1, le=10)
    wait_time_seconds: int = Field(20, ge=0, le=20)
    visibility_timeout: int = Field(300, ge=1, le=SQS_MAX_VISIBILITY)
    # What a receive asks for: short, so messages a child dies holding before it could tell
    # the parent come back soon; the heartbeat extends it to visibility_timeout.
    receive_visibility_timeout: int = Field(30, ge=1, le=SQS_MAX_VISIBILITY)
    timeout: float = Field(900, gt=0, le=SQS_MAX_VISIBILITY)
    soft_timeout: float | None = Field(None, gt=0)
    drain_timeout: float = Field(30, ge=0, le=3600)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    max_jobs_per_child: int = Field(0, ge=0)
    max_memory_mb: int = Field(0, ge=0)
    batch: bool = False
    # Jobs at once in each child: threads for a plain handler, tasks for an ``async def`` one.
    concurrency: int = Field(1, ge=1)

    @field_validator("concurrency")
    @classmethod
    def _sane_concurrency(cls, value: int) -> int:
        if value > MAX_CONCURRENCY:
            raise ValueError(
                f"at most {MAX_CONCURRENCY} jobs at once per child; for more, add processes"
            )
        return value


class Binding(BindingSettings):
    name: str = Field(pattern=_NAME_PATTERN)
    queue: str = Field(min_length=1)
    handler: str | None = None
    # Or several job types on one queue: job type (the producer's job_type) -> handler.
    handlers: dict[str, str] | None = None
    dead_letter: DeadLetter | None = None
    queue_attributes: dict[str, str | int | bool] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("handler")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is not None and not _HANDLER_SPEC.fullmatch(value):
            raise ValueError("expected module:function (for example handlers.http:post)")
        return value

    @field_validator("handlers")
    @classmethod
    def _routes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one job type: handler entry")
        for job_type, spec in value.items():
            if not _JOB_TYPE.fullmatch(job_type):
                raise ValueError(
                    f"job type {job_type!r}: letters, digits and _ . : / - (80 at most), or '*'"
                )
            if not _HANDLER_SPEC.fullmatch(spec):
                raise ValueError(
                    f"job type {job_type!r}: expected module:function (for example"
                    " handlers.http:post)"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Binding:
        if (self.handler is None) == (self.handlers is None):
            raise ValueError(
                "give handler (one function) or handlers (job type -> function), not both"
                if self.handler
                else "give handler (one function) or handlers (job type -> function)"
            )
        if self.handlers is not None and self.batch:
            raise ValueError("batch: true takes one handler: a batch would mix job types")
        if self.soft_timeout is not None and self.soft_timeout >= self.timeout:
            raise ValueError("soft_timeout must be shorter than timeout")
        if self.dead_letter and self.is_fifo != self.dead_letter.queue.endswith(".fifo"):
            raise ValueError("a FIFO queue needs a FIFO dead-letter queue (.fifo), and vice versa")
        return self

    @property
    def handler_specs(self) -> dict[str | None, str]:
        """Job type (None for a single handler) -> ``module:function``, as the YAML gives them."""
        if self.handlers is not None:
            return dict(self.handlers)
        assert self.handler is not None
        return {None: self.handler}

    @property
    def initial_visibility(self) -> int:
        """The visibility a receive asks for (never more than ``visibility_timeout``)."""
        return min(self.receive_visibility_timeout, self.visibility_timeout)

    @property
    def is_fifo(self) -> bool:
        return self.queue.endswith(".fifo")

    @property
    def queue_name(self) -> str:
        return queue_name(self.queue)


class _Document(_Strict):
    """The top level. ``defaults`` and ``bindings`` stay raw: they are merged, then validated."""

    sqs: SqsSettings = Field(default_factory=SqsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    defaults: dict[str, Any] = Field(default_factory=dict)
    bindings: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True)
class Config:
    """A validated configuration; ``handlers`` maps binding names to imported callables."""

    path: Path
    sqs: SqsSettings
    metrics: MetricsSettings
    health: HealthSettings
    jobs: JobsSettings
    bindings: tuple[Binding, ...]
    handlers: Mapping[str, Handler]

    def binding(self, name: str) -> Binding:
        for binding in self.bindings:
            if binding.name == name:
                return binding
        known = ", ".join(b.name for b in self.bindings)
        raise ConfigError(f"{self.path}: no binding named {name!r} (bindings: {known})")


def queue_name(queue: str) -> str:
    """A queue's name whether the YAML gives a name or a URL (metrics label queues by name)."""
    return queue.rstrip("/").rsplit("/", 1)[-1]
