"""Observability (issue 26): spans, metrics and structured log records, against the real
OpenTelemetry SDK (its in-memory span exporter and metric reader) and the real client over
real sockets to the emulator; the global-provider path and the path without the API run in
subprocesses of their own (the API's global setters work once per process)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yarl
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import aiob24flow as b24
from aiob24flow._telemetry import DURATION_BUCKETS
from aiob24flow.emulator import EmulatorServer, Faults
from tests.conftest import no_sleep, oauth_client, run_cli, serve, tokens_of

ROOT = Path(__file__).resolve().parent.parent


class Otel:
    """The SDK, as an application sets it up, with everything kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self._metrics: dict[str, list[Any]] | None = None

    def options(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def requests(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.kind == SpanKind.CLIENT and s.name.startswith("POST ")]

    def job(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans if s.name == name]
        return span

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points (collected once: the sums are cumulative)."""
        if self._metrics is None:
            self._metrics = {}
            data = self.reader.get_metrics_data()
            for resource in data.resource_metrics if data else ():
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        points = self._metrics.setdefault(metric.name, [])
                        points.extend(metric.data.data_points)
        return self._metrics

    def total(self, name: str, **attributes: Any) -> float:
        """The sum (counter) or count (histogram) of the points that match ``attributes``."""
        found = 0.0
        for point in self.metrics().get(name, []):
            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                found += point.count if hasattr(point, "count") else point.value
        return found


def webhook_client(server: EmulatorServer, otel: Otel, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(), **otel.options(), **kwargs)


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def refused_503(server: EmulatorServer) -> int:
    """503s the emulator answered: its full bucket's, and the ones its faults injected."""
    return server.state.refused_503 + server.state.faults_fired["limit_503"]


# -- spans and metrics of requests and jobs --------------------------------------------------


async def run_with_503s(otel: Otel) -> tuple[EmulatorServer, b24.BulkReport[bool], b24.Stats]:
    """500 toggles against a portal refusing 30% of requests with 503 (seeded)."""
    retry = b24.RetryPolicy(attempts=20)
    async with (
        serve(flows=500, faults=Faults(seed=4, limit_503=0.3)) as server,
        webhook_client(server, otel, retry=retry) as client,
    ):
        report = await client.activate_many(range(1, 501))
        stats = client.stats()
    return server, report, stats


async def test_one_client_span_per_request_the_emulator_counted() -> None:
    otel = Otel()
    server, report, stats = await run_with_503s(otel)
    assert report.ok
    spans = otel.requests()
    assert len(spans) == server.state.requests == stats.requests
    assert refused_503(server) > 0  # the faults fired: re-sends happened
    for span in spans:
        assert span.name == "POST batch" and span.kind == SpanKind.CLIENT
        assert attr(span, "http.request.method") == "POST"
        assert attr(span, "server.address") == "127.0.0.1"
        assert attr(span, "server.port") == yarl.URL(server.base_url).port
        assert attr(span, "url.full") == f"{server.base_url}/rest/1/***/batch"
        assert attr(span, "aiob24flow.batch.commands") == 50
        assert attr(span, "aiob24flow.limiter.wait") == 0.0


async def test_503s_carry_the_code_and_re_sends_their_count() -> None:
    otel = Otel()
    server, _, stats = await run_with_503s(otel)
    spans = otel.requests()
    refused = [s for s in spans if attr(s, "http.response.status_code") == 503]
    assert len(refused) == refused_503(server) > 0
    for span in refused:
        assert attr(span, "error.type") == "QUERY_LIMIT_EXCEEDED"
        assert span.status.status_code == StatusCode.ERROR
    answered = [s for s in spans if attr(s, "http.response.status_code") == 200]
    assert len(answered) == len(spans) - len(refused)
    assert all(attr(s, "error.type") is None for s in answered)
    resent = [s for s in spans if attr(s, "http.request.resend_count") is not None]
    assert len(resent) == stats.retries == refused_503(server)
    assert all(attr(s, "http.request.resend_count") >= 1 for s in resent)
    assert otel.total("aiob24flow.refusals", **{"error.type": "QUERY_LIMIT_EXCEEDED"}) == len(
        refused
    )


async def test_the_resend_count_numbers_the_re_sends_of_one_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiob24flow")
    otel = Otel()
    async with (
        serve(flows=3, faults=Faults(limit_503=1.0)) as server,
        webhook_client(server, otel, retry=b24.RetryPolicy(attempts=3)) as client,
    ):
        with pytest.raises(b24.QueryLimitExceeded):
            await client.activate(1)
    spans = sorted(otel.requests(), key=lambda s: s.start_time or 0)
    assert server.state.requests == len(spans) == 3
    assert [attr(s, "http.request.resend_count") for s in spans] == [None, 1, 2]
    assert {s.name for s in spans} == {"POST tasks.flow.Flow.activate"}
    assert {attr(s, "error.type") for s in spans} == {"QUERY_LIMIT_EXCEEDED"}
    logged = records(caplog, "request")
    assert [r.attempt for r in logged] == [1, 2, 3]  # type: ignore[attr-defined]
    assert {r.error_type for r in logged} == {"QUERY_LIMIT_EXCEEDED"}  # type: ignore[attr-defined]


async def test_the_job_span_is_the_parent_of_its_requests_and_holds_the_report() -> None:
    otel = Otel()
    _, report, _ = await run_with_503s(otel)
    job = otel.job("aiob24flow.activate_many")
    assert job.kind == SpanKind.INTERNAL and job.status.status_code == StatusCode.UNSET
    assert job.context is not None
    for span in otel.requests():
        assert span.parent is not None and span.parent.span_id == job.context.span_id
        assert span.context is not None and span.context.trace_id == job.context.trace_id
    counts = {k: attr(job, f"aiob24flow.flows.{k}") for k in report.summary()}
    assert counts == report.summary()
    assert attr(job, "aiob24flow.operation") == "activate_many"


async def test_the_duration_histogram_counts_every_request() -> None:
    otel = Otel()
    server, _, _ = await run_with_503s(otel)
    assert otel.total("http.client.request.duration") == server.state.requests
    assert otel.total("http.client.request.duration", **{"error.type": "QUERY_LIMIT_EXCEEDED",
                      "http.response.status_code": 503}) == refused_503(server)  # fmt: skip
    for point in otel.metrics()["http.client.request.duration"]:
        assert tuple(point.explicit_bounds) == DURATION_BUCKETS
        assert set(point.attributes) <= {
            "http.request.method", "server.address", "server.port",
            "http.response.status_code", "error.type",
        }  # fmt: skip
    assert otel.total("aiob24flow.limiter.wait") == server.state.requests


async def test_the_flows_counter_sums_to_the_report() -> None:
    otel = Otel()
    missing = frozenset(range(1, 41))  # refused one by one inside their batches: failed
    faults = Faults(seed=2, drop_after=0.2)  # answers lost: unknown
    async with (
        serve(flows=300, missing=missing, faults=faults) as server,
        webhook_client(server, otel) as client,
    ):
        report = await client.activate_many(range(1, 301))
    assert report.failed and report.unknown and report.succeeded
    for outcome, flows in (("succeeded", report.succeeded), ("failed", report.failed),
                           ("unknown", report.unknown)):  # fmt: skip
        found = otel.total(
            "aiob24flow.flows", **{"aiob24flow.operation": "activate_many",
                                   "aiob24flow.outcome": outcome},
        )  # fmt: skip
        assert found == len(flows), outcome
    assert otel.total("aiob24flow.flows") == len(report) == 300
    lost = [s for s in otel.requests() if attr(s, "error.type") == "ResponseLost"]
    assert lost and all(attr(s, "http.response.status_code") is None for s in lost)


async def test_every_bulk_operation_has_its_span(tmp_path: Path) -> None:
    otel = Otel()
    async with serve(flows=120) as server, webhook_client(server, otel) as client:
        await client.activate_many(range(1, 61), verify=True)
        await client.pin_many(range(1, 11))
        await client.get_many(range(1, 121))
        await client.set_active(range(1, 121), True)
        await client.set_active(range(1, 121), False, dry_run=True)
        await client.set_pinned(range(1, 11), False)
        async with b24.SqliteJournal(tmp_path / "jobs.db") as journal:
            await client.activate_many(range(61, 121), journal=journal, job_id="j1")
        requests = server.state.requests
    jobs = [s for s in otel.spans if s.kind == SpanKind.INTERNAL]
    assert [s.name for s in jobs] == [
        "aiob24flow.activate_many", "aiob24flow.pin_many", "aiob24flow.get_many",
        "aiob24flow.set_active", "aiob24flow.set_active", "aiob24flow.set_pinned",
        "aiob24flow.activate_many",
    ]  # fmt: skip
    ids = {s.context.span_id for s in jobs if s.context is not None}
    spans = otel.requests()
    assert len(spans) == requests
    assert all(s.parent is not None and s.parent.span_id in ids for s in spans)


async def test_an_aborted_job_ends_its_span_in_error() -> None:
    otel = Otel()

    def explode(progress: b24.Progress) -> None:
        raise RuntimeError("the progress callback failed")

    async with serve(flows=200) as server, webhook_client(server, otel, concurrency=1) as client:
        with pytest.raises(b24.BulkAborted) as caught:
            await client.activate_many(range(1, 201), on_progress=explode)
    job = otel.job("aiob24flow.activate_many")
    assert job.status.status_code == StatusCode.ERROR
    assert attr(job, "error.type") == "RuntimeError"
    report = caught.value.report
    assert report is not None
    assert {k: attr(job, f"aiob24flow.flows.{k}") for k in report.summary()} == report.summary()
    assert otel.total("aiob24flow.flows") == len(report) == 200
    assert len(otel.requests()) == server.state.requests


async def test_a_cancelled_job_ends_its_span_in_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiob24flow")
    otel = Otel()
    # One request at once, then one every 20 s: the job waits in the limiter.
    paced = b24.RateLimit(1, 0.05)
    async with (
        serve(flows=200) as server,
        webhook_client(server, otel, rate_limit=paced, sleep=asyncio.sleep) as client,
    ):
        task = asyncio.create_task(client.activate_many(range(1, 201)))
        while not records(caplog, "request"):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    job = otel.job("aiob24flow.activate_many")
    assert job.status.status_code == StatusCode.ERROR
    assert job.status.description == "cancelled"
    assert attr(job, "error.type") == "CancelledError"
    assert attr(job, "aiob24flow.flows.succeeded") is None  # no report: no counts
    assert len(otel.requests()) == server.state.requests == 1
    (logged,) = records(caplog, "job")
    assert logged.error_type == "CancelledError" and logged.total == 200  # type: ignore[attr-defined]


async def test_a_refused_token_is_recovered_under_a_refresh_span() -> None:
    otel = Otel()
    async with serve(flows=3) as server:
        tokens = tokens_of(server.state.issue_tokens())
        for entry in server.state.access_tokens.values():
            entry.expires_at = 0  # the portal answers 401 expired_token
        async with oauth_client(server, tokens, **otel.options()) as client:
            assert await client.activate(1) is True
    first, second = sorted(otel.requests(), key=lambda s: s.start_time or 0)
    assert attr(first, "http.response.status_code") == 401
    assert attr(first, "error.type") == "expired_token"
    assert attr(second, "http.request.resend_count") == 1
    assert attr(second, "http.response.status_code") == 200
    assert attr(second, "url.full") == f"{server.base_url}/rest/tasks.flow.Flow.activate"
    refresh = otel.job("aiob24flow.token.refresh")
    assert refresh.kind == SpanKind.CLIENT and refresh.status.status_code == StatusCode.UNSET
    assert attr(refresh, "url.full") == server.token_url
    assert otel.total("aiob24flow.token.refreshes", **{"aiob24flow.outcome": "succeeded"}) == 1
    assert len(otel.requests()) == server.state.requests == 2


async def test_with_options_copies_keep_the_providers() -> None:
    otel = Otel()
    async with serve(flows=3) as server, webhook_client(server, otel) as client:
        copy = client.with_options(retry=b24.RetryPolicy.never(), concurrency=2)
        await copy.activate(1)
        await copy.activate_many([2, 3])
    assert [s.name for s in otel.spans] == [
        "POST tasks.flow.Flow.activate", "POST batch", "aiob24flow.activate_many",
    ]  # fmt: skip


def test_clients_of_the_same_providers_share_their_instruments() -> None:
    """A process that builds a client per job makes its meter and instruments once (the
    API's global proxy provider keeps every meter made through it)."""
    otel = Otel()
    url = "https://portal.example/rest/1/code/"
    clients = [b24.FlowClient.from_webhook(url, **otel.options()) for _ in range(3)]
    clients += [b24.FlowClient.from_webhook(url) for _ in range(3)]
    shared = {id(c._pipeline.shared.telemetry) for c in clients}
    assert len(shared) == 2 and None not in {c._pipeline.shared.telemetry for c in clients}


def test_provider_options_are_checked() -> None:
    url = "https://portal.example/rest/1/code/"
    with pytest.raises(TypeError, match="tracer_provider must be an opentelemetry"):
        b24.FlowClient.from_webhook(url, tracer_provider="console")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="meter_provider must be an opentelemetry MeterProvider"):
        b24.FlowClient.from_webhook(url, meter_provider=TracerProvider())  # type: ignore[arg-type]


# -- secrets ---------------------------------------------------------------------------------


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item)
    else:
        yield str(value)


def everything_recorded(otel: Otel, caplog: pytest.LogCaptureFixture) -> Iterator[str]:
    """Every text of every span (name, attributes, events, links, status), every metric
    point's attributes, every log record's message and fields."""
    for span in otel.spans:
        yield span.name
        yield from _texts(dict(span.attributes or {}))
        for event in span.events:
            yield event.name
            yield from _texts(dict(event.attributes or {}))
        for link in span.links:
            yield from _texts(dict(link.attributes or {}))
        yield str(span.status.description)
    for points in otel.metrics().values():
        for point in points:
            yield from _texts(dict(point.attributes))
    for record in caplog.records:
        yield record.getMessage()
        yield from _texts(vars(record))


async def test_no_secret_in_any_span_metric_or_log_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiob24flow")
    otel = Otel()
    secrets: set[str] = set()
    faults = Faults(seed=4, limit_503=0.2, error_before=0.1, error_after=0.1, drop_after=0.1)
    async with serve(flows=400, faults=faults) as server:
        secrets.add(server.state.webhooks[1])
        async with webhook_client(server, otel) as client:
            await client.activate_many(range(1, 401))
            with pytest.raises(b24.B24Error):
                await client.call("no.such.method")
    # OAuth: a refresh that works, then one whose error text echoes the grant.
    async with serve(flows=50, faults=Faults(token_faults=["unavailable", "echo"])) as server:
        secrets.add(server.portal.config.client_secret)
        for _ in range(2):
            issued = server.state.issue_tokens()
            secrets |= {issued["access_token"], issued["refresh_token"]}
            for entry in server.state.access_tokens.values():
                entry.expires_at = 0
            async with oauth_client(server, tokens_of(issued), **otel.options()) as client:
                await client.activate_many(range(1, 51))
        secrets |= set(server.state.access_tokens) | set(server.state.refresh_tokens)
        secrets |= server.state.spent_refresh_tokens
    assert all(len(s) >= 8 for s in secrets) and len(secrets) >= 6
    texts = list(everything_recorded(otel, caplog))
    # The walk reached what it must: request and refresh spans, their URLs, the log fields.
    assert any("/rest/1/***/batch" in t for t in texts)
    assert otel.total("aiob24flow.token.refreshes", **{"aiob24flow.outcome": "failed"}) == 1
    assert records(caplog, "request") and records(caplog, "job")
    leaks = [t for t in texts for s in secrets if s in t]
    assert leaks == []


def test_redact_url_masks_the_webhook_code_for_the_aiohttp_instrumentation() -> None:
    url = yarl.URL("https://portal.example/rest/7/s3cr3tc0de/tasks.flow.Flow.activate")
    assert b24.redact_url(url) == "https://portal.example/rest/7/***/tasks.flow.Flow.activate"
    assert b24.redact_url("https://portal.example/rest/batch?auth=t0ken") == (
        "https://portal.example/rest/batch?auth=***"
    )
    assert b24.redact_url(yarl.URL("https://portal.example/rest/batch")) == (
        "https://portal.example/rest/batch"
    )


# -- structured log records ----------------------------------------------------------------


async def test_a_log_record_per_request_and_per_job_with_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiob24flow")
    otel = Otel()
    server, report, _ = await run_with_503s(otel)
    logged = records(caplog, "request")
    assert len(logged) == server.state.requests
    for record in logged:
        names = ("method", "status", "duration_s", "commands", "attempt", "error_type")
        fields = {k: getattr(record, k) for k in names}
        assert fields["method"] == "batch" and fields["commands"] == 50
        assert fields["status"] in (200, 503) and fields["duration_s"] >= 0
        assert (fields["error_type"] == "QUERY_LIMIT_EXCEEDED") == (fields["status"] == 503)
        assert record.getMessage().startswith("POST batch")
    assert sum(r.attempt > 1 for r in logged) == refused_503(server)  # type: ignore[attr-defined]
    (job,) = records(caplog, "job")
    assert job.operation == "activate_many"  # type: ignore[attr-defined]
    summary = report.summary()
    for key in ("total", "succeeded", "failed", "unknown"):
        assert getattr(job, key) == summary[key]
    assert job.duration_s > 0  # type: ignore[attr-defined]
    assert job.getMessage().startswith("activate_many: 500 flows, 500 succeeded")


async def test_the_cli_logs_one_json_object_per_record() -> None:
    async with serve(flows=120, faults=Faults(seed=1, limit_503=0.3)) as server:
        url = server.webhook_url()
        code, _, err = await run_cli(
            "activate", "1-120", "--webhook", url, "--plan", "unlimited", "--log-format", "json"
        )
        requests = server.state.requests
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == len(err.splitlines())  # every line is one JSON object
    logged = [line for line in lines if line.get("event") == "request"]
    assert len(logged) == requests
    assert {"time", "level", "logger", "message", "method", "status", "duration_s", "commands",
            "attempt", "error_type"} <= set(logged[0])  # fmt: skip
    (job,) = [line for line in lines if line.get("event") == "job"]
    assert (job["operation"], job["total"], job["succeeded"]) == ("activate_many", 120, 120)
    assert "emulator-webhook-code-1" not in err


# -- the global providers, and no API at all (each in a process of its own) ---------------------


def run_python(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


GLOBAL_PROVIDERS = """
    import asyncio, json
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import aiob24flow as b24
    from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig

    async def main():
        async with EmulatorServer(Portal(PortalConfig(flows=100, leak=None))) as server:
            client = b24.FlowClient.from_webhook(
                server.webhook_url(), rate_limit=b24.RateLimit.unlimited())
            # Set after the client was built: the API's proxies follow the global providers.
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            async with client:
                await client.activate(1)
                report = await client.activate_many(range(2, 101))
            requests = server.state.requests
        spans = exporter.get_finished_spans()
        job = [s for s in spans if s.name == "aiob24flow.activate_many"][0]
        points = {m.name: sum(getattr(p, "count", None) or getattr(p, "value", 0)
                              for p in m.data.data_points)
                  for r in reader.get_metrics_data().resource_metrics
                  for sc in r.scope_metrics for m in sc.metrics}
        print(json.dumps({
            "requests": requests,
            "names": [s.name for s in spans],
            "under_job": sum(1 for s in spans if s.parent and
                             s.parent.span_id == job.context.span_id),
            "succeeded": job.attributes["aiob24flow.flows.succeeded"],
            "report": len(report.succeeded),
            "points": points,
        }))

    asyncio.run(main())
"""


def test_the_global_providers_are_used() -> None:
    result = run_python(GLOBAL_PROVIDERS)
    assert result["requests"] == 3  # one activate, two batches
    assert result["names"] == [
        "POST tasks.flow.Flow.activate", "POST batch", "POST batch", "aiob24flow.activate_many",
    ]  # fmt: skip
    assert result["under_job"] == 2
    assert result["succeeded"] == result["report"] == 99
    assert result["points"]["http.client.request.duration"] == 3
    assert result["points"]["aiob24flow.flows"] == 99


WITHOUT_API = """
    import sys
    sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
    import asyncio, json
    import aiob24flow as b24
    from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig

    async def main():
        async with EmulatorServer(Portal(PortalConfig(flows=100, leak=None))) as server:
            url = server.webhook_url()
            async with b24.FlowClient.from_webhook(url, rate_limit=b24.RateLimit.unlimited()) as c:
                one = await c.activate(1)
                report = await c.activate_many(range(2, 101))
                telemetry = c._pipeline.shared.telemetry
            try:
                b24.FlowClient.from_webhook(url, tracer_provider=object())
                refused = ""
            except TypeError as exc:
                refused = str(exc)
            requests = server.state.requests
        loaded = sorted(name for name, module in sys.modules.items()
                        if name.split(".")[0] == "opentelemetry" and module is not None)
        print(json.dumps({"one": one, "ok": report.ok, "requests": requests,
                          "telemetry": repr(telemetry), "loaded": loaded, "refused": refused}))

    asyncio.run(main())
"""


def test_without_the_api_nothing_changes_and_nothing_is_imported() -> None:
    result = run_python(WITHOUT_API)
    assert result["loaded"] == []
    assert result["telemetry"] == "None"
    assert result["one"] is True and result["ok"] is True and result["requests"] == 3
    assert "pip install 'aiob24flow[otel]'" in result["refused"]
