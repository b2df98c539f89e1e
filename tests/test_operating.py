"""The per-method operating budget on a fake wall clock."""

from __future__ import annotations

import pytest

from aiob24flow._operating import OperatingBudget
from tests.conftest import FakeClock

ACT, PIN = "tasks.flow.Flow.activate", "tasks.flow.Flow.pin"


def budget(clock: FakeClock) -> OperatingBudget:
    return OperatingBudget(limit=480, threshold=0.9, wall_clock=clock, sleep=clock.sleep)


async def test_holds_back_only_the_method_near_its_limit() -> None:
    clock = FakeClock(1000.0)
    b = budget(clock)
    b.observe(ACT, {"operating": 440.0, "operating_reset_at": 1300})
    b.observe(PIN, {"operating": 10})
    assert b.delay([PIN]) == 0
    assert b.delay(["batch", ACT]) == pytest.approx(301)  # reset + 1 s margin
    await b.wait([ACT])
    assert clock.sleeps == [pytest.approx(301)]
    clock.now = 1302
    assert b.delay([ACT]) == 0  # the window moved on: let one call find out


def test_missing_keys_and_odd_values_are_ignored() -> None:
    clock = FakeClock(1000.0)
    b = budget(clock)
    for time in (None, {}, {"operating": "x"}, {"operating": True}, {"start": 1}):
        b.observe(ACT, time)  # type: ignore[arg-type]
    assert b.delay([ACT]) == 0 and b.reset_at(ACT) is None


def test_blocked_without_a_usable_reset_time_probes_with_backoff() -> None:
    clock = FakeClock(1000.0)
    b = budget(clock)
    waits = []
    for _ in range(6):
        b.blocked(ACT)
        waits.append(b.delay([ACT]))
        clock.now += waits[-1]
    assert waits == pytest.approx([6, 11, 21, 41, 61, 61])  # 5, 10, 20, 40, 60, 60 + margin


def test_blocked_with_a_known_reset_waits_for_it() -> None:
    clock = FakeClock(1000.0)
    b = budget(clock)
    b.observe(ACT, {"operating": 100, "operating_reset_at": 1500})
    b.blocked(ACT)
    assert b.delay([ACT]) == pytest.approx(501)
