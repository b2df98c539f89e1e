"""One portal, many processes: 4 OS processes x 2,500 flows on one emulated portal.

Each process toggles its own 2,500 flows with ``activate_many``. The processes start
together (after their imports, at one agreed wall-clock instant), once pacing through one
Redis (``RedisLimiter``) and once with only their in-process limiters. Printed per case:
elapsed from the common start to the last answer, the portal's theoretical minimum for the
combined load ((ceil(10000/50) - 50) / 20 = 7.5 s), their ratio, the 503s the portal sent
and how many times each flow toggled.

    python benchmarks/bench_multiprocess.py      # needs redis-server on PATH
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_bulk import WEBHOOK_CODE, emulator, histogram, portal_stats, theoretical

WORKER = """
import asyncio, json, sys, time
import aiob24flow as b24

async def main(url, redis_url, first, last, start_at, burst, rate):
    backend = b24.RedisLimiter(redis_url) if redis_url != "-" else None
    limit = b24.RateLimit(burst, rate, backend=backend)
    async with b24.FlowClient.from_webhook(url, rate_limit=limit) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        report = await client.activate_many(range(first, last + 1))
        stats = client.stats()
    print(json.dumps({"end": time.time(), "ok": len(report.succeeded),
                      "failed": len(report.failed), "unknown": len(report.unknown),
                      "refusals": stats.query_limit_refusals, "requests": stats.requests}))

url, redis_url, first, last, start_at, burst, rate = sys.argv[1:8]
asyncio.run(main(url, redis_url, int(first), int(last), float(start_at), float(burst), float(rate)))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_case(
    redis_url: str | None, workers: int, per_worker: int, burst: float, rate: float
) -> dict[str, Any]:
    n = workers * per_worker
    with emulator(n, burst, rate) as base:
        url = f"{base}/rest/1/{WEBHOOK_CODE}/"
        start_at = time.time() + 3.0  # every process has imported and connected by then
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER,
                url,
                redis_url or "-",
                str(w * per_worker + 1),
                str((w + 1) * per_worker),
                repr(start_at),
                str(burst),
                str(rate),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for w in range(workers)
        ]
        results = []
        for proc in procs:
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(err.decode()[-800:])
            results.append(json.loads(out))
        stats = await portal_stats(base)
    elapsed = max(r["end"] for r in results) - start_at
    return {"elapsed": elapsed, "results": results, "stats": stats, "n": n}


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--per-worker", type=int, default=2500)
    args = parser.parse_args()
    burst, rate = 50.0, 20.0
    redis_proc, redis_url = start_redis()
    try:
        for label, url in (("shared Redis limiter", redis_url), ("in-process limiters", None)):
            case = await run_case(url, args.workers, args.per_worker, burst, rate)
            minimum = theoretical(case["n"], burst, rate)
            results = case["results"]
            print(
                f"{label:<22} {args.workers} processes x {args.per_worker} flows, bucket "
                f"{burst:g}+{rate:g}/s: elapsed={case['elapsed']:.2f}s min={minimum:.2f}s "
                f"ratio={case['elapsed'] / minimum:.3f} 503s={case['stats']['refused_503']} "
                f"succeeded={sum(r['ok'] for r in results)} "
                f"failed={sum(r['failed'] for r in results)} "
                f"requests={sum(r['requests'] for r in results)} "
                f"toggles/flow={histogram(case['stats']['activations'], case['n'])}",
                flush=True,
            )
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
