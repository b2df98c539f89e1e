"""Bulk toggling against the emulator: reports must match what the portal really did."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow.emulator import Faults
from tests.conftest import no_sleep, serve

# Every test here runs against the plain and the TLS emulator.
pytestmark = pytest.mark.usefixtures("both_schemes")

FAULTS = {"error_before": 0.05, "error_after": 0.03, "drop_after": 0.02}


def client_for(server: Any, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(), **kwargs)


def assert_partition(report: b24.BulkReport, ids: list[int]) -> None:
    """Every input id in exactly one map, each map in input order."""
    seen = [*report.succeeded, *report.failed, *report.unknown]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    for part in (report.succeeded, report.failed, report.unknown):
        assert list(part) == [i for i in ids if i in part]


async def test_activate_many_packs_batches_of_50() -> None:
    async with serve(flows=500) as server, client_for(server) as client:
        ids = list(range(1, 501))
        report = await client.activate_many(ids)
        assert report.ok and report.succeeded == dict.fromkeys(ids, True)
        assert server.state.requests_by_method == {"batch": 10}
        assert all(server.state.activations[i] == 1 for i in ids)
        assert client.stats().commands == 500 and client.stats().requests == 10


async def test_pin_many_reports_new_states() -> None:
    async with serve(flows=120) as server, client_for(server) as client:
        await client.pin_many(range(1, 61))
        report = await client.pin_many(range(1, 121))
        assert report.succeeded == {i: i > 60 for i in range(1, 121)}
        assert all(server.state.pin_calls[i] == (2 if i <= 60 else 1) for i in range(1, 121))


async def test_2000_toggles_with_503s_and_errors_inside_batches() -> None:
    missing = frozenset(random.Random(7).sample(range(1, 2001), 40))
    faults = Faults(seed=3, limit_503=0.15)
    async with serve(flows=2000, missing=missing, faults=faults) as server:
        async with client_for(server, retry=b24.RetryPolicy(attempts=20)) as client:
            ids = list(range(1, 2001))
            random.Random(1).shuffle(ids)
            report = await client.activate_many(ids)
        assert_partition(report, ids)
        assert set(report.failed) == set(missing)
        for flow_id, error in report.failed.items():
            assert isinstance(error, b24.FlowError) and error.key == str(flow_id)
        assert not report.unknown
        assert server.state.faults_fired["limit_503"] > 0
        assert client.stats().query_limit_refusals == server.state.faults_fired["limit_503"]
        for flow_id in ids:
            assert server.state.activations[flow_id] == (0 if flow_id in missing else 1)


async def test_whole_batch_refusal_reports_failed_not_unknown() -> None:
    async with serve(flows=100, webhook_scopes=frozenset({"crm"})) as server:
        async with client_for(server) as client:
            report = await client.activate_many(range(1, 101))
        assert not report.succeeded and not report.unknown
        assert all(isinstance(e, b24.InsufficientScope) for e in report.failed.values())
        assert server.state.activations.total() == 0


async def test_faults_never_double_toggle_and_report_truthfully() -> None:
    faults = Faults(seed=11, **FAULTS)
    async with serve(flows=5000, faults=faults) as server, client_for(server) as client:
        ids = list(range(1, 5001))
        report = await client.activate_many(ids)
    assert_partition(report, ids)
    acts = server.state.activations
    assert max(acts.values()) == 1  # zero doubles
    assert all(acts[i] == 1 for i in report.succeeded)  # no lies
    assert all(acts[i] == 0 for i in report.failed)
    assert report.unknown  # lost answers are reported, never guessed
    assert all(e.may_have_run for e in report.unknown.values())  # type: ignore[attr-defined]
    assert sum(faults_fired for faults_fired in server.state.faults_fired.values()) > 0


async def test_verify_settles_every_unknown() -> None:
    faults = Faults(seed=12, **FAULTS)
    async with serve(flows=5000, faults=faults, active_ratio=0.5) as server:
        before = server.state.active_states()
        async with client_for(server) as client:
            ids = list(range(1, 5001))
            report = await client.activate_many(ids, verify=True)
    assert_partition(report, ids)
    assert not report.unknown and not report.failed
    assert server.state.faults_fired["drop_after"] > 0
    for flow_id in ids:
        assert server.state.activations[flow_id] == 1
        assert server.state.flows[flow_id].active is not before[flow_id]


async def test_set_active_converges_with_minimal_toggles() -> None:
    faults = Faults(seed=13, **FAULTS)
    async with serve(flows=3000, faults=faults, active_ratio=0.5, seed=5) as server:
        before = server.state.active_states()
        async with client_for(server) as client:
            ids = list(range(1, 3001))
            report = await client.set_active(ids, False)
    assert_partition(report, ids)
    assert report.ok and report.succeeded == dict.fromkeys(ids, False)
    assert set(report.changed) == {i for i in ids if before[i]}
    for flow_id in ids:
        assert server.state.flows[flow_id].active is False
        # Never a blind re-send: a flow toggles exactly as often as it needed to.
        assert server.state.activations[flow_id] == (1 if before[flow_id] else 0)


async def test_set_active_dry_run_sends_no_toggle() -> None:
    async with serve(flows=200, active_ratio=0.5, seed=2) as server:
        before = server.state.active_states()
        async with client_for(server) as client:
            report = await client.set_active(range(1, 201), True, dry_run=True)
    assert set(report.changed) == {i for i in range(1, 201) if not before[i]}
    assert report.succeeded == before
    assert server.state.activations.total() == 0
    assert set(server.state.requests_by_method) == {"batch"}


async def test_set_active_reports_refusals_as_failed() -> None:
    # user 2 may read every flow but may activate none
    async with (
        serve(flows=100, missing=frozenset({5, 6})) as server,
        b24.FlowClient.from_webhook(
            server.webhook_url(2), rate_limit=b24.RateLimit.unlimited(), sleep=no_sleep
        ) as client,
    ):
        report = await client.set_active(range(1, 11), False)
    assert set(report.failed) == set(range(1, 11))
    assert report.failed[5].description == "Cannot find flow"
    assert server.state.activations.total() == 0


async def test_set_pinned_converges() -> None:
    faults = Faults(seed=14, **FAULTS)
    async with serve(flows=3000, faults=faults) as server, client_for(server) as client:
        ids = list(range(1, 3001))
        initially = set(random.Random(3).sample(ids, 1000))
        for flow_id in initially:
            server.state.pins[(flow_id, 1)] = True
        report = await client.set_pinned(ids, True)
    assert_partition(report, ids)
    assert report.ok and report.succeeded == dict.fromkeys(ids, True)
    assert all(server.state.pins[(i, 1)] is True for i in ids)
    lost = server.state.faults_fired["error_after"] + server.state.faults_fired["drop_after"]
    assert lost > 0
    # Without lost answers: 1 pin where it was unpinned, 2 where it was pinned already.
    extra = sum(server.state.pin_calls[i] - (2 if i in initially else 1) for i in ids)
    assert 0 <= extra <= 2 * 50 * lost
    changed = set(report.changed)
    assert changed >= {i for i in ids if i not in initially and server.state.pin_calls[i] == 1}


async def test_progress_callback_and_stop() -> None:
    async with serve(flows=1000) as server, client_for(server, concurrency=1) as client:
        seen: list[b24.Progress] = []
        stop = asyncio.Event()

        def on_progress(progress: b24.Progress) -> None:
            seen.append(progress)
            if progress.done >= 300:
                stop.set()

        report = await client.activate_many(range(1, 1001), on_progress=on_progress, stop=stop)
    assert [p.done for p in seen[:6]] == [50, 100, 150, 200, 250, 300]
    assert seen[-1].done == 1000 and seen[-1].failed == 700  # the unsent are reported too
    assert seen[-1].total == 1000
    assert len(report.succeeded) == 300 and len(report.failed) == 700
    assert all(isinstance(e, b24.RequestNotSent) for e in report.failed.values())
    assert server.state.activations.total() == 300


async def test_read_timeouts_are_settled_by_read_back() -> None:
    faults = Faults(seed=21, hang_after=0.1, hang_seconds=1.0)
    async with serve(flows=1000, faults=faults, active_ratio=0.5, seed=8) as server:
        before = server.state.active_states()
        async with client_for(server, timeout=b24.Timeout(connect=1, read=0.3)) as client:
            report = await client.set_active(range(1, 1001), True)
            assert client.stats().unknown_outcomes > 0
    assert report.ok and server.state.faults_fired["hang_after"] > 0
    for flow_id in range(1, 1001):
        assert server.state.flows[flow_id].active is True
        assert server.state.activations[flow_id] == (0 if before[flow_id] else 1)


async def test_empty_input_sends_nothing() -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        for report in (
            await client.activate_many([]),
            await client.activate_many([], verify=True),
            await client.pin_many([]),
            await client.set_active([], True),
            await client.set_pinned([], False),
            await client.get_many([]),
        ):
            assert len(report) == 0 and report.ok
        assert server.state.requests == 0


async def test_get_many_fields_keeps_those_keys_of_each_flow() -> None:
    async with serve(flows=120, active_ratio=0.5, seed=5) as server, client_for(server) as c:
        whole = await c.get_many(range(1, 121))
        requests = server.state.requests
        kept = await c.get_many(range(1, 121), fields=("name", "active", "no-such", "active"))
        assert server.state.requests - requests == 3  # 120 flows: three batches, as before
        assert kept.ok and list(kept.succeeded) == list(range(1, 121))
        for flow_id, flow in kept.succeeded.items():
            # Requested order, duplicates once, absent keys left out; values as the portal's.
            assert list(flow) == ["name", "active"]
            assert flow == {"name": whole.succeeded[flow_id]["name"],
                            "active": server.state.flows[flow_id].active}  # fmt: skip
        assert sum(server.state.activations.values()) == 0  # reads only


async def test_get_many_fields_fails_a_flow_whose_answer_is_not_an_object() -> None:
    from aiob24flow import _bulk

    project = _bulk.projection(("active",))
    assert project({"active": True, "name": "x"}) == {"active": True}
    with pytest.raises(ValueError, match="not an object"):
        project(["active"])


async def test_operating_limit_inside_batches_pauses_the_method_and_resumes() -> None:
    import time

    from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig
    from tests.conftest import FakeClock

    wall = FakeClock(time.time())
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # waiting moves the portal's clock, not ours
        slept.append(seconds)
        wall.now += seconds

    config = PortalConfig(flows=300, leak=None, call_cost={"tasks.flow.Flow.activate": 5.0})
    portal = Portal(config, wall_clock=wall)
    async with EmulatorServer(portal) as server:
        client = b24.FlowClient.from_webhook(
            server.webhook_url(),
            rate_limit=b24.RateLimit.unlimited(),
            sleep=sleep,
            concurrency=1,
        )
        client._pipeline.shared.budget._now = wall  # the budget reads the same (fake) wall clock
        async with client:
            report = await client.activate_many(range(1, 301))
            assert await client.pin(1) is True  # other methods were never held back
        assert report.ok, report.summary()
        assert all(server.state.activations[i] == 1 for i in range(1, 301))
        assert server.state.refused_429 > 0  # the portal did block the method...
        assert any(s > 100 for s in slept)  # ...and the client waited for the reset


async def test_read_back_waits_for_a_dropped_call_to_settle() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with (
        serve(
            flows=100,
            faults=Faults(seed=1, drop_after=0.5, methods=frozenset({"tasks.flow.Flow.activate"})),
        ) as server,
        client_for(server, sleep=sleep, timeout=b24.Timeout(settle=2.5)) as client,
    ):
        report = await client.set_active(range(1, 101), False)
    assert report.ok and server.state.faults_fired["drop_after"] > 0
    assert 2.5 in slept
    assert all(not server.state.flows[i].active for i in range(1, 101))
