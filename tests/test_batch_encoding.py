"""Command encoding (PHP query syntax) and the shapes of batch answers."""

from __future__ import annotations

from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow._batch import as_map, normalize_commands, parse_batch, php_query
from aiob24flow.emulator._php import parse_str


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({"flowId": 517}, "flowId=517"),
        ({"flowData": {"name": "a b&c", "id": 5}}, "flowData%5Bname%5D=a+b%26c&flowData%5Bid%5D=5"),
        ({"list": [1, 2]}, "list%5B0%5D=1&list%5B1%5D=2"),
        ({"on": True, "off": False}, "on=1&off=0"),
        ({"skip": None, "x": 1}, "x=1"),
        ({"empty": [], "e2": {}}, ""),
        ({"f": 1.5, "u": "Поток"}, "f=1.5&u=%D0%9F%D0%BE%D1%82%D0%BE%D0%BA"),
    ],
)
def test_php_query(params: dict[str, Any], query: str) -> None:
    assert php_query(params) == query


def test_php_query_round_trips_through_parse_str() -> None:
    params = {"flowData": {"name": "x=y?&z", "team": [["user", "3"]]}, "flowId": 5}
    assert parse_str(php_query(params)) == {
        "flowData": {"name": "x=y?&z", "team": {0: {0: "user", 1: "3"}}},
        "flowId": "5",
    }


def test_normalize_commands() -> None:
    keys, methods, cmds = normalize_commands(
        {"a": ("tasks.flow.Flow.activate", {"flowId": 1}), "b": ("server.time", None)}
    )
    assert keys == ["a", "b"] and methods == ["tasks.flow.Flow.activate", "server.time"]
    assert cmds == ["tasks.flow.Flow.activate?flowId=1", "server.time"]
    keys, _, _ = normalize_commands([("m", None), ("n", {})])
    assert keys == ["0", "1"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], {}),
        ({}, {}),
        (None, {}),
        ([True, False], {"0": True, "1": False}),
        ({"1": True}, {"1": True}),
        ({"a": 1}, {"a": 1}),
    ],
)
def test_as_map(value: Any, expected: dict[str, Any]) -> None:
    assert as_map(value) == expected


ERR = {"error": "0", "error_description": "Cannot find flow"}


@pytest.mark.parametrize(
    ("body", "results", "errors", "not_run"),
    [
        # every command succeeded, keys 0..n-1 -> lists
        (
            {"result": [True, False], "result_error": [], "result_time": [{}, {}]},
            {0: True, 1: False},
            [],
            (),
        ),
        # only command 0 failed: result is an object, result_error a list
        (
            {"result": {"1": True}, "result_error": [ERR], "result_time": {"1": {}}},
            {1: True},
            [0],
            (),
        ),
        # only command 1 failed
        ({"result": [True], "result_error": {"1": ERR}}, {0: True}, [1], ()),
        # everything failed: empty maps come as []
        ({"result": [], "result_error": [ERR, ERR], "result_time": []}, {}, [0, 1], ()),
        # halt: command 1 absent everywhere; result_time missing altogether
        ({"result": [], "result_error": [ERR]}, {}, [0], (1,)),
    ],
)
def test_parse_batch_shapes(
    body: dict[str, Any], results: dict[int, Any], errors: list[int], not_run: tuple[int, ...]
) -> None:
    parsed = parse_batch(body, {}, ["0", "1"], ["tasks.flow.Flow.pin"] * 2, [0, 1])
    assert parsed.results == results
    assert sorted(parsed.errors) == errors
    assert parsed.not_run == not_run
    for key, err in parsed.errors.items():
        assert isinstance(err, b24.FlowError) and err.key == str(key) and err.status is None


def test_parse_batch_named_keys_and_time() -> None:
    body = {
        "result": {"a": True},
        "result_error": {"x": ERR},
        "result_time": {"a": {"operating": 1.5}},
        "result_total": [],
        "result_next": [],
    }
    parsed = parse_batch(body, {"start": 1}, ["a", "x"], ["m1", "m2"], ["a", "x"])
    assert parsed.results == {"a": True} and parsed.times == {"a": {"operating": 1.5}}
    assert parsed.errors["x"].method == "m2" and parsed.time == {"start": 1}
    assert not parsed.ok
