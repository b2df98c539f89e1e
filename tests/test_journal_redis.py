"""``RedisJournal`` against a real redis-server on loopback and the emulator over real
sockets: its keys, the lease that lets one runner at a time hold a job, fencing of a runner
that lost it (in this process and in a child process stopped with a real ``SIGSTOP``),
and the errors it raises before any request. The journal tests shared with
``SqliteJournal`` are in ``tests/test_journal.py``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis

import aiob24flow as b24
from aiob24flow.emulator import EmulatorServer
from tests.conftest import FakeClock, free_port, serve, unique_prefix

pytestmark = pytest.mark.redis

FAST = b24.Timeout(portal_limit=1.0, settle=0.05)
ACTIVATE = "tasks.flow.Flow.activate"


def client_for(server: EmulatorServer, **options: Any) -> b24.FlowClient:
    options.setdefault("rate_limit", b24.RateLimit.unlimited())
    options.setdefault("timeout", FAST)
    return b24.FlowClient.from_webhook(server.webhook_url(), **options)


def job_key(prefix: str, job_id: str, part: str) -> str:
    """The documented key of one part of a job (the job id's digest, never the id)."""
    return f"{prefix}:{hashlib.sha256(job_id.encode()).hexdigest()[:32]}:{part}"


@contextlib.asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[Any]:
    """A plain client, to look at (and tamper with) what the journal wrote."""
    client = aioredis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    """Poll an async predicate; fail (not hang) if it does not hold within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- arguments, errors, keys ---------------------------------------------------------------


def test_arguments_are_checked_and_the_repr_shows_no_password() -> None:
    url = "redis://:hunter2@127.0.0.1:1/3"
    for kwargs, error, word in [
        ({"prefix": ""}, ValueError, "prefix"),
        ({"prefix": 5}, TypeError, "prefix"),
        ({"lease_ttl": 0}, ValueError, "lease_ttl"),
        ({"lease_ttl": -1.0}, ValueError, "lease_ttl"),
        ({"lease_ttl": float("nan")}, ValueError, "lease_ttl"),
        ({"lease_ttl": True}, TypeError, "lease_ttl"),
        ({"lease_ttl": "30"}, TypeError, "lease_ttl"),
    ]:
        with pytest.raises(error, match=word):
            b24.RedisJournal(url, **kwargs)
    with pytest.raises(TypeError, match="url_or_client"):
        b24.RedisJournal(5)
    with pytest.raises(ValueError, match="url_or_client"):
        b24.RedisJournal("http://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="decode_responses"):
        b24.RedisJournal(aioredis.from_url("redis://127.0.0.1:1/0", decode_responses=True))
    journal = b24.RedisJournal(url, lease_ttl=2)
    assert repr(journal) == "RedisJournal(127.0.0.1:1/3, prefix='aiob24flow:job', lease_ttl=2.0)"
    assert isinstance(journal, b24.Journal)


@pytest.mark.parametrize("why", ["unreachable", "auth"])
async def test_a_journal_that_cannot_be_reached_fails_before_any_request(
    why: str, redis_url: str
) -> None:
    """Nothing listens on the port, or the server refuses the password: ``JournalError``
    naming host:port/db, never the password, and no request."""
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    if why == "unreachable":
        host_port = f"127.0.0.1:{free_port()}"
    else:  # a user whose password is another one
        async with raw_redis(redis_url) as redis:
            await redis.execute_command("ACL", "SETUSER", "journal", "on", ">right", "~*", "+@all")
    url = f"redis://journal:hunter2@{host_port}/0"
    async with serve(flows=10) as server, b24.RedisJournal(url) as journal:
        async with client_for(server) as client:
            with pytest.raises(b24.JournalError) as caught:
                await client.activate_many([1, 2, 3], journal=journal, job_id="a")
        assert server.state.requests == 0
        for call in (journal.jobs(), journal.read_job("a"), journal.forget("a")):
            with pytest.raises(b24.JournalError):
                await call
    message = str(caught.value)
    assert f"journal redis {host_port}/0" in message, message
    assert "hunter2" not in message and "hunter2" not in repr(journal)


async def test_keys_name_the_job_by_digest_and_grow_per_request(redis_url: str) -> None:
    """10,000 flows: one intent and one answer per request of 50 (not per flow), the id
    nowhere in a key, the lease gone after the run, and the memory a few bytes a flow."""
    prefix, job_id = unique_prefix(), "nightly " + "x" * 150 + " :*?{}"
    async with (
        serve(flows=10_000) as server,
        b24.RedisJournal(redis_url, prefix=prefix) as journal,
        client_for(server) as client,
    ):
        report = await client.activate_many(range(1, 10_001), journal=journal, job_id=job_id)
    assert report.ok
    async with raw_redis(redis_url) as redis:
        keys = sorted([k.decode() async for k in redis.scan_iter(f"{prefix}:*")])
        assert keys == sorted([
            f"{prefix}:jobs", job_key(prefix, job_id, "job"),
            job_key(prefix, job_id, "intents"), job_key(prefix, job_id, "answers"),
        ])  # fmt: skip
        assert await redis.hlen(job_key(prefix, job_id, "intents")) == 200
        assert await redis.hlen(job_key(prefix, job_id, "answers")) == 200
        memory = sum([await redis.memory_usage(k, samples=0) for k in keys])
    # Measured about 12 bytes a flow (the finished report is a third of it): the bound
    # only catches a record per flow (which would cost 60 bytes and more).
    assert memory / 10_000 < 32, memory
    async with b24.RedisJournal(redis_url, prefix=prefix) as reader:  # another process
        [summary] = await reader.jobs()
    assert (summary.job_id, summary.state, summary.total) == (job_id, "finished", 10_000)
    assert summary.counts == report.summary()


async def test_an_unfinished_job_is_listed_with_what_it_sent(redis_url: str) -> None:
    prefix = unique_prefix()
    stop = asyncio.Event()

    def progress(p: b24.Progress) -> None:
        if p.done >= 100:
            stop.set()

    async with serve(flows=500) as server, b24.RedisJournal(redis_url, prefix=prefix) as journal:
        async with client_for(server, concurrency=1) as client:
            await client.activate_many(range(1, 501), on_progress=progress, stop=stop,
                                       journal=journal, job_id="s")  # fmt: skip
            await client.set_active([1, 2], True, journal=journal, job_id="t")
        jobs = await journal.jobs()
    assert [j.job_id for j in jobs] == ["t", "s"]  # newest first
    unfinished = jobs[1]
    assert unfinished.state == "unfinished" and unfinished.operation == "activate_many"
    assert unfinished.counts == {"total": 500, "sent": 100}
    assert jobs[0].desired is True and jobs[0].state == "finished"


async def test_records_read_back_as_sqlite_journal_reads_them(
    redis_url: str, tmp_path: Path
) -> None:
    """The same jobs on both journals: the same intents, answers, settles, snapshots and
    report (send times aside)."""
    records = []
    for journal in (
        b24.SqliteJournal(tmp_path / "j.db"),
        b24.RedisJournal(redis_url, prefix=unique_prefix()),
    ):
        async with serve(flows=120, active_ratio=0.5) as server, journal:
            async with client_for(server, concurrency=1) as client:
                await client.set_active(range(1, 121), False, journal=journal, job_id="off")
                await client.activate_many(range(1, 61), verify=True, journal=journal,
                                           job_id="verify")  # fmt: skip
            records.append([await journal.read_job("off"), await journal.read_job("verify")])
            assert await journal.read_job("none") is None
    for sqlite, redis in zip(*records, strict=True):
        assert sqlite is not None and redis is not None
        assert redis.spec == sqlite.spec and list(redis.spec.ids) == list(sqlite.spec.ids)
        assert (redis.finished, redis.report) == (sqlite.finished, sqlite.report)
        assert [(i.seq, i.method, list(i.ids)) for i in redis.intents] == [
            (i.seq, i.method, list(i.ids)) for i in sqlite.intents
        ]
        assert {s: a.codes for s, a in redis.answers.items()} == {
            s: a.codes for s, a in sqlite.answers.items()
        }
        assert [(list(s.ids), s.codes, s.changed) for s in redis.settles] == [
            (list(s.ids), s.codes, s.changed) for s in sqlite.settles
        ]
        assert [(list(i), s) for i, s in redis.snapshots] == [
            (list(i), s) for i, s in sqlite.snapshots
        ]
    assert records[1][0] is not None and records[1][0].settles  # set_active settled some
    assert records[1][1] is not None and records[1][1].snapshots  # verify read first


# -- the lease and fencing -----------------------------------------------------------------


async def test_a_write_after_another_runner_took_the_lease_fails_and_held_turns_false(
    redis_url: str,
) -> None:
    prefix = unique_prefix()
    lease = job_key(prefix, "a", "lease")
    async with b24.RedisJournal(redis_url, prefix=prefix) as journal, raw_redis(redis_url) as redis:
        log = await journal.open_job("a", b24.JobSpec("activate_many", range(1, 101)))
        seq = await log.intent(ACTIVATE, range(1, 51), None)
        assert log.held()
        await redis.set(lease, "another runner's token", px=30_000)  # taken over
        with pytest.raises(b24.JournalError, match="lease"):
            await log.answer(seq, bytes([1]) * 50, {})
        assert not log.held()
        with pytest.raises(b24.JournalError):  # lost: refused without writing
            await log.intent(ACTIVATE, range(51, 101), None)
        assert await redis.hlen(job_key(prefix, "a", "intents")) == 1
        assert await redis.hlen(job_key(prefix, "a", "answers")) == 0
        await log.release()
        assert await redis.get(lease) == b"another runner's token"  # not ours to delete
        with pytest.raises(b24.JobBusy):
            await journal.forget("a")


async def test_held_is_a_local_check_counted_from_the_last_fenced_call(redis_url: str) -> None:
    """``held()`` reads a clock, not Redis: it turns False ``lease_ttl`` (less a margin)
    after the last renewal or write that succeeded, and a write that succeeds (the lease
    still live in Redis) extends it again."""
    clock = FakeClock(1000.0)
    prefix = unique_prefix()
    async with b24.RedisJournal(redis_url, prefix=prefix, clock=clock) as journal:
        log = await journal.open_job("a", b24.JobSpec("activate_many", [1]))
        clock.now += 28.9
        assert log.held()
        clock.now += 0.2  # 29.1 s: inside the 30 s lease, past its 1 s margin
        assert not log.held()
        await log.intent(ACTIVATE, [1], None)
        assert log.held()
        clock.now += 29.1
        assert not log.held()
        await log.release()
        assert not log.held()
        with pytest.raises(b24.JournalError, match="released"):
            await log.answer(1, b"\x01", {})


async def test_the_lease_is_renewed_while_a_job_runs(redis_url: str) -> None:
    """A 0.3 s lease held for three times as long: the background renewal keeps it (its
    TTL is reset), so the holder still writes and another runner is still refused."""
    prefix = unique_prefix()
    async with (
        b24.RedisJournal(redis_url, prefix=prefix, lease_ttl=0.3) as journal,
        b24.RedisJournal(redis_url, prefix=prefix) as other,
        raw_redis(redis_url) as redis,
    ):
        log = await journal.open_job("a", b24.JobSpec("activate_many", [1]))
        await asyncio.sleep(1.0)
        assert 0 < await redis.pttl(job_key(prefix, "a", "lease")) <= 300
        assert log.held()
        await log.intent(ACTIVATE, [1], None)
        with pytest.raises(b24.JobBusy):
            await other.open_job("a", b24.JobSpec("activate_many", [1]))
        await log.release()
        assert await redis.exists(job_key(prefix, "a", "lease")) == 0
        await (await other.open_job("a", b24.JobSpec("activate_many", [1]))).release()


class Capturing(b24.RedisJournal):
    """The real journal; keeps the logs it opens so the test can ask them ``held()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logs: list[Any] = []

    async def open_job(self, job_id: str, spec: b24.JobSpec) -> Any:
        log = await super().open_job(job_id, spec)
        self.logs.append(log)
        return log


async def test_a_runner_paused_past_its_lease_sends_nothing_more_and_another_finishes(
    redis_url: str,
) -> None:
    """The first runner's whole process stalls (a blocking pause in its progress callback:
    no renewal runs) for three leases, right after its 5th answer came and before it is
    written. Its next write fails, it halts; the next runner takes the job over: the 5th
    request is in doubt (unknown, not sent again) and every flow is toggled once."""
    prefix = unique_prefix()
    paused = False

    def stall(p: b24.Progress) -> None:
        nonlocal paused
        if p.done >= 250 and not paused:
            paused = True
            time.sleep(1.0)  # blocks the event loop, as SIGSTOP would: no renewal

    async with serve(flows=400) as server:
        first = Capturing(redis_url, prefix=prefix, lease_ttl=0.3)
        async with client_for(server, concurrency=1) as client, first:
            a = await client.activate_many(range(1, 401), on_progress=stall, journal=first,
                                           job_id="p")  # fmt: skip
        [log] = first.logs
        assert not log.held()
        assert len(a.succeeded) == 250 and len(a.failed) == 150
        assert all(isinstance(e.__cause__, b24.JournalError) for e in a.failed.values())
        assert server.state.requests == 5
        async with client_for(server) as client, b24.RedisJournal(redis_url, prefix=prefix) as j:
            b = await client.activate_many(range(1, 401), journal=j, job_id="p")
        assert sorted(b.unknown) == list(range(201, 251))  # answered, but not recorded
        assert len(b.succeeded) == 350 and not b.failed
        assert server.state.requests == 5 + 3
    assert all(server.state.activations[i] == 1 for i in range(1, 401))


async def test_a_takeover_while_the_first_runner_lives_stops_it_at_its_next_write(
    redis_url: str,
) -> None:
    """The first runner's lease is deleted (it expired) right after its 3rd answer came,
    and a second runner starts at once, in the same loop: both are alive. The first one's
    next write is refused, so it sends nothing more; the second finishes the job."""
    prefix = unique_prefix()
    lease = job_key(prefix, "t", "lease")
    second: list[asyncio.Task[b24.BulkReport[bool]]] = []
    async with serve(flows=300) as server, raw_redis(redis_url) as redis:
        sync_redis = SyncRedis.from_url(redis_url)
        first = Capturing(redis_url, prefix=prefix)
        other = b24.RedisJournal(redis_url, prefix=prefix)
        async with client_for(server, concurrency=1) as a, client_for(server) as b:

            def take_over(p: b24.Progress) -> None:
                if p.done >= 150 and not second:
                    sync_redis.delete(lease)  # the lease ran out (blocking: a known point)
                    second.append(asyncio.ensure_future(
                        b.activate_many(range(1, 301), journal=other, job_id="t")))  # fmt: skip

            report_a = await a.activate_many(range(1, 301), on_progress=take_over,
                                             journal=first, job_id="t")  # fmt: skip
            report_b = await asyncio.wait_for(second[0], 30)
        sync_redis.close()
        await first.aclose()
        await other.aclose()
        assert not first.logs[0].held()
        assert len(report_a.succeeded) == 150
        assert sorted(report_b.unknown) == list(range(101, 151))
        assert len(report_b.succeeded) == 250
        assert await redis.exists(lease) == 0  # released by the second runner
    assert all(server.state.activations[i] == 1 for i in range(1, 301))
    assert server.state.requests == 3 + 3


# -- other processes -----------------------------------------------------------------------

# A runner in its own process. It stops itself with a real SIGSTOP at a known point of the
# job (deterministic, unlike a signal sent from outside at an unknown moment), prints a
# line just before, and prints its report as JSON when it ends.
RUNNER = r"""
import asyncio, json, os, signal, sys
import aiob24flow as b24

webhook, redis_url, prefix, job_id, operation, point, nth, flows = sys.argv[1:9]
nth, flows = int(nth), int(flows)


def pause(line):
    print(line, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # until the test sends SIGCONT


class PausingLog:
    # The real log; the process stops right after the intent of its nth toggle request
    # is written, before the request may leave.
    def __init__(self, log):
        self.log, self.toggles = log, 0

    def __getattr__(self, name):
        return getattr(self.log, name)

    async def intent(self, method, ids, seq):
        seq = await self.log.intent(method, ids, seq)
        if method == "tasks.flow.Flow.activate":
            self.toggles += 1
            if self.toggles == nth:
                pause(f"PAUSED intent {ids[0]}-{ids[-1]}")
        return seq


class Journal(b24.RedisJournal):
    async def open_job(self, job_id, spec):
        log = await super().open_job(job_id, spec)
        return PausingLog(log) if point == "intent" else log


paused = False


def progress(p):
    global paused
    if point == "answer" and not paused and p.done >= nth:
        paused = True
        pause(f"PAUSED answer {p.done}")  # inside the fold: this answer is not written yet


async def main():
    journal = Journal(redis_url, prefix=prefix, lease_ttl=1.0)
    rate = b24.RateLimit(burst=1, per_second=3, headroom=0)  # a job of a few seconds
    ids = range(1, flows + 1)
    async with journal, b24.FlowClient.from_webhook(webhook, rate_limit=rate,
                                                    concurrency=1) as client:
        if operation == "activate_many":
            call = client.activate_many(ids, on_progress=progress, journal=journal,
                                        job_id=job_id)
        else:
            call = client.set_active(ids, False, on_progress=progress, journal=journal,
                                     job_id=job_id)
        try:
            report = await call
        except b24.B24Error as exc:
            print(json.dumps({"error": type(exc).__name__}), flush=True)
            return
    causes = sorted({type(e.__cause__ or e).__name__ for e in report.failed.values()})
    print(json.dumps({"succeeded": len(report.succeeded), "failed": len(report.failed),
                      "unknown": len(report.unknown), "causes": causes}), flush=True)


asyncio.run(main())
"""

# Holds a job in its own process until a line (or EOF) arrives on stdin.
HOLDER = r"""
import asyncio, sys
import aiob24flow as b24

redis_url, prefix, job_id, ttl = sys.argv[1:5]


async def main():
    async with b24.RedisJournal(redis_url, prefix=prefix, lease_ttl=float(ttl)) as journal:
        log = await journal.open_job(job_id, b24.JobSpec("activate_many", range(1, 11)))
        print("HELD", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await log.release()
    print("RELEASED", flush=True)


asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def child(script: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The venv's python running ``script``; killed if the test leaves it running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            await proc.wait()


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except asyncio.TimeoutError:
        pytest.fail("the child printed nothing in time")
    if not line:
        assert proc.stderr is not None
        pytest.fail(f"the child ended: {(await proc.stderr.read()).decode()[-2000:]}")
    return line.decode().strip()


async def finish(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """Wait for the child to end (bounded); its last line, as JSON."""
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the stop")
@pytest.mark.parametrize(
    ("operation", "point", "nth", "flows"),
    [
        # stopped inside the 5th answer's fold: that request ran, its answer is not written
        ("activate_many", "answer", 250, 400),
        # stopped right after the 4th toggle's intent was written, before it could leave
        ("set_active", "intent", 4, 300),
    ],
)
async def test_a_runner_stopped_by_sigstop_sends_nothing_after_sigcont(
    redis_url: str, operation: str, point: str, nth: int, flows: int
) -> None:
    """A child runs the job with a 1 s lease (renewed for the seconds it runs), stops
    itself with SIGSTOP at a known point; its lease runs out; this process takes the job
    over and finishes it; then the child gets SIGCONT. It sends nothing more (its next
    write or its ``held()`` check refuses), and no flow is toggled twice.

    - ``activate_many``: the request the child was folding ran but its answer was never
      written: in doubt, so the second runner reports it unknown and never re-sends it;
      the child's send was its one toggle.
    - ``set_active``: the 4th toggle's intent was written but the request never left (the
      child's ``held()`` is False after SIGCONT): in doubt, the second runner reads those
      flows back once the lost request must have finished, finds them unchanged, and
      toggles them itself.
    """
    prefix, job_id = unique_prefix(), f"sigstop-{operation}"
    async with serve(flows=flows) as server, raw_redis(redis_url) as redis:
        args = [server.webhook_url(), redis_url, prefix, job_id, operation, point, str(nth),
                str(flows)]  # fmt: skip
        async with child(RUNNER, *args) as proc:
            line = await read_line(proc)
            assert line.startswith(f"PAUSED {point}"), line
            await until(lambda: stopped(proc.pid), "the child to stop")
            sent_by_first = server.state.requests
            lease = job_key(prefix, job_id, "lease")
            await until(lambda: _gone(redis, lease), "the stopped runner's lease to expire")

            async with (
                client_for(server) as client,
                b24.RedisJournal(redis_url, prefix=prefix) as journal,
            ):
                if operation == "activate_many":
                    report = await client.activate_many(range(1, flows + 1), journal=journal,
                                                        job_id=job_id)  # fmt: skip
                else:
                    report = await client.set_active(range(1, flows + 1), False,
                                                     journal=journal, job_id=job_id)  # fmt: skip
            after_takeover = server.state.requests
            assert after_takeover > sent_by_first

            proc.send_signal(signal.SIGCONT)
            result = await finish(proc)
        assert server.state.requests == after_takeover, "the first runner sent after SIGCONT"
        assert result.get("causes") == ["JournalError"], result
        if operation == "activate_many":
            in_doubt = list(range(nth - 49, nth + 1))
            assert sorted(report.unknown) == in_doubt
            assert len(report.succeeded) == flows - 50 and not report.failed
            assert result["succeeded"] == nth  # it had every answer up to the stop
            assert all(server.state.activations[i] == 1 for i in range(1, flows + 1))
        else:
            assert report.ok and len(report.changed) == flows, report.summary()
            assert all(not server.state.flows[i].active for i in range(1, flows + 1))
            assert all(server.state.activations[i] == 1 for i in range(1, flows + 1))
            assert result["succeeded"] == (nth - 1) * 50


async def _gone(redis: Any, key: str) -> bool:
    return not await redis.exists(key)


async def test_a_job_held_in_another_process_is_busy_until_released(redis_url: str) -> None:
    prefix, job_id = unique_prefix(), "held"
    async with serve(flows=10) as server, b24.RedisJournal(redis_url, prefix=prefix) as journal:
        async with child(HOLDER, redis_url, prefix, job_id, "1") as proc:
            assert await read_line(proc) == "HELD"
            async with client_for(server) as client:
                with pytest.raises(b24.JobBusy):
                    await client.activate_many(range(1, 11), journal=journal, job_id=job_id)
                with pytest.raises(b24.JobBusy):
                    await journal.forget(job_id)
                assert server.state.requests == 0
                assert proc.stdin is not None
                proc.stdin.write(b"release\n")
                assert await read_line(proc) == "RELEASED"
                report = await client.activate_many(range(1, 11), journal=journal, job_id=job_id)
            await asyncio.wait_for(proc.wait(), 30)
        assert report.ok
        assert all(server.state.activations[i] == 1 for i in range(1, 11))
        assert await journal.forget(job_id) is True
        assert await journal.forget(job_id) is False
        assert await journal.jobs() == []


async def test_a_killed_holder_keeps_the_job_until_its_lease_expires(redis_url: str) -> None:
    prefix, job_id = unique_prefix(), "killed"
    async with (
        serve(flows=10) as server,
        b24.RedisJournal(redis_url, prefix=prefix) as journal,
        raw_redis(redis_url) as redis,
    ):
        async with child(HOLDER, redis_url, prefix, job_id, "3") as proc:
            assert await read_line(proc) == "HELD"
            proc.kill()  # no release(): the lease stays until it expires
            await proc.wait()
        async with client_for(server) as client:
            # It was renewed within the last second of its 3: still live for this call.
            with pytest.raises(b24.JobBusy):
                await client.activate_many(range(1, 11), journal=journal, job_id=job_id)
            await until(lambda: _gone(redis, job_key(prefix, job_id, "lease")), "the lease")
            report = await client.activate_many(range(1, 11), journal=journal, job_id=job_id)
    assert report.ok and server.state.requests == 1


async def test_a_job_opened_with_another_spec_leaves_the_lease_free(redis_url: str) -> None:
    prefix = unique_prefix()
    async with b24.RedisJournal(redis_url, prefix=prefix) as journal, raw_redis(redis_url) as redis:
        log = await journal.open_job("m", b24.JobSpec("activate_many", [1, 2]))
        await log.release()
        with pytest.raises(b24.JobMismatch):
            await journal.open_job("m", b24.JobSpec("pin_many", [1, 2]))
        assert await redis.exists(job_key(prefix, "m", "lease")) == 0
