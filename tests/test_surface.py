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


def test_the_repr_of_a_large_report_is_counts_only() -> None:
    error = b24.FlowError("Flow with this ID does not exist.", code="0")
    report = b24.BulkReport(
        dict.fromkeys(range(1, 10_001), True), {20_000: error}, {}, tuple(range(1, 5001))
    )
    text = repr(report)
    assert len(text) <= 300, text
    assert text == (
        "<BulkReport total=10001, succeeded=10000, changed=5000, failed=1, unknown=0>"
    )


async def test_a_second_ctrl_c_stops_at_once_and_still_prints_the_report() -> None:
    """Every batch on the wire (a slow portal), Ctrl-C twice: the report is printed
    (``--json`` too) with the flows on the wire ``unknown`` and the unsent ``failed``."""
    import json
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    script = Path(sys.executable).parent / "aiob24flow"
    async with serve(flows=300, latency=6.0) as server:
        env = {k: v for k, v in os.environ.items() if k != "B24_WEBHOOK_URL"}
        proc = await asyncio.create_subprocess_exec(
            str(script), "activate", "1-300", "--webhook", server.webhook_url(),
            "--plan", "unlimited", "--concurrency", "2", "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while server.state.requests < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.state.requests == 2  # both batches on the wire, for 6 s
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert time.monotonic() - started < 4  # it did not wait for the answers
    assert proc.returncode == 130, err.decode()
    document = json.loads(out)
    unknown = document["unknown"]
    failed = document["failed"]
    ids = sorted(int(k) for k in [*unknown, *failed, *document["succeeded"]])
    assert ids == list(range(1, 301))  # every flow accounted for
    assert len(unknown) == 100  # two batches of 50 were on the wire
    assert len(failed) == 200  # never sent
    assert "not waiting for the answers" in err.decode()


@pytest.mark.parametrize("operation", ["set_active", "verify", "set_pinned"])
async def test_progress_counts_the_work_so_a_bar_moves(operation: str) -> None:
    """``set_active`` reads all before it toggles: its progress must move while it reads
    (it sat at 0 until the end), and reach its total when done."""
    seen: list[b24.Progress] = []
    async with (
        serve(flows=500, active_ratio=1.0) as server,
        b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit.unlimited(), concurrency=1
        ) as client,
    ):
        ids = range(1, 501)
        if operation == "set_active":
            report = await client.set_active(ids, False, on_progress=seen.append)
        elif operation == "verify":
            report = await client.activate_many(ids, verify=True, on_progress=seen.append)
        else:
            report = await client.set_pinned(ids, True, on_progress=seen.append)
    assert report.ok
    steps = [p.steps for p in seen]
    assert steps == sorted(steps) and len(set(steps)) >= 10  # a call per batch, moving
    first_done = next(i for i, p in enumerate(seen) if p.done)
    if operation != "set_pinned":  # reads come first: the bar moved before any flow settled
        assert seen[first_done - 1].steps >= 450
    last = seen[-1]
    assert last.done == last.total == 500
    assert last.steps == last.steps_total == (500 if operation == "set_pinned" else 1000)
    assert all(p.steps <= p.steps_total for p in seen)
