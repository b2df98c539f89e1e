"""What telemetry costs: client CPU per flow without the OpenTelemetry API, with the API
and no SDK (an application that has the API installed and exports nothing), and with the
SDK and in-memory exporters (every span and metric made and kept).

The three variants run side by side in one process, interleaved run by run, so that the
machine's drift falls on all of them alike; the emulated portal runs in its own process,
so the CPU is the client's alone:

- ``no API``: the client is built as it is when ``import opentelemetry`` fails (the
  library's loader is told the API is missing: ``Shared.telemetry`` is None, the path a
  process without the API takes; a separate process with ``opentelemetry`` blocked checks
  that such a client imports none of it and works);
- ``API, no SDK``: the global providers are the API's defaults (no-op proxies);
- ``SDK + in-memory``: ``tracer_provider=`` / ``meter_provider=`` of the SDK, with an
  in-memory span exporter (simple processor: every span exported as it ends) and an
  in-memory metric reader (collected after every run).

Two workloads: ``activate_many`` over real sockets (the client's whole CPU, aiohttp
included: the figure the 3% budget is about) and on a transport that costs nothing
(answers made in advance: the library's own CPU, where telemetry's share is largest).

On a machine shared with other work, run-to-run noise can exceed the difference being
measured; so the telemetry calls a job makes (a request probe per batch of 50 flows, a job
probe per job) are also timed alone in a tight loop, best of several, and given per flow
next to the client's CPU per flow.

    python benchmarks/bench_otel.py                 # about two minutes
    python benchmarks/bench_otel.py --rounds 5      # quicker, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_floor import AnswersMadeInAdvance
from bench_scale import WEBHOOK_CODE, emulator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aiob24flow as b24
from aiob24flow import _telemetry

Run = Callable[[], Coroutine[None, None, None]]
VARIANTS = ("no API", "API, no SDK", "SDK + in-memory")

WITHOUT_API = """
import sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import asyncio, json
import aiob24flow as b24

async def main():
    url = "http://127.0.0.1:%s/rest/1/%s/"
    async with b24.FlowClient.from_webhook(url, rate_limit=b24.RateLimit.unlimited()) as c:
        report = await c.activate_many(range(1, 101))
        off = c._pipeline.shared.telemetry is None
    loaded = [m for m, mod in sys.modules.items() if m.startswith("opentelemetry") and mod]
    print(json.dumps({"ok": report.ok, "telemetry_off": off, "loaded": loaded}))

asyncio.run(main())
"""


class FreeTransport(AnswersMadeInAdvance):
    async def aclose(self) -> None:
        """Nothing was opened."""


class Sdk:
    """The SDK with everything kept in memory (what an exporter would be handed)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.spans = 0

    def collect(self) -> None:
        self.reader.get_metrics_data()
        self.spans = max(self.spans, len(self.exporter.get_finished_spans()))
        self.exporter.clear()


def variant_options(variant: str, sdk: Sdk) -> dict[str, Any]:
    if variant == "SDK + in-memory":
        return {"tracer_provider": sdk.tracer_provider, "meter_provider": sdk.meter_provider}
    return {}


def toggles(url: str, n: int, options: dict[str, Any]) -> Run:
    async def run() -> None:
        async with b24.FlowClient.from_webhook(
            url, rate_limit=b24.RateLimit.unlimited(), **options
        ) as client:
            report = await client.activate_many(list(range(1, n + 1)))
            assert len(report.succeeded) == n

    return run


def one_run(variant: str, run: Run) -> float:
    """CPU seconds of one run; the API is hidden from the client for ``no API``."""
    loaded = _telemetry._load_api()
    if variant == "no API":
        _telemetry._api = None
    gc.collect()
    try:
        started = time.process_time()
        asyncio.run(run())
        return time.process_time() - started
    finally:
        _telemetry._api = loaded


def measure(port: str, n: int, rounds: int, sdk: Sdk) -> dict[tuple[str, str], list[float]]:
    webhook = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
    free = FreeTransport(n)
    workloads = {
        "sockets": lambda options: toggles(webhook, n, options),
        "free transport": lambda options: toggles(
            "https://portal.example/rest/1/code/", n, {**options, "transport": free}
        ),
    }
    cpu: dict[tuple[str, str], list[float]] = {}
    for workload, make in workloads.items():
        for variant in VARIANTS:  # warm: first connections, caches, the SDK's first spans
            one_run(variant, make(variant_options(variant, sdk)))
            sdk.collect()
        for round_no in range(rounds):
            order = VARIANTS[round_no % 3 :] + VARIANTS[: round_no % 3]
            for variant in order:
                seconds = one_run(variant, make(variant_options(variant, sdk)))
                sdk.collect()  # outside the timed part: an exporter works in its own thread
                cpu.setdefault((workload, variant), []).append(seconds / n)
    return cpu


def probes_alone(sdk: Sdk | None, batches: int = 200, repeat: int = 7) -> float:
    """CPU seconds per flow of the telemetry calls of one job of ``batches`` batches of 50
    (one request probe each, one job probe), the best of ``repeat``."""
    providers = {} if sdk is None else variant_options("SDK + in-memory", sdk)
    telemetry = _telemetry.build_telemetry(**providers)
    assert telemetry is not None
    url = "https://portal.example/rest/1/code/batch"
    counts = {"total": batches * 50, "succeeded": batches * 50, "changed": batches * 50,
              "failed": 0, "unknown": 0}  # fmt: skip
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()
        for _ in range(10):
            job = telemetry.job("activate_many", batches * 50)
            for _ in range(batches):
                telemetry.request("batch", url, 50, 0, 0.0).end(0.01, 200, None)
            job.end(counts, None, "")
        best = min(best, (time.process_time() - started) / (10 * batches * 50))
        if sdk is not None:
            sdk.collect()
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    n = args.flows
    print(f"python {sys.version.split()[0]}, aiob24flow {b24.__version__}: {n} toggles in "
          f"{n // 50} batch requests, {args.rounds} interleaved rounds")  # fmt: skip
    sdk = Sdk()
    with emulator(n) as port:
        cpu = measure(port, n, args.rounds, sdk)
        check = subprocess.run(
            [sys.executable, "-c", WITHOUT_API % (port, WEBHOOK_CODE)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    for workload in ("sockets", "free transport"):
        print(f"-- activate_many, {workload}: client CPU per flow")
        base = cpu[workload, "no API"]
        for variant in VARIANTS:
            values = cpu[workload, variant]
            best, median = min(values), statistics.median(values)
            print(
                f"{variant:<16} best {best * 1e6:6.2f} us/flow  median {median * 1e6:6.2f} "
                f"us/flow  vs no API: best {best / min(base):.3f} median "
                f"{median / statistics.median(base):.3f}",
                flush=True,
            )
    alone = {"API, no SDK": probes_alone(None), "SDK + in-memory": probes_alone(Sdk())}
    floor = min(cpu["sockets", "no API"])
    print("-- the telemetry calls alone (one request probe per 50 flows, one job probe)")
    for variant, seconds in alone.items():
        print(f"{variant:<16} {seconds * 1e6:6.3f} us/flow = {seconds / floor:6.2%} of the "
              f"no-API client's best CPU per flow over sockets")  # fmt: skip
    print(f"spans per run with the SDK: {sdk.spans} (one per request, one per job)")
    print(f"without the API, in a process of its own: {check.stdout.strip()}")


if __name__ == "__main__":
    main()
