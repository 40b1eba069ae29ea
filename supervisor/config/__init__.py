"""The YAML contract: load, expand variables, merge defaults, validate, import handlers.

``schema`` holds the models, ``load`` reads a file, ``locate`` words the errors and
``handlers`` imports handler callables; callers import from here, not from those modules.
"""

from supervisor.config.handlers import is_async, resolve_handler
from supervisor.config.load import load_config
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
    queue_name,
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
    "is_async",
    "load_config",
    "queue_name",
    "resolve_handler",
]
