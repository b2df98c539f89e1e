"""The emulator behaves as protocol.md describes (raw HTTP, no aiob24flow client)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from aiob24flow.emulator import Faults, Portal, PortalConfig
from aiob24flow.emulator._php import json_encode, parse_str, php_string
from tests.conftest import FakeClock, serve

ACT = "tasks.flow.Flow.activate"


async def post(
    url: str, body: Any = None, *, form: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        if form is not None:
            kwargs: dict[str, Any] = {
                "data": form,
                "headers": {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            }
        else:
            kwargs = {"json": body or {}, "headers": headers or {}}
        async with session.post(url, **kwargs) as response:
            return response.status, json.loads(await response.read())


async def test_activate_toggles_and_answers_true() -> None:
    async with serve(flows=5) as server:
        url = server.webhook_url()
        for expected_state in (False, True):
            status, body = await post(url + ACT, {"flowId": 3})
            assert status == 200 and body["result"] is True and "start" in body["time"]
            assert server.state.flows[3].active is expected_state
        assert server.state.activations[3] == 2


async def test_pin_is_per_user_and_returns_new_state() -> None:
    async with serve(flows=5) as server:
        admin, user = server.webhook_url(1), server.webhook_url(2)
        answers = [
            (await post(admin + "tasks.flow.Flow.pin", {"flowId": 2}))[1]["result"]
            for _ in range(3)
        ]
        assert answers == [True, False, True]
        assert (await post(user + "tasks.flow.Flow.pin", {"flowId": 2}))[1]["result"] is True
        assert server.state.pin_calls[2] == 4


@pytest.mark.parametrize(
    ("method", "status", "code"),
    [
        ("tasks.flow.Flow.activate", 200, None),
        ("tasks.flow.Flow.activate.json", 200, None),
        ("tasks.flow.flow.activate", 404, "ERROR_METHOD_NOT_FOUND"),
        ("TASKS.flow.Flow.activate", 404, "ERROR_METHOD_NOT_FOUND"),
        ("tasks.FLOW.Flow.ACTIVATE", 200, None),
        ("tasks.flow.Flow.nosuch", 404, "ERROR_METHOD_NOT_FOUND"),
    ],
)
async def test_method_name_case_rules(method: str, status: int, code: str | None) -> None:
    async with serve(flows=5) as server:
        got_status, body = await post(server.webhook_url() + method, {"flowId": 1})
        assert got_status == status
        assert body.get("error") == code
        if code == "ERROR_METHOD_NOT_FOUND":
            assert body["error_description"] == "Method not found!"
            assert server.state.activations[1] == 0


@pytest.mark.parametrize(
    ("params", "status", "code", "text"),
    [
        ({}, 400, "100", "Could not find value for parameter {flowId}"),
        ({"flowid": 1}, 400, "100", "Could not find value for parameter {flowId}"),
        (
            {"flowId": "abc"},
            400,
            "100",
            "Invalid value {abc} to match with parameter {flowId}. Should be value of type int.",
        ),
        (
            {"flowId": True},
            400,
            "100",
            "Invalid value {1} to match with parameter {flowId}. Should be value of type int.",
        ),
        (
            {"flowId": None},
            400,
            "100",
            "Invalid value {} to match with parameter {flowId}. Should be value of type int.",
        ),
        (
            {"flowId": [1]},
            400,
            "100",
            "Invalid value {Array} to match with parameter {flowId}. Should be value of type int.",
        ),
        (
            {"flowId": "0x1A"},
            400,
            "100",
            "Invalid value {0x1A} to match with parameter {flowId}. Should be value of type int.",
        ),
        ({"flowId": 999}, 400, "0", "Flow with this ID does not exist."),
        ({"flowId": " 2"}, 200, None, None),
        ({"flowId": "2.0"}, 200, None, None),
    ],
)
async def test_flow_id_binding(
    params: dict[str, Any], status: int, code: str | None, text: str | None
) -> None:
    async with serve(flows=5) as server:
        got_status, body = await post(server.webhook_url() + ACT, params)
        assert got_status == status
        assert body.get("error") == code
        assert body.get("error_description") == text
        assert "time" not in body if code else "time" in body


async def test_non_admin_sees_cannot_find_flow() -> None:
    async with serve(flows=5) as server:
        status, body = await post(server.webhook_url(2) + ACT, {"flowId": 1})
        assert (status, body) == (400, {"error": "0", "error_description": "Cannot find flow"})
        status, body = await post(server.webhook_url(2) + ACT, {"flowId": 999})
        assert body["error_description"] == "Cannot find flow"
        # an admin may "pin" a flow that does not exist (no existence check)
        status, body = await post(server.webhook_url(1) + "tasks.flow.Flow.pin", {"flowId": 999})
        assert (status, body["result"]) == (200, True)
        assert server.state.activations.total() == 0


async def test_get_returns_flow_with_active() -> None:
    async with serve(flows=5) as server:
        status, body = await post(server.webhook_url() + "tasks.flow.Flow.get", {"flowId": 4})
        assert status == 200
        assert body["result"]["id"] == 4 and body["result"]["active"] is True
        assert "matchSchedule" in body["result"]


async def test_bad_webhook_code_and_form_body() -> None:
    async with serve(flows=5) as server:
        status, body = await post(server.base_url + "/rest/1/wrong/" + ACT, {"flowId": 1})
        assert (status, body["error"]) == (401, "INVALID_CREDENTIALS")
        status, body = await post(server.webhook_url() + ACT, form="flowId=2")
        assert (status, body["result"]) == (200, True)
        assert server.state.activations == {2: 1}


async def test_batch_mixed_halt_off() -> None:
    async with serve(flows=600) as server:
        cmd = {
            "a": f"{ACT}?flowId=517",
            "p": "tasks.flow.Flow.pin?flowId=517",
            "x": f"{ACT}?flowId=999",
        }
        status, body = await post(server.webhook_url() + "batch", {"halt": 0, "cmd": cmd})
        assert status == 200
        result = body["result"]
        assert result["result"] == {"a": True, "p": True}
        assert result["result_error"] == {
            "x": {"error": "0", "error_description": "Flow with this ID does not exist."}
        }
        assert result["result_total"] == [] and result["result_next"] == []
        assert set(result["result_time"]) == {"a", "p"}


async def test_batch_halt_stops_at_first_error() -> None:
    async with serve(flows=600) as server:
        cmd = {"x": f"{ACT}?flowId=999", "a": f"{ACT}?flowId=517"}
        _, body = await post(server.webhook_url() + "batch", {"halt": 1, "cmd": cmd})
        assert body["result"]["result"] == [] and body["result"]["result_time"] == []
        assert list(body["result"]["result_error"]) == ["x"]
        assert server.state.activations[517] == 0


async def test_batch_list_keys_and_php_quirks() -> None:
    async with serve(flows=5) as server:
        url = server.webhook_url() + "batch"
        _, body = await post(url, {"cmd": [f"{ACT}?flowId=1", f"{ACT}?flowId=2"]})
        assert body["result"]["result"] == [True, True]
        assert body["result"]["result_error"] == []
        _, body = await post(url, {"cmd": [f"{ACT}?flowId=99", f"{ACT}?flowId=2"]})
        assert body["result"]["result"] == {"1": True}
        assert isinstance(body["result"]["result_error"], list)
        # halt as the form string "false" is truthy in PHP
        _, body = await post(
            url, form=f"halt=false&cmd[x]={ACT}%3FflowId%3D99&cmd[y]={ACT}%3FflowId%3D3"
        )
        assert body["result"]["result"] == [] and server.state.activations[3] == 0


async def test_batch_limits_and_forbidden_methods() -> None:
    async with serve(flows=60) as server:
        cmd = {f"k{i}": f"{ACT}?flowId={i + 1}" for i in range(52)}
        cmd["b"] = "batch?cmd[a]=x"
        cmd["obj"] = {"method": ACT, "params": {"flowId": 60}}  # type: ignore[assignment]
        _, body = await post(server.webhook_url() + "batch", {"cmd": cmd})
        errors = body["result"]["result_error"]
        assert len(body["result"]["result"]) == 50
        assert errors["k50"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
        assert errors["b"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
        assert server.state.activations.total() == 50
        _, body = await post(
            server.webhook_url() + "batch", {"cmd": {"b": "batch?x=1", "s": {"method": ACT}}}
        )
        assert body["result"]["result_error"]["b"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
        assert body["result"]["result"] == []  # the object command was skipped silently


async def test_batch_result_references() -> None:
    async with serve(flows=5) as server:
        cmd = {"g": "tasks.flow.Flow.get?flowId=3", "a": f"{ACT}?flowId=$result[g][id]"}
        _, body = await post(server.webhook_url() + "batch", {"cmd": cmd})
        assert body["result"]["result"]["a"] is True
        assert server.state.activations == {3: 1}


async def test_leaky_bucket_refuses_over_burst_and_does_not_execute() -> None:
    clock = FakeClock(100.0)
    portal = Portal(PortalConfig(flows=5, burst=3, leak=1.0), clock=clock)
    from aiob24flow.emulator import EmulatorServer

    async with EmulatorServer(portal) as server:
        url = server.webhook_url() + ACT
        statuses = [(await post(url, {"flowId": 1}))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 503]
        status, body = await post(url, {"flowId": 1})
        assert status == 503
        assert body == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        assert server.state.activations[1] == 3
        clock.now += 1.0  # one slot drains
        assert (await post(url, {"flowId": 1}))[0] == 200
        assert (await post(url, {"flowId": 1}))[0] == 503
        assert server.state.activations[1] == 4 and server.state.refused_503 == 3


async def test_oauth_tokens_expire_and_refresh_tokens_are_single_use() -> None:
    clock = FakeClock(1_000_000.0)
    portal = Portal(PortalConfig(flows=5, leak=None, token_lifetime=10), wall_clock=clock)
    from aiob24flow.emulator import EmulatorServer

    async with EmulatorServer(portal) as server:
        tokens = portal.state.issue_tokens()
        url = server.oauth_endpoint + ACT
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await post(url, {"flowId": 1}, headers=bearer))[0] == 200
        assert (await post(url, {"flowId": 1, "auth": tokens["access_token"]}))[0] == 200
        status, body = await post(url, {"flowId": 1})
        assert (status, body["error"]) == (401, "NO_AUTH_FOUND")
        status, body = await post(url, {"flowId": 1}, headers={"Authorization": "Bearer nope"})
        assert (status, body["error"]) == (401, "invalid_token")
        clock.now += 11
        status, body = await post(url, {"flowId": 1}, headers=bearer)
        assert (status, body["error"]) == (401, "expired_token")
        form = (
            f"grant_type=refresh_token&client_id={portal.config.client_id}"
            f"&client_secret={portal.config.client_secret}&refresh_token={tokens['refresh_token']}"
        )
        status, fresh = await post(server.token_url, form=form)
        assert status == 200 and fresh["refresh_token"] != tokens["refresh_token"]
        status, body = await post(server.token_url, form=form)  # the same refresh token again
        assert (status, body["error"]) == (400, "invalid_grant")
        assert portal.state.rejected_refreshes == 1
        status, body = await post(
            server.token_url, form=form.replace(portal.config.client_secret, "bad")
        )
        assert (status, body["error"]) == (400, "invalid_client")
        new_bearer = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert (await post(url, {"flowId": 1}, headers=new_bearer))[0] == 200
        assert portal.state.activations[1] == 3


async def test_insufficient_scope() -> None:
    async with serve(flows=5, webhook_scopes=frozenset({"crm"})) as server:
        status, body = await post(server.webhook_url() + ACT, {"flowId": 1})
        assert (status, body["error"]) == (401, "insufficient_scope")
        _, body = await post(server.webhook_url() + "batch", {"cmd": {"a": f"{ACT}?flowId=1"}})
        assert body["result"]["result_error"]["a"] == {
            "error": "insufficient_scope",
            "error_description": "",
        }


async def test_operating_limit_blocks_next_call_of_that_method_only() -> None:
    async with serve(flows=5, call_cost={ACT: 200.0}) as server:
        url = server.webhook_url()
        first = (await post(url + ACT, {"flowId": 1}))[1]
        assert first["time"]["operating"] == 200.0 and "operating_reset_at" in first["time"]
        assert (await post(url + ACT, {"flowId": 1}))[0] == 200  # 200 <= 480
        assert (await post(url + ACT, {"flowId": 1}))[0] == 200  # crosses: still runs
        status, body = await post(url + ACT, {"flowId": 1})
        assert (status, body["error"]) == (429, "OPERATION_TIME_LIMIT") and "time" not in body
        assert (await post(url + "tasks.flow.Flow.pin", {"flowId": 1}))[0] == 200
        assert (await post(server.webhook_url(2) + "tasks.flow.Flow.pin", {"flowId": 1}))[0] == 200
        assert server.state.activations[1] == 3


@pytest.mark.parametrize("fault", ["error_before", "error_after", "drop_after", "limit_503"])
async def test_faults(fault: str) -> None:
    async with serve(flows=5, faults=Faults(**{fault: 1.0})) as server:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(server.webhook_url() + ACT, json={"flowId": 1}) as r:
                    status = r.status
            except aiohttp.ClientError:
                status = None
        executed = fault in ("error_after", "drop_after")
        assert server.state.activations[1] == (1 if executed else 0)
        assert (
            status
            == {"error_before": 500, "error_after": 500, "drop_after": None, "limit_503": 503}[
                fault
            ]
        )


def test_php_helpers() -> None:
    assert parse_str("a[b][]=1&a[b][]=2&c=x+y&5=z") == {
        "a": {"b": {0: "1", 1: "2"}},
        "c": "x y",
        5: "z",
    }
    assert json_encode({}) == "[]"
    assert json_encode({0: True, 1: False}) == "[true,false]"
    assert json_encode({1: True}) == '{"1":true}'
    assert json_encode({"s": "<a&'b'>"}) == '{"s":"\\u003Ca\\u0026\\u0027b\\u0027\\u003E"}'


def test_php_string_is_what_php_echoes() -> None:
    # (string)$x with PHP's precision=14 (zend_gcvt), as the .xml transport and an
    # embedded $result reference write a value.
    cases = [
        (True, "1"), (False, ""), (None, ""), (3, "3"), ("s", "s"), (0.0, "0"), (-0.0, "-0"),
        (0.5, "0.5"), (0.1 + 0.2, "0.3"), (100.0, "100"), (1e-05, "1.0E-5"),
        (0.0001, "0.0001"), (-2.5e-7, "-2.5E-7"), (1e14, "1.0E+14"),
        (12345678901234.0, "12345678901234"), (1767261600.123456, "1767261600.1235"),
        (1.049041748046875e-05, "1.0490417480469E-5"), (float("inf"), "INF"),
        (float("nan"), "NAN"),
    ]  # fmt: skip
    for value, text in cases:
        assert php_string(value) == text, value


def test_emulator_command_line_options() -> None:
    from aiob24flow.emulator.__main__ import build_parser, config_from_args

    args = build_parser().parse_args(
        [
            "--flows",
            "7",
            "--burst",
            "5",
            "--leak",
            "0",
            "--latency",
            "0.1",
            "--seed",
            "3",
            "--error-before",
            "0.1",
            "--error-after",
            "0.2",
            "--drop-after",
            "0.3",
            "--limit-503",
            "0.05",
            "--hang-after",
            "0.01",
            "--hang-seconds",
            "9",
        ]
    )
    config = config_from_args(args)
    assert (config.flows, config.burst, config.leak, config.latency) == (7, 5, None, 0.1)
    faults = config.faults
    assert (faults.seed, faults.error_before, faults.error_after, faults.drop_after) == (
        3,
        0.1,
        0.2,
        0.3,
    )
    assert (faults.limit_503, faults.hang_after, faults.hang_seconds) == (0.05, 0.01, 9)


def test_emulator_runs_as_a_process(tmp_path: Any) -> None:
    import subprocess
    import sys
    import time
    import urllib.request

    ready = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiob24flow.emulator",
            "--port",
            "0",
            "--flows",
            "3",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        port = ready.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/stats") as answer:
            stats = json.loads(answer.read())
        assert stats["requests"] == 0 and stats["activations"] == {}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_get_verb_query_string_and_other_verbs() -> None:
    async with serve(flows=5) as server, aiohttp.ClientSession() as session:
        url = server.webhook_url() + ACT
        async with session.get(url + "?flowId=2") as answer:
            assert answer.status == 200 and (await answer.json())["result"] is True
        async with session.post(url + "?flowId=3", json={"flowId": 4}) as answer:
            assert answer.status == 200  # the body wins over the query string
        async with session.put(url, json={"flowId": 2}) as answer:
            assert answer.status == 405
        async with session.post(
            url, data=b"{broken", headers={"Content-Type": "application/json"}
        ) as answer:
            body = await answer.json()
            assert answer.status == 400 and body["error"] == "100"  # decode error swallowed
        assert server.state.activations == {2: 1, 4: 1}


async def test_a_farm_serves_one_portal_per_loopback_address() -> None:
    import aiohttp

    import aiob24flow as b24
    from aiob24flow.emulator import EmulatorFarm, Portal, PortalConfig

    portals = {f"127.0.1.{k}": Portal(PortalConfig(flows=100, leak=None)) for k in (1, 2, 3)}
    async with EmulatorFarm(portals) as farm, aiohttp.ClientSession() as session:
        for k, address in enumerate(farm.portals, 1):
            async with b24.FlowClient.from_webhook(
                farm.webhook_url(address), session=session, rate_limit=b24.RateLimit.unlimited()
            ) as client:
                report = await client.activate_many(range(1, 10 * k + 1))
                assert report.ok
        counts = {a: p.state.activations.total() for a, p in farm.portals.items()}
        assert counts == {"127.0.1.1": 10, "127.0.1.2": 20, "127.0.1.3": 30}
        async with session.get(f"http://127.0.1.2:{farm.port}/_emulator/stats") as answer:
            assert (await answer.json())["requests"] == 1
