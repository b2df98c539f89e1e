"""OpenTelemetry spans and metrics of a client, when ``opentelemetry-api`` is installed.

As OpenTelemetry asks of libraries: only the API is used (a no-op until the application
installs an SDK), the providers are the caller's (``tracer_provider=`` /
``meter_provider=``) or the global ones, and the API is imported lazily, the first time a
client is built. Without it nothing is imported, ``Shared.telemetry`` is None, and that is
the one check the send path makes per request.

What is emitted (docs/observability.md describes each signal):

- a CLIENT span per HTTP request (``RequestProbe``) and per token refresh
  (``RefreshProbe``), an INTERNAL span per bulk job (``JobProbe``), each current while it
  runs (when it records) so that the spans under it nest;
- ``http.client.request.duration``, ``aiob24flow.limiter.wait``, ``aiob24flow.refusals``,
  ``aiob24flow.flows``, ``aiob24flow.token.refreshes``.

Nothing secret and nothing per flow goes into an attribute: ``url.full`` is redacted (the
webhook code is the credential), exception messages are never recorded (a portal may echo
what it was sent), and attributes name methods, hosts, codes and counts only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._errors import B24Error, PortalError
from ._redact import redact
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "DURATION_BUCKETS",
    "JobProbe",
    "RefreshProbe",
    "RequestProbe",
    "Telemetry",
    "build_telemetry",
    "check_provider",
    "error_type",
]

SCOPE = "aiob24flow"
# The HTTP semantic conventions these attributes follow (stable since 1.23).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
# The conventions' advice for ``http.client.request.duration`` (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)  # fmt: skip
# A limiter wait is nothing at the burst and up to a minute behind a shared bucket.
WAIT_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Attributes = Mapping[str, Any]

_NOT_TRIED: Any = object()
_api: Any = _NOT_TRIED  # (trace, metrics, context) modules, or None: not installed
# Telemetry per (tracer provider, meter provider), by identity, the newest few: the API's
# global proxy meter provider keeps every meter and instrument made through it, so a
# process that builds a client per job must not make new ones each time.
_built: dict[tuple[int, int], tuple[object, object, Telemetry]] = {}
_BUILT_MAX = 16


def _load_api() -> tuple[ModuleType, ModuleType, ModuleType] | None:
    """The API's modules, imported once per process (a failed import is not retried:
    it would search ``sys.path`` again for every client)."""
    global _api
    if _api is _NOT_TRIED:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError:
            _api = None
        else:
            _api = (trace, metrics, context)
    loaded: tuple[ModuleType, ModuleType, ModuleType] | None = _api
    return loaded


def check_provider(value: object, name: str) -> None:
    """``tracer_provider`` / ``meter_provider`` must be the API's providers (an SDK's
    are); checked when the option is given, so a typo fails before anything is built."""
    if value is None:
        return
    api = _load_api()
    if api is None:
        raise TypeError(f"{name} needs opentelemetry-api: pip install 'aiob24flow[otel]'")
    trace, metrics, _ = api
    kind = trace.TracerProvider if name == "tracer_provider" else metrics.MeterProvider
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be an opentelemetry {kind.__name__}")


def build_telemetry(tracer_provider: Any = None, meter_provider: Any = None) -> Telemetry | None:
    """The client's instruments: the given providers, else the global ones (set before or
    after the client is built: the API's proxies follow them); None without the API."""
    api = _load_api()
    if api is None:
        return None
    key = (id(tracer_provider), id(meter_provider))
    found = _built.get(key)
    if found is not None and found[0] is tracer_provider and found[1] is meter_provider:
        return found[2]
    trace, metrics, context = api
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
    meter = metrics.get_meter(SCOPE, __version__, meter_provider, schema_url=SCHEMA_URL)
    telemetry = Telemetry(trace, context, tracer, meter)
    if len(_built) >= _BUILT_MAX:
        del _built[next(iter(_built))]
    _built[key] = (tracer_provider, meter_provider, telemetry)
    return telemetry


def error_type(error: BaseException) -> str:
    """``error.type``: the portal's error code (``QUERY_LIMIT_EXCEEDED``), else the class
    (a bare number such as the flow controller's ``"0"`` says less than the class)."""
    if isinstance(error, B24Error):
        code = error.code
        if code and not code.isdigit():
            return code
    return type(error).__name__


def _histogram(meter: Meter, name: str, description: str, buckets: tuple[float, ...]) -> Any:
    try:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # opentelemetry-api < 1.23: no advisory; the SDK's views decide
        return meter.create_histogram(name, unit="s", description=description)


class _Route:
    """What every request to one URL shares: the span name and the fixed attributes,
    made once (the redaction is a few regular expressions)."""

    __slots__ = ("by_status", "metric", "name", "portal", "span")

    def __init__(self, method: str, url: str) -> None:
        parts = urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 80
        self.name = f"POST {method}"
        self.portal: dict[str, Any] = {
            "server.address": parts.hostname or "",
            "server.port": parts.port or default_port,
        }
        self.metric: dict[str, Any] = {"http.request.method": "POST", **self.portal}
        self.span: dict[str, Any] = {**self.metric, "url.full": redact(url)}
        self.by_status: dict[int, dict[str, Any]] = {}

    def answered(self, status: int) -> dict[str, Any]:
        """The metric attributes of an answer without error (one dict per status)."""
        attributes = self.by_status.get(status)
        if attributes is None:
            attributes = self.by_status[status] = {
                **self.metric,
                "http.response.status_code": status,
            }
        return attributes


class Telemetry:
    """The tracer and the instruments of one client (and its ``with_options`` copies)."""

    def __init__(self, trace: ModuleType, context: ModuleType, tracer: Tracer, meter: Meter):
        self.trace = trace
        self.context = context
        self.tracer = tracer
        self.client = trace.SpanKind.CLIENT
        self.internal = trace.SpanKind.INTERNAL
        self.error_status = trace.StatusCode.ERROR
        self.duration = _histogram(
            meter, "http.client.request.duration", "Duration of HTTP client requests.",
            DURATION_BUCKETS,
        )  # fmt: skip
        self.limiter_wait = _histogram(
            meter, "aiob24flow.limiter.wait",
            "Time a request waited for the rate limiter before it left.", WAIT_BUCKETS,
        )  # fmt: skip
        self.refusals = meter.create_counter(
            "aiob24flow.refusals", unit="{request}",
            description="Requests the portal refused without running them.",
        )  # fmt: skip
        self.flows = meter.create_counter(
            "aiob24flow.flows", unit="{flow}",
            description="Flows of finished bulk jobs, by operation and outcome.",
        )  # fmt: skip
        self.refreshes = meter.create_counter(
            "aiob24flow.token.refreshes", unit="{refresh}",
            description="OAuth token refreshes, by outcome.",
        )  # fmt: skip
        self.routes: dict[str, _Route] = {}

    def route(self, method: str, url: str) -> _Route:
        route = self.routes.get(url)
        if route is None:
            route = _Route(method, url)
            if len(self.routes) < 1024:  # a few methods per portal; never grow unbounded
                self.routes[url] = route
        return route

    def start(self, name: str, kind: Any, attributes: Attributes) -> tuple[Span, object]:
        """A span, made current when it records (a non-recording one has no children
        worth a context switch); the token is None exactly when it does not record."""
        span = self.tracer.start_span(name, kind=kind, attributes=attributes)
        token = None
        if span.is_recording():
            token = self.context.attach(self.trace.set_span_in_context(span))
        return span, token

    def finish(
        self, span: Span, token: object, error: str | None, description: str | None = None
    ) -> None:
        """End a span started by ``start``; ``error``: its ``error.type`` (and ERROR)."""
        if token is not None:  # it records
            self.context.detach(token)
            if error is not None:
                span.set_attribute("error.type", error)
                span.set_status(self.error_status, description or error)
        span.end()

    def request(
        self, method: str, url: str, commands: int, resends: int, waited: float
    ) -> RequestProbe:
        return RequestProbe(self, self.route(method, url), commands, resends, waited)

    def refresh(self, url: str | None) -> RefreshProbe:
        return RefreshProbe(self, url)

    def job(self, operation: str, total: int) -> JobProbe:
        return JobProbe(self, operation, total)


class RequestProbe:
    """One HTTP request: its CLIENT span (current while it is on the wire), then its
    duration, limiter wait and refusal when it ends."""

    __slots__ = ("route", "span", "telemetry", "token", "waited")

    def __init__(
        self, telemetry: Telemetry, route: _Route, commands: int, resends: int, waited: float
    ) -> None:
        self.telemetry = telemetry
        self.route = route
        self.waited = waited
        span, self.token = telemetry.start(route.name, telemetry.client, route.span)
        if self.token is not None:  # it records (the API alone records nothing)
            span.set_attribute("aiob24flow.batch.commands", commands)
            span.set_attribute("aiob24flow.limiter.wait", waited)
            if resends:  # the conventions: set from the first re-send on
                span.set_attribute("http.request.resend_count", resends)
        self.span = span

    def end(self, elapsed: float, status: int | None, error: BaseException | None) -> None:
        telemetry, route, span, token = self.telemetry, self.route, self.span, self.token
        kind = None if error is None else error_type(error)
        if status and token is not None:
            span.set_attribute("http.response.status_code", status)
        telemetry.finish(span, token, kind)
        if kind is None and status:
            attributes = route.answered(status)  # the common case: a dict made once
        else:
            attributes = dict(route.metric)
            if status:
                attributes["http.response.status_code"] = status
            if kind is not None:
                attributes["error.type"] = kind
            if isinstance(error, PortalError) and not error.may_have_run:
                telemetry.refusals.add(1, {"error.type": kind})
        telemetry.duration.record(elapsed, attributes)
        telemetry.limiter_wait.record(self.waited, route.portal)


class RefreshProbe:
    """One token refresh (its attempts included): a CLIENT span to the OAuth server, or
    to the application's ``refresher``; the token URL carries no secret (the grant
    travels in the body, which is never recorded)."""

    __slots__ = ("span", "telemetry", "token")

    def __init__(self, telemetry: Telemetry, url: str | None) -> None:
        attributes: dict[str, Any] = {}
        if url is not None:
            attributes = dict(_Route("oauth/token", url).span)
        self.telemetry = telemetry
        self.span, self.token = telemetry.start("aiob24flow.token.refresh", telemetry.client,
                                                attributes)  # fmt: skip

    def end(self, error: BaseException | None) -> None:
        telemetry = self.telemetry
        if error is None:
            outcome = "succeeded"
        else:
            unknown = isinstance(error, B24Error) and error.may_have_run
            outcome = "unknown" if unknown else "failed"
        telemetry.finish(self.span, self.token, None if error is None else error_type(error))
        telemetry.refreshes.add(1, {"aiob24flow.outcome": outcome})


class JobProbe:
    """One bulk job: an INTERNAL span, current while the job runs (its requests are its
    children), ended with the report's counts."""

    __slots__ = ("operation", "span", "telemetry", "token")

    def __init__(self, telemetry: Telemetry, operation: str, total: int) -> None:
        self.telemetry = telemetry
        self.operation = operation
        attributes = {"aiob24flow.operation": operation, "aiob24flow.flows.total": total}
        self.span, self.token = telemetry.start(f"aiob24flow.{operation}", telemetry.internal,
                                                attributes)  # fmt: skip

    def end(
        self, counts: Mapping[str, int] | None, error: BaseException | None, description: str
    ) -> None:
        """``counts``: the report's ``summary()`` (None: cancelled before a report);
        ``error``: what aborted the job (its ``error.type``), ``description`` says how."""
        telemetry, span = self.telemetry, self.span
        if counts is not None:
            if span.is_recording():
                span.set_attributes({f"aiob24flow.flows.{k}": v for k, v in counts.items()})
            for outcome in ("succeeded", "failed", "unknown"):
                telemetry.flows.add(
                    counts[outcome],
                    {"aiob24flow.operation": self.operation, "aiob24flow.outcome": outcome},
                )
        kind = None if error is None else error_type(error)
        telemetry.finish(span, self.token, kind, description)
