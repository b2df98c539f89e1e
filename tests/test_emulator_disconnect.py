"""A client that hangs up does not stop its request: the emulator runs it to the end, as a
portal's PHP does (protocol.md §10, §11), and says nothing about the lost answer (issue 24).

Raw sockets, no client library: the request is written by hand and the connection dropped
before the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig

ACT = "tasks.flow.Flow.activate"


def raw_request(body: bytes, *, send: int | None = None) -> bytes:
    """A webhook activate request; ``send`` cuts the body short (Content-Length stays)."""
    head = (
        f"POST /rest/1/emulator-webhook-code-1/{ACT} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body[:send]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for something the server does on its own (bounded; no fixed sleep)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def listening(portal: Portal, *, handler_cancellation: bool) -> AsyncIterator[web.AppRunner]:
    """The portal's app on loopback, with aiohttp's handler cancellation on or off."""
    runner = web.AppRunner(portal.app(), access_log=None, handler_cancellation=handler_cancellation)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


def port_of(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["default", "cancelling"])
async def test_hang_up_during_latency_still_toggles_once_and_logs_nothing(
    handler_cancellation: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(seconds: float) -> None:  # the latency, held until the client is gone
        entered.set()
        await release.wait()

    portal = Portal(PortalConfig(flows=3, latency=5.0, leak=None), sleep=held)
    async with listening(portal, handler_cancellation=handler_cancellation) as runner:
        assert runner.server is not None
        server = runner.server
        _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        writer.write(raw_request(b'{"flowId":1}'))
        await writer.drain()
        await asyncio.wait_for(entered.wait(), 10)
        writer.transport.abort()  # the client hangs up during the latency
        await until(
            lambda: all(c.transport is None for c in server.connections),
            "the server to see the hang-up",
        )
        assert portal.state.activations[1] == 0  # still in its latency
        release.set()
        await asyncio.wait_for(portal.idle(), 10)
        state = portal.state
        assert state.activations[1] == 1 and state.flows[1].active is False
        assert state.calls[ACT] == 1 and state.requests == 1
        assert state.answers_lost == 1
    assert errors_logged(caplog) == []


async def test_hang_up_with_a_real_latency(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    portal = Portal(PortalConfig(flows=3, latency=0.2, leak=None))
    async with EmulatorServer(portal) as server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw_request(b'{"flowId":2}'))
        await writer.drain()
        await until(lambda: portal.state.requests == 1, "the request to arrive")
        writer.close()  # before the answer: the emulator is in its 0.2 s latency
        await writer.wait_closed()
        await asyncio.wait_for(portal.idle(), 10)
        assert dict(portal.state.activations) == {2: 1}
        assert portal.state.flows[2].active is False
    assert errors_logged(caplog) == []


async def test_hang_up_before_the_body_is_in_runs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    portal = Portal(PortalConfig(flows=3, leak=None))
    async with listening(portal, handler_cancellation=False) as runner:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        writer.write(raw_request(b'{"flowId":1}', send=5))  # headers and half the body
        await writer.drain()
        await until(lambda: portal.state.requests == 1, "the request to start")
        writer.transport.abort()
        await asyncio.wait_for(portal.idle(), 10)
        assert portal.state.activations == {} and portal.state.calls == {}
    assert errors_logged(caplog) == []
