"""Enqueue one journaled activation job for the worker in ``worker.py``.

    python -m examples.taskqueue.enqueue JOB_ID 1-1000 [2001 2005 ...] [--wait SECONDS]

JOB_ID names the job in the queue and in the journal alike: enqueueing it again while arq
holds it (queued, running, or finished with its result kept) does nothing. ``--wait``
waits for the outcome and prints its counts (exit 1 if the job failed or is not done in
time). ``REDIS_URL`` as for the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from arq import ArqRedis, create_pool
from arq.jobs import Job, ResultNotFound

from .worker import QUEUE_NAME, enqueue_activation, redis_at


def flow_ids(words: Sequence[str]) -> list[int]:
    """``["1-3", "7"]`` -> ``[1, 2, 3, 7]``."""
    ids: list[int] = []
    for word in words:
        first, dash, last = word.partition("-")
        ids.extend(range(int(first), int(last) + 1) if dash else [int(word)])
    return ids


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.taskqueue.enqueue")
    parser.add_argument("job_id", help="the job's id, in the queue and in the journal")
    parser.add_argument("ids", nargs="+", help="flow ids: N or A-B")
    parser.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the outcome")
    args = parser.parse_args(argv)
    redis = await create_pool(redis_at())
    try:
        job = await enqueue_activation(redis, args.job_id, flow_ids(args.ids))
        print(f"job {args.job_id}: " + ("enqueued" if job else "already in the queue"))
        if args.wait is None:
            return 0
        return await wait_for(redis, args.job_id, args.wait)
    finally:
        await redis.aclose()


async def wait_for(redis: ArqRedis, job_id: str, seconds: float) -> int:
    """Print the job's outcome once it has one (it may take several deliveries)."""
    job = Job(job_id, redis, _queue_name=QUEUE_NAME)
    try:
        result = await job.result(timeout=seconds)
    except asyncio.TimeoutError:
        print(f"job {job_id}: not done after {seconds:g} s", file=sys.stderr)
        return 1
    except ResultNotFound:
        print(f"job {job_id}: not in the queue, and no result kept", file=sys.stderr)
        return 1
    except Exception as exc:  # the task's own error, re-raised by arq
        print(f"job {job_id}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"job {job_id}: done in {result['deliveries']} deliveries: {result['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
