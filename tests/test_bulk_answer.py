"""The lean decoder of bulk batch answers: it must read exactly what a full decode reads
(``result``, ``result_error``, the last ``result_time`` entry, the top-level members) or
step aside and let the full decode run. Table cases for the shapes it must refuse, and a
seeded fuzz over member orders, nesting and hostile strings."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from aiob24flow import _json
from aiob24flow._batch import _lean_answer, loads_bulk_answer, parse_bulk


@pytest.fixture(autouse=True, params=["orjson", "json"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both JSON backends: their errors on the cut parts must both mean "not this shape"."""
    if request.param == "json":
        monkeypatch.setattr(_json, "loads", json.loads)
    elif _json.BACKEND != "orjson":
        pytest.skip("orjson is not installed")


def entry(k: int) -> dict[str, Any]:
    return {
        "start": 1795476324.9227388 + k,
        "finish": 1795476324.9227543 + k,
        "duration": 1.5497207641601562e-05,
        "processing": 1.5497207641601562e-05,
        "date_start": "2026-11-24T02:25:24+03:00",
        "date_finish": "2026-11-24T02:25:24+03:00",
        "operating_reset_at": 1795476924 + k,
        "operating": 0.25 * k,
    }


def answer(n: int = 50, *, errors: int = 0, **top: Any) -> dict[str, Any]:
    """A portal's batch answer, members in the portal's order (protocol.md §10)."""
    keys = [str(1000 + i) for i in range(n)]
    ok, failed = keys[errors:], keys[:errors]
    error = {"error": "ACCESS_DENIED", "error_description": "Access denied"}
    return {
        "result": {
            "result": {k: True for k in ok} or [],
            "result_error": {k: error for k in failed} or [],
            "result_total": [],
            "result_next": [],
            "result_time": {k: entry(i) for i, k in enumerate(ok)} or [],
        },
        "time": entry(99),
        **top,
    }


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def what_a_job_reads(decoded: Any) -> Any:
    """Everything a bulk job uses from a decoded answer."""
    result = decoded.get("result") if isinstance(decoded, dict) else None
    bulk = parse_bulk(result, "tasks.flow.Flow.activate")
    rest = {k: v for k, v in decoded.items() if k != "result"} if isinstance(decoded, dict) else {}
    return bulk.results, bulk.errors, bulk.last_time, rest


def test_the_portals_shape_is_read_lean_and_the_same() -> None:
    for value in (answer(), answer(errors=3), answer(1), answer(50, errors=49)):
        body = encode(value)
        lean = _lean_answer(body)
        assert lean is not None  # the common case takes the lean path
        assert what_a_job_reads(lean) == what_a_job_reads(json.loads(body))
        assert len(lean["result"]["result_time"]) == 1


def shape(mutate: Any) -> bytes:
    value = answer()
    mutate(value)
    return encode(value)


def moved(value: dict[str, Any], member: str) -> None:
    """Move a member of ``result`` after ``result_time``."""
    inner = value["result"]
    inner[member] = inner.pop(member)


@pytest.mark.parametrize(
    "body",
    [
        # result_error after result_time: skipping it would hide the errors.
        shape(lambda v: (v["result"]["result_error"].__class__, moved(v, "result_error"))),
        shape(lambda v: moved(v, "result")),
        # An entry that is not a flat object: its last "{" is not the entry's.
        shape(lambda v: v["result"]["result_time"].update({"x": {"a": {"b": 1}}})),
        shape(lambda v: v["result"]["result_time"].update({"x": 5})),
        # No top-level time, or other members after it, or a top level not ending there.
        shape(lambda v: v.pop("time")),
        shape(lambda v: v.update({"next": {"a": 1}})),
        # Other top-level members after "result" (the cut object is not the last one).
        shape(lambda v: v.update({"result": v.pop("result"), "time": v.pop("time")})),
        b'{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}',
        b'{"result":{"result":[],"result_time":{"a":{}}},"time":{}',  # cut off
        b"",
        b"not json",
    ],
)
def test_other_shapes_take_the_full_decode(body: bytes) -> None:
    lean = _lean_answer(body)
    if lean is not None:  # allowed only where it reads what the full decode reads
        assert what_a_job_reads(lean) == what_a_job_reads(json.loads(body))


def test_a_string_cannot_fool_the_cut() -> None:
    """The markers inside string values (flow names, error texts) and nested keys."""
    hostile = ',"result_time":{"x":{}}},"time":{"operating":1}}'
    value = answer(errors=2)
    value["result"]["result"]["1010"] = {"name": hostile, "result_time": {"a": {"b": 1}}}
    value["result"]["result_error"]["1000"]["error_description"] = hostile
    body = encode(value)
    assert what_a_job_reads(loads_bulk_answer(body)) == what_a_job_reads(json.loads(body))


def random_value(rng: random.Random, depth: int) -> Any:
    pick = rng.random()
    if depth <= 0 or pick < 0.4:
        return rng.choice(
            [True, False, None, 0, 1.5, "x", '"result_time":{"', "}}", ',"time":{', "{[}]"]
        )
    if pick < 0.7:
        return [random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    names = ["result", "result_error", "result_time", "time", "a", "operating"]
    return {rng.choice(names): random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def test_fuzz_the_lean_path_never_reads_differently() -> None:
    rng = random.Random(20261123)
    lean_taken = 0
    for _ in range(3000):
        value = answer(rng.randint(1, 5), errors=rng.randint(0, 2))
        inner = value["result"]
        for _ in range(rng.randint(0, 3)):
            # Extra or replaced members at both levels, in random places.
            target = rng.choice([value, inner, inner["result_time"] or {}])
            if isinstance(target, dict):
                target[rng.choice(["result", "result_error", "result_time", "time", "z"])] = (
                    random_value(rng, 3)
                )
        if rng.random() < 0.5:
            members = list(inner.items())
            rng.shuffle(members)
            value["result"] = dict(members)
        body = encode(value)
        lean = _lean_answer(body)
        if lean is not None:
            lean_taken += 1
            assert what_a_job_reads(lean) == what_a_job_reads(json.loads(body)), body
    assert lean_taken > 300  # the fuzz does reach the lean path
