"""``handlers.http:post``: deliver each message to an HTTP endpoint, like Elastic Beanstalk's sqsd.

The body is POSTed exactly as sent, with the message's metadata in ``X-Sqs-*`` headers. The
answer decides the message's fate: 2xx deletes it (a JSON answer becomes the result), 408, 429
and 5xx retry it (honouring ``Retry-After``), any other 4xx sends it to the dead-letter queue.
Connection errors and timeouts retry. Secrets come from environment variables named in the
YAML, read at call time, and no header is ever logged.

```yaml
handler: handlers.http:post
options:
  url: https://api.internal/jobs
  timeout: 60                      # read timeout, seconds; never past the binding's timeout
  headers: {X-Team: video}
  auth: {bearer_token_env: JOBS_API_TOKEN}
```
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from handlers._options import reject_unknown
from handlers.decode import isoformat, text_attributes
from supervisor import Context, Message, PermanentError, RetryLater

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024  # a larger 2xx answer is not parsed into the result
SNIPPET_CHARS = 200  # how much of an error answer goes into the exception
DEADLINE_MARGIN = 1.0  # leave the worker this long after a read timeout to settle the message
MAX_RETRY_AFTER = 43_200  # SQS's visibility cap
RETRYABLE = frozenset({408, 429})
USER_AGENT = "sqs-supervisor"

_KEYS = ("url", "content_type", "timeout", "connect_timeout", "headers", "auth")
_AUTH_SHAPES = ({"bearer_token_env"}, {"basic_user_env", "basic_password_env"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 header field name
_PLAIN_VALUE = re.compile(r"^[\x20-\x7e\t]*$")

_session: requests.Session | None = None
_session_pid = 0


class HttpUnavailable(Exception):
    """The endpoint could not take the message now: retried with the binding's backoff."""


class MissingSecret(Exception):
    """An environment variable named in ``auth`` is unset: a deployment error, so retried."""


@dataclass(frozen=True)
class _Options:
    url: str
    content_type: str = "application/json"
    timeout: float = 60.0
    connect_timeout: float = 5.0
    headers: dict[str, str] = field(default_factory=dict)
    auth: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> _Options:
        reject_unknown(options, _KEYS, "")
        url = options.get("url")
        if not url:
            raise ValueError("url is required")
        if not isinstance(url, str):
            raise ValueError("url must be a string")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL (got {url!r})")
        if parts.username or parts.password:
            raise ValueError("url must not contain credentials; use auth with *_env variables")
        content_type = options.get("content_type", cls.content_type)
        if not isinstance(content_type, str) or not _PLAIN_VALUE.match(content_type):
            raise ValueError("content_type must be a string (a media type)")
        return cls(
            url=url,
            content_type=content_type,
            timeout=_seconds(options, "timeout", cls.timeout),
            connect_timeout=_seconds(options, "connect_timeout", cls.connect_timeout),
            headers=_headers(options.get("headers", {})),
            auth=_auth(options.get("auth", {})),
        )


def post(message: Message, ctx: Context) -> Any:
    """POST the body to ``options.url``; the JSON of a 2xx answer is the result, else None."""
    opts = _Options.parse(ctx.options)
    headers = {
        "Content-Type": opts.content_type,
        "User-Agent": USER_AGENT,
        **opts.headers,
        **_metadata_headers(message, ctx),
        **_auth_headers(opts.auth),
    }
    timeout = (opts.connect_timeout, _read_timeout(opts.timeout, ctx.deadline))
    started = time.monotonic()
    try:
        response = _http().post(
            opts.url,
            data=message.body.encode(),
            headers=headers,
            timeout=timeout,
            allow_redirects=False,  # a redirected POST may silently become a GET
            stream=True,  # so that no answer is read into memory past our caps
        )
        with response:
            return _outcome(response, opts.url, ctx, time.monotonic() - started)
    except requests.Timeout as exc:
        raise HttpUnavailable(f"POST {opts.url} timed out: {exc}") from exc
    except requests.RequestException as exc:
        raise HttpUnavailable(f"POST {opts.url} failed: {exc}") from exc


def validate_options(options: dict[str, Any]) -> None:
    """Called by config loading: raise ValueError describing the first bad option."""
    _Options.parse(options)


post.validate_options = validate_options  # type: ignore[attr-defined]


def _outcome(response: requests.Response, url: str, ctx: Context, elapsed: float) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        ctx.logger.debug("POST %s answered %d in %.3f s", url, status, elapsed)
        return _json_result(response, ctx)
    problem = f"POST {url} answered {status} {response.reason or ''}".rstrip()
    snippet = _snippet(response)
    if snippet:
        problem = f"{problem}: {snippet}"
    if status in RETRYABLE or status >= 500:
        delay = _retry_after(response.headers.get("Retry-After"))
        if delay is not None:
            raise RetryLater(problem, delay_seconds=delay)
        raise HttpUnavailable(problem)
    if 400 <= status < 500:
        raise PermanentError(problem)
    # 1xx or 3xx: the URL or the server is misconfigured, which no message can be blamed for.
    location = response.headers.get("Location")
    raise HttpUnavailable(f"{problem} (redirect to {location})" if location else problem)


def _json_result(response: requests.Response, ctx: Context) -> Any:
    # Read even an answer we don't keep: a fully read answer leaves the connection reusable.
    try:
        body = _read(response, MAX_RESULT_BYTES + 1)
    except requests.RequestException as exc:
        # The status already said "accepted": retrying would deliver the message twice.
        ctx.logger.warning(
            "answer %d could not be read (%s); no result kept", response.status_code, exc
        )
        return None
    if "json" not in response.headers.get("Content-Type", "").lower():
        return None
    if len(body) > MAX_RESULT_BYTES:
        ctx.logger.info("answer larger than %d bytes; not kept as the result", MAX_RESULT_BYTES)
        return None
    try:
        return json.loads(body)
    except ValueError:
        ctx.logger.info("answer declared JSON but did not parse; no result kept")
        return None


def _snippet(response: requests.Response) -> str:
    text = _read(response, SNIPPET_CHARS * 4).decode(errors="replace")
    return " ".join(text.split())[:SNIPPET_CHARS]


def _read(response: requests.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the answer, without reading the rest."""
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _metadata_headers(message: Message, ctx: Context) -> dict[str, str]:
    headers = {
        "X-Sqs-Message-Id": message.message_id,
        "X-Sqs-Queue": ctx.queue_url.rstrip("/").rsplit("/", 1)[-1],
        "X-Sqs-Receive-Count": str(message.receive_count),
    }
    first_received, sent = isoformat(message.first_received_at), isoformat(message.sent_at)
    if first_received:
        headers["X-Sqs-First-Received-At"] = first_received
    if sent:
        headers["X-Sqs-Sent-At"] = sent
    for name, value in text_attributes(message).items():
        if _TOKEN.match(name):
            headers[f"X-Sqs-Attr-{name}"] = _header_value(value)
    job_id = message.job_id
    if job_id:
        headers["X-Sqs-Job-Id"] = _header_value(job_id)
    return headers


def _header_value(value: str) -> str:
    """Printable ASCII as is; anything else (newlines, non-ASCII) percent-encoded as UTF-8."""
    if _PLAIN_VALUE.match(value):
        return value
    return quote(value, safe="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%"))


def _auth_headers(auth: Mapping[str, str]) -> dict[str, str]:
    if not auth:
        return {}
    values = {key: _secret(key, name) for key, name in auth.items()}
    if "bearer_token_env" in values:
        return {"Authorization": f"Bearer {values['bearer_token_env']}"}
    pair = f"{values['basic_user_env']}:{values['basic_password_env']}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


def _secret(key: str, name: str) -> str:
    value = os.environ.get(name)
    if not value:
        log.error("auth.%s names environment variable %s, which is not set", key, name)
        raise MissingSecret(f"environment variable {name} (auth.{key}) is not set")
    return value


def _read_timeout(timeout: float, deadline: float | None) -> float:
    if deadline is None:
        return timeout
    return max(0.1, min(timeout, deadline - time.monotonic() - DEADLINE_MARGIN))


def _http() -> requests.Session:
    """One pooled session per process: children must not share the parent's sockets."""
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session, _session_pid = requests.Session(), os.getpid()
    return _session


# -- option validation --------------------------------------------------------------------------


def _seconds(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds (got {value!r})")
    return float(value)


def _headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise ValueError("headers must be a mapping of header name to value")
    checked = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"headers.{name} must be a string")
        if not _PLAIN_VALUE.match(str(value)):
            raise ValueError(f"headers.{name} must be printable ASCII on one line")
        checked[name] = str(value)
    return checked


def _auth(auth: Any) -> dict[str, str]:
    known = tuple(sorted(set().union(*_AUTH_SHAPES)))
    reject_unknown(auth, known, "auth.")
    if not auth:
        return {}
    if set(auth) not in _AUTH_SHAPES:
        raise ValueError(
            "auth takes either bearer_token_env, or basic_user_env and basic_password_env"
        )
    for key, name in auth.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(
                f"auth.{key} must name an environment variable (got {name!r}); "
                "secrets are never written in the YAML"
            )
    return dict(auth)
