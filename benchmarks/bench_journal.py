"""What a journal costs a bulk job, measured side by side in one run.

1. Elapsed at the portal's limit: ``activate_many`` over N flows against the emulator (in
   its own process) with a small bucket, without a journal and with the durable SQLite
   journal: elapsed / the portal's theoretical minimum for each.
2. Client CPU per flow (the journal's thread included: it is this process's CPU) with no
   journal, ``SqliteJournal(durable=False)`` and ``SqliteJournal(durable=True)``, on an
   unlimited portal, interleaved rounds; the ratio to no journal of the best of each, and
   the median of the rounds' ratios.
3. Journal size per flow: a journaled ``activate_many`` over a million flows on a
   transport that costs nothing (answers made in advance, ``bench_floor.py``), then the
   database's bytes (after a WAL checkpoint) / flows.
4. What a resume costs: the same million-flow job stopped half way, then resumed: the
   time to load what the first run left, and the resume's CPU per flow it still sent.

    python benchmarks/bench_journal.py               # about four minutes
    python benchmarks/bench_journal.py --large 100000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_floor import AnswersMadeInAdvance
from bench_scale import WEBHOOK_CODE, emulator

import aiob24flow as b24


async def _activate(url: str, n: int, rate: b24.RateLimit, journal: b24.Journal | None) -> float:
    started = time.perf_counter()
    async with b24.FlowClient.from_webhook(url, rate_limit=rate) as client:
        if journal is None:
            report = await client.activate_many(range(1, n + 1))
        else:
            report = await client.activate_many(
                range(1, n + 1), journal=journal, job_id=f"bench-{time.monotonic_ns()}"
            )
    assert report.ok, report.summary()
    return time.perf_counter() - started


def pacing(n: int) -> None:
    burst, rate = 5, 20.0
    bucket = b24.RateLimit(burst, rate)
    minimum = max(0.0, (math.ceil(n / 50) - burst) / rate)
    for label in ("no journal", "SqliteJournal(durable=True)"):
        with emulator(n, burst=burst, leak=rate) as port:
            url = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
            with tempfile.TemporaryDirectory() as tmp:

                async def run(label: str = label, tmp: str = tmp, url: str = url) -> float:
                    if label == "no journal":
                        return await _activate(url, n, bucket, None)
                    async with b24.SqliteJournal(Path(tmp) / "j.db") as journal:
                        return await _activate(url, n, bucket, journal)

                elapsed = asyncio.run(run())
        print(f"pacing  {label:32} N={n} elapsed={elapsed:6.2f}s min={minimum:6.2f}s "
              f"ratio={elapsed / minimum:.3f}")  # fmt: skip


def cpu(n: int, rounds: int) -> None:
    variants = ("no journal", "durable=False", "durable=True")
    spent: dict[str, list[float]] = {label: [] for label in variants}
    with emulator(n) as port, tempfile.TemporaryDirectory() as tmp:
        url = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
        unlimited = b24.RateLimit.unlimited()
        for r in range(rounds):
            for label in variants:

                async def run(label: str = label, r: int = r) -> None:
                    if label == "no journal":
                        await _activate(url, n, unlimited, None)
                        return
                    path = Path(tmp) / f"{r}-{label}.db"
                    durable = label == "durable=True"
                    async with b24.SqliteJournal(path, durable=durable) as journal:
                        await _activate(url, n, unlimited, journal)

                start = time.process_time()
                asyncio.run(run())
                spent[label].append(time.process_time() - start)
    base = spent["no journal"]
    for label in variants:
        # The best of each (the least disturbed run), and the median of the ratios of
        # the runs made side by side in one round: two views of the same noise.
        paired = statistics.median(a / b for a, b in zip(spent[label], base, strict=True))
        best = min(spent[label])
        print(f"cpu     {label:32} N={n} best={best * 1e6 / n:6.2f} us/flow "
              f"ratio={best / min(base):.3f} (median of rounds {paired:.3f})")  # fmt: skip


async def _free_job(
    n: int, journal: b24.Journal, job_id: str, stop: b24.Stop | None = None
) -> b24.BulkReport[bool]:
    transport = AnswersMadeInAdvance(n)
    async with b24.FlowClient.from_webhook(
        "http://127.0.0.1:9/rest/1/code/",
        transport=transport,
        rate_limit=b24.RateLimit.unlimited(),
    ) as client:

        def halfway(progress: b24.Progress) -> None:
            if stop is not None and progress.done >= n // 2:
                stop.set()

        return await client.activate_many(
            range(1, n + 1), journal=journal, job_id=job_id, stop=stop, on_progress=halfway
        )


def size_and_resume(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "size.db"

        async def whole() -> None:
            async with b24.SqliteJournal(path, durable=False) as journal:
                report = await _free_job(n, journal, "size")
                assert report.ok

        start = time.process_time()
        asyncio.run(whole())
        spent = time.process_time() - start
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(path)
        print(f"size    N={n} journal={size / 1e6:.1f} MB  {size / n:.1f} bytes/flow "
              f"(job CPU {spent * 1e6 / n:.2f} us/flow, durable=False)")  # fmt: skip

        resumed = Path(tmp) / "resume.db"

        async def stopped_then_resumed() -> tuple[float, float, int]:
            async with b24.SqliteJournal(resumed, durable=False) as journal:
                first = await _free_job(n, journal, "resume", b24.Stop())
                left = len(first.failed)
                t0, c0 = time.perf_counter(), time.process_time()
                opened = await journal.open_job(
                    "resume", b24.JobSpec("activate_many", list(range(1, n + 1)))
                )
                load = time.perf_counter() - t0
                await opened.release()
                c1 = time.process_time()
                second = await _free_job(n, journal, "resume")
                assert second.ok and len(second.changed) == n
                return load, (time.process_time() - c1) + (c1 - c0), left

        load, resume_cpu, left = asyncio.run(stopped_then_resumed())
        print(f"resume  N={n} stopped with {left} flows unsent: loading what the first run "
              f"left {load:.2f}s; resume CPU {resume_cpu:.2f}s "
              f"({resume_cpu * 1e6 / n:.2f} us per flow of the job)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="flows for parts 1 and 2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--large", type=int, default=1_000_000, help="flows for parts 3, 4")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, aiob24flow {b24.__version__}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus")  # fmt: skip
    pacing(min(args.n, 10_000))
    cpu(args.n, args.rounds)
    if args.large:
        size_and_resume(args.large)


if __name__ == "__main__":
    main()
