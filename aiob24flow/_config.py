"""The client's options, declared once and validated once.

``ClientOptions`` is what ``FlowClient.from_webhook`` / ``from_oauth`` take as keywords
(``**options: Unpack[ClientOptions]``); ``Settings.from_options`` checks every one of
them before anything is built, so bad input is a ``TypeError``/``ValueError`` naming the
option and nothing is half-made. ``RequestOptions`` is the part a ``with_options`` copy
may change. TLS and proxy options are parsed here too.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Union
from urllib.parse import urlsplit

import aiohttp
import attrs

from ._limiter import Limiter, RateLimit
from ._retry import RetryPolicy
from ._telemetry import check_provider
from ._timeout import Timeout
from ._transport import DEFAULT_MAX_RESPONSE, Transport
from ._types import Sleep
from ._validate import check_bool, check_number, is_loopback

if TYPE_CHECKING:
    # Annotations only: the API is optional (``aiob24flow[otel]``) and imported lazily.
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "ClientOptions",
    "RequestOptions",
    "SSLOption",
    "Settings",
    "check_concurrency",
    "ssl_option",
]

SSLOption = Union[ssl_.SSLContext, str, "os.PathLike[str]", bool, None]


class ClientOptions(TypedDict, total=False):
    """The keyword options of ``FlowClient.from_webhook`` and ``from_oauth``.

    - ``rate_limit``: the portal's plan (default ``RateLimit.standard()``: burst 50, 2/s);
      ``RateLimit(backend=RedisLimiter(...))`` shares it across processes.
    - ``limiter``: a ``Limiter`` of your own instead of the one ``rate_limit`` builds.
    - ``session``: an ``aiohttp.ClientSession`` to use (never closed by the client).
    - ``transport``: a ``Transport`` of your own (tests, other HTTP stacks).
    - ``retry``: a ``RetryPolicy`` (only what provably did not run is re-sent).
    - ``timeout``: a ``Timeout``.
    - ``concurrency``: batch requests a bulk job keeps in flight (default 50), and the
      connections of a session the client opens; the limiter sets the pace.
    - ``operating_limit``: seconds of a method's execution the portal allows per 10
      minutes before it blocks it (default 480).
    - ``sleep``: an async sleep (tests inject a fake one).
    - ``max_response_size``: bytes of an answer at most (a larger one is ``ResponseLost``).
    - ``ssl``: an ``ssl.SSLContext``, a CA bundle path, or ``False`` (loopback only).
    - ``proxy``: an ``http://`` forward proxy for every request.
    - ``trust_env``: read ``HTTPS_PROXY`` / ``NO_PROXY`` / ``.netrc`` from the environment.
    - ``tracer_provider`` / ``meter_provider``: OpenTelemetry providers for the client's
      spans and metrics (default: the global ones, when ``opentelemetry-api`` is installed;
      see docs/observability.md).
    """

    rate_limit: RateLimit | None
    limiter: Limiter | None
    session: aiohttp.ClientSession | None
    transport: Transport | None
    retry: RetryPolicy | None
    timeout: Timeout | None
    concurrency: int
    operating_limit: float
    sleep: Sleep | None
    max_response_size: int
    ssl: SSLOption
    proxy: str | None
    trust_env: bool
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None


_NAMES = frozenset(ClientOptions.__annotations__)


def check_concurrency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"concurrency must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"concurrency must be >= 1, got {value!r}")
    return value


def _check_type(value: object, kind: type, name: str, what: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}")


@attrs.frozen
class RequestOptions:
    """What a ``with_options`` copy may change; the rest of a client is shared."""

    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    timeout: Timeout = attrs.field(factory=Timeout)
    concurrency: int = 50

    def replace(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: Timeout | None = None,
        concurrency: int | None = None,
    ) -> RequestOptions:
        """A copy with the given options checked and changed (None keeps the value)."""
        _check_type(retry, RetryPolicy, "retry", "an aiob24flow.RetryPolicy")
        _check_type(timeout, Timeout, "timeout", "an aiob24flow.Timeout")
        return RequestOptions(
            self.retry if retry is None else retry,
            self.timeout if timeout is None else timeout,
            self.concurrency if concurrency is None else check_concurrency(concurrency),
        )


@attrs.frozen
class Settings:
    """Every client option, checked (see ``ClientOptions`` for their meaning)."""

    request: RequestOptions
    rate_limit: RateLimit | None = None
    limiter: Limiter | None = None
    session: aiohttp.ClientSession | None = None
    transport: Transport | None = None
    operating_limit: float = 480.0
    sleep: Sleep | None = None
    max_response_size: int = DEFAULT_MAX_RESPONSE
    ssl: SSLOption = None
    proxy: str | None = None
    trust_env: bool = False
    tracer_provider: Any = None  # an opentelemetry TracerProvider (checked)
    meter_provider: Any = None  # an opentelemetry MeterProvider (checked)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Check every option (unknown names too) before anything is built."""
        unknown = sorted(set(options) - _NAMES)
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
        o = dict(options)
        request = RequestOptions().replace(
            retry=o.pop("retry", None),
            timeout=o.pop("timeout", None),
            concurrency=o.pop("concurrency", None),
        )
        _check_type(o.get("session"), aiohttp.ClientSession, "session", "an aiohttp.ClientSession")
        # Custom parts implement the whole protocol (nothing is probed later).
        _check_type(
            o.get("transport"),
            Transport,
            "transport",
            "a Transport: async post(url, body, headers, timeout) and async aclose()",
        )
        _check_type(
            o.get("limiter"),
            Limiter,
            "limiter",
            "a Limiter: async start(), async acquire(), release(), async refused()",
        )
        _check_type(o.get("rate_limit"), RateLimit, "rate_limit", "an aiob24flow.RateLimit")
        check_number(o.get("operating_limit", 480.0), "operating_limit", positive=True)
        size = o.get("max_response_size", DEFAULT_MAX_RESPONSE)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1024:
            raise ValueError("max_response_size must be an int of at least 1024 bytes")
        sleep = o.get("sleep")
        if sleep is not None and not callable(sleep):
            raise TypeError("sleep must be an async callable")
        check_bool(o.get("trust_env", False), "trust_env")
        check_provider(o.get("tracer_provider"), "tracer_provider")
        check_provider(o.get("meter_provider"), "meter_provider")
        if "proxy" in o:
            o["proxy"] = proxy_option(o["proxy"])
        return cls(request=request, **o)

    @property
    def real_sleep(self) -> Sleep:
        return self.sleep or asyncio.sleep


def ssl_option(value: object, origin: str) -> ssl_.SSLContext | bool | None:
    """The TLS option for aiohttp; ``False`` (no certificate check) only on loopback."""
    if value is None or value is True:
        return None  # aiohttp's default: verify against the system's CAs
    if isinstance(value, ssl_.SSLContext):
        return value
    if value is False:
        host = urlsplit(origin).hostname or ""
        if not is_loopback(host):
            raise ValueError(
                "ssl=False (no certificate check) is allowed only for a loopback portal; "
                "pass ssl=<CA bundle path or ssl.SSLContext> instead"
            )
        return False
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        try:
            return ssl_.create_default_context(cafile=path)
        except (OSError, ssl_.SSLError) as exc:
            raise ValueError(f"ssl: cannot load the CA bundle {path!r}: {exc}") from None
    raise TypeError("ssl must be an ssl.SSLContext, a CA bundle path, False or None")


def proxy_option(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("proxy must be a str URL or None")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("proxy must be an http:// (or https://) proxy URL")
    try:
        parts.port  # noqa: B018 - validates the range
    except ValueError:
        raise ValueError("proxy: the port is not a number from 1 to 65535") from None
    return value
