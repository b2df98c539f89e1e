"""A job's life: stop, errors, aclose, cancellation and a lost refresh end it at once, and
every flow is still accounted for. Each test asserts on what the emulator recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow.emulator import Faults
from tests.conftest import due_tokens, no_sleep, oauth_client, serve

# Every test here runs against the plain and the TLS emulator.
pytestmark = pytest.mark.usefixtures("both_schemes")

ACTIVATE = "tasks.flow.Flow.activate"
PIN = "tasks.flow.Flow.pin"


def paced(server: Any, burst: float, per_second: float, **kwargs: Any) -> b24.FlowClient:
    # A limiter of its own (not the process-wide bucket), so tests do not share a level.
    limiter = b24.LeakyBucket(b24.RateLimit(burst=burst, per_second=per_second, headroom=0))
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(), limiter=limiter, **kwargs)


def unlimited(server: Any, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(), **kwargs)


def assert_accounted(report: b24.BulkReport, ids: list[int], server: Any) -> None:
    """Every flow in exactly one map, and the maps match the portal's toggle counts."""
    seen = [*report.succeeded, *report.failed, *report.unknown]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    acts = server.state.activations
    assert all(acts[i] == 1 for i in report.succeeded)
    assert all(acts[i] == 0 for i in report.failed)
    assert all(not e.may_have_run for e in report.failed.values())


async def wait_idle(server: Any, seconds: float = 0.3) -> int:
    """The portal's request count after a quiet moment: nothing left behind our back."""
    before = server.state.requests
    await asyncio.sleep(seconds)
    assert server.state.requests == before, "a request left after the job returned"
    return before


async def test_stop_sends_nothing_new_even_from_workers_waiting_in_the_limiter() -> None:
    ids = list(range(1, 1001))
    async with serve(flows=1000) as server:
        stop = asyncio.Event()

        def on_progress(progress: b24.Progress) -> None:
            if progress.done >= 200:  # 4 of 20 batches answered
                stop.set()

        # Burst 2 at 20/s: 18 batches wait in the limiter when stop is set.
        async with paced(server, 2, 20, sleep=None) as client:
            report = await client.activate_many(ids, on_progress=on_progress, stop=stop)
        sent = await wait_idle(server)
    assert 4 <= sent <= 5  # at most the one batch that was on the wire
    assert len(report.succeeded) == 50 * sent
    assert_accounted(report, ids, server)
    assert all(isinstance(e, b24.Stopped) for e in report.failed.values())


async def test_stop_set_before_the_job_sends_nothing() -> None:
    async with serve(flows=100) as server, unlimited(server) as client:
        stop = asyncio.Event()
        stop.set()
        for report in (
            await client.activate_many(range(1, 101), stop=stop),
            await client.set_active(range(1, 101), False, stop=stop),
            await client.set_pinned(range(1, 101), True, stop=stop),
            await client.get_many(range(1, 101), stop=stop),
        ):
            assert len(report.failed) == 100
            assert all(isinstance(e, b24.Stopped) for e in report.failed.values())
        assert server.state.requests == 0


async def test_stop_ends_a_read_with_every_flow_accounted_for() -> None:
    ids = list(range(1, 1001))
    async with serve(flows=1000) as server:
        stop = asyncio.Event()
        seen: list[int] = []

        def on_progress(progress: b24.Progress) -> None:
            seen.append(progress.done)
            if progress.done >= 200:
                stop.set()

        async with paced(server, 2, 20, sleep=None) as client:
            report = await client.get_many(ids, fields=["active"], on_progress=on_progress,
                                           stop=stop)  # fmt: skip
        sent = await wait_idle(server)
    assert 4 <= sent <= 5 and seen == sorted(seen)
    assert list(report.succeeded) == ids[: 50 * sent]
    assert all(flow == {"active": True} for flow in report.succeeded.values())
    assert len(report.failed) == 1000 - 50 * sent and not report.unknown
    assert all(isinstance(e, b24.Stopped) for e in report.failed.values())
    assert server.state.activations.total() == 0


async def test_a_raising_callback_ends_the_job_with_bulk_aborted() -> None:
    ids = list(range(1, 1001))
    calls = 0

    def on_progress(progress: b24.Progress) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("callback bug")

    async with serve(flows=1000) as server:
        async with paced(server, 1, 20, sleep=None, concurrency=4) as client:
            with pytest.raises(b24.BulkAborted) as info:
                await client.activate_many(ids, on_progress=on_progress)
        sent = await wait_idle(server)
    assert isinstance(info.value.__cause__, RuntimeError)
    report = info.value.report
    assert isinstance(report, b24.BulkReport)
    assert sent <= 2 + 1  # the two answered, and at most one already on the wire
    assert len(report.succeeded) == 50 * sent
    assert_accounted(report, ids, server)
    unsent = [e for e in report.failed.values() if isinstance(e, b24.Stopped)]
    assert len(unsent) == 1000 - 50 * sent
    assert all(isinstance(e.__cause__, RuntimeError) for e in unsent)


async def test_a_raising_callback_in_set_active_also_aborts() -> None:
    def on_progress(progress: b24.Progress) -> None:
        raise ValueError("boom")

    async with serve(flows=300, active_ratio=0.0) as server, unlimited(server) as client:
        with pytest.raises(b24.BulkAborted) as info:
            await client.set_active(range(1, 301), True, on_progress=on_progress)
        await wait_idle(server, 0.1)
    report = info.value.report
    assert len(report) == 300 and isinstance(info.value.__cause__, ValueError)
    # The read went out; the callback raised on the first figures: no toggle was sent.
    assert server.state.activations.total() == 0


async def test_cancellation_stops_sending_and_reraises() -> None:
    async with serve(flows=1000) as server, paced(server, 2, 20, sleep=None) as client:
        task = asyncio.ensure_future(client.activate_many(range(1, 1001)))
        while server.state.requests < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sent = await wait_idle(server)
    assert sent <= 4


async def test_aclose_withholds_calls_waiting_in_the_limiter() -> None:
    async with serve(flows=20) as server:
        client = paced(server, 2, 2, sleep=None)
        calls = [asyncio.ensure_future(client.activate(i)) for i in range(1, 11)]
        while server.state.requests < 2:
            await asyncio.sleep(0.005)
        await client.aclose()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await wait_idle(server)
        assert results[:2] == [True, True]
        assert all(isinstance(r, b24.ClientClosed) for r in results[2:])
        assert server.state.requests == 2 and server.state.activations.total() == 2
        with pytest.raises(b24.ClientClosed):
            await client.activate(1)
        assert client._pipeline.shared.transport._session.closed  # type: ignore[union-attr]


async def test_aclose_lets_a_request_on_the_wire_finish() -> None:
    async with serve(flows=5, latency=0.2) as server:
        client = unlimited(server)
        call = asyncio.ensure_future(client.activate(1))
        while server.state.requests < 1:
            await asyncio.sleep(0.005)
        await client.aclose()  # waits for the answer
        assert call.done() and call.result() is True
        assert server.state.activations[1] == 1


async def test_aclose_during_a_bulk_job_reports_unsent_flows_as_closed() -> None:
    ids = list(range(1, 1001))
    async with serve(flows=1000) as server:
        client = paced(server, 2, 20, sleep=None)
        job = asyncio.ensure_future(client.activate_many(ids))
        while server.state.requests < 3:
            await asyncio.sleep(0.005)
        await client.aclose()
        report = await job
        await wait_idle(server)
    assert_accounted(report, ids, server)
    assert report.failed and all(isinstance(e, b24.ClientClosed) for e in report.failed.values())


async def test_lost_refresh_reports_never_sent_flows_failed_not_unknown() -> None:
    faults = Faults(token_faults=["error_after"])  # the grant is spent, the answer a 500
    async with serve(flows=500, faults=faults) as server:
        _, tokens = due_tokens(server)
        async with oauth_client(server, tokens) as client:
            report = await client.activate_many(range(1, 501))
    assert not report.succeeded and not report.unknown and len(report.failed) == 500
    for error in report.failed.values():
        assert isinstance(error, b24.RequestNotSent)
        cause = error if isinstance(error, b24.RefreshFailed) else error.__cause__
        assert isinstance(cause, b24.RefreshFailed)
    assert server.state.activations.total() == 0
    assert server.state.token_requests == 1  # the spent refresh token never went again


async def test_token_answer_without_refresh_token_stops_the_client() -> None:
    faults = Faults(token_faults=["no_refresh_token"])
    async with serve(flows=10, faults=faults) as server:
        _, tokens = due_tokens(server)
        async with oauth_client(server, tokens) as client:
            for flow_id in (1, 2):
                with pytest.raises(b24.RefreshFailed) as info:
                    await client.activate(flow_id)
                assert isinstance(info.value.__cause__, b24.RefreshRejected)
        assert server.state.token_requests == 1 and server.state.requests == 0


async def test_failing_on_refresh_stops_sending() -> None:
    async def on_refresh(tokens: b24.OAuthTokens) -> None:
        raise OSError("disk full")

    async with serve(flows=300) as server:
        _, tokens = due_tokens(server)
        async with oauth_client(server, tokens, on_refresh=on_refresh) as client:
            report = await client.activate_many(range(1, 301))
    assert len(report.failed) == 300 and server.state.requests == 0
    assert server.state.refreshes == 1


async def test_wrong_webhook_code_ends_the_job_after_one_round_of_requests() -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url().replace("emulator-webhook-code-1", "wrong-code")
        async with b24.FlowClient.from_webhook(
            url, rate_limit=b24.RateLimit.unlimited(), concurrency=8, sleep=no_sleep
        ) as client:
            report = await client.activate_many(range(1, 10_001))
        assert server.state.requests <= 8
    assert len(report.failed) == 10_000 and not report.succeeded
    for error in report.failed.values():
        cause = error if isinstance(error, b24.InvalidCredentials) else error.__cause__
        assert isinstance(cause, b24.InvalidCredentials)


async def test_per_flow_errors_keep_the_job_going() -> None:
    missing = frozenset(range(1, 1001, 7))
    async with serve(flows=1000, missing=missing) as server, unlimited(server) as client:
        report = await client.activate_many(range(1, 1001))
    assert set(report.failed) == set(missing)
    assert all(isinstance(e, b24.FlowError) for e in report.failed.values())
    assert len(report.succeeded) == 1000 - len(missing)


async def test_unreachable_host_fails_once_without_retries() -> None:
    async with serve(flows=1) as server:
        url = server.webhook_url()
    async with b24.FlowClient.from_webhook(
        url, rate_limit=b24.RateLimit.unlimited(), sleep=no_sleep
    ) as client:
        report = await client.activate_many(range(1, 5001))
        assert client.stats().retries == 0
    assert len(report.failed) == 5000
    first = [e for e in report.failed.values() if isinstance(e, b24.Unreachable)]
    assert 1 <= len(first) <= 50 * client.concurrency


async def test_late_execution_after_a_drop_is_waited_for_by_set_active() -> None:
    # The portal executes a dropped request 0.3 s later; the client waits until the lost
    # request must be done (portal_limit) before trusting a read.
    faults = Faults(seed=4, drop_then_run=0.3, run_after=0.3, methods=frozenset({ACTIVATE}))
    async with serve(flows=600, faults=faults, active_ratio=0.5, seed=3) as server:
        before = server.state.active_states()
        timeout = b24.Timeout(settle=0.01, portal_limit=0.5)
        async with unlimited(server, sleep=None, timeout=timeout) as client:
            report = await client.set_active(range(1, 601), False)
        assert server.state.late_executed > 0 and server.state.late_pending == 0
    assert report.ok
    for flow_id in range(1, 601):
        assert server.state.flows[flow_id].active is False
        assert server.state.activations[flow_id] == (1 if before[flow_id] else 0)


async def test_trusting_an_early_read_would_toggle_twice() -> None:
    # The same portal with the rule turned off (portal_limit=0): the test can fail.
    faults = Faults(seed=4, drop_then_run=0.3, run_after=0.3, methods=frozenset({ACTIVATE}))
    async with serve(flows=600, faults=faults, active_ratio=0.5, seed=3) as server:
        timeout = b24.Timeout(settle=0.01, portal_limit=0.0)
        async with unlimited(server, sleep=None, timeout=timeout) as client:
            await client.set_active(range(1, 601), False)
        await asyncio.sleep(0.5)
    assert max(server.state.activations.values()) >= 2


async def test_late_execution_after_a_drop_and_verify() -> None:
    faults = Faults(seed=5, drop_then_run=0.3, run_after=0.3, methods=frozenset({ACTIVATE}))
    async with serve(flows=600, faults=faults, active_ratio=0.5, seed=6) as server:
        before = server.state.active_states()
        timeout = b24.Timeout(settle=0.01, portal_limit=0.5)
        async with unlimited(server, sleep=None, timeout=timeout) as client:
            report = await client.activate_many(range(1, 601), verify=True)
        assert server.state.late_executed > 0
    assert report.ok
    for flow_id in range(1, 601):
        assert server.state.activations[flow_id] == 1
        assert server.state.flows[flow_id].active is not before[flow_id]


async def test_late_execution_after_a_drop_and_set_pinned() -> None:
    faults = Faults(seed=6, drop_then_run=0.3, run_after=0.3, methods=frozenset({PIN}))
    async with serve(flows=600, faults=faults) as server:
        timeout = b24.Timeout(settle=0.01, portal_limit=0.5)
        async with unlimited(server, sleep=None, timeout=timeout) as client:
            report = await client.set_pinned(range(1, 601), True)
        await asyncio.sleep(0.4)  # any late pin would land by now
        assert server.state.late_executed > 0 and server.state.late_pending == 0
    assert report.ok
    assert all(server.state.pins[(i, 1)] is True for i in range(1, 601))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_set_pinned_converges_under_heavy_faults(seed: int) -> None:
    faults = Faults(seed=seed, error_before=0.03, error_after=0.03, drop_after=0.02)
    async with serve(flows=2000, faults=faults) as server, unlimited(server) as client:
        report = await client.set_pinned(range(1, 2001), True)
        assert server.state.faults_fired["drop_after"] + server.state.faults_fired["error_after"]
    assert report.ok, report.summary()
    assert all(server.state.pins[(i, 1)] is True for i in range(1, 2001))
    # The bound stated in the README: at most 2 * max_rounds + 1 pins per flow.
    assert max(server.state.pin_calls.values()) <= 11


async def test_many_concurrent_calls_stay_under_the_file_limit() -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        async with serve(flows=3000) as server, unlimited(server) as client:
            results = await asyncio.gather(*(client.activate(i) for i in range(1, 3001)))
            assert all(results) and server.state.activations.total() == 3000
            assert client.stats().requests == 3000
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_second_event_loop_is_refused_before_sending() -> None:
    client = b24.FlowClient.from_webhook(
        "http://127.0.0.1:9/rest/1/code/", rate_limit=b24.RateLimit.unlimited()
    )

    async def first() -> None:
        with pytest.raises(b24.Unreachable):
            await client.activate(1)
        await client.aclose()

    async def second() -> None:
        with pytest.raises(RuntimeError, match="event loop"):
            await client.activate(1)

    asyncio.run(first())
    asyncio.run(second())


async def test_interrupts_reach_a_task_inside_nested_waiting_sections() -> None:
    """``Interrupts.waiting()`` nests (a journal write inside a wait, a refresh inside a
    pause): the interrupt reaches the task, the innermost section turns it into the
    error, and the outer section lets it pass."""
    from aiob24flow._control import Interrupts

    interrupts = Interrupts()
    entered = asyncio.Event()
    seen: list[str] = []

    async def nested() -> None:
        with interrupts.waiting():
            with interrupts.waiting():
                pass  # an inner section that ended must not unregister the outer one
            with interrupts.waiting():
                entered.set()
                try:
                    await asyncio.sleep(3600)
                except b24.ClientClosed:
                    seen.append("inner")
                    raise
            seen.append("never")

    task = asyncio.create_task(nested())
    await entered.wait()
    assert interrupts.interrupt(lambda: b24.ClientClosed("closed")) == 1
    with pytest.raises(b24.ClientClosed):
        await task
    assert seen == []  # the sleep met CancelledError; the section raised ClientClosed

    # After an inner section ends, the task is still waiting in the outer one.
    outer_entered = asyncio.Event()

    async def outer_wait() -> None:
        with interrupts.waiting():
            with interrupts.waiting():
                await asyncio.sleep(0)
            outer_entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(outer_wait())
    await outer_entered.wait()
    assert interrupts.interrupt(lambda: b24.Stopped("stopped")) == 1
    with pytest.raises(b24.Stopped):
        await task


async def test_stop_abandon_returns_at_once_with_the_flows_on_the_wire_unknown() -> None:
    async with serve(flows=200, latency=5.0) as server:
        stop = b24.Stop()
        async with b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit.unlimited(), concurrency=2
        ) as client:
            task = asyncio.create_task(client.activate_many(range(1, 201), stop=stop))
            while server.state.requests < 2:
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            started = loop.time()
            stop.abandon()
            report = await asyncio.wait_for(task, 3)
            assert loop.time() - started < 1
        assert len(report.unknown) == 100 and len(report.failed) == 100
        assert all(isinstance(e, b24.ResponseLost) for e in report.unknown.values())
        assert all(isinstance(e, b24.Stopped) for e in report.failed.values())
        assert not report.succeeded
