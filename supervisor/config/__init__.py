"""The YAML contract: load, expand variables, merge defaults, validate, import handlers."""

from supervisor.config.schema import (
    SQS_MAX_VISIBILITY,
    Binding,
    BindingSettings,
    Config,
    DeadLetter,
    Handler,
    HealthSettings,
    JobsSettings,
    MetricsSettings,
    RetrySettings,
    SqsSettings,
    load_config,
    queue_name,
    resolve_handler,
)

__all__ = [
    "SQS_MAX_VISIBILITY",
    "Binding",
    "BindingSettings",
    "Config",
    "DeadLetter",
    "Handler",
    "HealthSettings",
    "JobsSettings",
    "MetricsSettings",
    "RetrySettings",
    "SqsSettings",
    "load_config",
    "queue_name",
    "resolve_handler",
]
