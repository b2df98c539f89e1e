"""Bulk toggling at the portal's limit: aiob24flow (and fast_bitrix24, where installed).

The emulated portal runs in its own process, so ``cpu`` is the client's CPU alone. Every
case prints N, the bucket, elapsed seconds, the portal's theoretical minimum, their ratio,
the 503s the portal sent, client CPU seconds and a histogram "toggles per flow: count".

    python benchmarks/bench_bulk.py            # every case (about three minutes)
    python benchmarks/bench_bulk.py --quick    # smaller N, for a smoke run

The theoretical minimum is (ceil(N/50) - burst) / rate: the time the portal's bucket needs
to admit every batch. With added latency the last answer cannot arrive before one round
trip more, so that case also prints the ratio to (minimum + latency).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

import aiob24flow as b24
from aiob24flow._redact import redact

WEBHOOK_CODE = "emulator-webhook-code-1"  # the emulator's fixed code for user 1


@contextlib.contextmanager
def run_emulator(args: list[str], *, start_within: float = 20) -> Iterator[str]:
    """Run ``python -m aiob24flow.emulator ARGS`` on a free port; yield the port."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = os.path.join(tmp, "port")
        cmd = [sys.executable, "-m", "aiob24flow.emulator", "--port", "0",
               "--ready-file", ready, *args]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + start_within
            while not os.path.exists(ready):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the emulator did not start")
                time.sleep(0.02)
            with open(ready) as fh:
                yield fh.read().strip()
        finally:
            proc.terminate()
            proc.wait(timeout=60)


@contextlib.contextmanager
def emulator(
    flows: int,
    burst: float,
    leak: float | None,
    *,
    latency: float = 0.0,
    faults: dict[str, float] | None = None,
    active_ratio: float = 1.0,
) -> Iterator[str]:
    """An emulated portal in its own process; yield its base URL."""
    args = [
        "--flows", str(flows), "--burst", str(burst), "--leak", str(leak or 0),
        "--latency", str(latency), "--active-ratio", str(active_ratio), "--seed", "7",
    ]  # fmt: skip
    for name, value in (faults or {}).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    with run_emulator(args) as port:
        yield f"http://127.0.0.1:{port}"


async def portal_stats(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(base + "/_emulator/stats") as r:
        stats: dict[str, Any] = await r.json()
        return stats


def histogram(activations: dict[str, int], n: int) -> dict[int, int]:
    counts = collections.Counter(activations.get(str(i), 0) for i in range(1, n + 1))
    return dict(sorted(counts.items()))


def theoretical(n: int, burst: float, rate: float | None) -> float:
    if rate is None:
        return 0.0
    return max(0.0, (math.ceil(n / 50) - burst) / rate)


@contextlib.contextmanager
def stdlib_json() -> Iterator[None]:
    """Run aiob24flow with the stdlib json module instead of orjson."""
    from aiob24flow import _json

    saved = _json.loads, _json.dumps
    _json.loads, _json.dumps = json.loads, _json._std_dumps  # type: ignore[assignment]
    try:
        yield
    finally:
        _json.loads, _json.dumps = saved  # type: ignore[assignment]


async def run_ours(base: str, n: int, limit: b24.RateLimit, mode: str = "toggle") -> dict[str, Any]:
    url = f"{base}/rest/1/{WEBHOOK_CODE}/"
    ids = list(range(1, n + 1))
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with b24.FlowClient.from_webhook(url, rate_limit=limit) as client:
        if mode == "toggle":
            report = await client.activate_many(ids)
        elif mode == "verify":
            report = await client.activate_many(ids, verify=True)
        else:
            report = await client.set_active(ids, False)
        requests = client.stats().requests
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"elapsed": elapsed, "cpu": cpu, "report": report, "requests": requests}


def fast_bitrix24_available() -> bool:
    try:
        import fast_bitrix24  # noqa: F401
    except ImportError:
        return False
    return True


async def run_fast(base: str, n: int, burst: float, rate: float | None) -> dict[str, Any]:
    from fast_bitrix24 import BitrixAsync

    url = f"{base}/rest/1/{WEBHOOK_CODE}/"
    items = [{"flowId": i} for i in range(1, n + 1)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    # respect_velocity_policy=False crashes fast_bitrix24 1.8 (KeyError 'batch'): to take
    # its limiter out of the way, give it a huge pool and rate instead.
    client = BitrixAsync(
        url,
        verbose=False,
        respect_velocity_policy=True,
        request_pool_size=int(burst) if rate else 10**6,
        requests_per_second=rate or 1e6,
        ssl=False,
    )
    error = None
    try:
        await client.call("tasks.flow.Flow.activate", items)
    except Exception as exc:
        error = redact(f"{type(exc).__name__}: {exc}")[:120]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"elapsed": elapsed, "cpu": cpu, "error": error}


def row(
    label: str,
    n: int,
    burst: float,
    rate: float | None,
    res: dict[str, Any],
    stats: dict[str, Any],
    latency: float = 0.0,
) -> str:
    minimum = theoretical(n, burst, rate)
    ratio = f"{res['elapsed'] / minimum:6.3f}" if minimum else "   n/a"
    extra = f" ratio(min+rtt) {res['elapsed'] / (minimum + latency):.3f}" if latency else ""
    rate_s = f"{rate:g}/s" if rate else "unlimited"
    return (
        f"{label:<14} N={n:<6} bucket={burst:g}+{rate_s:<9} elapsed={res['elapsed']:7.2f}s "
        f"min={minimum:6.2f}s ratio={ratio}{extra} 503s={stats['refused_503']:<3} "
        f"cpu={res['cpu']:5.2f}s toggles/flow={histogram(stats['activations'], n)}"
    )


async def limited_cases(quick: bool) -> list[str]:
    scale = 10 if quick else 1
    cases = [
        ("5k@2/s", 5000 // scale, 50, 2.0, 0.0),
        ("10k@20/s", 10000 // scale, 50, 20.0, 0.0),
        ("10k@20/s+150ms", 10000 // scale, 50, 20.0, 0.15),
    ]
    lines = []
    have_fast = fast_bitrix24_available()
    for label, n, burst, rate, latency in cases:
        limit = b24.RateLimit(burst, rate) if rate else b24.RateLimit.unlimited()
        with emulator(n, burst, rate, latency=latency) as base:
            ours = await run_ours(base, n, limit)
            stats = await portal_stats(base)
        lines.append(row("aiob24flow " + label, n, burst, rate, ours, stats, latency))
        print(lines[-1], flush=True)
        if have_fast:
            with emulator(n, burst, rate, latency=latency) as base:
                fast = await run_fast(base, n, burst, rate)
                fstats = await portal_stats(base)
            line = row("fast_b24 " + label, n, burst, rate, fast, fstats, latency)
            if fast["error"]:
                line += f" error={fast['error']}"
            lines.append(line)
            lines.append(
                f"{'':<14} cpu aiob24flow / fast_bitrix24 = "
                f"{ours['cpu'] / max(fast['cpu'], 1e-9):.2f}"
            )
            print(lines[-2] + "\n" + lines[-1], flush=True)
    lines += await cpu_case(10000 // scale)
    return lines


async def cpu_case(n: int, reps: int = 5) -> list[str]:
    """The limiter out of the way: client CPU for n toggles, best of ``reps`` runs each,
    runs interleaved so background noise hits every contestant alike."""
    contestants: dict[str, list[dict[str, Any]]] = {"aiob24flow": [], "aiob24flow stdlib-json": []}
    have_fast = fast_bitrix24_available()
    if have_fast:
        contestants["fast_bitrix24"] = []
    last_stats: dict[str, dict[str, Any]] = {}
    for _ in range(reps):
        for name, runs in contestants.items():
            with emulator(n, 50, None) as base:
                if name == "fast_bitrix24":
                    runs.append(await run_fast(base, n, 50, None))
                elif name == "aiob24flow":
                    runs.append(await run_ours(base, n, b24.RateLimit.unlimited()))
                else:
                    with stdlib_json():
                        runs.append(await run_ours(base, n, b24.RateLimit.unlimited()))
                last_stats[name] = await portal_stats(base)
    best = {name: min(runs, key=lambda r: r["cpu"]) for name, runs in contestants.items()}
    lines = []
    for name, res in best.items():
        lines.append(
            row(f"{name} unlimited", n, 50, None, res, last_stats[name]) + f" (best cpu of {reps})"
        )
        print(lines[-1], flush=True)
    if have_fast:
        fast_cpu = best["fast_bitrix24"]["cpu"]
        lines.append(
            f"cpu aiob24flow / fast_bitrix24 = {best['aiob24flow']['cpu'] / fast_cpu:.2f} "
            f"(stdlib json: {best['aiob24flow stdlib-json']['cpu'] / fast_cpu:.2f})"
        )
        print(lines[-1], flush=True)
    return lines


async def fault_cases(quick: bool) -> list[str]:
    n = 5000 // (10 if quick else 1)
    burst, rate = 50, 20.0
    faults = {"error_before": 0.05, "error_after": 0.03, "drop_after": 0.02}
    lines = []
    for mode in ("toggle", "verify", "set_active"):
        with emulator(n, burst, rate, faults=faults, active_ratio=0.5) as base:
            res = await run_ours(base, n, b24.RateLimit(burst, rate), mode)
            stats = await portal_stats(base)
        report: b24.BulkReport = res["report"]
        acts = stats["activations"]
        doubles = sum(1 for v in acts.values() if v > 1)
        if mode == "set_active":  # changed flows toggled once, the others not at all
            lies = sum(1 for i in report.changed if acts.get(str(i), 0) != 1)
            lies += sum(
                1 for i in report.succeeded if i not in report.changed and acts.get(str(i), 0) != 0
            )
        else:
            lies = sum(1 for i in report.succeeded if acts.get(str(i), 0) != 1)
        lies += sum(1 for i in report.failed if acts.get(str(i), 0) != 0)
        # The minimum counts the toggle batches only (reads are extra work by design).
        minimum = theoretical(n, burst, rate)
        label = {
            "toggle": "activate_many",
            "verify": "activate_many(verify)",
            "set_active": "set_active(False)",
        }[mode]
        lines.append(
            f"faults {label:<22} N={n} 5%/3%/2% elapsed={res['elapsed']:6.2f}s "
            f"min={minimum:.2f}s ratio={res['elapsed'] / max(minimum, 1e-9):.3f} "
            f"requests={res['requests']} "
            f"doubles={doubles} lies={lies} unknown={len(report.unknown)} "
            f"failed={len(report.failed)} faults={stats['faults_fired']}"
        )
        print(lines[-1], flush=True)
    if fast_bitrix24_available():
        with emulator(n, burst, rate, faults=faults) as base:
            fast = await run_fast(base, n, burst, rate)
            stats = await portal_stats(base)
        doubles = sum(1 for v in stats["activations"].values() if v > 1)
        lines.append(
            f"faults fast_bitrix24          N={n} elapsed={fast['elapsed']:6.2f}s "
            f"doubles={doubles} toggles/flow={histogram(stats['activations'], n)} "
            f"error={fast['error']}"
        )
        print(lines[-1], flush=True)
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["limited", "faults"])
    args = parser.parse_args()
    from aiob24flow import _json

    print(
        f"python {sys.version.split()[0]}, aiob24flow {b24.__version__} "
        f"(json: {_json.BACKEND}), {os.cpu_count()} cpus"
    )
    if not fast_bitrix24_available():
        print("fast_bitrix24 is not installed: aiob24flow rows only", flush=True)
    results: dict[str, list[str]] = {}
    if args.only in (None, "limited"):
        results["limited"] = await limited_cases(args.quick)
    if args.only in (None, "faults"):
        results["faults"] = await fault_cases(args.quick)
    if os.environ.get("BENCH_JSON"):
        print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
