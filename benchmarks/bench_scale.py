"""Scale: CPU and memory per flow from 10k to 1M flows, and 100 portals in one process.

Every figure is measured in a fresh client process against an emulator in its own process
(so CPU and memory are the client's alone), side by side with fast_bitrix24 in one run.

- ``cpu/flow``: the client's CPU time for the operation, per flow;
- ``gc``: the part of it spent in CPython's cyclic collector (``gc.callbacks``);
- ``kernel``: the part of it spent in the kernel (``ru_stime``): socket calls, and the
  page faults of memory the process touches for the first time;
- ``peak/flow``: peak RSS growth during the operation (``ru_maxrss`` minus the RSS just
  before the ids were made), per flow.

    python benchmarks/bench_scale.py                       # 10k, 100k, 1M (several minutes)
    python benchmarks/bench_scale.py --sizes 10000,100000  # quicker
    python benchmarks/bench_scale.py --portals-only        # the 100-portal run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from bench_bulk import run_emulator

import aiob24flow as b24

WEBHOOK_CODE = "emulator-webhook-code-1"


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def emulator(flows: int, *, portals: int = 1, burst: float = 50, leak: float = 0) -> Iterator[str]:
    """A fresh emulated portal (or ``portals`` of them); yield its port."""
    args = [
        "--flows", str(flows), "--burst", str(burst), "--leak", str(leak),
        "--portals", str(portals), "--active-ratio", "0.5",
    ]  # fmt: skip
    with run_emulator(args, start_within=120) as port:  # a million flows take a while
        yield port


# -- one measurement, in its own process -----------------------------------------------------


class GcTimer:
    """Seconds spent in CPython's cyclic garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


async def measure(op: str, n: int, port: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
    before = rss_bytes()
    collector = GcTimer()
    gc.callbacks.append(collector)
    ids = list(range(1, n + 1))
    kernel0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    cpu0, t0 = time.process_time(), time.perf_counter()
    if op == "fast_bitrix24":
        from fast_bitrix24 import BitrixAsync

        items = [{"flowId": i} for i in ids]
        client = BitrixAsync(url, verbose=False, request_pool_size=10**6,
                             requests_per_second=1e6, ssl=False)  # fmt: skip
        await client.call("tasks.flow.Flow.activate", items)
        ok = n
    else:
        async with b24.FlowClient.from_webhook(url, rate_limit=b24.RateLimit.unlimited()) as c:
            if op == "activate_many":
                report = await c.activate_many(ids)
            elif op == "set_active":
                report = await c.set_active(ids, True)
            elif op == "get_many(fields)":
                report = await c.get_many(ids, fields=("active", "name"))
            else:
                report = await c.get_many(ids)
            ok = len(report.succeeded)
    cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak, kernel = usage.ru_maxrss * 1024, usage.ru_stime - kernel0
    gc.callbacks.remove(collector)
    return {"op": op, "n": n, "cpu": cpu, "elapsed": elapsed, "peak_growth": peak - before,
            "ok": ok, "gc": collector.seconds, "kernel": kernel}  # fmt: skip


def run_measure(op: str, n: int, port: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", op, str(n), port],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def fast_available() -> bool:
    try:
        import fast_bitrix24  # noqa: F401
    except ImportError:
        return False
    return True


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def repeats_for(n: int, repeat: int) -> int:
    """Small runs are noisy (a few hundred requests): measure them several times."""
    if n <= 10_000:
        return repeat
    return max(1, repeat // 2) if n <= 100_000 else 1


def scaling(sizes: list[int], repeat: int) -> None:
    ops = ["activate_many", "set_active", "get_many", "get_many(fields)"]
    if uvloop_available():
        ops.append("activate_many+uvloop")
    if fast_available():
        ops.append("fast_bitrix24")
        if uvloop_available():
            ops.append("fast_bitrix24+uvloop")
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {op: [] for op in ops}
        for _ in range(repeats_for(n, repeat)):
            for op in ops:  # interleaved: a slow spell of the machine hits every op alike
                with emulator(n) as port:  # a fresh portal: every run starts from one state
                    runs[op].append(run_measure(op, n, port))
        for op in ops:
            # The least CPU of the runs (noise only adds), and the peak of that run.
            row = rows[op, n] = min(runs[op], key=lambda r: r["cpu"])
            print(
                f"{op:<20} N={n:>8} cpu/flow={row['cpu'] / n * 1e6:6.1f}us "
                f"(gc {row['gc'] / n * 1e6:4.1f}us, kernel {row['kernel'] / n * 1e6:4.1f}us) "
                f"peak/flow={row['peak_growth'] / n:7.0f}B elapsed={row['elapsed']:7.2f}s "
                f"ok={row['ok']} (best cpu of {len(runs[op])})",
                flush=True,
            )
        if fast_available():
            fast = rows["fast_bitrix24", n]["cpu"]
            text = f"cpu aiob24flow / fast_bitrix24 = {rows['activate_many', n]['cpu'] / fast:.2f}"
            if uvloop_available():
                fast_uv = rows["fast_bitrix24+uvloop", n]["cpu"]
                text += f"; both on uvloop: {rows['activate_many+uvloop', n]['cpu'] / fast_uv:.2f}"
            print(f"{'':<20} N={n:>8} {text}", flush=True)
    small, large = min(sizes), max(sizes)
    if small != large:
        for op in ops:
            a, b = rows[op, small], rows[op, large]
            cpu = (b["cpu"] / large) / (a["cpu"] / small)
            own = ((b["cpu"] - b["gc"]) / large) / ((a["cpu"] - a["gc"]) / small)
            user = ((b["cpu"] - b["gc"] - b["kernel"]) / large) / (
                (a["cpu"] - a["gc"] - a["kernel"]) / small
            )
            mem = (b["peak_growth"] / large) / max(1.0, a["peak_growth"] / small)
            print(f"{op:<20} per-flow cost at {large} / at {small}: cpu x{cpu:.2f} "
                  f"(outside the collector x{own:.2f}, and the kernel x{user:.2f}), "
                  f"memory x{mem:.2f}")  # fmt: skip


# -- many portals ------------------------------------------------------------------------------


async def many_portals(portals: int, flows: int, burst: float, rate: float,
                       headroom: float) -> dict[str, Any]:  # fmt: skip
    with emulator(flows, portals=portals, burst=burst, leak=rate) as port:
        limit = b24.RateLimit(burst=burst, per_second=rate, headroom=headroom)
        batches = -(-flows // 50)
        minimum = max(0.0, (batches - burst) / rate)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            hosts = (
                ["127.0.0.1"] if portals == 1 else [f"127.0.1.{k}" for k in range(1, portals + 1)]
            )
            clients = [
                b24.FlowClient.from_webhook(
                    f"http://{host}:{port}/rest/1/{WEBHOOK_CODE}/",
                    rate_limit=limit,
                    session=session,
                )
                for host in hosts
            ]
            elapsed: list[float] = []

            async def one(index: int, client: b24.FlowClient) -> None:
                # Jobs of different portals start at different moments (as they do in an
                # app): spread over one drain period, so one single-threaded emulator
                # process is not handed 100 requests in the same millisecond.
                await asyncio.sleep(index / portals / rate)
                t0 = time.perf_counter()
                report = await client.activate_many(range(1, flows + 1))
                assert report.ok, report.summary()
                elapsed.append(time.perf_counter() - t0)

            cpu0 = time.process_time()
            peak0 = rss_bytes()
            await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
            cpu = time.process_time() - cpu0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak0
            refused = 0
            for host in hosts:
                async with session.get(f"http://{host}:{port}/_emulator/stats") as r:
                    stats = await r.json()
                    refused += stats["refused_503"]
                    assert all(v == 1 for v in stats["activations"].values())
    return {"portals": portals, "flows": flows, "min": minimum, "worst": max(elapsed),
            "best": min(elapsed), "cpu_per_toggle": cpu / (portals * flows),
            "refused_503": refused, "peak_growth": peak}  # fmt: skip


def portals_run() -> None:
    burst, rate, headroom = 2.0, 2.0, 0.25
    for portals in (1, 100):
        r = asyncio.run(many_portals(portals, 1000, burst, rate, headroom))
        print(
            f"{portals:>3} portal(s) x {r['flows']} flows, bucket {burst:g}+{rate:g}/s "
            f"(headroom {headroom}): min={r['min']:.2f}s worst={r['worst']:.2f}s "
            f"(ratio {r['worst'] / r['min']:.3f}) best={r['best']:.2f}s 503s={r['refused_503']} "
            f"cpu/toggle={r['cpu_per_toggle'] * 1e6:.1f}us peak={r['peak_growth'] / 1e6:.0f}MB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--measure", nargs=3, metavar=("OP", "N", "PORT"))
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--portals-only", action="store_true")
    parser.add_argument("--no-portals", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="runs per op up to 100k flows")
    args = parser.parse_args()
    if args.measure:
        op, n, port = args.measure
        if op.endswith("+uvloop"):
            import uvloop

            result = uvloop.run(measure(op.removesuffix("+uvloop"), int(n), port))
            result["op"] = op
        else:
            result = asyncio.run(measure(op, int(n), port))
        print(json.dumps(result))
        return
    print(f"python {sys.version.split()[0]}, aiob24flow {b24.__version__}, "
          f"{os.cpu_count()} cpus", flush=True)  # fmt: skip
    if not args.portals_only:
        scaling([int(s) for s in args.sizes.split(",")], args.repeat)
    if not args.no_portals:
        portals_run()


if __name__ == "__main__":
    main()
