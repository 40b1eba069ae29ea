"""How long a failed message waits before SQS offers it again."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from supervisor.config import RetrySettings
from supervisor.sqs import SQS_MAX_VISIBILITY

JITTER = 0.2  # delays land in [80 %, 100 %] of the nominal backoff, so retries spread out


def retry_delay(
    attempt: int,
    policy: RetrySettings,
    *,
    at_least: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> int:
    """Seconds of visibility for the next try: base * 2^(attempt-1), capped, with jitter.

    ``at_least`` is a floor no jitter goes under (an HTTP ``Retry-After``, say).
    """
    exponent = max(0, attempt - 1)
    nominal = min(policy.max_seconds, policy.base_seconds * 2 ** min(exponent, 32))
    jittered = nominal * (1 - JITTER * rand())
    return min(SQS_MAX_VISIBILITY, math.ceil(max(jittered, at_least)))
