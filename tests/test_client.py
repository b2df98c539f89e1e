"""FlowClient over real sockets against the emulator: single calls, errors, bad input."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

import aiob24flow as b24
from aiob24flow.emulator import Faults
from tests.conftest import no_sleep, serve

# Every test here runs against the plain and the TLS emulator.
pytestmark = pytest.mark.usefixtures("both_schemes")

NEVER = b24.RetryPolicy.never()


def client_for(server: Any, user: int = 1, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(user), **kwargs)


async def test_activate_toggles_once_per_call() -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        assert await client.activate(7) is True
        assert server.state.activations[7] == 1 and server.state.flows[7].active is False
        assert await client.activate(7) is True
        assert server.state.activations[7] == 2 and server.state.flows[7].active is True
        assert server.state.requests == 2


async def test_pin_alternates() -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        assert [await client.pin(3) for _ in range(4)] == [True, False, True, False]
        assert server.state.pin_calls[3] == 4


async def test_call_get_returns_flow_with_active() -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        flow = await client.call("tasks.flow.Flow.get", {"flowId": 5})
        assert flow["id"] == 5 and flow["active"] is True
        await client.activate(5)
        assert (await client.get(5))["active"] is False


async def test_batch_through_client() -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        result = await client.batch(
            {
                "a": ("tasks.flow.Flow.activate", {"flowId": 1}),
                "p": ("tasks.flow.Flow.pin", {"flowId": 1}),
                "x": ("tasks.flow.Flow.activate", {"flowId": 99}),
            }
        )
        assert result.results == {"a": True, "p": True}
        assert isinstance(result.errors["x"], b24.FlowError)
        assert result.errors["x"].key == "x" and result.errors["x"].code == "0"
        with pytest.raises(b24.FlowError):
            result["x"]
        listed = await client.batch(
            [("tasks.flow.Flow.activate", {"flowId": 2}), ("tasks.flow.Flow.get", {"flowId": 2})]
        )
        assert listed.results[0] is True and listed.results[1]["active"] is False
        halted = await client.batch(
            [
                ("tasks.flow.Flow.activate", {"flowId": 99}),
                ("tasks.flow.Flow.activate", {"flowId": 3}),
            ],
            halt=True,
        )
        assert halted.not_run == (1,) and server.state.activations[3] == 0
        assert server.state.requests == 3


@pytest.mark.parametrize(
    ("setup", "call", "exc", "code", "status"),
    [
        (
            {},
            ("call", "tasks.flow.flow.activate", {"flowId": 1}),
            b24.MethodNotFound,
            "ERROR_METHOD_NOT_FOUND",
            404,
        ),
        ({}, ("activate", 999), b24.FlowError, "0", 400),
        ({"user": 2}, ("activate", 1), b24.FlowError, "0", 400),
        (
            {},
            ("call", "tasks.flow.Flow.activate", {"flowId": "abc"}),
            b24.InvalidArgument,
            "100",
            400,
        ),
        ({}, ("call", "tasks.flow.Flow.activate", {}), b24.InvalidArgument, "100", 400),
        (
            {"scopes": frozenset({"crm"})},
            ("activate", 1),
            b24.InsufficientScope,
            "insufficient_scope",
            401,
        ),
        (
            {"faults": Faults(limit_503=1.0)},
            ("activate", 1),
            b24.QueryLimitExceeded,
            "QUERY_LIMIT_EXCEEDED",
            503,
        ),
        (
            {"faults": Faults(error_before=1.0)},
            ("activate", 1),
            b24.ServerError,
            "INTERNAL_SERVER_ERROR",
            500,
        ),
        (
            {"faults": Faults(error_after=1.0)},
            ("activate", 1),
            b24.ServerError,
            "INTERNAL_SERVER_ERROR",
            500,
        ),
        ({"faults": Faults(drop_after=1.0)}, ("activate", 1), b24.ResponseLost, "", None),
    ],
)
async def test_errors_map_to_types(
    setup: dict[str, Any],
    call: tuple[Any, ...],
    exc: type[b24.B24Error],
    code: str,
    status: int | None,
) -> None:
    config: dict[str, Any] = {"flows": 10}
    if "scopes" in setup:
        config["webhook_scopes"] = setup["scopes"]
    if "faults" in setup:
        config["faults"] = setup["faults"]
    async with (
        serve(**config) as server,
        client_for(server, setup.get("user", 1), retry=NEVER) as client,
    ):
        with pytest.raises(exc) as info:
            await getattr(client, call[0])(*call[1:])
        assert info.value.code == code and info.value.status == status
        assert info.value.method is not None
        assert info.value.may_have_run is (exc in (b24.ServerError, b24.ResponseLost))
        assert server.state.requests == 1


async def test_flow_error_descriptions() -> None:
    async with serve(flows=10) as server:
        async with client_for(server, 2, retry=NEVER) as client:
            with pytest.raises(b24.FlowError, match="Cannot find flow"):
                await client.activate(1)
        async with client_for(server, 1, retry=NEVER) as client:
            with pytest.raises(b24.FlowError) as info:
                await client.activate(12)
            assert info.value.description == "Flow with this ID does not exist."


async def test_bad_webhook_code() -> None:
    async with (
        serve(flows=10) as server,
        b24.FlowClient.from_webhook(
            server.base_url + "/rest/1/wrong-code/", rate_limit=b24.RateLimit.unlimited()
        ) as client,
    ):
        with pytest.raises(b24.InvalidCredentials) as info:
            await client.activate(1)
        assert info.value.status == 401 and "wrong-code" not in str(info.value)
        assert "wrong-code" not in repr(client)


async def test_operation_time_limit_is_typed() -> None:
    policy = b24.RetryPolicy(attempts=2, max_elapsed=1)
    async with (
        serve(flows=10, call_cost={"tasks.flow.Flow.activate": 500.0}) as server,
        client_for(server, retry=policy) as client,
    ):
        await client.activate(1)
        with pytest.raises(b24.OperationTimeLimit) as info:
            await client.activate(1)
        assert info.value.status == 429
        assert info.value.reset_at is not None  # from the last good answer's time
        assert server.state.activations[1] == 1


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        ("1", TypeError),
        (True, TypeError),
        (1.0, TypeError),
        (None, TypeError),
        (0, ValueError),
        (-5, ValueError),
    ],
)
async def test_bad_flow_id_sends_nothing(bad: Any, exc: type[Exception]) -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        for op in (client.activate, client.pin, client.get):
            with pytest.raises(exc, match="flow_id"):
                await op(bad)
        assert server.state.requests == 0


@pytest.mark.parametrize(
    ("ids", "exc", "match"),
    [
        ([1, 1], ValueError, "duplicate"),
        ([1, "2"], TypeError, r"ids\[1\]"),
        ([3, 0], ValueError, r"ids\[1\]"),
        ([True], TypeError, r"ids\[0\]"),
        ("123", TypeError, "ids"),
        (5, TypeError, "ids"),
    ],
)
async def test_bad_bulk_input_sends_nothing(ids: Any, exc: type[Exception], match: str) -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        for op in (client.activate_many, client.pin_many):
            with pytest.raises(exc, match=match):
                await op(ids)
        with pytest.raises(exc, match=match):
            await client.set_active(ids, True)
        with pytest.raises(TypeError, match="active"):
            await client.set_active([1], 1)  # type: ignore[arg-type]
        assert server.state.requests == 0


@pytest.mark.parametrize(
    ("fields", "exc", "match"),
    [
        ("active", TypeError, "fields must be an iterable"),
        (b"active", TypeError, "fields must be an iterable"),
        (7, TypeError, "fields must be an iterable"),
        (["active", 1], TypeError, r"fields\[1\] must be a str"),
        (["active", ""], ValueError, r"fields\[1\] is empty"),
        ([], ValueError, "at least one field"),
    ],
)
async def test_bad_fields_send_nothing(fields: Any, exc: type[Exception], match: str) -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        with pytest.raises(exc, match=match):
            await client.get_many([1, 2], fields=fields)
        assert server.state.requests == 0


@pytest.mark.parametrize(
    ("commands", "exc", "match"),
    [
        ({}, ValueError, "at least one"),
        ({f"k{i}": ("tasks.flow.Flow.pin", {"flowId": 1}) for i in range(51)}, ValueError, "50"),
        ({"a": ("tasks.flow.Flow.pin",)}, TypeError, "pair"),
        ({"a": ("bad method", {})}, ValueError, "method"),
        ({"a": ("tasks.flow.Flow.pin", [1])}, TypeError, "params"),
        ({"a": ("tasks.flow.Flow.pin", {"x": object()})}, TypeError, "unsupported"),
        ("tasks.flow.Flow.pin", TypeError, "commands"),
    ],
)
async def test_bad_batch_sends_nothing(commands: Any, exc: type[Exception], match: str) -> None:
    async with serve(flows=10) as server, client_for(server) as client:
        with pytest.raises(exc, match=match):
            await client.batch(commands)
        with pytest.raises(TypeError, match="halt"):
            await client.batch({"a": ("tasks.flow.Flow.pin", {"flowId": 1})}, halt=1)  # type: ignore[arg-type]
        assert server.state.requests == 0


def test_plain_http_only_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        b24.FlowClient.from_webhook("http://portal.example.com/rest/1/abc/")
    with pytest.raises(ValueError, match="USER_ID"):
        b24.FlowClient.from_webhook("https://portal.example.com/rest/abc/")
    for ok in (
        "http://127.0.0.1:8080/rest/1/abc/",
        "http://localhost/rest/1/abc/",
        "http://[::1]:9/rest/1/abc",
        "https://portal.example.com/rest/1/abc/",
    ):
        client = b24.FlowClient.from_webhook(ok)
        assert "abc" not in repr(client)
    with pytest.raises(TypeError, match="url"):
        b24.FlowClient.from_webhook(b"https://x/rest/1/a/")  # type: ignore[arg-type]


async def test_passed_session_is_used_and_never_closed() -> None:
    async with serve(flows=10) as server, aiohttp.ClientSession() as session:
        async with client_for(server, session=session) as client:
            await client.activate(1)
        assert not session.closed
        async with client_for(server, session=session) as client:
            await client.pin(1)
        assert server.state.requests == 2


async def test_aclose_and_with_options_share_state() -> None:
    async with serve(flows=10) as server:
        client = client_for(server)
        fast = client.with_options(retry=NEVER, timeout=b24.Timeout(connect=1, read=5))
        await fast.activate(1)
        await client.activate(2)
        assert client.stats().requests == 2 and fast.stats().commands == 2
        await fast.aclose()  # a copy does not close the shared session
        await client.activate(3)
        await client.aclose()
        with pytest.raises(b24.ClientClosed, match="closed"):
            await client.activate(4)
        assert server.state.activations.total() == 3


async def test_timeout_means_outcome_unknown() -> None:
    async with serve(flows=10, faults=Faults(hang_after=1.0, hang_seconds=2.0)) as server:
        async with client_for(server, timeout=b24.Timeout(connect=1, read=0.2)) as client:
            with pytest.raises(b24.ResponseLost) as info:
                await client.activate(1)
            assert info.value.may_have_run
        assert server.state.activations[1] == 1  # it ran; the client never re-sent it


async def test_connect_error_means_not_sent() -> None:
    async with serve(flows=1) as server:
        url = server.webhook_url()
    # the server is gone now: nothing listens on that port
    async with b24.FlowClient.from_webhook(
        url,
        rate_limit=b24.RateLimit.unlimited(),
        retry=b24.RetryPolicy(attempts=3),
        sleep=no_sleep,
    ) as client:
        with pytest.raises(b24.Unreachable) as info:
            await client.activate(1)
        assert not info.value.may_have_run
        # A refused connection will be refused again: failed at once, not retried.
        assert client.stats().retries == 0 and client.stats().requests == 0


@pytest.mark.parametrize("backend", ["json", "orjson"])
async def test_both_json_backends(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from aiob24flow import _json

    if backend == "json":
        monkeypatch.setattr(_json, "loads", json.loads)
        monkeypatch.setattr(_json, "dumps", _json._std_dumps)
    elif _json.BACKEND != "orjson":
        pytest.skip("orjson is not installed")
    async with serve(flows=60) as server, client_for(server) as client:
        assert await client.call("tasks.flow.Flow.get", {"flowId": 1, "x": {2: "Поток"}})
        report = await client.activate_many(range(1, 61))
        assert report.ok and server.state.activations.total() == 60
        with pytest.raises(TypeError, match="JSON"):
            await client.call("tasks.flow.Flow.get", {"flowId": object()})
        assert server.state.requests == 3


async def test_one_info_line_per_http_request(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="aiob24flow")
    faults = Faults(seed=5, limit_503=0.2, error_after=0.1)
    async with serve(flows=500, faults=faults) as server, client_for(server) as client:
        await client.activate_many(range(1, 501))
        await client.pin(1)
    posts = [r for r in caplog.records if r.getMessage().startswith("POST ")]
    assert len(posts) == server.state.requests
    assert any("failed" in r.getMessage() for r in posts)
    library = logging.getLogger("aiob24flow")
    assert library.handlers == [] and library.level in (logging.NOTSET, logging.INFO)
