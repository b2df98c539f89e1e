"""The leaky bucket on a fake clock: exact admission under concurrency, resync on 503."""

from __future__ import annotations

import asyncio

import pytest

import aiob24flow as b24
from aiob24flow._limiter import bucket_for
from aiob24flow.emulator import PortalConfig, PortalState
from tests.conftest import FakeClock


async def start_times(bucket: b24.LeakyBucket, clock: FakeClock, n: int) -> list[float]:
    """Start n concurrent acquirers; return the time each may start."""
    starts: list[float] = []

    async def one() -> None:
        waited = await bucket.acquire()
        starts.append(clock.now + waited)

    await asyncio.gather(*(one() for _ in range(n)))
    return sorted(starts)


@pytest.mark.parametrize(("burst", "rate"), [(50, 2), (250, 5), (50, 20), (1, 1)])
async def test_admits_exactly_burst_then_rate(burst: int, rate: float) -> None:
    clock = FakeClock(1000.0)
    bucket = b24.LeakyBucket(b24.RateLimit(burst, rate, headroom=0), clock=clock, sleep=clock.sleep)
    starts = await start_times(bucket, clock, 500)
    assert starts[:burst] == [1000.0] * burst
    expected = [1000.0 + (k + 1) / rate for k in range(500 - burst)]
    assert starts[burst:] == pytest.approx(expected)
    # The portal's own counter, fed the same start times, refuses nothing...
    portal_clock = FakeClock()
    portal = PortalState(PortalConfig(flows=0, burst=burst, leak=rate), clock=portal_clock)
    for start in starts:
        portal_clock.now = start
        assert portal.admit()
    # ...and is full: one request more at the last start time would be refused.
    assert not portal.admit()


async def test_headroom_keeps_slots_free() -> None:
    clock = FakeClock()
    bucket = b24.LeakyBucket(b24.RateLimit(50, 2), clock=clock, sleep=clock.sleep)  # 0.5 free
    starts = await start_times(bucket, clock, 52)
    assert starts[:49] == [0.0] * 49
    assert starts[49:] == pytest.approx([0.25, 0.75, 1.25])


async def test_drains_while_idle() -> None:
    clock = FakeClock()
    bucket = b24.LeakyBucket(b24.RateLimit(10, 2, headroom=0), clock=clock, sleep=clock.sleep)
    await start_times(bucket, clock, 10)
    assert bucket.level() == pytest.approx(10)
    clock.now += 2.5  # five slots drain
    assert bucket.level() == pytest.approx(5)
    starts = await start_times(bucket, clock, 6)
    assert starts == pytest.approx([2.5] * 5 + [3.0])
    clock.now += 100
    assert bucket.level() == 0


async def test_resync_on_query_limit_refusal() -> None:
    clock = FakeClock()
    bucket = b24.LeakyBucket(b24.RateLimit(50, 2, headroom=0), clock=clock, sleep=clock.sleep)
    assert await bucket.acquire() == 0  # we think the bucket is nearly empty
    await bucket.refused()  # the portal says it is full (other clients share it)
    assert bucket.level() == pytest.approx(50)
    assert await bucket.acquire() == pytest.approx(0.5)
    assert await bucket.acquire() == pytest.approx(1.0)
    # A refusal never moves reservations earlier.
    before = bucket.level()
    await bucket.refused()
    assert bucket.level() >= before - 1e-9


async def test_no_polling_one_sleep_per_waiter() -> None:
    clock = FakeClock()
    bucket = b24.LeakyBucket(b24.RateLimit(5, 1, headroom=0), clock=clock, sleep=clock.sleep)
    await start_times(bucket, clock, 100)
    assert len(clock.sleeps) == 95


def test_rate_limit_validation_and_presets() -> None:
    assert b24.RateLimit.standard() == b24.RateLimit(50, 2)
    assert b24.RateLimit.enterprise() == b24.RateLimit(250, 5)
    assert b24.RateLimit(50, 2).minimum_seconds(100) == 25.0
    for kwargs in (
        {"burst": 0},
        {"per_second": -1},
        {"burst": True},
        {"headroom": 60},
        {"per_second": "2"},
    ):
        with pytest.raises(ValueError):
            b24.RateLimit(**kwargs)  # type: ignore[arg-type]


def test_one_bucket_per_portal_in_process() -> None:
    limit = b24.RateLimit(50, 2)
    a = bucket_for("https://a.bitrix24.com", limit)
    assert bucket_for("https://a.bitrix24.com", limit) is a
    assert bucket_for("https://b.bitrix24.com", limit) is not a
    c1 = b24.FlowClient.from_webhook("https://a.bitrix24.com/rest/1/x/", rate_limit=limit)
    c2 = b24.FlowClient.from_webhook("https://a.bitrix24.com/rest/2/y/", rate_limit=limit)
    assert c1.limiter is c2.limiter is a


@pytest.mark.parametrize(
    ("limit", "free"),
    [
        (b24.RateLimit(50, 2), 0.5),
        (b24.RateLimit(50, 20), 1.0),
        (b24.RateLimit(250, 5), 0.5),
        (b24.RateLimit(1, 1), 0.0),
        (b24.RateLimit(50, 2, headroom=0), 0.0),
        (b24.RateLimit(50, 20, headroom=3), 3.0),
    ],
)
def test_default_headroom_is_50ms_of_jitter_and_at_least_half_a_slot(
    limit: b24.RateLimit, free: float
) -> None:
    assert limit.slots_kept_free == free


def test_bucket_outlives_its_clients() -> None:
    import gc

    limit = b24.RateLimit(50, 2)
    first = b24.FlowClient.from_webhook("https://c.bitrix24.com/rest/1/x/", rate_limit=limit)
    bucket = first.limiter
    bucket_id = id(bucket)
    del first, bucket
    gc.collect()
    second = b24.FlowClient.from_webhook("https://c.bitrix24.com/rest/1/x/", rate_limit=limit)
    assert id(second.limiter) == bucket_id


@pytest.mark.parametrize(("burst", "rate"), [(50, 2), (50, 20), (250, 5)])
async def test_default_headroom_absorbs_50ms_of_arrival_jitter(burst: int, rate: float) -> None:
    import random

    clock = FakeClock(0.0)
    bucket = b24.LeakyBucket(b24.RateLimit(burst, rate), clock=clock, sleep=clock.sleep)
    starts = await start_times(bucket, clock, 600)
    rng = random.Random(1)
    # Each request reaches the portal 0-50 ms after it was sent, in any order.
    arrivals = sorted(start + rng.uniform(0.0, 0.05) for start in starts)
    portal_clock = FakeClock()
    portal = PortalState(PortalConfig(flows=0, burst=burst, leak=rate), clock=portal_clock)
    refused = 0
    for arrival in arrivals:
        portal_clock.now = arrival
        refused += not portal.admit()
    assert refused == 0
