"""Narrow unit tests of the transport and envelope parsing (aioresponses, no sockets)."""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version

import aiohttp
import pytest
from aioresponses import aioresponses

import aiob24flow as b24
from tests.conftest import no_sleep


def _release(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version(name))[:3])


# aioresponses builds ClientResponse objects itself; up to 0.7.9 it cannot for aiohttp 3.14
# (ClientResponse.__init__ gained a required ``stream_writer``). There the real-socket tests
# against the emulator cover the transport; here a later aioresponses runs again.
if _release("aiohttp") >= (3, 14) and _release("aioresponses") <= (0, 7, 9):
    pytest.skip(
        f"aioresponses {version('aioresponses')} cannot build responses for aiohttp "
        f"{version('aiohttp')} (covered by the real-socket tests)",
        allow_module_level=True,
    )

URL = "https://portal.example.com/rest/1/secret-code/"
ACT = URL + "tasks.flow.Flow.activate"


def client(**kwargs: object) -> b24.FlowClient:
    return b24.FlowClient.from_webhook(
        URL,
        rate_limit=b24.RateLimit.unlimited(),
        retry=b24.RetryPolicy.never(),
        sleep=no_sleep,
        **kwargs,
    )  # type: ignore[arg-type]


async def test_sends_json_post_with_exact_method_name() -> None:
    with aioresponses() as mocked:
        mocked.post(ACT, payload={"result": True, "time": {"start": 1}})
        async with client() as c:
            assert await c.activate(517) is True
        (method, url), calls = next(iter(mocked.requests.items()))
        assert method == "POST" and str(url) == ACT
        assert calls[0].kwargs["data"] == b'{"flowId":517}'
        assert calls[0].kwargs["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("raise_exc", "exc"),
    [
        (
            aiohttp.ClientConnectorError(None, OSError(111, "refused")),  # type: ignore[arg-type]
            b24.RequestNotSent,
        ),
        (aiohttp.ConnectionTimeoutError(), b24.RequestNotSent),
        (aiohttp.SocketTimeoutError(), b24.ResponseLost),
        (asyncio.TimeoutError(), b24.ResponseLost),
        (aiohttp.ServerDisconnectedError(), b24.ResponseLost),
        (aiohttp.ClientPayloadError("cut"), b24.ResponseLost),
        (aiohttp.ClientOSError(104, "reset"), b24.ResponseLost),
    ],
)
async def test_transport_failures_are_split(raise_exc: Exception, exc: type[b24.B24Error]) -> None:
    with aioresponses() as mocked:
        mocked.post(ACT, exception=raise_exc)
        async with client() as c:
            with pytest.raises(exc) as info:
                await c.activate(1)
        assert "secret-code" not in str(info.value)
        assert info.value.method == "tasks.flow.Flow.activate"


@pytest.mark.parametrize(
    ("status", "body", "exc", "code"),
    [
        (200, '{"error":"0","error_description":"Cannot find flow"}', b24.FlowError, "0"),
        (400, '{"error":0,"error_description":"Cannot find flow"}', b24.FlowError, "0"),
        (502, "<html>Bad gateway</html>", b24.ServerError, "ERROR_UNEXPECTED_ANSWER"),
        (200, "not json", b24.ServerError, "ERROR_UNEXPECTED_ANSWER"),
        (200, '{"time":{}}', b24.ServerError, "ERROR_UNEXPECTED_ANSWER"),
        (
            503,
            '{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}',
            b24.QueryLimitExceeded,
            "QUERY_LIMIT_EXCEEDED",
        ),
        (504, "", b24.ServerError, "ERROR_UNEXPECTED_ANSWER"),
    ],
)
async def test_envelopes(status: int, body: str, exc: type[b24.B24Error], code: str) -> None:
    with aioresponses() as mocked:
        mocked.post(ACT, status=status, body=body)
        async with client() as c:
            with pytest.raises(exc) as info:
                await c.activate(1)
        assert info.value.code == code and info.value.status == status


async def test_result_with_int_time_fields() -> None:
    with aioresponses() as mocked:
        mocked.post(
            re.compile(r".*pin$"),
            payload={
                "result": False,
                "time": {"start": 1767261600, "processing": 0, "operating": 0},
            },
        )
        async with client() as c:
            assert await c.pin(1) is False
