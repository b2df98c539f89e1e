"""What is left of the client's CPU: aiohttp's own cost, and CPython's collector.

1. The same batch requests that ``activate_many`` sends, posted with plain aiohttp (its
   defaults, then the library's connector, timeouts and redirect guard), next to the
   library, and the library on a transport that costs nothing (answers made in advance):
   its own work, JSON included.
2. ``get_many`` with CPython's cyclic collector on and off, at two sizes: a flat cost
   per flow with it off shows that the growth with it on is the collector's.
3. ``get_many`` twice in one fresh process, the collector off, at 10k and at a million
   flows: user and kernel CPU per flow. The first million-flow run pays the kernel for
   every page of memory the process touches for the first time (about 2.5 GB), the
   second reuses them: that difference is the kernel's, not the library's.

Parts 1 and 2 run in one process against the emulator in another, interleaved, best and
median CPU of several rounds; part 3 runs in a process of its own.

    python benchmarks/bench_floor.py              # about three minutes
    python benchmarks/bench_floor.py --large 0    # without part 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

import aiohttp
import yarl

sys.path.insert(0, str(Path(__file__).parent))

from bench_scale import WEBHOOK_CODE, emulator

import aiob24flow as b24
from aiob24flow import _json
from aiob24flow._transport import RawResponse, Timeout

Run = Callable[[], Coroutine[None, None, None]]
PREFIX = "tasks.flow.Flow.activate?flowId="
HEADERS = {"Content-Type": "application/json"}


def batch_body(first: int) -> bytes:
    keys = [str(first + i) for i in range(50)]
    return _json.dumps({"halt": 0, "cmd": {key: PREFIX + key for key in keys}})


def plain(url: str, n: int, *, like_library: bool) -> Run:
    async def run() -> None:
        connector = (
            aiohttp.TCPConnector(limit=50, limit_per_host=50)
            if like_library
            else aiohttp.TCPConnector(limit=50)
        )
        options: dict[str, object] = {}
        target: str | yarl.URL = url
        if like_library:
            options = {
                "timeout": aiohttp.ClientTimeout(
                    total=85, sock_connect=10, connect=10, sock_read=75
                ),
                "allow_redirects": False,
            }
            target = yarl.URL(url)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            gate = asyncio.Semaphore(50)

            async def one(first: int) -> None:
                async with (
                    gate,
                    session.post(
                        target, data=batch_body(first), headers=dict(HEADERS), **options
                    ) as response,
                ):
                    _json.loads(await response.read())

            await asyncio.gather(*(one(first) for first in range(1, n + 1, 50)))

    return run


def library(url: str, n: int, op: str = "activate_many") -> Run:
    async def run() -> None:
        async with b24.FlowClient.from_webhook(url, rate_limit=b24.RateLimit.unlimited()) as c:
            report = await getattr(c, op)(list(range(1, n + 1)))
            assert len(report.succeeded) == n

    return run


class AnswersMadeInAdvance:
    """A transport that costs nothing: the portal's answer to each batch, made up front."""

    def __init__(self, n: int) -> None:
        self._answers: dict[bytes, RawResponse] = {}
        for first in range(1, n + 1, 50):
            keys = [str(i) for i in range(first, first + 50)]
            times = {k: {"start": 1.5, "finish": 1.5, "duration": 1e-05, "processing": 1e-05,
                         "date_start": "2026-11-24T02:25:24+03:00",
                         "date_finish": "2026-11-24T02:25:24+03:00",
                         "operating_reset_at": 1795476924, "operating": 0}
                     for k in keys}  # fmt: skip
            answer = {"result": {"result": dict.fromkeys(keys, True), "result_error": [],
                                 "result_total": [], "result_next": [], "result_time": times},
                      "time": times[keys[0]]}  # fmt: skip
            self._answers[keys[0].encode()] = RawResponse(200, _json.dumps(answer))

    async def aclose(self) -> None:
        """Nothing to close."""

    async def post(self, url: str, body: bytes, headers: object, timeout: Timeout) -> RawResponse:
        start = body.index(b'"cmd":{"') + 8
        return self._answers[body[start : body.index(b'"', start)]]


def free_transport(n: int) -> Run:
    transport = AnswersMadeInAdvance(n)

    async def run() -> None:
        async with b24.FlowClient.from_webhook(
            "https://portal.example/rest/1/code/", rate_limit=b24.RateLimit.unlimited(),
            transport=transport,
        ) as c:  # fmt: skip
            report = await c.activate_many(list(range(1, n + 1)))
            assert len(report.succeeded) == n

    return run


def rounds(variants: dict[str, Run], count: int,
           n: int, collector: dict[str, bool] | None = None) -> None:  # fmt: skip
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(count):
        for name, make in variants.items():
            if collector is not None and not collector[name]:
                gc.disable()
            started = time.process_time()
            asyncio.run(make())
            cpu[name].append(time.process_time() - started)
            gc.enable()
            gc.collect()
    for name, values in cpu.items():
        print(
            f"{name:<34} best {min(values) * 1e3:7.1f} ms  median "
            f"{statistics.median(values) * 1e3:7.1f} ms  ({min(values) / n * 1e6:5.1f} us/flow)",
            flush=True,
        )


def first_touch(port: str, n: int) -> list[dict[str, float]]:
    """In this (fresh) process: ``get_many`` of ``n`` flows twice, the collector off."""
    base = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
    gc.disable()
    runs = []
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF)
        asyncio.run(library(base, n, "get_many")())
        after = resource.getrusage(resource.RUSAGE_SELF)
        runs.append({
            "user": (after.ru_utime - before.ru_utime) / n * 1e6,
            "kernel": (after.ru_stime - before.ru_stime) / n * 1e6,
            "faults": (after.ru_minflt - before.ru_minflt) / n,
        })  # fmt: skip
    return runs


def first_touch_run(n: int) -> None:
    print(f"-- get_many of {n} flows twice in one fresh process, collector off")
    with emulator(n) as port:
        out = subprocess.run(
            [sys.executable, __file__, "--first-touch", port, str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    for label, run in zip(("first run", "second run"), json.loads(out.stdout), strict=True):
        print(
            f"{f'get_many {n} ({label})':<34} user {run['user']:5.1f} us/flow  kernel "
            f"{run['kernel']:5.1f} us/flow  page faults {run['faults']:.2f}/flow",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first-touch", nargs=2, metavar=("PORT", "N"))
    parser.add_argument("--large", type=int, default=1_000_000,
                        help="flows for part 3 (0: skip it)")  # fmt: skip
    args = parser.parse_args()
    if args.first_touch:
        port, count = args.first_touch
        print(json.dumps(first_touch(port, int(count))))
        return
    n = 10_000
    print(f"python {sys.version.split()[0]}, aiob24flow {b24.__version__}, json {_json.BACKEND}")
    with emulator(n) as port:
        base = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
        print(f"-- {n} toggles in {n // 50} batch requests, 12 rounds")
        rounds(
            {
                "plain aiohttp (its defaults)": plain(base + "batch", n, like_library=False),
                "plain aiohttp (library settings)": plain(base + "batch", n, like_library=True),
                "aiob24flow activate_many": library(base, n),
                "aiob24flow, free transport": free_transport(n),
            },
            12,
            n,
        )
    for size in (10_000, 200_000):
        with emulator(size) as port:
            base = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
            print(f"-- get_many of {size} flows, collector on and off, 3 rounds")
            rounds(
                {
                    f"get_many {size} (collector on)": library(base, size, "get_many"),
                    f"get_many {size} (collector off)": library(base, size, "get_many"),
                },
                3,
                size,
                collector={
                    f"get_many {size} (collector on)": True,
                    f"get_many {size} (collector off)": False,
                },
            )
    if args.large:
        for size in (10_000, args.large):
            first_touch_run(size)


if __name__ == "__main__":
    main()
