"""Interop: unmodified third-party Bitrix24 clients against the emulator over TLS.

If the emulator answers as a portal does, clients written against real portals work with
it. Each test asserts on the emulator's counters (every flow toggled exactly once); where a
client is wrong by docs/protocol.md, the test pins that as a known defect of that client,
not as a change of the emulator. Run with ``pytest -m interop`` (``.ci/run`` does, also on
Python 3.12 for b24api).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import serve

pytestmark = pytest.mark.interop
pytest.importorskip("trustme")

ACTIVATE = "tasks.flow.Flow.activate"
PIN = "tasks.flow.Flow.pin"


def toggled_once(server: Any, ids: range) -> bool:
    acts = server.state.activations
    return all(acts[i] == 1 for i in ids) and acts.total() == len(ids)


# -- b24pysdk (the official SDK; requests, https only) ---------------------------------------


async def test_b24pysdk_single_calls_batches_and_503s(monkeypatch: pytest.MonkeyPatch) -> None:
    b24pysdk = pytest.importorskip("b24pysdk")
    # A small bucket: the SDK meets 503 QUERY_LIMIT_EXCEEDED and must retry it.
    async with serve(flows=300, tls=True, burst=3, leak=20.0) as server:
        assert server.ca_path is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_path)
        hook = b24pysdk.BitrixWebhook(
            domain=f"127.0.0.1:{server.port}", webhook_token=f"1/{server.state.webhooks[1]}"
        )

        def work() -> list[Any]:
            answers = [hook.call_method(ACTIVATE, {"flowId": i}) for i in range(1, 21)]
            for start in range(21, 301, 50):
                batch = {
                    str(i): (ACTIVATE, {"flowId": i}) for i in range(start, min(start + 50, 301))
                }
                answers.append(hook.call_batch(batch))
            return answers

        answers = await asyncio.to_thread(work)
        assert all(a["result"] is True for a in answers[:20])
        for batch_answer in answers[20:]:
            assert set(batch_answer["result"]["result"].values()) == {True}
            assert batch_answer["result"]["result_error"] == []
        assert server.state.refused_503 > 0  # the pressure was real...
        assert toggled_once(server, range(1, 301))  # ...and nothing ran twice or not at all


async def test_b24pysdk_refuses_plain_http_like_a_portal(monkeypatch: pytest.MonkeyPatch) -> None:
    requests = pytest.importorskip("requests")
    async with serve(flows=5, tls=True) as server:
        url = f"{server.plain_url}/rest/1/{server.state.webhooks[1]}/{ACTIVATE}"
        answer = await asyncio.to_thread(requests.post, url, json={"flowId": 1}, timeout=10)
        assert answer.status_code == 401
        assert answer.json() == {"error": "INVALID_REQUEST", "error_description": "Https required."}
        assert server.state.activations.total() == 0


# -- fast_bitrix24 (aiohttp) --------------------------------------------------------------------


async def test_fast_bitrix24_single_calls_and_batches() -> None:
    fast_bitrix24 = pytest.importorskip("fast_bitrix24")
    import aiohttp

    async with serve(flows=600, tls=True, burst=50, leak=20.0) as server:
        connector = aiohttp.TCPConnector(ssl=server.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            bx = fast_bitrix24.BitrixAsync(
                server.webhook_url(), client=session, verbose=False, requests_per_second=10.0
            )
            assert await bx.call(ACTIVATE, {"flowId": 1}) is True
            results = await bx.call(ACTIVATE, [{"flowId": i} for i in range(2, 502)])
        assert list(results) == [True] * 500
        assert toggled_once(server, range(1, 502))
        assert server.state.refused_503 == 0


async def test_fast_bitrix24_known_defects_are_pinned() -> None:
    """Two defects of fast_bitrix24 1.8 by docs/protocol.md, pinned as the client's.

    1. ``call(..., raw=True)`` lower-cases the method name: ``tasks.flow.flow.pin`` is not
       found on a portal (the ``Flow`` controller needs its capital F).
    2. Under 503 pressure it drops the refused batches' items without an error: fewer
       results than items, and those flows never toggled. What it did report is true.
    """
    fast_bitrix24 = pytest.importorskip("fast_bitrix24")
    import aiohttp

    async with serve(flows=600, tls=True, burst=5, leak=20.0) as server:
        connector = aiohttp.TCPConnector(ssl=server.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            bx = fast_bitrix24.BitrixAsync(
                server.webhook_url(), client=session, verbose=False, requests_per_second=20.0
            )
            raw = await bx.call(PIN, {"flowId": 7}, raw=True)
            await asyncio.sleep(0.3)  # let the bucket drain a little
            results = await bx.call(ACTIVATE, [{"flowId": i} for i in range(1, 501)])
    lowered = server.state.requests_by_method.get("tasks.flow.flow.pin", 0)
    assert lowered == 1 or raw.get("error") == "QUERY_LIMIT_EXCEEDED"
    if lowered:
        assert raw == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    acts = server.state.activations
    assert max(acts.values(), default=0) <= 1  # never twice
    assert acts.total() == len(results)  # what it reported is what ran
    if server.state.refused_503:
        assert len(results) < 500  # the defect: refused batches vanish


# -- b24api (httpx, Python >= 3.12) ----------------------------------------------------------


async def test_b24api_single_calls_batches_and_503s() -> None:
    b24api = pytest.importorskip("b24api")
    httpx = pytest.importorskip("httpx")
    from b24api.contracts import Command, CommandSuccess

    async with serve(flows=300, tls=True, burst=3, leak=20.0) as server:
        url = server.webhook_url()
        http = httpx.AsyncClient(verify=server.ssl_context())
        transport = b24api.HttpxTransport(url, client=http)
        client = b24api.Bitrix24(b24api.Settings(webhook_url=url), transport=transport)
        async with http, client:
            for i in range(1, 21):
                request = b24api.Request.bare(ACTIVATE, {"flowId": i})
                assert await client.call(request) is True
            commands = (
                Command(b24api.Request.bare(ACTIVATE, {"flowId": i}), correlation=i)
                for i in range(21, 301)
            )
            seen = []
            async with client.batch(commands, batch_size=50) as stream:
                async for outcome in stream:
                    assert isinstance(outcome, CommandSuccess) and outcome.result is True
                    seen.append(outcome.correlation)
        await transport.aclose()
        assert seen == list(range(21, 301))
        assert server.state.refused_503 > 0
        assert toggled_once(server, range(1, 301))
