"""A leaky bucket and operating budget shared through Redis (``aiob24flow[redis]``).

The portal counts requests per portal (and source address), not per process. Every
process that talks to one portal therefore reserves its slots in one Redis hash, updated
atomically by a Lua script on Redis' own clock (``TIME``), so workers on several hosts
agree on time too. The same script re-synchronises the shared bucket on a 503.

    backend = b24.RedisLimiter("redis://127.0.0.1:6379/0")
    rate = b24.RateLimit(burst=50, per_second=2, backend=backend)
    async with b24.FlowClient.from_webhook(url, rate_limit=rate) as client:   # PINGs Redis
        ...

When Redis cannot be reached at start-up, ``async with`` (or ``await backend.check()``)
raises ``LimiterUnavailable``. During a job, ``on_unavailable`` decides:

- ``"fail"`` (default): the request is not sent; ``LimiterUnavailable`` is a
  ``RequestNotSent``, so it is retried with backoff and, if Redis stays away, the flows are
  reported ``failed`` (provably not applied). Never silent over-sending.
- ``"local"``: fall back to a conservative in-process bucket with a burst of 1 and
  ``per_second / fallback_share`` (``fallback_share`` = the number of processes you run),
  and go back to Redis as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time as _time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from ._errors import LimiterUnavailable
from ._limiter import LeakyBucket, RateLimit, portal_key
from ._operating import OperatingBudget
from ._types import Sleep

__all__ = ["LimiterUnavailable", "RedisBucket", "RedisLimiter"]

logger = logging.getLogger("aiob24flow")

# KEYS[1] bucket hash; ARGV: capacity, rate, mode ("reserve" | "refused"), burst.
# Returns the seconds to wait (as a string: Lua numbers would be truncated to integers).
_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or tostring(now))
if now > at then
  level = math.max(0, level - (now - at) * rate)
  at = now
end
local wait = 0
if ARGV[3] == 'reserve' then
  wait = math.max(0, (level + 1 - capacity) / rate)
  level = level + 1
else
  level = math.max(level, tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level),
           'at', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((level / rate + 60) * 1000))
return string.format('%.17g', wait)
"""


def import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "RedisLimiter needs the redis package: pip install 'aiob24flow[redis]'"
        ) from exc
    return aioredis


class RedisLimiter:
    """The Redis backend: pass it as ``RateLimit(..., backend=RedisLimiter(url))``.

    One backend serves every client of the process; the clients do not close it:
    ``await backend.aclose()`` when the process is done with it."""

    def __init__(
        self,
        url: str | Any = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "aiob24flow",
        on_unavailable: Literal["fail", "local"] = "fail",
        fallback_share: int = 4,
        operating_limit: float = 480.0,
    ) -> None:
        if on_unavailable not in ("fail", "local"):
            raise ValueError("on_unavailable must be 'fail' or 'local'")
        if isinstance(fallback_share, bool) or not isinstance(fallback_share, int):
            raise TypeError("fallback_share must be an int")
        if fallback_share < 1:
            raise ValueError("fallback_share must be >= 1")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        if isinstance(url, str):
            self.redis = import_redis().from_url(
                url, socket_connect_timeout=2, socket_timeout=2, decode_responses=True
            )
            self._where = url.split("@")[-1]  # never show a password
        else:
            self.redis = url
            self._where = "the given redis client"
        self.prefix = prefix
        self.on_unavailable = on_unavailable
        self.fallback_share = fallback_share
        self.operating_limit = operating_limit
        self._script = self.redis.register_script(_BUCKET_LUA)

    def __repr__(self) -> str:
        return f"<RedisLimiter {self._where} prefix={self.prefix!r}>"

    async def check(self) -> None:
        """PING Redis; raise ``LimiterUnavailable`` with a clear message if it is away."""
        try:
            await self.redis.ping()
        except Exception as exc:
            raise LimiterUnavailable(
                f"cannot reach Redis at {self._where} for the shared rate limiter: "
                f"{type(exc).__name__}"
            ) from None

    def limiter_for(
        self, origin: str, rate_limit: RateLimit, sleep: Sleep | None = None
    ) -> RedisBucket:
        """The shared bucket of one portal (used by ``FlowClient``); it sleeps with
        ``sleep`` (a client's injected sleep), else ``asyncio.sleep``."""
        return RedisBucket(self, origin, rate_limit, sleep=sleep)

    def budget_for(self, origin: str, sleep: Sleep | None = None) -> RedisOperatingBudget:
        """The shared operating budget of one portal (used by ``FlowClient``)."""
        return RedisOperatingBudget(self, origin, limit=self.operating_limit, sleep=sleep)

    async def run_script(self, key: str, args: list[Any]) -> float:
        """Run the bucket script on ``key``; return the seconds to wait."""
        return float(await self._script(keys=[key], args=args))

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self.redis.aclose()


class RedisBucket:
    """One portal's bucket in Redis; implements the client's ``Limiter`` protocol."""

    def __init__(
        self,
        backend: RedisLimiter,
        origin: str,
        rate_limit: RateLimit,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        self.backend = backend
        self.rate_limit = rate_limit
        self.key = f"{backend.prefix}:bucket:{portal_key(origin)}"
        self._capacity = float(rate_limit.burst) - rate_limit.slots_kept_free
        self._fallback = LeakyBucket(
            RateLimit(
                burst=1, per_second=rate_limit.per_second / backend.fallback_share, headroom=0
            ),
            sleep=sleep,
        )
        self._degraded = False
        self.sleep: Sleep = sleep or asyncio.sleep

    async def start(self) -> None:
        await self.backend.check()

    async def _script(self, mode: str) -> float:
        args = [
            repr(self._capacity),
            repr(float(self.rate_limit.per_second)),
            mode,
            repr(float(self.rate_limit.burst)),
        ]
        return await self.backend.run_script(self.key, args)

    async def acquire(self) -> float:
        try:
            wait = await self._script("reserve")
        except Exception as exc:
            if self.backend.on_unavailable == "fail":
                raise LimiterUnavailable(
                    f"shared limiter unavailable ({type(exc).__name__}); request not sent"
                ) from None
            if not self._degraded:
                logger.warning("Redis unavailable: pacing with a conservative local bucket")
                self._degraded = True
            return await self._fallback.acquire()
        if self._degraded:
            logger.warning("Redis is back: shared pacing resumed")
            self._degraded = False
        logger.debug("shared bucket %s: wait %.3fs", self.key, wait)
        if wait > 0:
            await self.sleep(wait)
        return wait

    def release(self) -> None:
        """A reserved slot stays taken: the shared bucket drains it (conservative)."""

    async def refused(self) -> None:
        try:
            await self._script("refused")
        except Exception:
            await self._fallback.refused()


class RedisOperatingBudget(OperatingBudget):
    """The operating budget shared through Redis: a method one process sees near its
    limit is held back in every process."""

    def __init__(
        self,
        backend: RedisLimiter,
        origin: str,
        *,
        limit: float = 480.0,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(limit=limit, sleep=sleep)
        self.backend = backend
        self.key = f"{backend.prefix}:operating:{portal_key(origin)}"
        self._pending: dict[str, str] = {}

    def observe(self, method: str, time: Mapping[str, Any] | None) -> None:
        super().observe(method, time)
        self._share(method)

    def blocked(self, method: str) -> None:
        super().blocked(method)
        self._share(method)

    def _share(self, method: str) -> None:
        operating = self._operating.get(method)
        if operating is None:
            return
        reset = self._reset_at.get(method)
        self._pending[method] = f"{operating!r}|{'' if reset is None else repr(reset)}"

    async def wait(self, methods: Iterable[str]) -> float:
        names = list(methods)
        try:
            if self._pending:
                pending, self._pending = self._pending, {}
                await self.backend.redis.hset(self.key, mapping=pending)
                await self.backend.redis.expire(self.key, 900)
            shared = await self.backend.redis.hmget(self.key, names)
        except Exception:
            shared = [None] * len(names)  # Redis away: the local figures still hold
        now = _time.time()
        for method, value in zip(names, shared, strict=True):
            if not value:
                continue
            operating_s, _, reset_s = value.partition("|")
            reset = float(reset_s) if reset_s else None
            if reset is not None and reset <= now:
                continue
            if float(operating_s) > self._operating.get(method, 0.0):
                self._operating[method] = float(operating_s)
                if reset is not None:
                    self._reset_at[method] = reset
        return await super().wait(names)
