"""What a new user and an operator meet first (issue: what they trip over), each row
against real parts: the emulator over real sockets, the console script, real SIGINTs."""

from __future__ import annotations

import asyncio
import re

import pytest

import aiob24flow as b24
from tests.conftest import run_cli, serve


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_refusal_of_every_command_in_a_batch_ends_the_job(concurrency: int) -> None:
    """A webhook without the ``task`` scope is refused per command inside ``batch``:
    the job stops at the first such batch (at most ``concurrency`` requests)."""
    async with (
        serve(flows=2000, webhook_scopes=frozenset()) as server,
        b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit.unlimited(), concurrency=concurrency
        ) as client,
    ):
        report = await client.activate_many(range(1, 2001))
    assert server.state.requests <= concurrency
    assert server.state.activations.total() == 0
    assert len(report.failed) == 2000 and not report.succeeded and not report.unknown
    refused = [e for e in report.failed.values() if isinstance(e, b24.InsufficientScope)]
    assert 1 <= len(refused) <= 50 * concurrency
    unsent = [e for e in report.failed.values() if isinstance(e, b24.Stopped)]
    assert len(unsent) == 2000 - len(refused)
    assert isinstance(unsent[0].__cause__, b24.InsufficientScope)  # the cause, named


async def test_errors_of_single_flows_inside_a_batch_do_not_end_the_job() -> None:
    """Flows that do not exist are refused one by one: every other flow is toggled."""
    missing = frozenset(range(1, 101))  # two whole batches of "not found"
    async with serve(flows=300, missing=missing) as server, b24.FlowClient.from_webhook(
        server.webhook_url(), rate_limit=b24.RateLimit.unlimited(), concurrency=1
    ) as client:
        report = await client.activate_many(range(1, 301))
    assert sorted(report.failed) == sorted(missing)
    assert len(report.succeeded) == 200
    assert all(server.state.activations[i] == 1 for i in range(101, 301))


async def test_a_tls_handshake_with_a_plain_http_port_is_unreachable() -> None:
    """``--webhook https://...`` at a port that speaks plain HTTP: not retried, the job
    ends at once, and the one stderr line says why."""
    async with serve(flows=300, tls=False) as server:
        url = server.webhook_url().replace("http://", "https://", 1)
        code, out, err = await run_cli("activate", "1-300", "--webhook", url, "--plan", "unlimited")
    assert code == 1, err
    assert server.state.requests == 0
    assert "retrying" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert re.search(r"wrong.version.number|TLS", lines[0], re.I), lines[0]
    assert re.search(r"failed +300\n", out), out


async def test_the_library_classifies_a_tls_handshake_failure_unreachable() -> None:
    async with serve(flows=3, tls=False) as server:
        url = server.webhook_url().replace("http://", "https://", 1)
        async with b24.FlowClient.from_webhook(url, ssl=False) as client:
            with pytest.raises(b24.Unreachable, match="TLS"):
                await asyncio.wait_for(client.activate(1), 10)
        assert client.stats().retries == 0
