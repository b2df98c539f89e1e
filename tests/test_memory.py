"""Memory per flow stays small: pinned so it cannot silently regress (issue: set_active
once kept every flow's whole ``tasks.flow.Flow.get`` object, about 2.3 KB per flow)."""

from __future__ import annotations

import gc
import tracemalloc

import aiob24flow as b24
from tests.conftest import no_sleep, serve

FLOWS = 20_000
BOUND = 700  # bytes per flow, emulator's own allocations during the run included
FIELDS_BOUND = 1_000  # get_many keeping two fields (whole flows: about 2,500 bytes each)


async def peak_per_flow(operation: str) -> float:
    async with (
        serve(flows=FLOWS, active_ratio=0.5, seed=3) as server,
        b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit.unlimited(), sleep=no_sleep
        ) as client,
    ):
        await client.get_many(range(1, 101))  # warm up: session, caches
        tracemalloc.start()
        try:
            ids = list(range(1, FLOWS + 1))
            if operation == "set_active":
                report = await client.set_active(ids, True)
            elif operation == "get_many(fields)":
                report = await client.get_many(ids, fields=("active", "name"))
                # Plain values only: CPython's collector stops walking these dicts.
                gc.collect()
                assert not any(map(gc.is_tracked, report.succeeded.values()))
            else:
                report = await client.activate_many(ids)
            assert report.ok and len(report) == FLOWS
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak / FLOWS


async def test_set_active_keeps_a_bit_per_flow_not_the_flow() -> None:
    per_flow = await peak_per_flow("set_active")
    assert per_flow < BOUND, f"{per_flow:.0f} bytes per flow"


async def test_activate_many_memory_per_flow() -> None:
    per_flow = await peak_per_flow("activate_many")
    assert per_flow < BOUND, f"{per_flow:.0f} bytes per flow"


async def test_get_many_with_fields_keeps_the_fields_not_the_flow() -> None:
    per_flow = await peak_per_flow("get_many(fields)")
    assert per_flow < FIELDS_BOUND, f"{per_flow:.0f} bytes per flow"
