"""The processes that ``tests/test_crash.py`` kills: one journaled bulk call, and a SIGKILL.

A job process runs ``OPERATION`` over flows ``1..FLOWS`` with ``SqliteJournal(DB)`` under
``JOB``, with arguments ``URL DB JOB OPERATION POINT FLOWS CONCURRENCY``, and kills itself
with SIGKILL at ``POINT``, a journal write counted in that process:

- ``intent:N``: after the Nth intent is durable, before its request leaves;
- ``resend:N``: the same for the Nth re-send of a refused request (its new send time);
- ``answer-before:N``: the Nth answer arrived (and was folded), before it is written;
- ``answer:N`` / ``settle:N`` / ``snapshot:N``: after the Nth such write;
- ``finish``: every answer written, before the job's report is; ``finished``: after;
- ``none``: never (the test kills it from outside, at a moment of its choosing).

A run that reaches its end without being killed prints the report's summary and exits 0.
The test module imports ``run_operation`` too, so a resume is the very same call.

``zygote()`` (``python -c "from tests.crash_child import zygote; zygote()"`` from the
repository root) imports all this once and forks one job process per request, so that a
test does not pay for the imports again: it reads a JSON line ``{"argv": [...], "log":
PATH}``, forks (the job's output goes to ``PATH``), answers ``{"pid": PID}``, and once the
job process has ended ``{"pid": PID, "code": CODE}`` (``-9``: it was SIGKILLed). ``main()``
runs one job process from the command line, for a look by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import aiob24flow as b24
from aiob24flow._journal import JobLog, JobRecord, JobSpec, JobSummary

#: The journaled calls the crash tests run.
OPERATIONS = ("activate_many", "verify", "set_active_on", "set_active_off", "pin_many",
              "set_pinned")  # fmt: skip

#: Small timeouts: a lost answer is settled 0.8 s after its request left.
TIMEOUT = b24.Timeout(portal_limit=0.8, settle=0.05)
#: A refused request is sent again after a short pause.
RETRY = b24.RetryPolicy(initial_delay=0.05, max_delay=0.2)


def client_for(url: str, concurrency: int) -> b24.FlowClient:
    return b24.FlowClient.from_webhook(
        url, rate_limit=b24.RateLimit.unlimited(), timeout=TIMEOUT, retry=RETRY,
        concurrency=concurrency,
    )  # fmt: skip


async def run_operation(
    client: b24.FlowClient, operation: str, ids: Sequence[int], journal: b24.Journal, job_id: str
) -> b24.BulkReport[bool]:
    """The one journaled call of ``operation`` (the same in the child and on resume)."""
    kw: dict[str, Any] = {"journal": journal, "job_id": job_id}
    if operation == "activate_many":
        return await client.activate_many(ids, **kw)
    if operation == "verify":
        return await client.activate_many(ids, verify=True, **kw)
    if operation == "set_active_on":
        return await client.set_active(ids, True, **kw)
    if operation == "set_active_off":
        return await client.set_active(ids, False, **kw)
    if operation == "pin_many":
        return await client.pin_many(ids, **kw)
    if operation == "set_pinned":
        return await client.set_pinned(ids, True, **kw)
    raise ValueError(f"unknown operation {operation!r}")


def die() -> None:
    """As a crash does: no cleanup, no flush, no finally."""
    os.kill(os.getpid(), signal.SIGKILL)


class KillPoint:
    """Counts journal writes and says when to die."""

    def __init__(self, point: str) -> None:
        kind, _, count = point.partition(":")
        self.kind = kind
        self.count = int(count) if count else 1
        self.seen: dict[str, int] = {}

    def at(self, kind: str) -> None:
        """A write of ``kind`` happens (or is about to): die if it is the chosen one."""
        self.seen[kind] = self.seen.get(kind, 0) + 1
        if kind == self.kind and self.seen[kind] == self.count:
            die()


class KillingLog:
    """A ``JobLog`` that writes through to the real one and dies at its kill point."""

    def __init__(self, inner: JobLog, point: KillPoint) -> None:
        self.inner = inner
        self.point = point

    @property
    def record(self) -> JobRecord:
        return self.inner.record

    async def intent(self, method: str, ids: Sequence[int], seq: int | None) -> int:
        resend = seq is not None  # sent again after a refusal: its new send time
        seq = await self.inner.intent(method, ids, seq)
        self.point.at("resend" if resend else "intent")  # durable; the request has not left
        return seq

    async def answer(self, seq: int, codes: bytes, errors: dict[int, b24.B24Error]) -> None:
        self.point.at("answer-before")  # the answer is in; its outcome is not written
        await self.inner.answer(seq, codes, errors)
        self.point.at("answer")

    async def settle(
        self, ids: Sequence[int], codes: bytes, changed: bytes, errors: dict[int, b24.B24Error]
    ) -> None:
        await self.inner.settle(ids, codes, changed, errors)
        self.point.at("settle")

    async def snapshot(self, ids: Sequence[int], states: bytes) -> None:
        await self.inner.snapshot(ids, states)
        self.point.at("snapshot")

    async def finish(self, report: dict[str, Any]) -> None:
        self.point.at("finish")
        await self.inner.finish(report)
        self.point.at("finished")

    def held(self) -> bool:
        return self.inner.held()

    async def release(self) -> None:
        await self.inner.release()


def open_journal(where: str) -> b24.Journal:
    """``where`` names the journal: a SQLite path, or ``redis|URL|PREFIX``."""
    if where.startswith("redis|"):
        _, url, prefix = where.split("|")
        # A lease a loaded machine cannot lose by accident, short enough that a resume
        # takes the job over soon after the kill.
        return b24.RedisJournal(url, prefix=prefix, lease_ttl=1.5)
    return b24.SqliteJournal(where)


class KillingJournal:
    """A ``Journal`` whose jobs die at ``point``."""

    def __init__(self, inner: b24.Journal, point: str) -> None:
        self.inner = inner
        self.point = KillPoint(point)

    async def open_job(self, job_id: str, spec: JobSpec) -> JobLog:
        return KillingLog(await self.inner.open_job(job_id, spec), self.point)

    async def jobs(self) -> list[JobSummary]:
        return await self.inner.jobs()

    async def read_job(self, job_id: str) -> JobRecord | None:
        return await self.inner.read_job(job_id)

    async def forget(self, job_id: str) -> bool:
        return await self.inner.forget(job_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _main(argv: Sequence[str]) -> None:
    url, db, job_id, operation, point, flows, concurrency = argv
    journal = KillingJournal(open_journal(db), point)
    try:
        async with client_for(url, int(concurrency)) as client:
            report = await run_operation(
                client, operation, range(1, int(flows) + 1), journal, job_id
            )
    finally:
        await journal.aclose()
    print(report.summary(), flush=True)


def main() -> None:
    asyncio.run(_main(sys.argv[1:]))


def _job(argv: Sequence[str], log: str) -> None:
    """The forked job process: its output to ``log``; it never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        asyncio.run(_main(argv))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def zygote() -> None:
    """Fork a job process per request on stdin, one at a time (see the module's text)."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _job(request["argv"], request["log"])
        _say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _say({"pid": pid, "code": os.waitstatus_to_exitcode(status)})
