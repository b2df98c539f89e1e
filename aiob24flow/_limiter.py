"""The portal's leaky bucket, kept on the client side.

The portal adds 1 per HTTP request to a counter that drains ``per_second`` per second and
refuses a request that would lift it above ``burst``. ``LeakyBucket`` mirrors that counter
and *reserves* a start time for every caller at ``acquire`` time, so any number of
concurrent callers queue in order with one computed sleep each, and no polling.

The level counts reservations that have not started yet, so it may exceed the burst; a
caller that finds level ``L`` may start once ``L + 1 - burst`` requests have drained,
that is after ``(L + 1 - burst) / rate`` seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs

from ._types import Clock, Sleep

if TYPE_CHECKING:
    from ._operating import OperatingBudget

__all__ = [
    "LeakyBucket",
    "Limiter",
    "LimiterBackend",
    "RateLimit",
    "bucket_for",
    "portal_key",
]


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _positive(name: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, __: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"RateLimit.{name} must be a positive number, got {value!r}")

    return check


@attrs.frozen
class RateLimit:
    """The portal's request limit: a bucket of ``burst`` requests draining ``per_second``.

    ``headroom`` is how many request slots the client keeps free below the portal's burst,
    so requests that arrive out of step (network jitter, a stalled server) are not
    refused; it costs ``headroom / per_second`` seconds once per job. The default (None)
    keeps 50 ms of jitter and at least half a slot: ``max(0.5, 0.05 * per_second)``,
    never more than ``burst - 1``.
    ``backend`` optionally names a shared limiter (see ``aiob24flow.RedisLimiter``);
    None keeps the bucket in this process.
    """

    burst: float = attrs.field(default=50, validator=_positive("burst"))
    per_second: float = attrs.field(default=2, validator=_positive("per_second"))
    headroom: float | None = attrs.field(default=None)
    backend: LimiterBackend | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.headroom is not None and (
            isinstance(self.headroom, bool)
            or not isinstance(self.headroom, (int, float))
            or not 0 <= self.headroom < self.burst
        ):
            raise ValueError(
                f"RateLimit.headroom must be >= 0 and below burst, got {self.headroom!r}"
            )

    @property
    def slots_kept_free(self) -> float:
        """The headroom in effect (see the class docstring)."""
        if self.headroom is not None:
            return float(self.headroom)
        return min(max(0.5, 0.05 * self.per_second), max(0.0, self.burst - 1))

    @classmethod
    def standard(cls) -> RateLimit:
        """Every plan but Enterprise: burst 50, 2 requests per second."""
        return cls(burst=50, per_second=2)

    @classmethod
    def enterprise(cls) -> RateLimit:
        """Enterprise plans: burst 250, 5 requests per second."""
        return cls(burst=250, per_second=5)

    @classmethod
    def unlimited(cls) -> RateLimit:
        """No pacing at all (for emulators and measurements)."""
        return cls(burst=1e12, per_second=1e12, headroom=0)

    def minimum_seconds(self, requests: int) -> float:
        """The portal's theoretical minimum time to admit ``requests`` requests."""
        return max(0.0, (requests - self.burst) / self.per_second)


@runtime_checkable
class Limiter(Protocol):
    """What the client needs of a limiter; the Redis backend implements it too."""

    async def start(self) -> None:
        """Called when the client is entered: a shared limiter says now that it is away."""
        ...

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds waited."""
        ...

    def release(self) -> None:
        """Give back a slot reserved for a request that will not be sent."""
        ...

    async def refused(self) -> None:
        """The portal refused a request with QUERY_LIMIT_EXCEEDED: treat the bucket as full."""
        ...


class LimiterBackend(Protocol):
    """Where the limits of many processes meet (``RedisLimiter``): one bucket and one
    operating budget per portal origin."""

    def limiter_for(
        self, origin: str, rate_limit: RateLimit, sleep: Sleep | None = None
    ) -> Limiter: ...

    def budget_for(self, origin: str, sleep: Sleep | None = None) -> OperatingBudget: ...


class LeakyBucket:
    """An exact, reserving leaky bucket on an injectable clock."""

    def __init__(
        self,
        rate_limit: RateLimit,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.rate_limit = rate_limit
        self._rate = float(rate_limit.per_second)
        self._capacity = float(rate_limit.burst) - rate_limit.slots_kept_free
        self._clock = clock or _loop_time
        self._sleep = sleep or asyncio.sleep
        self._level = 0.0  # requests in the bucket at time _at, reservations included
        self._at = 0.0

    def _drain(self) -> float:
        now = self._clock()
        if now > self._at:
            self._level = max(0.0, self._level - (now - self._at) * self._rate)
            self._at = now
        return now

    def level(self) -> float:
        """Requests in the bucket now, reservations included."""
        self._drain()
        return self._level

    def reserve(self) -> float:
        """Reserve the next slot; return how long the caller must wait before sending."""
        self._drain()
        # The caller may start once the level, drained, plus its own request fits.
        wait = max(0.0, (self._level + 1.0 - self._capacity) / self._rate)
        self._level += 1.0
        return wait

    async def start(self) -> None:
        """Nothing to check: the bucket lives in this process."""

    async def acquire(self) -> float:
        """Reserve a slot and sleep until it starts; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self.release()  # interrupted before sending: the slot was never used
                raise
        return wait

    def release(self) -> None:
        """Give back a reserved slot whose request will not be sent.

        Safe at any time: later reservations keep their (now conservative) start times.
        """
        self._drain()
        self._level = max(0.0, self._level - 1.0)

    async def refused(self) -> None:
        """The portal answered 503: treat its bucket as full."""
        # The portal says its counter is at the burst: nothing may start before it drains
        # by one request, and every later reservation queues behind that.
        self._drain()
        self._level = max(self._level, float(self.rate_limit.burst))


# Strong references: a client made per web request must still find the bucket its
# predecessors filled (one small object per portal and limit).
_buckets: dict[tuple[str, float, float, float], LeakyBucket] = {}
_buckets_lock = threading.Lock()


def portal_key(origin: str) -> str:
    """The portal an origin names, as limits are shared: scheme, host and port, without
    userinfo (a password must never reach a Redis key or a log line, and two userinfos
    of one portal share one bucket)."""
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


def bucket_for(origin: str, rate_limit: RateLimit) -> LeakyBucket:
    """The process-wide bucket of one portal: every client of that portal shares it."""
    key = (
        portal_key(origin),
        float(rate_limit.burst),
        float(rate_limit.per_second),
        rate_limit.slots_kept_free,
    )
    with _buckets_lock:
        bucket = _buckets.get(key)
        if bucket is None:
            bucket = LeakyBucket(rate_limit)
            _buckets[key] = bucket
        return bucket
