"""Edges found by trying the client as a user would: oversize and trickled answers,
odd envelopes, values that cannot work, and secrets in unexpected places."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from aiohttp import web

import aiob24flow as b24
from aiob24flow._batch import parse_batch
from aiob24flow._envelope import parse_response
from aiob24flow._operating import MAX_WAIT, OperatingBudget
from aiob24flow._redact import redact
from aiob24flow._transport import RawResponse
from aiob24flow.emulator import Faults
from tests.conftest import FakeClock, due_tokens, oauth_client, serve


async def serve_app(handler: web.RequestHandler) -> tuple[web.AppRunner, str]:  # type: ignore[type-arg]
    app = web.Application()
    app.router.add_route("*", "/rest/{user}/{code}/{method}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/rest/1/code/"


async def test_an_oversize_answer_is_unknown_not_failed() -> None:
    big = b'{"result": true, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to check up front
        await response.prepare(request)
        await response.write(big)
        return response

    runner, url = await serve_app(handler)
    try:
        async with b24.FlowClient.from_webhook(
            url, rate_limit=b24.RateLimit.unlimited(), max_response_size=1024 * 1024
        ) as client:
            with pytest.raises(b24.ResponseLost, match="too large") as info:
                await client.activate(1)
            assert info.value.may_have_run
    finally:
        await runner.cleanup()


async def test_a_trickling_server_cannot_hold_a_call_past_the_total_timeout() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):  # a byte every 50 ms: each read wait is short
            await response.write(b" ")
            await asyncio.sleep(0.05)
        return response

    runner, url = await serve_app(handler)
    try:
        timeout = b24.Timeout(connect=1, read=0.5, total=0.4)
        async with b24.FlowClient.from_webhook(
            url, rate_limit=b24.RateLimit.unlimited(), timeout=timeout
        ) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(b24.ResponseLost):
                await client.activate(1)
            assert asyncio.get_running_loop().time() - started < 1.5
    finally:
        await runner.cleanup()


def test_timeout_total_defaults_to_connect_plus_read() -> None:
    assert b24.Timeout(connect=2, read=3).deadline == 5
    assert b24.Timeout(total=1).deadline == 1


def test_operating_wait_is_capped_at_the_portals_window() -> None:
    clock = FakeClock(1_000_000.0)
    budget = OperatingBudget(limit=480, wall_clock=clock)
    budget.observe("m", {"operating": 479.0, "operating_reset_at": clock.now + 86_400})
    assert budget.delay(["m"]) <= MAX_WAIT
    error = b24.OperationTimeLimit("blocked", method="m")
    budget.refused(error)
    assert error.reset_at is not None and error.reset_at - clock.now <= MAX_WAIT


def test_result_with_null_error_is_a_success() -> None:
    envelope = parse_response(RawResponse(200, b'{"result": true, "error": null}'), "m")
    assert envelope.result is True
    with pytest.raises(b24.FlowError):
        parse_response(RawResponse(400, b'{"error": "0", "error_description": "x"}'), "m")
    with pytest.raises(b24.ServerError):
        parse_response(RawResponse(200, b'{"error": null}'), "m")


def test_a_key_in_both_result_and_result_error_may_have_run() -> None:
    body = {
        "result": {"a": True, "b": True},
        "result_error": {"a": {"error": "0", "error_description": "Cannot find flow"}},
    }
    result = parse_batch(body, {}, ["a", "b"], ["m", "m"], ["a", "b"])
    assert result.results == {"b": True}
    assert isinstance(result.errors["a"], b24.ServerError) and result.errors["a"].may_have_run


async def test_both_maps_in_a_bulk_answer_is_reported_unknown() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        keys = list(body["cmd"])
        errors = {k: {"error": "0", "error_description": "odd"} for k in keys[:2]}
        return web.json_response(
            {"result": {"result": dict.fromkeys(keys, True), "result_error": errors}, "time": {}}
        )

    runner, url = await serve_app(handler)
    try:
        async with b24.FlowClient.from_webhook(url, rate_limit=b24.RateLimit.unlimited()) as c:
            report = await c.activate_many(range(1, 11))
    finally:
        await runner.cleanup()
    assert set(report.unknown) == {1, 2} and len(report.succeeded) == 8


def test_flow_ids_beyond_64_bits_are_rejected() -> None:
    client = b24.FlowClient.from_webhook("https://p.example/rest/1/x/")
    with pytest.raises(ValueError, match="flow_id"):
        asyncio.run(client.activate(2**63))
    with pytest.raises(ValueError, match=r"ids\[1\]"):
        asyncio.run(client.activate_many([1, 2**63]))


@pytest.mark.parametrize(
    "build",
    [
        lambda: b24.FlowClient.from_webhook("https://p.example:99999/rest/1/x/"),
        lambda: b24.FlowClient.from_webhook(
            "https://p.example/rest/1/x/",
            operating_limit="480",  # type: ignore[arg-type]
        ),
        lambda: b24.FlowClient.from_webhook("https://p.example/rest/1/x/", operating_limit=-1),
        lambda: b24.Timeout(read=math.nan),
        lambda: b24.Timeout(connect=-1),
        lambda: b24.Timeout(total=math.inf),
        lambda: b24.RetryPolicy(initial_delay=math.nan),
        lambda: b24.RetryPolicy(max_delay=-2),
        lambda: b24.OAuthTokens("a", "b", expires_at=math.nan),
        lambda: b24.OAuthTokens("a", "b", expires_at=-5),
        lambda: b24.FlowClient.from_oauth(
            "https://p.example:0x10/rest/", b24.OAuthTokens("a", "b"), client_id="i",
            client_secret="s",
        ),
    ],
)  # fmt: skip
def test_values_that_cannot_work_raise_at_construction(build: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        build()  # type: ignore[operator]


def test_redaction_covers_userinfo_and_redis_passwords() -> None:
    text = redact("https://bob:hunter2@p.example/rest/1/code123/ redis://:s3cret@h:6379/0")
    assert "hunter2" not in text and "s3cret" not in text and "code123" not in text
    client = b24.FlowClient.from_webhook("http://bob:hunter2@127.0.0.1:1/rest/1/code123/")
    assert "hunter2" not in repr(client) and "code123" not in repr(client)


async def test_a_token_echoed_by_the_oauth_server_is_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiob24flow")
    async with serve(flows=5, faults=Faults(token_faults=["echo"])) as server:
        issued, tokens = due_tokens(server)
        async with oauth_client(server, tokens) as client:
            with pytest.raises(b24.RefreshFailed) as info:
                await client.activate(1)
    secret = issued["refresh_token"]
    cause = info.value.__cause__
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert cause is not None and secret not in str(cause)
    assert secret not in caplog.text
