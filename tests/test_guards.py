"""Guards found by a mutation study (issue 23): each test here fails if one of the
library's safety decisions is flipped, and asserts on what the portal recorded.

1. Convergence budgets: ``set_active`` / ``verify=True`` toggle a flow exactly
   ``max_rounds`` (``RetryPolicy.attempts``) times, never once more, and ``set_pinned``
   pins at most ``2 * max_rounds + 1`` times and gives up after ``max_rounds`` lost
   answers; ``unknown`` holds the error of the last send.
2. A 5xx gateway page without a Bitrix24 envelope may have run and is not finished: the
   read-back waits ``portal_limit`` before trusting a read, and it is never re-sent.
3. The Redis limiter's local fallback paces at its own burst and rate.
4. Transport classification over real sockets on the newest aiohttp (the aioresponses
   tests in ``test_transport.py`` skip themselves there).
5. ``aclose()`` withholds a call waiting in a retry pause, the operating-budget pause or a
   token refresh: ``ClientClosed``, and nothing more reaches the portal.

No test sleeps for real except where a socket timeout is the thing under test.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aiob24flow as b24
from aiob24flow._redis import RedisBucket
from aiob24flow.emulator import EmulatorServer, Faults, Portal, PortalConfig
from tests.conftest import FakeClock, no_sleep, serve, tokens_of

ACTIVATE = "tasks.flow.Flow.activate"
PIN = "tasks.flow.Flow.pin"
PORTAL_LIMIT = b24.Timeout().portal_limit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Recorder:
    """An injected ``sleep=``: records every pause and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def long(self) -> list[float]:
        """The pauses that waited for a lost request to finish at the portal."""
        return [s for s in self.pauses if s > PORTAL_LIMIT / 2]


class Parked:
    """An injected ``sleep=`` that records, then waits until the call is interrupted."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.entered = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.entered.set()
        await asyncio.get_running_loop().create_future()  # only a cancellation ends it


def webhook_client(server: EmulatorServer, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(), **kwargs)


# -- 1. convergence budgets -----------------------------------------------------------


class ContestedPortal(Portal):
    """The emulator with someone fighting over some flows (another admin; for pins, the
    same user in another tab).

    Just before each of our toggles of a contested flow executes, they put it in the
    state we want (``want[flow_id]``), so our toggle moves it away again; they use the UI,
    not REST, so ``activations`` / ``pin_calls`` count only our toggles. Such a flow never
    converges: the client's budget is all that bounds its toggles. ``toggled_at`` keeps
    the loop time at which each of our toggles ran.
    """

    def __init__(self, config: PortalConfig, want: dict[int, bool]) -> None:
        super().__init__(config)
        self.want = want
        self.toggled_at: defaultdict[int, list[float]] = defaultdict(list)

    def run(self, caller: Any, method: str, params: dict[Any, Any]) -> tuple[Any, dict[str, Any]]:
        if method not in (ACTIVATE, PIN):
            return super().run(caller, method, params)
        flow_id = int(params["flowId"])
        if flow_id in self.want:
            if method == ACTIVATE:
                self.state.flows[flow_id].active = self.want[flow_id]
            else:
                self.state.pins[(flow_id, caller.user.id)] = self.want[flow_id]
        answer = super().run(caller, method, params)
        self.toggled_at[flow_id].append(asyncio.get_running_loop().time())
        return answer


def assert_last_error(portal: ContestedPortal, flow_id: int, error: b24.B24Error) -> None:
    """``error`` is the lost answer of the flow's last toggle, not of an earlier one."""
    assert isinstance(error, b24.ResponseLost) and error.may_have_run
    times = portal.toggled_at[flow_id]
    assert error.sent_at is not None and error.sent_at <= times[-1]
    if len(times) > 1:
        assert error.sent_at > times[-2]  # it left after the previous toggle had run


def lose_answers(method: str) -> Faults:
    """Every request carrying ``method`` runs, then its connection is cut: no answer."""
    return Faults(drop_after=1.0, methods=frozenset({method}))


@pytest.mark.parametrize("max_rounds", [1, 3])
async def test_set_active_toggles_a_flow_exactly_max_rounds_times(max_rounds: int) -> None:
    # 1-6 are active and should be inactive; 2, 4, 6 are contested; 7, 8 are already off.
    # Every toggle runs and its answer is lost.
    portal = ContestedPortal(
        PortalConfig(flows=8, leak=None, faults=lose_answers(ACTIVATE)),
        want={2: False, 4: False, 6: False},
    )
    for flow_id in (7, 8):
        portal.state.flows[flow_id].active = False
    sleep = Recorder()
    async with EmulatorServer(portal) as server, webhook_client(server, sleep=sleep) as client:
        report = await client.set_active(range(1, 9), False, max_rounds=max_rounds)
    acts = portal.state.activations
    assert {i: acts[i] for i in range(1, 9)} == {
        1: 1, 2: max_rounds, 3: 1, 4: max_rounds, 5: 1, 6: max_rounds, 7: 0, 8: 0
    }  # fmt: skip
    assert report.succeeded == dict.fromkeys([1, 3, 5, 7, 8], False)
    assert report.changed == (1, 3, 5) and not report.failed
    assert list(report.unknown) == [2, 4, 6]
    for flow_id, error in report.unknown.items():
        assert_last_error(portal, flow_id, error)
    assert portal.state.faults_fired["drop_after"] == max_rounds
    # Each lost round waited until its request must have finished before re-sending.
    assert len(sleep.long()) == max_rounds


async def test_verify_toggles_a_flow_at_most_retry_attempts_times() -> None:
    attempts = 3
    config = PortalConfig(
        flows=8, leak=None, active_ratio=0.5, seed=7, faults=lose_answers(ACTIVATE)
    )
    before = Portal(config).state.active_states()  # the same seed: the same flows
    contested = (2, 5, 7)
    portal = ContestedPortal(config, want={i: not before[i] for i in contested})
    assert portal.state.active_states() == before
    sleep = Recorder()
    async with (
        EmulatorServer(portal) as server,
        webhook_client(server, sleep=sleep, retry=b24.RetryPolicy(attempts=attempts)) as client,
    ):
        report = await client.activate_many(range(1, 9), verify=True)
    acts = portal.state.activations
    for flow_id in range(1, 9):
        assert acts[flow_id] == (attempts if flow_id in contested else 1)
    assert list(report.unknown) == list(contested) and not report.failed
    assert report.succeeded == {i: True for i in range(1, 9) if i not in contested}
    for flow_id, error in report.unknown.items():
        assert_last_error(portal, flow_id, error)
    # The toggles that converged did flip their flows.
    for flow_id in report.succeeded:
        assert portal.state.flows[flow_id].active is not before[flow_id]
    assert len(sleep.long()) == attempts


@pytest.mark.parametrize("max_rounds", [1, 2])
async def test_set_pinned_gives_up_after_max_rounds_lost_answers(max_rounds: int) -> None:
    portal = ContestedPortal(PortalConfig(flows=5, leak=None, faults=lose_answers(PIN)), want={})
    portal.state.pins[(3, 1)] = True  # pinned already: its answers are lost all the same
    sleep = Recorder()
    async with EmulatorServer(portal) as server, webhook_client(server, sleep=sleep) as client:
        report = await client.set_pinned(range(1, 6), True, max_rounds=max_rounds)
    assert dict(portal.state.pin_calls) == dict.fromkeys(range(1, 6), max_rounds)
    assert list(report.unknown) == [1, 2, 3, 4, 5] and not report.succeeded
    for flow_id, error in report.unknown.items():
        assert_last_error(portal, flow_id, error)
    # A lost pin is sent again only once the lost one must have finished.
    assert len(sleep.long()) == max_rounds


async def test_set_pinned_pins_a_flow_at_most_twice_max_rounds_plus_one_times() -> None:
    # No answer is lost; 1 and 2 are contested (each of our pins answers "unpinned"),
    # 3 and 4 converge at once, 5 is pinned already (its first pin unpins it).
    max_rounds = 2
    portal = ContestedPortal(PortalConfig(flows=5, leak=None), want={1: True, 2: True})
    portal.state.pins[(5, 1)] = True
    async with EmulatorServer(portal) as server, webhook_client(server) as client:
        report = await client.set_pinned(range(1, 6), True, max_rounds=max_rounds)
    cap = 2 * max_rounds + 1
    assert dict(portal.state.pin_calls) == {1: cap, 2: cap, 3: 1, 4: 1, 5: 2}
    assert report.succeeded == {3: True, 4: True, 5: True} and report.changed == (3, 4)
    # Out of budget: unknown "did not converge", as progress counted them; their last
    # answers said "unpinned", and so does the portal.
    assert list(report.unknown) == [1, 2] and not report.failed
    assert all("did not converge" in str(e) for e in report.unknown.values())
    assert portal.state.pins[(1, 1)] is False and portal.state.pins[(2, 1)] is False


# -- 2. a gateway page is not a finished answer --------------------------------------

REPLAYED = "X-Test-Replayed"
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
HTML_504 = b"<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>"
PAGES = {
    "502-html": (502, HTML_502),
    "504-html": (504, HTML_504),
    "502-empty": (502, b""),
    "504-empty": (504, b""),
}


class FrontedPortal(Portal):
    """The emulator behind a front end (nginx) that answers some toggles itself.

    ``pages`` queues the front end's answers for the next toggle requests (single or
    batch), each ``(status, body, when)``: ``"after"``, PHP ran the request and the
    gateway's page replaced its answer; ``"late"``, the gateway answered at once and PHP
    runs the request when ``finish_late()`` is awaited (a portal finishes a request whose
    client is gone, protocol.md §10). Other requests pass through.
    """

    def __init__(self, config: PortalConfig) -> None:
        super().__init__(config)
        self.pages: deque[tuple[int, bytes, str]] = deque()
        self.held: list[tuple[str, bytes]] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def front(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if not self.pages or request.headers.get(REPLAYED):
                return await handler(request)
            body = await request.read()
            if b"Flow.activate" not in body and not request.path.endswith("Flow.activate"):
                return await handler(request)
            status, page, when = self.pages.popleft()
            if when == "after":
                await handler(request)  # ran; its answer never reaches the client
            else:
                self.held.append((str(request.url), body))
            if not page:
                return web.Response(status=status)
            return web.Response(status=status, body=page, content_type="text/html")

        app.middlewares.append(front)
        return app

    async def finish_late(self) -> None:
        """PHP finishes the requests the gateway gave up on."""
        held, self.held = self.held, []
        if not held:
            return
        async with aiohttp.ClientSession() as session:
            for url, body in held:
                headers = {"Content-Type": "application/json", REPLAYED: "1"}
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()


@pytest.mark.parametrize("page", list(PAGES))
async def test_a_gateway_page_may_have_run_and_is_neither_finished_nor_retried(
    page: str,
) -> None:
    status, body = PAGES[page]
    portal = FrontedPortal(PortalConfig(flows=5, leak=None))
    portal.pages.append((status, body, "after"))
    async with EmulatorServer(portal) as server, webhook_client(server) as client:
        with pytest.raises(b24.ServerError) as info:
            await client.activate(1)
        assert client.stats().retries == 0 and client.stats().unknown_outcomes == 1
    error = info.value
    assert (error.code, error.status) == ("ERROR_UNEXPECTED_ANSWER", status)
    assert error.may_have_run and error.finished is False
    assert error.sent_at is not None
    assert portal.state.requests_by_method[ACTIVATE] == 1  # never re-sent
    assert portal.state.activations[1] == 1  # and it had run


async def test_activate_many_reports_a_gateway_page_unknown_and_never_resends() -> None:
    portal = FrontedPortal(PortalConfig(flows=60, leak=None))
    portal.pages.append((502, HTML_502, "after"))
    async with EmulatorServer(portal) as server, webhook_client(server) as client:
        report = await client.activate_many(range(1, 61))
    assert len(report.unknown) == 50 and len(report.succeeded) == 10 and not report.failed
    for error in report.unknown.values():
        assert isinstance(error, b24.ServerError) and error.status == 502
        assert error.may_have_run and error.finished is False
    assert portal.state.requests_by_method["batch"] == 2  # the page's batch went once
    assert all(portal.state.activations[i] == 1 for i in range(1, 61))


@pytest.mark.parametrize("page", ["504-html", "502-empty"])
@pytest.mark.parametrize("operation", ["set_active", "verify"])
async def test_read_back_after_a_gateway_page_waits_for_the_portal(
    operation: str, page: str
) -> None:
    # The gateway gives up at once; PHP finishes the toggle only by the time the client has
    # waited portal_limit. A read trusted earlier shows the old state and toggles twice.
    status, body = PAGES[page]
    portal = FrontedPortal(PortalConfig(flows=3, leak=None))  # all active
    portal.pages.append((status, body, "late"))
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if seconds >= PORTAL_LIMIT / 2:
            await portal.finish_late()

    async with EmulatorServer(portal) as server:
        timeout = b24.Timeout(settle=0)  # no pause but the one until portal_limit
        async with webhook_client(server, sleep=sleep, timeout=timeout) as client:
            if operation == "set_active":
                report = await client.set_active([1, 2, 3], False)
            else:
                report = await client.activate_many([1, 2, 3], verify=True)
        await portal.finish_late()  # whatever the gateway still held runs now
    for flow_id in (1, 2, 3):
        assert portal.state.activations[flow_id] == 1
        assert portal.state.flows[flow_id].active is False
    assert report.ok, report.summary()
    assert [s for s in pauses if s >= PORTAL_LIMIT / 2] == [pytest.approx(PORTAL_LIMIT, abs=5)]


# -- 3. the Redis limiter's local fallback -------------------------------------------


@pytest.mark.parametrize(
    ("per_second", "share", "waits"),
    [(2.0, 4, [0.0, 2.0, 4.0]), (4.0, 2, [0.0, 0.5, 1.0, 1.5]), (1.0, 1, [0.0, 1.0, 2.0])],
)
async def test_local_fallback_paces_at_burst_one_and_its_share_of_the_rate(
    per_second: float, share: int, waits: list[float]
) -> None:
    backend = b24.RedisLimiter(
        f"redis://127.0.0.1:{free_port()}/0", on_unavailable="local", fallback_share=share
    )
    bucket = backend.limiter_for("https://p.bitrix24.com", b24.RateLimit(50, per_second))
    assert isinstance(bucket, RedisBucket)
    # The fallback bucket keeps the loop clock and asyncio.sleep of its own: freeze them.
    clock = FakeClock(100.0)
    bucket._fallback._clock = clock
    bucket._fallback._sleep = clock.sleep
    try:
        got = await asyncio.gather(*(bucket.acquire() for _ in waits))
        assert sorted(got) == pytest.approx(waits)
        assert sorted(clock.sleeps) == pytest.approx(waits[1:])
        assert bucket._degraded
        clock.now += 10 * share / per_second  # idle: the fallback drains
        assert await bucket.acquire() == 0.0
        assert await bucket.acquire() == pytest.approx(share / per_second)
    finally:
        await backend.aclose()


async def test_local_fallback_paces_a_client_when_redis_is_away() -> None:
    backend = b24.RedisLimiter(
        f"redis://127.0.0.1:{free_port()}/0", on_unavailable="local", fallback_share=4
    )
    async with serve(flows=5, burst=50, leak=2.0) as server:
        client = webhook_client(server, rate_limit=b24.RateLimit(50, 2, backend=backend))
        bucket = client.limiter
        assert isinstance(bucket, RedisBucket)
        clock = FakeClock(0.0)
        bucket._fallback._clock = clock
        bucket._fallback._sleep = clock.sleep
        try:
            for flow_id in (1, 2, 3):
                assert await client.activate(flow_id) is True
            assert clock.sleeps == [2.0, 4.0]
            assert client.stats().limiter_wait_seconds == pytest.approx(6.0)
        finally:
            await client.aclose()
            await backend.aclose()
        assert dict(server.state.activations) == {1: 1, 2: 1, 3: 1}


# -- 4. transport classification over real sockets -----------------------------------


@asynccontextmanager
async def web_portal(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A tiny aiohttp.web portal on loopback; yields its webhook URL."""
    app = web.Application()
    app.router.add_route("*", "/rest/{user}/{code}/{method}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/rest/1/secret-code/"
    finally:
        await runner.cleanup()


def raw_client(url: str, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    kwargs.setdefault("retry", b24.RetryPolicy(attempts=3))
    return b24.FlowClient.from_webhook(url, **kwargs)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "exc", "code", "may_have_run", "finished"),
    [
        (502, HTML_502, "text/html", b24.ServerError, "ERROR_UNEXPECTED_ANSWER", True, False),
        (504, HTML_504, "text/html", b24.ServerError, "ERROR_UNEXPECTED_ANSWER", True, False),
        (502, b"", None, b24.ServerError, "ERROR_UNEXPECTED_ANSWER", True, False),
        (504, b"", None, b24.ServerError, "ERROR_UNEXPECTED_ANSWER", True, False),
        (200, b"not json", "text/plain", b24.ServerError, "ERROR_UNEXPECTED_ANSWER", True, False),
        (200, b'{"time":{}}', "application/json", b24.ServerError,
         "ERROR_UNEXPECTED_ANSWER", True, False),
        # An envelope means the portal answered: it may have run, and it is done.
        (500, b'{"error":"INTERNAL_SERVER_ERROR","error_description":"Internal server error"}',
         "application/json", b24.ServerError, "INTERNAL_SERVER_ERROR", True, True),
        (200, b'{"error":"0","error_description":"Cannot find flow"}', "application/json",
         b24.FlowError, "0", False, True),
        (400, b'{"error":0,"error_description":"Cannot find flow"}', "application/json",
         b24.FlowError, "0", False, True),
    ],
    ids=["502-html", "504-html", "502-empty", "504-empty", "200-not-json", "200-no-result",
         "500-envelope", "200-flow-error", "400-int-code"],
)  # fmt: skip
async def test_answers_are_classified_over_a_real_socket(
    status: int,
    body: bytes,
    content_type: str | None,
    exc: type[b24.B24Error],
    code: str,
    may_have_run: bool,
    finished: bool,
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.match_info["method"])
        if content_type is None:
            return web.Response(status=status)
        return web.Response(status=status, body=body, content_type=content_type)

    async with web_portal(handler) as url, raw_client(url) as client:
        with pytest.raises(exc) as info:
            await client.activate(1)
    error = info.value
    assert type(error) is exc
    assert (error.code, error.status, error.method) == (code, status, ACTIVATE)
    assert error.may_have_run is may_have_run and error.finished is finished
    assert "secret-code" not in str(error) + repr(error)
    assert seen == [ACTIVATE]  # none of these is retried


async def test_a_503_limit_refusal_is_retried_over_a_real_socket() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.match_info["method"])
        if len(seen) == 1:
            return web.json_response(
                {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
                status=503,
            )
        return web.json_response({"result": True, "time": {"start": 1, "operating": 0}})

    limiter = b24.LeakyBucket(b24.RateLimit.unlimited(), sleep=no_sleep)
    async with web_portal(handler) as url, raw_client(url, limiter=limiter) as client:
        assert await client.activate(1) is True
        assert client.stats().query_limit_refusals == 1 and client.stats().retries == 1
    assert seen == [ACTIVATE, ACTIVATE]


async def test_request_shape_and_int_time_fields_over_a_real_socket() -> None:
    seen: list[tuple[str, str, str, bytes]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append((request.method, request.path, request.headers["Content-Type"], body))
        return web.json_response(
            {"result": False, "time": {"start": 1767261600, "processing": 0, "operating": 0}}
        )

    async with web_portal(handler) as url, raw_client(url) as client:
        assert await client.pin(517) is False
    assert seen == [("POST", "/rest/1/secret-code/" + PIN, "application/json", b'{"flowId":517}')]


class _Connection(asyncio.Protocol):
    """One accepted connection: keeps every byte; answers its first request as told."""

    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.data = b""
        self.answered = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.append(self)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.answered:
            return
        head, sep, body = self.data.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.answered = True
        self.server.requests.append(head.split(b"\r\n", 1)[0].decode())
        assert self.transport is not None
        self.server.behaviour(self.transport)


class RawServer:
    """A TCP server on loopback that records what arrives and answers as told (or never).

    ``requests`` holds the request line of every complete HTTP request received;
    ``connections`` every connection with the bytes it carried (a TLS handshake that
    never finishes carries no request).
    """

    def __init__(self, behaviour: Callable[[asyncio.Transport], None]) -> None:
        self.behaviour = behaviour
        self.requests: list[str] = []
        self.connections: list[_Connection] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.abort()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def _silent(transport: asyncio.Transport) -> None:
    """Read the request, never answer."""


def _close(transport: asyncio.Transport) -> None:
    transport.close()


def _reset(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _cut(transport: asyncio.Transport) -> None:
    transport.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"result":'
    )
    transport.close()


@pytest.mark.parametrize("behaviour", [_silent, _close, _reset, _cut])
async def test_an_answer_lost_after_sending_may_have_run_and_is_not_retried(
    behaviour: Callable[[asyncio.Transport], None],
) -> None:
    timeout = b24.Timeout(connect=5, read=0.3)  # read: the silent server's answer
    async with RawServer(behaviour) as server:
        url = f"http://127.0.0.1:{server.port}/rest/1/secret-code/"
        async with raw_client(url, timeout=timeout) as client:
            with pytest.raises(b24.ResponseLost) as info:
                await client.activate(1)
            assert client.stats().retries == 0 and client.stats().requests == 1
    error = info.value
    assert error.may_have_run and error.finished is False and error.method == ACTIVATE
    assert "secret-code" not in str(error) + repr(error)
    assert server.requests == [f"POST /rest/1/secret-code/{ACTIVATE} HTTP/1.1"]


async def test_a_connect_timeout_is_not_sent_and_is_retried() -> None:
    # A TLS front end that accepts the connection and never finishes the handshake: the
    # connect timeout fires before any byte of the request can leave.
    timeout = b24.Timeout(connect=0.2, read=30)
    async with RawServer(_silent) as server:
        url = f"https://127.0.0.1:{server.port}/rest/1/secret-code/"
        async with raw_client(url, timeout=timeout, retry=b24.RetryPolicy(attempts=2)) as client:
            with pytest.raises(b24.RequestNotSent) as info:
                await client.activate(1)
            assert client.stats().retries == 1 and client.stats().requests == 0
    error = info.value
    assert type(error) is b24.RequestNotSent and not error.may_have_run
    assert "connect timeout" in str(error) and "secret-code" not in str(error)
    assert server.requests == []  # two handshakes began, no request arrived
    assert len(server.connections) == 2
    for connection in server.connections:  # a TLS handshake record, nothing in clear
        assert connection.data[:1] == b"\x16" and b"POST" not in connection.data


# -- 5. aclose() reaches every kind of wait -------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop (no real sleep) until ``condition`` holds."""
    while not condition():
        await asyncio.sleep(0)


async def close_while_parked(
    client: b24.FlowClient, call: asyncio.Future[Any], parked: Parked
) -> None:
    await asyncio.wait_for(parked.entered.wait(), 10)
    await client.aclose()
    with pytest.raises(b24.ClientClosed):
        await asyncio.wait_for(call, 10)
    with pytest.raises(b24.ClientClosed):
        await client.activate(5)


@pytest.mark.parametrize("refusal", ["503", "429"])
async def test_aclose_withholds_a_call_in_its_retry_pause(refusal: str) -> None:
    parked = Parked()
    if refusal == "503":
        config = PortalConfig(flows=5, leak=None, faults=Faults(limit_503=1.0))
        retry = b24.RetryPolicy(attempts=5)
    else:  # the portal blocks activate after one call; the pause lasts until its reset
        config = PortalConfig(flows=5, leak=None, operating_limit=1.0,
                              call_cost={ACTIVATE: 5.0})  # fmt: skip
        retry = b24.RetryPolicy(attempts=5, max_elapsed=3600)
    limiter = b24.LeakyBucket(b24.RateLimit.unlimited(), sleep=no_sleep)
    async with EmulatorServer(Portal(config)) as server:
        client = webhook_client(server, sleep=parked, retry=retry, limiter=limiter)
        if refusal == "429":
            assert await client.activate(1) is True
        call = asyncio.ensure_future(client.activate(2))
        await asyncio.wait_for(parked.entered.wait(), 10)
        assert client.stats().retries == 1  # tenacity's pause, after one refusal
        sent = server.state.requests
        await close_while_parked(client, call, parked)
        assert len(parked.pauses) == 1
        if refusal == "429":
            assert parked.pauses[0] > 500 and server.state.refused_429 == 1
        assert server.state.requests == sent  # nothing more left
        assert server.state.requests_by_method[ACTIVATE] == (1 if refusal == "503" else 2)
        assert server.state.activations[2] == 0


async def test_aclose_withholds_calls_in_the_operating_budget_pause() -> None:
    parked = Parked()
    config = PortalConfig(flows=200, leak=None, call_cost={ACTIVATE: 5.0})
    async with EmulatorServer(Portal(config)) as server:
        # The first answer reports 5 s of the 5 s budget: activate is held until reset.
        client = webhook_client(server, sleep=parked, operating_limit=5.0)
        assert await client.activate(1) is True
        call = asyncio.ensure_future(client.activate(2))
        job = asyncio.ensure_future(client.activate_many(range(3, 201)))
        await asyncio.wait_for(parked.entered.wait(), 10)
        # The call and the job's four workers (198 flows, 50 a batch) all wait there.
        await asyncio.wait_for(until(lambda: len(parked.pauses) == 5), 10)
        await close_while_parked(client, call, parked)
        report = await asyncio.wait_for(job, 10)
        assert all(p > 500 for p in parked.pauses) and client.stats().retries == 0
        assert not report.succeeded and not report.unknown and len(report.failed) == 198
        assert all(isinstance(e, b24.ClientClosed) for e in report.failed.values())
        assert server.state.requests == 1 and server.state.refused_429 == 0
        assert dict(server.state.activations) == {1: 1}


@pytest.mark.parametrize("why", ["due", "expired_token"])
async def test_aclose_withholds_calls_waiting_on_a_token_refresh(why: str) -> None:
    started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    async with serve(flows=10) as server:

        async def refresher(old: b24.OAuthTokens) -> b24.OAuthTokens:
            started.set()
            try:
                await release.wait()
                status, body = server.state.refresh(
                    server.portal.config.client_id,
                    server.portal.config.client_secret,
                    old.refresh_token,
                )
                assert status == 200
                return b24.OAuthTokens.from_token_response(body, time.time())
            finally:
                done.set()

        issued = server.state.issue_tokens()
        if why == "due":  # refreshed before the first call leaves: three calls wait
            tokens = tokens_of(issued, expires_at=1.0)
            ids = [1, 2, 3]
        else:  # the portal answers expired_token: the call waits to be sent again
            tokens = tokens_of(issued)
            for entry in server.state.access_tokens.values():
                entry.expires_at = 0
            ids = [1]
        client = b24.FlowClient.from_oauth(
            server.oauth_endpoint, tokens, refresher=refresher,
            rate_limit=b24.RateLimit.unlimited(), sleep=no_sleep,
        )  # fmt: skip
        calls = [asyncio.ensure_future(client.activate(i)) for i in ids]
        await asyncio.wait_for(started.wait(), 10)
        sent = server.state.requests
        assert sent == (0 if why == "due" else 1)
        await client.aclose()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert all(isinstance(r, b24.ClientClosed) for r in results), results
        release.set()  # the refresh itself completes; nothing is sent with its token
        await asyncio.wait_for(done.wait(), 10)
        for _ in range(5):
            await asyncio.sleep(0)
        assert server.state.requests == sent and server.state.token_requests == 0
        assert server.state.activations.total() == 0
