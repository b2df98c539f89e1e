"""A user program: checked by ``mypy --strict`` in tests/test_typing.py, never run."""

from __future__ import annotations

import asyncio
from typing import Any

from typing_extensions import assert_type

import aiob24flow as b24


async def main(client: b24.FlowClient, ids: list[int]) -> None:
    toggled = await client.activate_many(ids, verify=True)
    assert_type(toggled, b24.BulkReport[bool])
    assert_type(toggled.succeeded, dict[int, bool])
    assert_type(toggled.failed, dict[int, b24.B24Error])
    assert_type(toggled.unknown, dict[int, b24.B24Error])
    for error in toggled.unknown.values():
        assert_type(error.may_have_run, bool)  # no narrowing needed
    assert_type(await client.pin_many(ids), b24.BulkReport[bool])
    assert_type(await client.set_active(ids, True), b24.BulkReport[bool])
    assert_type(await client.set_pinned(ids, False), b24.BulkReport[bool])
    flows = await client.get_many(ids)
    assert_type(flows, b24.BulkReport[dict[str, Any]])
    assert_type(await client.get_many(ids, fields=["active"]), b24.BulkReport[dict[str, Any]])
    assert_type(await client.activate(1), bool)
    assert_type(await client.pin(1), bool)
    assert_type(await client.get(1), dict[str, Any])
    result = await client.call("tasks.flow.Flow.get", {"flowId": 1})
    if isinstance(result, dict):
        assert_type(result, dict[str, b24.JSON])
    batch = await client.batch({"a": ("tasks.flow.Flow.activate", {"flowId": 1})})
    assert_type(batch, b24.BatchResult)
    assert_type(client.stats(), b24.Stats)
    assert_type(client.tokens, b24.OAuthTokens | None)
    stop = asyncio.Event()

    def on_progress(progress: b24.Progress) -> None:
        assert_type(progress.done, int)

    await client.activate_many(ids, on_progress=on_progress, stop=stop)
    try:
        await client.activate_many(ids)
    except b24.BulkAborted as aborted:
        assert_type(aborted.report, b24.BulkReport[Any] | None)
    except b24.RequestNotSent as error:
        assert_type(error.may_have_run, bool)
    assert_type(b24.__version__, str)
    await client.aclose()


def build() -> b24.FlowClient:
    return b24.FlowClient.from_webhook(
        "https://portal.example.com/rest/1/code/",
        rate_limit=b24.RateLimit.enterprise(),
        retry=b24.RetryPolicy(attempts=3),
        timeout=b24.Timeout(connect=5, read=75, total=90),
    )
