"""An arq worker whose task toggles flows as a journaled job.

The task's arq job id IS the journal's job id. arq marks a job in progress with a Redis
key that expires ``JOB_TIMEOUT + 10`` seconds after a worker took it; the job itself stays
in the queue until it ends. A worker that dies mid-job (SIGKILL, OOM, a lost host) never
ends it, so once the mark expires any live worker takes it again, and the task, delivered
under the same id, resumes its own journaled job: flows answered before the crash are not
sent again, flows whose request left without an answer are reported ``unknown`` (never
re-sent), the rest is sent. Nothing is toggled twice, however often the task is delivered.

Each delivery is a slice: it stops sending after ``JOB_TIMEOUT / 2`` seconds and hands the
job back to the queue (``Retry``), so a job of any length is a chain of short deliveries
and a dead worker's job is back within ``JOB_TIMEOUT + 10`` seconds of its death.

Run it from the repository root (README.md here has the whole walk-through)::

    arq examples.taskqueue.worker.WorkerSettings

Environment: ``B24_WEBHOOK_URL`` (required), ``REDIS_URL`` (default
``redis://127.0.0.1:6379``), ``JOURNAL_PATH`` (default ``taskqueue-journal.db``),
``B24_BURST`` / ``B24_PER_SECOND`` for a portal whose limits are not the standard plan's,
and ``TASKQUEUE_JOB_TIMEOUT`` (seconds, default 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from arq import ArqRedis, Retry, func
from arq.connections import RedisSettings
from arq.jobs import Job

import aiob24flow as b24

__all__ = [
    "JOB_TIMEOUT",
    "QUEUE_NAME",
    "WorkerSettings",
    "activate_flows",
    "enqueue_activation",
    "redis_at",
]

# A child of arq's logger: the arq command line configures "arq" only, so the worker's
# lines come out with arq's own.
log = logging.getLogger("arq.taskqueue")

QUEUE_NAME = "aiob24flow:queue"

# How long one delivery may take. arq's in-progress mark lives JOB_TIMEOUT + 10 s, so
# this is also how fast a dead worker's job comes back. A delivery stops sending after
# SLICE seconds, waits for the requests on the wire, and ends itself before HARD_STOP:
# arq's own timeout (at JOB_TIMEOUT) fails a job instead of retrying it.
JOB_TIMEOUT = float(os.environ.get("TASKQUEUE_JOB_TIMEOUT", "60"))
SLICE = JOB_TIMEOUT / 2
HARD_STOP = JOB_TIMEOUT - min(2.0, JOB_TIMEOUT / 10)
# arq counts every delivery, slices included; a job that cannot finish stops somewhere.
MAX_DELIVERIES = 1000
# Before delivering again a job that could not go on (the portal unreachable, refusals
# outlasting the retries, another runner holding it), at most this long.
BACKOFF = 60.0
# A job not done within this long after it was enqueued is dropped by arq; how long Redis
# keeps a finished job's result (the journal keeps the report for good).
EXPIRES = 7 * 24 * 3600
RESULT_TTL = 7 * 24 * 3600


def redis_at(url: str | None = None) -> RedisSettings:
    """Where the queue lives: ``url``, else ``REDIS_URL``."""
    return RedisSettings.from_dsn(url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))


async def enqueue_activation(redis: ArqRedis, job_id: str, flow_ids: Sequence[int]) -> Job | None:
    """Enqueue ``activate_many(flow_ids)`` as job ``job_id``; None when arq holds a job or
    a kept result under that id (enqueueing twice is safe). Once the result has expired,
    the task enqueued again returns the journal's stored report and sends nothing."""
    return await redis.enqueue_job(
        "activate_flows", list(flow_ids), _job_id=job_id, _queue_name=QUEUE_NAME,
        _expires=EXPIRES,
    )  # fmt: skip


async def activate_flows(ctx: dict[str, Any], flow_ids: list[int]) -> dict[str, Any]:
    """The task: toggle ``flow_ids`` once each, journaled under the arq job's own id."""
    job_id: str = ctx["job_id"]
    delivery: int = ctx["job_try"]
    journal: b24.SqliteJournal = ctx["journal"]
    if delivery > 1:
        log.info("job %s: delivery %d resumes the journaled job", job_id, delivery)
    stop = asyncio.Event()
    timer = asyncio.get_running_loop().call_later(SLICE, stop.set)
    try:
        report = await asyncio.wait_for(
            ctx["client"].activate_many(flow_ids, stop=stop, journal=journal, job_id=job_id),
            HARD_STOP,
        )
    except b24.JobBusy:
        # Another delivery still runs it (a worker that was paused past its mark, not dead).
        raise Retry(defer=_backoff(delivery)) from None
    except asyncio.TimeoutError:
        # Requests on the wire outlived the slice: they were cut (their flows are in doubt
        # now, reported unknown, never re-sent); the next delivery goes on with the rest.
        raise Retry(defer=0) from None
    finally:
        timer.cancel()
    record = await journal.read_job(job_id)
    if record is None or not record.finished:
        # Slice over (or the portal could not be reached): the rest in the next delivery.
        # (This delivery's report calls the flows it did not send failed with Stopped.)
        left = sum(isinstance(e, b24.RequestNotSent) for e in report.failed.values())
        log.info("job %s: delivery %d ends, %d flows left", job_id, delivery, left)
        raise Retry(defer=0 if stop.is_set() else _backoff(delivery))
    return {
        "job_id": job_id,
        "deliveries": delivery,
        "counts": report.summary(),
        "succeeded": list(report.succeeded),
        "failed": {i: f"{type(e).__name__}: {e}" for i, e in report.failed.items()},
        "unknown": {i: f"{type(e).__name__}: {e}" for i, e in report.unknown.items()},
    }


def _backoff(delivery: int) -> float:
    return float(min(BACKOFF, 2**delivery))


def _rate_limit() -> b24.RateLimit:
    standard = b24.RateLimit.standard()
    return b24.RateLimit(
        float(os.environ.get("B24_BURST") or standard.burst),
        float(os.environ.get("B24_PER_SECOND") or standard.per_second),
    )


async def startup(ctx: dict[str, Any]) -> None:
    """One journal and one client per worker process, shared by its concurrent jobs (one
    limiter paces them all against the portal)."""
    stack = contextlib.AsyncExitStack()
    ctx["resources"] = stack
    path = os.environ.get("JOURNAL_PATH", "taskqueue-journal.db")
    ctx["journal"] = await stack.enter_async_context(b24.SqliteJournal(path))
    client = b24.FlowClient.from_webhook(os.environ["B24_WEBHOOK_URL"], rate_limit=_rate_limit())
    ctx["client"] = await stack.enter_async_context(client)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["resources"].aclose()


class WorkerSettings:
    """``arq examples.taskqueue.worker.WorkerSettings``."""

    functions = (
        func(activate_flows, timeout=JOB_TIMEOUT, max_tries=MAX_DELIVERIES, keep_result=RESULT_TTL),
    )
    queue_name = QUEUE_NAME
    redis_settings = redis_at()
    on_startup = startup
    on_shutdown = shutdown
    # Retry (a slice's end) and a cancelled job put the job back instead of failing it.
    retry_jobs = True
    # On SIGTERM take nothing new and let the running slices end (each hands its job
    # back), instead of cancelling them with requests on the wire.
    job_completion_wait = int(JOB_TIMEOUT)
    # How often an idle worker looks for due jobs: redelivery comes at most this late.
    poll_delay = 0.5
    max_jobs = 4
