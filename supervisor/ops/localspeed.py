"""Per-request costs of moto's HTTP layer that change nothing it answers.

Measured here on a send-batch-10 + receive-10 + delete-batch-10 over HTTP, server CPU: 9-10 ms
before the first set (the response class's method names listed with ``inspect`` on every
request, the backend found by every service's URL regex twice, request ids and receipt handles
drawn a letter at a time, moto's clock read through two datetimes, a class Flask's debug mode
builds, werkzeug's log line), 7 after. Then moto's response serializer: for every member of
every structure in an answer (some 145 in a receive of ten) it built a context object and tried
six alias providers to find which attribute holds the value; the keys it tries depend only on
the object's class, the member and its shape, so they are worked out once (-11% server CPU).
"""

from __future__ import annotations

import functools
import string
import time
from collections.abc import Callable
from typing import Any

from flask import debughelpers as flask_debughelpers
from moto.core import responses, serialize
from moto.core import utils as moto_utils
from moto.moto_api._internal import mock_random
from moto.moto_server import werkzeug_app
from moto.sqs import models


def _letters(pool: str) -> bytes:
    """A ``bytes.translate`` table from a random byte to a character of ``pool`` (the first
    256 % len(pool) characters a little more likely: 10/256 instead of 9/256 for letters)."""
    return bytes(pool.encode()[byte % len(pool)] for byte in range(256))


LOWERCASE = _letters(string.ascii_lowercase)
ALPHANUMERIC = _letters(string.ascii_letters + string.digits)  # moto's get_random_string


def receipt_handle() -> str:
    """moto's receipt handle (185 random lowercase letters, from its seedable random), drawn
    at once: 1.3 us, not moto's 100 (one ``choice`` per letter) nor 33 (``choices``)."""
    return mock_random.randbytes(185).translate(LOWERCASE).decode()


def request_id(headerdict: dict[str, Any] | None = None) -> str:
    """``gen_amzn_requestid_long``: 52 letters and digits from moto's random, set as the
    ``x-amzn-requestid`` header; 1.3 us, not 33 (one ``choice`` per character)."""
    drawn = mock_random.randbytes(52).translate(ALPHANUMERIC).decode()
    if isinstance(headerdict, dict):
        headerdict["x-amzn-requestid"] = drawn
    return drawn


def unix_time(dt: Any = None, _moto: Callable[..., float] = moto_utils.unix_time) -> float:
    """moto's ``unix_time``, now read from ``time.time()`` (what ``datetime.now`` reads) and
    not through two datetimes: 0.2 us, not 12, under every ``unix_time_millis``."""
    return time.time() if dt is None else _moto(dt)


def backend_for_host(
    get: Callable[[Any, str | None], Any],
) -> Callable[[Any, str | None], Any]:
    """``DomainDispatcherApplication.get_backend_for_host``, remembered per host: the answer
    depends on the host string alone (the URL patterns and moto's modules are fixed)."""

    @functools.wraps(get)
    def cached(self: Any, host: str | None) -> Any:
        found = self.__dict__.setdefault("_localserver_backends", {})
        if host not in found:
            if len(found) >= 1024:  # hosts are a few (S3 buckets could make them many)
                found.clear()
            found[host] = get(self, host)
        return found[host]

    cached.__wrapped_by_localserver__ = True  # type: ignore[attr-defined]
    return cached


def log_request(log: Callable[..., None]) -> Callable[..., None]:
    """werkzeug's ``log_request`` for answers of 400 and above only: the line per successful
    request to stderr (the 4xx and 5xx lines and the tracebacks stay: tests read them)."""

    @functools.wraps(log)
    def errors_only(self: Any, code: int | str = "-", size: int | str = "-") -> None:
        if not str(code).startswith(("1", "2", "3")):
            log(self, code, size)

    errors_only.__wrapped_by_localserver__ = True  # type: ignore[attr-defined]
    return errors_only


def no_debug_files_class(request: Any) -> None:
    """Flask's debug-mode ``attach_enctype_error_multidict``, skipped: it builds a class per
    request with a body, only to word a KeyError on ``request.files[...]`` (moto's apps run
    in debug mode, which also makes their tracebacks reach stderr: that part stays)."""


_moto_get_value = serialize.ResponseSerializer.get_value
_possible_keys: dict[tuple[Any, ...], tuple[str, ...]] = {}


def get_value(self: Any, value: Any, key: str, shape: Any) -> Any:
    """``ResponseSerializer.get_value`` with the keys to try remembered per (class of the
    object, member, shape, the shape's parent): what moto's default alias providers read. Any
    other picker, and one with response transformers (which read the key path), goes to
    moto's own. moto's models and so its shapes are loaded once, so the table stays small."""
    picker = self._value_picker
    if (
        type(picker) is not serialize.XFormedAttributePicker
        or picker.response_transformers
        or picker.alias_providers is not serialize.DEFAULT_ALIAS_PROVIDERS
    ):
        return _moto_get_value(self, value, key, shape)
    cache_key = (type(value), key, shape, getattr(shape, "parent", None))
    keys = _possible_keys.get(cache_key)
    if keys is None:
        context = serialize.AttributePickerContext(
            obj=value,
            key=key,
            shape=shape,
            operation_model=self.operation_model,
            service_model=self.operation_model.service_model,
            key_path=".".join(self.path),
        )
        keys = _possible_keys[cache_key] = tuple(picker.get_possible_keys(context))
    pick, missing = serialize.get_value, serialize.MISSING
    for possible in keys:
        found = pick(value, possible, missing)
        if found is not missing:
            return found
    return None


def missing() -> list[str]:
    """What these shortcuts replace and this moto lacks."""
    used = ("method_names_from_class", "camelcase_to_underscores", "gen_amzn_requestid_long")
    needs = {f"core.responses.{name}": hasattr(responses, name) for name in used}
    # sqs.models.camelcase_to_underscores, which install() hands to core.responses, is
    # localserver.check_moto's to check: localserver patches it.
    needs["sqs.models.generate_receipt_handle"] = callable(
        getattr(models, "generate_receipt_handle", None)
    )
    needs["flask.debughelpers.attach_enctype_error_multidict"] = callable(
        getattr(flask_debughelpers, "attach_enctype_error_multidict", None)
    )
    needs["core.utils.unix_time"] = callable(getattr(moto_utils, "unix_time", None))
    needs["moto_api._internal.mock_random.randbytes"] = hasattr(mock_random, "randbytes")
    for owner, name in (
        (werkzeug_app.DomainDispatcherApplication, "get_backend_for_host"),
        (werkzeug_app.MotoRequestHandler, "log_request"),
    ):
        needs[f"moto_server.werkzeug_app.{owner.__name__}.{name}"] = callable(
            getattr(owner, name, None)
        )
    for name in (
        "XFormedAttributePicker",
        "AttributePickerContext",
        "DEFAULT_ALIAS_PROVIDERS",
        "MISSING",
        "get_value",
    ):
        needs[f"core.serialize.{name}"] = hasattr(serialize, name)
    needs["core.serialize.ResponseSerializer.get_value"] = callable(
        getattr(serialize.ResponseSerializer, "get_value", None)
    )
    return [name for name, present in needs.items() if not present]


def install() -> None:
    """Apply every shortcut (``localserver.install`` calls this once, after ``missing``)."""
    # inspect.getmembers of the response class, every request: 70 us
    responses.method_names_from_class = functools.lru_cache(maxsize=None)(
        responses.method_names_from_class
    )
    # the action name, every request: 10 us (the cache localserver put in sqs.models)
    responses.camelcase_to_underscores = models.camelcase_to_underscores
    responses.gen_amzn_requestid_long = request_id  # 33 us a request
    moto_utils.unix_time = unix_time  # 12 us a clock reading, some 70 readings a triple
    flask_debughelpers.attach_enctype_error_multidict = no_debug_files_class  # 35 us
    dispatcher = werkzeug_app.DomainDispatcherApplication
    # every service's URL regex, twice a request: 0.1 ms
    dispatcher.get_backend_for_host = backend_for_host(dispatcher.get_backend_for_host)  # type: ignore[method-assign]
    handler = werkzeug_app.MotoRequestHandler
    handler.log_request = log_request(handler.log_request)  # type: ignore[method-assign]  # 37 us
    serialize.ResponseSerializer.get_value = get_value  # type: ignore[method-assign]
    models.generate_receipt_handle = receipt_handle
