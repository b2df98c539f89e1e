"""``RedisJournal``: the journal shared by workers on many hosts (``aiob24flow[redis]``).

One runner at a time holds a job through a *lease*: a key set with ``SET NX PX`` to a
random token, renewed in the background every ``lease_ttl / 3`` by a Lua compare-and-
``PEXPIRE``. Every write is *fenced*: one Lua script checks that the lease still holds this
runner's token (and extends it) before it writes, so a runner paused past its lease (a
``SIGSTOP``, a stalled VM, a long GC) can write nothing after another runner took the job
over; its next write fails with ``JournalError`` and ``held()`` is False, which the job
checks after writing a request's intent and before the request leaves.

Keys (``K``: the first 32 hex digits of the job id's SHA-256, so a long id or one with any
characters in it never becomes a key name)::

    {prefix}:jobs            sorted set  K -> updated_at             (the index: jobs())
    {prefix}:K:job           hash        job_id, digest, operation, desired, verify, total,
                                         ids, state, counts, report, sent, created_at,
                                         updated_at
    {prefix}:K:intents       hash        seq -> <sent_at, n, method, ids>   (per request)
    {prefix}:K:answers       hash        seq -> <codes, errors JSON>        (per request)
    {prefix}:K:settles       list        <ids, codes, changed, errors JSON>
    {prefix}:K:snapshots     list        <ids, states>
    {prefix}:K:lease         string      the holder's random token (PX lease_ttl)

Records are encoded as ``SqliteJournal`` encodes them (``encode_ids``: a request's ids
plain, more of them zlib'd; codes as bytes; errors as JSON; the finished report as zlib'd
JSON), packed behind small little-endian length headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import secrets
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ._errors import B24Error, JobBusy, JournalError
from ._journal import (
    Answer,
    Intent,
    JobRecord,
    JobSpec,
    JobSummary,
    Settle,
    check_job_id,
    decode_errors,
    decode_ids,
    encode_errors,
    encode_ids,
    mismatch,
)
from ._redact import redact
from ._redis import import_redis

__all__ = ["RedisJournal"]

logger = logging.getLogger("aiob24flow")

T = TypeVar("T")

# -- Lua ------------------------------------------------------------------------------------
# Every fenced script starts with _FENCE: KEYS[1] is the lease, ARGV[1] the holder's token,
# ARGV[2] the lease in milliseconds. A write is proof of holding, so it extends the lease
# too (``held()`` counts from the last fenced call that succeeded).
_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RENEW = _FENCE + "return 1"
# KEYS[2] the job hash, KEYS[3] the index; ARGV[3] the job's index member, ARGV[4] its
# updated_at, then field/value pairs of the job hash (a new job, or a finished one).
_UPSERT_JOB = (
    _FENCE
    + """
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
"""
)
# KEYS[2] the intents, KEYS[3] the job hash; ARGV[3] seq, ARGV[4] the packed intent,
# ARGV[5] its number of flows. A re-send rewrites the intent (its new send time) without
# counting its flows again, so this script may also be retried safely.
_INTENT = (
    _FENCE
    + """
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'sent', ARGV[5])
else
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
end
return 1
"""
)
_HSET = _FENCE + "redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])\nreturn 1"
_RPUSH = _FENCE + "redis.call('RPUSH', KEYS[2], ARGV[3])\nreturn 1"
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease, job, intents, answers, settles, snapshots, index; ARGV: token, member.
# -1: the lease was lost; else 1 if the job was there. UNLINK frees big hashes off the
# main thread.
_FORGET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local found = redis.call('EXISTS', KEYS[2])
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[1])
redis.call('ZREM', KEYS[7], ARGV[2])
return found
"""

_SUMMARY_FIELDS = ("job_id", "operation", "desired", "verify", "total", "state", "counts",
                   "sent", "updated_at")  # fmt: skip
# What a record may fail to decode with (a foreign value under our keys, a torn value).
_DECODE_ERRORS = (struct.error, zlib.error, ValueError, KeyError, TypeError)


class _Keys:
    """The key names of one job."""

    def __init__(self, prefix: str, job_id: str) -> None:
        self.member = hashlib.sha256(job_id.encode()).hexdigest()[:32]
        base = f"{prefix}:{self.member}"
        self.job = f"{base}:job"
        self.intents = f"{base}:intents"
        self.answers = f"{base}:answers"
        self.settles = f"{base}:settles"
        self.snapshots = f"{base}:snapshots"
        self.lease = f"{base}:lease"
        self.index = f"{prefix}:jobs"


class _Scripts:
    """The Lua scripts, registered once per client (``EVALSHA``, loaded again after a
    Redis restart flushed its script cache)."""

    def __init__(self, redis: Any) -> None:
        self.renew = redis.register_script(_RENEW)
        self.upsert_job = redis.register_script(_UPSERT_JOB)
        self.intent = redis.register_script(_INTENT)
        self.hset = redis.register_script(_HSET)
        self.rpush = redis.register_script(_RPUSH)
        self.release = redis.register_script(_RELEASE)
        self.forget = redis.register_script(_FORGET)


class _Context:
    """What a journal's job logs share: the client, the scripts, the lease and a clock."""

    def __init__(
        self, redis: Any, where: str, lease_ttl: float, clock: Callable[[], float]
    ) -> None:
        self.redis = redis
        self.scripts = _Scripts(redis)
        self.where = where
        self.lease_ttl = lease_ttl
        self.lease_ms = max(1, math.ceil(lease_ttl * 1000))
        # ``held()`` ends this much before the lease could expire in Redis: it covers the
        # moment between the check and the request's first byte, and clock-rate drift
        # between this host and Redis.
        self.margin = min(lease_ttl / 10, 1.0)
        self.clock = clock

    async def call(self, what: str, call: Awaitable[T]) -> T:
        """Await a Redis call; any failure of Redis is a ``JournalError`` naming the
        journal by host:port/db (never a password)."""
        try:
            return await call
        except B24Error:
            raise
        except Exception as exc:
            raise JournalError(
                f"journal redis {self.where}: {what}: {type(exc).__name__}: {redact(str(exc))}"
            ) from None


class RedisJournal:
    """A journal in Redis, for workers on many hosts (``aiob24flow[redis]``).

    ``url_or_client`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL (the journal opens
    its own connection pool and closes it in ``aclose()``) or a ``redis.asyncio.Redis``
    client made with ``decode_responses=False`` (the default; never closed here). Jobs are
    kept under ``prefix``; ``lease_ttl`` seconds is how long a runner that stopped (killed,
    paused, cut off from Redis) keeps the job from others. ``clock`` (monotonic seconds)
    is what ``held()`` reads; tests inject one.

    One runner at a time: ``open_job`` takes the job's lease (``JobBusy`` while another
    runner's lease is live). The runner renews it every ``lease_ttl / 3``; every write
    checks it in the same Lua script, so a runner that lost it writes nothing more and, as
    ``held()`` turns False once ``lease_ttl`` passed without a renewal, sends nothing more.
    A runner killed without ``release()`` keeps the job busy until its lease expires.

    What survives what. A write returns once Redis has applied it in memory; whether it
    outlives Redis is Redis' persistence:

    - Redis without persistence (no AOF, no RDB) loses every journal when it restarts: a
      job run again starts from nothing and sends again what earlier runs sent (toggling
      those flows back). Only for jobs you can afford to lose.
    - RDB snapshots alone lose the writes since the last snapshot.
    - ``appendonly yes`` with ``appendfsync everysec`` loses at most the last second on a
      power loss (a restart of Redis alone loses nothing); ``appendfsync always`` syncs
      every write, like ``SqliteJournal(durable=True)``. Use one of these.
    - A failover to a replica that had not received the last writes (asynchronous
      replication) loses them, and the lease with them: run one primary with AOF, or
      accept that a failover may leave a few requests of a running job unrecorded.

    Use one Redis (a primary, not Redis Cluster: a job's scripts touch the index too).
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        prefix: str = "aiob24flow:job",
        lease_ttl: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if not prefix:
            raise ValueError("prefix must be a non-empty str")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)):
            raise TypeError(
                f"lease_ttl must be a number of seconds, got {type(lease_ttl).__name__}"
            )
        if not math.isfinite(lease_ttl) or lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds: {lease_ttl!r}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        redis, self._owns = _client(url_or_client)
        self.prefix = prefix
        self.lease_ttl = float(lease_ttl)
        self._ctx = _Context(redis, _where(redis), self.lease_ttl, clock)

    def __repr__(self) -> str:
        return (
            f"RedisJournal({self._ctx.where}, prefix={self.prefix!r}, lease_ttl={self.lease_ttl})"
        )

    @property
    def redis(self) -> Any:
        """The ``redis.asyncio.Redis`` client the journal uses."""
        return self._ctx.redis

    # -- jobs ---------------------------------------------------------------------------

    async def open_job(self, job_id: str, spec: JobSpec) -> _RedisJobLog:
        check_job_id(job_id)
        ctx = self._ctx
        keys = _Keys(self.prefix, job_id)
        token = secrets.token_hex(16)
        started = ctx.clock()
        taken = await ctx.call(
            f"take job {job_id!r}", ctx.redis.set(keys.lease, token, nx=True, px=ctx.lease_ms)
        )
        if not taken:
            raise JobBusy(
                f"job {job_id!r} is being run by another runner (its lease in Redis is "
                f"live; a runner that died frees it within {self.lease_ttl:g} s)"
            )
        log = _RedisJobLog(ctx, keys, job_id, token, started + ctx.lease_ttl - ctx.margin)
        try:
            await log.load(spec)
        except BaseException:
            await log.release()
            raise
        log.start()
        return log

    async def read_job(self, job_id: str) -> JobRecord | None:
        """What the journal holds of ``job_id`` (None: no such job), without taking it."""
        check_job_id(job_id)
        loaded = await _load(self._ctx, _Keys(self.prefix, job_id), None)
        return None if loaded is None else loaded[0]

    async def jobs(self) -> list[JobSummary]:
        """Every job in the journal, newest first."""
        ctx = self._ctx
        index = f"{self.prefix}:jobs"
        members = await ctx.call("list jobs", ctx.redis.zrevrange(index, 0, -1))
        if not members:
            return []
        pipe = ctx.redis.pipeline(transaction=False)
        for member in members:
            pipe.hmget(f"{self.prefix}:{member.decode()}:job", _SUMMARY_FIELDS)
        rows = await ctx.call("list jobs", pipe.execute())
        out = []
        for row in rows:
            if row[0] is None:  # forgotten between the two reads
                continue
            try:
                out.append(_summary(row))
            except _DECODE_ERRORS as exc:
                raise JournalError(
                    f"journal redis {ctx.where}: a job record cannot be read: {exc}"
                ) from None
        return out

    async def forget(self, job_id: str) -> bool:
        """Delete a job (``JobBusy`` while a runner holds it); True if it was there."""
        check_job_id(job_id)
        ctx = self._ctx
        keys = _Keys(self.prefix, job_id)
        token = secrets.token_hex(16)
        what = f"forget job {job_id!r}"
        if not await ctx.call(what, ctx.redis.set(keys.lease, token, nx=True, px=ctx.lease_ms)):
            raise JobBusy(f"job {job_id!r} is being run by another runner: not forgotten")
        found = await ctx.call(what, ctx.scripts.forget(
            keys=[keys.lease, keys.job, keys.intents, keys.answers, keys.settles,
                  keys.snapshots, keys.index],
            args=[token, keys.member],
        ))  # fmt: skip
        if found == -1:  # our lease expired before the delete (Redis stalled): nothing done
            raise JournalError(f"journal redis {ctx.where}: {what}: the lease expired first")
        return bool(found)

    async def aclose(self) -> None:
        """Close the connection pool the journal opened (a given client stays open)."""
        if self._owns:
            with contextlib.suppress(Exception):
                await self._ctx.redis.aclose()

    async def __aenter__(self) -> RedisJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _RedisJobLog:
    """One runner's hold on one job in a ``RedisJournal``: every write fenced by its
    lease token, the lease renewed by a background task until ``release()``."""

    def __init__(
        self, ctx: _Context, keys: _Keys, job_id: str, token: str, held_until: float
    ) -> None:
        self._ctx = ctx
        self._keys = keys
        self.job_id = job_id
        self._token = token
        self._held_until = held_until  # on ctx.clock: the lease is surely ours till then
        self._lost = False
        self._released = False
        self._record: JobRecord | None = None
        self._seq = 1
        self._renewal: asyncio.Task[None] | None = None

    @property
    def record(self) -> JobRecord:
        assert self._record is not None
        return self._record

    # -- opening ------------------------------------------------------------------------

    async def load(self, spec: JobSpec) -> None:
        """Create the job, or read what earlier runs left (read only now that the lease
        is ours: every write of an earlier holder is in Redis before it, or failed)."""
        ctx, keys = self._ctx, self._keys
        digest = await ctx.call(f"open job {self.job_id!r}", ctx.redis.hget(keys.job, "digest"))
        if digest is None:
            now = time.time()
            await self._fenced(ctx.scripts.upsert_job, [keys.job, keys.index], [
                keys.member, repr(now), "job_id", self.job_id, "digest", spec.digest,
                "operation", spec.operation, "desired", _bool(spec.desired),
                "verify", int(spec.verify), "total", len(spec.ids),
                "ids", encode_ids(spec.ids), "state", "unfinished", "sent", 0,
                "created_at", repr(now), "updated_at", repr(now),
            ])  # fmt: skip
            self._record = JobRecord(spec)
            return
        if digest.decode() != spec.digest:
            job = await ctx.call(f"open job {self.job_id!r}", ctx.redis.hgetall(keys.job))
            raise mismatch(self.job_id, _spec_of(job), spec)
        loaded = await _load(ctx, keys, spec)
        if loaded is None:  # forgotten between the two reads: impossible while we hold it
            raise JournalError(f"journal redis {ctx.where}: job {self.job_id!r} vanished")
        self._record, self._seq = loaded

    def start(self) -> None:
        self._renewal = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        ctx, keys = self._ctx, self._keys
        while True:
            await asyncio.sleep(ctx.lease_ttl / 3)
            started = ctx.clock()
            try:
                ok = await ctx.scripts.renew(keys=[keys.lease], args=[self._token, ctx.lease_ms])
            except Exception as exc:
                # Redis away for a moment: held() runs out by itself if it stays away.
                logger.warning("journal redis %s: the lease of job %r was not renewed (%s)",
                               ctx.where, self.job_id, type(exc).__name__)  # fmt: skip
                continue
            if not ok:
                self._lost = True
                logger.warning("journal redis %s: job %r: the lease expired and another "
                               "runner may hold the job; this runner sends nothing more",
                               ctx.where, self.job_id)  # fmt: skip
                return
            self._extend(started)

    def _extend(self, started: float) -> None:
        ctx = self._ctx
        self._held_until = max(self._held_until, started + ctx.lease_ttl - ctx.margin)

    # -- writes -------------------------------------------------------------------------

    async def _fenced(self, script: Any, keys: list[str], args: list[Any]) -> None:
        """Run a fenced script: written only while the lease holds our token."""
        ctx = self._ctx
        what = f"job {self.job_id!r}"
        if self._released:
            raise JournalError(f"{what} was released: nothing more is written")
        if self._lost:
            raise JournalError(f"{what}: the lease was lost: nothing more is written")
        started = ctx.clock()
        ok = await ctx.call(
            f"write {what}",
            script(keys=[self._keys.lease, *keys], args=[self._token, ctx.lease_ms, *args]),
        )
        if not ok:
            self._lost = True
            raise JournalError(
                f"journal redis {ctx.where}: {what}: the lease expired and another runner "
                "may hold the job: nothing more is written or sent"
            )
        self._extend(started)

    async def intent(self, method: str, ids: Sequence[int], seq: int | None) -> int:
        if seq is None:
            seq, self._seq = self._seq, self._seq + 1
        packed = _pack_intent(method, time.time(), ids)
        keys = self._keys
        await self._fenced(
            self._ctx.scripts.intent, [keys.intents, keys.job], [seq, packed, len(ids)]
        )
        return seq

    async def answer(self, seq: int, codes: bytes, errors: dict[int, B24Error]) -> None:
        packed = struct.pack("<I", len(codes)) + codes + _errors_blob(errors)
        await self._fenced(self._ctx.scripts.hset, [self._keys.answers], [seq, packed])

    async def settle(
        self, ids: Sequence[int], codes: bytes, changed: bytes, errors: dict[int, B24Error]
    ) -> None:
        blob = encode_ids(ids)
        packed = (struct.pack("<III", len(blob), len(codes), len(changed))
                  + blob + codes + changed + _errors_blob(errors))  # fmt: skip
        await self._fenced(self._ctx.scripts.rpush, [self._keys.settles], [packed])

    async def snapshot(self, ids: Sequence[int], states: bytes) -> None:
        blob = encode_ids(ids)
        packed = struct.pack("<I", len(blob)) + blob + states
        await self._fenced(self._ctx.scripts.rpush, [self._keys.snapshots], [packed])

    async def finish(self, report: dict[str, Any]) -> None:
        now = time.time()
        blob = zlib.compress(json.dumps(report, separators=(",", ":")).encode(), 1)
        keys = self._keys
        await self._fenced(self._ctx.scripts.upsert_job, [keys.job, keys.index], [
            keys.member, repr(now), "state", "finished", "counts", json.dumps(report["counts"]),
            "report", blob, "updated_at", repr(now),
        ])  # fmt: skip

    # -- the lease ----------------------------------------------------------------------

    def held(self) -> bool:
        """Local, no I/O: not released, not lost, and renewed (or written) within the
        lease, less the margin."""
        return not (self._lost or self._released) and self._ctx.clock() < self._held_until

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        ctx = self._ctx
        try:  # only our own lease: a runner that took the job over keeps its own
            await ctx.scripts.release(keys=[self._keys.lease], args=[self._token])
        except Exception as exc:  # it expires by itself; release() must not mask an error
            logger.warning("journal redis %s: the lease of job %r was not released (%s); "
                           "it expires in %g s", ctx.where, self.job_id, type(exc).__name__,
                           ctx.lease_ttl)  # fmt: skip


# -- reading --------------------------------------------------------------------------------


async def _load(ctx: _Context, keys: _Keys, spec: JobSpec | None) -> tuple[JobRecord, int] | None:
    """(the record, the next intent seq), or None when there is no such job. One
    MULTI/EXEC: a consistent view even while a runner writes."""
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hgetall(keys.job)
    pipe.hgetall(keys.intents)
    pipe.hgetall(keys.answers)
    pipe.lrange(keys.settles, 0, -1)
    pipe.lrange(keys.snapshots, 0, -1)
    job, intents, answers, settles, snapshots = await ctx.call("read a job", pipe.execute())
    if not job:
        return None
    try:
        return _record(job, intents, answers, settles, snapshots, spec)
    except _DECODE_ERRORS as exc:
        raise JournalError(
            f"journal redis {ctx.where}: a record of the job cannot be read: {exc}"
        ) from None


def _record(
    job: dict[bytes, bytes],
    intents: dict[bytes, bytes],
    answers: dict[bytes, bytes],
    settles: list[bytes],
    snapshots: list[bytes],
    spec: JobSpec | None,
) -> tuple[JobRecord, int]:
    if spec is None:
        spec = _spec_of(job)
    record = JobRecord(spec, finished=job.get(b"state") == b"finished")
    if job.get(b"report"):
        record.report = json.loads(zlib.decompress(job[b"report"]))
    for seq, packed in sorted((int(k), v) for k, v in intents.items()):
        record.intents.append(_unpack_intent(seq, packed))
    for field, packed in answers.items():
        seq = int(field)
        (n,) = struct.unpack_from("<I", packed)
        codes = packed[4 : 4 + n]
        record.answers[seq] = Answer(seq, codes, decode_errors(packed[4 + n :]))
    for packed in settles:
        a, b, c = struct.unpack_from("<III", packed)
        ids = decode_ids(packed[12 : 12 + a])
        codes, changed = packed[12 + a : 12 + a + b], packed[12 + a + b : 12 + a + b + c]
        record.settles.append(Settle(ids, codes, changed, decode_errors(packed[12 + a + b + c :])))
    for packed in snapshots:
        (a,) = struct.unpack_from("<I", packed)
        record.snapshots.append((decode_ids(packed[4 : 4 + a]), packed[4 + a :]))
    next_seq = max((i.seq for i in record.intents), default=0) + 1
    return record, next_seq


def _summary(row: list[bytes | None]) -> JobSummary:
    job_id, operation, desired, verify, total, state, counts, sent, updated = row
    assert job_id is not None and operation is not None and total is not None
    numbers = json.loads(counts) if counts else {"total": int(total)}
    if not counts:
        numbers["sent"] = int(sent or 0)
    return JobSummary(job_id.decode(), operation.decode(), _unbool(desired or b""),
                      verify == b"1", int(total), (state or b"unfinished").decode(), numbers,
                      float(updated or 0))  # fmt: skip


# -- packing --------------------------------------------------------------------------------


def _pack_intent(method: str, sent_at: float, ids: Sequence[int]) -> bytes:
    name = method.encode()
    return struct.pack("<dIH", sent_at, len(ids), len(name)) + name + encode_ids(ids)


def _unpack_intent(seq: int, packed: bytes) -> Intent:
    sent_at, _n, size = struct.unpack_from("<dIH", packed)
    head = struct.calcsize("<dIH")
    method = packed[head : head + size].decode()
    return Intent(seq, method, sent_at, decode_ids(packed[head + size :]))


def _errors_blob(errors: dict[int, B24Error]) -> bytes:
    return encode_errors(errors).encode() if errors else b""


def _spec_of(job: dict[bytes, bytes]) -> JobSpec:
    """The spec a job was started with, from its hash."""
    return JobSpec(job[b"operation"].decode(), decode_ids(job[b"ids"]),
                   _unbool(job[b"desired"]), job[b"verify"] == b"1")  # fmt: skip


def _bool(value: bool | None) -> str:
    return "" if value is None else str(int(value))


def _unbool(value: bytes) -> bool | None:
    return None if not value else value == b"1"


# -- the client -----------------------------------------------------------------------------


def _client(url_or_client: Any) -> tuple[Any, bool]:
    """(the client, whether the journal owns it)."""
    if isinstance(url_or_client, str):
        try:
            aioredis = import_redis()
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ImportError(
                "RedisJournal needs the redis package: pip install 'aiob24flow[redis]'"
            ) from None
        try:
            # No retries inside redis-py: a write whose answer was lost is the journal's
            # error to report (the job halts), not one to repeat behind its back.
            client = aioredis.from_url(
                url_or_client, socket_connect_timeout=5, socket_timeout=10,
                retry=Retry(NoBackoff(), 0),
            )  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"url_or_client: {redact(str(exc))}") from None
        return client, True
    if not callable(getattr(url_or_client, "register_script", None)):
        raise TypeError(
            "url_or_client must be a redis:// URL or a redis.asyncio.Redis client, got "
            f"{type(url_or_client).__name__}"
        )
    encoder = getattr(url_or_client, "get_encoder", None)
    if callable(encoder) and getattr(encoder(), "decode_responses", False):
        raise ValueError(
            "url_or_client: the journal stores bytes; pass a client made with "
            "decode_responses=False (the default)"
        )
    return url_or_client, False


def _where(redis: Any) -> str:
    """host:port/db of the client's pool, or the socket path: never its password."""
    pool = getattr(redis, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return "<the given client>"
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
