"""Many workers, one portal's OAuth tokens: a shared store, one refresh across processes,
and a refresh token never sent twice. Real redis-server, real processes, the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import aiob24flow as b24
from tests.conftest import free_port, no_sleep, oauth_client, serve, write_token_file

SCRIPT = Path(sys.executable).parent / "aiob24flow"
ACTIVATE = "tasks.flow.Flow.activate"


def pair(server: Any, *, lifetime: float | None = None) -> b24.OAuthTokens:
    issued = server.state.issue_tokens()
    expires = time.time() + (lifetime if lifetime is not None else 3600)
    return b24.OAuthTokens(issued["access_token"], issued["refresh_token"], expires_at=expires)


def client(server: Any, store: b24.TokenStore, tokens: b24.OAuthTokens | None = None,
           **kwargs: Any) -> b24.FlowClient:  # fmt: skip
    kwargs.setdefault("sleep", None)
    return oauth_client(server, tokens, store=store, **kwargs)


# -- the stores themselves -------------------------------------------------------------------


async def test_file_store_seeds_once_and_writes_atomically(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    link = tmp_path / "tokens.json"
    real.write_text(json.dumps({"endpoint": "https://p.example/rest/"}))
    link.symlink_to(real)
    store = b24.FileTokenStore(link)
    assert (await store.read()).tokens is None
    first = b24.OAuthTokens("a1", "r1", expires_at=10.0)
    assert await store.seed(first) is True
    assert await store.seed(b24.OAuthTokens("a2", "r2")) is False  # not empty any more
    async with store.lock() as lease:
        await lease.mark_spending("r1")
        assert (await lease.read()).spending == "r1"
        await lease.write(b24.OAuthTokens("a3", "r3"))
    stored = await store.read()
    assert stored.tokens == b24.OAuthTokens("a3", "r3") and stored.spending is None
    data = json.loads(real.read_text())
    assert data["endpoint"] == "https://p.example/rest/" and link.is_symlink()
    assert oct(real.stat().st_mode & 0o777) == "0o600"
    assert "r3" not in repr(stored)


async def test_a_holder_paused_past_its_ttl_cannot_overwrite_the_next_pair(
    redis_url: str,
) -> None:
    store_a = b24.RedisTokenStore(redis_url, "t:fence", lock_ttl=0.2)
    store_b = b24.RedisTokenStore(redis_url, "t:fence", lock_ttl=5)
    await store_a.seed(b24.OAuthTokens("a0", "r0"))
    async with store_a.lock() as lease_a:
        await asyncio.sleep(0.4)  # paused: the lock expired under it
        async with store_b.lock() as lease_b:
            await lease_b.write(b24.OAuthTokens("a-next", "r-next"))
        with pytest.raises(b24.LockLost):
            await lease_a.write(b24.OAuthTokens("a-stale", "r-stale"))
        with pytest.raises(b24.LockLost):
            await lease_a.mark_spending("r0")
    assert (await store_b.read()).tokens == b24.OAuthTokens("a-next", "r-next")
    await store_a.aclose()
    await store_b.aclose()


async def test_a_worker_that_lost_the_seed_reads_the_whole_pair(redis_url: str) -> None:
    """Workers start together on an empty store: one seeds it; the others must then read
    the winner's pair, never a half-written one (which reads as empty)."""
    workers = [b24.RedisTokenStore(redis_url, "t:seed-race") for _ in range(4)]
    tokens = b24.OAuthTokens("a0", "r0", expires_at=1e10)

    async def start(store: b24.RedisTokenStore) -> tuple[bool, b24.OAuthTokens | None]:
        won = await store.seed(tokens)
        return won, (await store.read()).tokens

    try:
        for round_ in range(30):
            for store in workers:
                store.key = f"t:seed-race:{round_}"
            outcome = await asyncio.gather(*(start(store) for store in workers))
            assert sum(won for won, _ in outcome) == 1
            assert all(seen == tokens for _, seen in outcome), outcome
    finally:
        for store in workers:
            await store.aclose()


# -- clients sharing a store -----------------------------------------------------------------


async def test_clients_share_one_refresh_through_redis(redis_url: str) -> None:
    async with serve(flows=400) as server, contextlib.AsyncExitStack() as stack:
        tokens = pair(server, lifetime=0.0)  # due for refresh at once
        stores = [b24.RedisTokenStore(redis_url, "t:share") for _ in range(4)]
        clients = [client(server, s, tokens, sleep=no_sleep) for s in stores]
        for c, s in zip(clients, stores, strict=True):
            stack.push_async_callback(s.aclose)
            stack.push_async_callback(c.aclose)
        reports = await asyncio.gather(
            *(c.activate_many(range(1 + 100 * k, 101 + 100 * k)) for k, c in enumerate(clients))
        )
        assert all(r.ok for r in reports), [
            (r.summary(), {f"{e!r} <- {e.__cause__!r}" for e in r.failed.values()}) for r in reports
        ]
        assert server.state.refreshes == 1 and server.state.rejected_refreshes == 0
        assert server.state.activations.total() == 400
        stored = await stores[0].read()
        assert stored.tokens is not None and all(
            c.tokens == stored.tokens for c in clients
        )  # everyone adopted the one new pair


async def test_a_killed_holder_is_never_followed_by_a_second_send(
    redis_url: str, tmp_path: Path
) -> None:
    """A worker dies (SIGKILL) after sending the refresh and before storing the answer."""
    async with serve(flows=20) as server:
        tokens = pair(server, lifetime=0.0)
        seed = b24.RedisTokenStore(redis_url, "t:killed")
        await seed.seed(tokens)
        script = tmp_path / "holder.py"
        script.write_text(
            f"""
import asyncio, os, signal, aiohttp, aiob24flow as b24
async def main():
    store = b24.RedisTokenStore({redis_url!r}, "t:killed", lock_ttl=1.5)
    async with store.lock() as lease:
        pair = (await lease.read()).tokens
        await lease.mark_spending(pair.refresh_token)
        async with aiohttp.ClientSession() as s:
            await s.post({server.token_url!r}, data={{
                "grant_type": "refresh_token", "client_id": {server.portal.config.client_id!r},
                "client_secret": {server.portal.config.client_secret!r},
                "refresh_token": pair.refresh_token}})
        print("sent", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
        )
        holder = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=asyncio.subprocess.PIPE
        )
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"sent"
        assert await holder.wait() == -signal.SIGKILL
        assert server.state.refreshes == 1  # the grant is spent; its answer died with it
        started = time.monotonic()
        stores = [b24.RedisTokenStore(redis_url, "t:killed", lock_ttl=1.5) for _ in range(3)]
        clients = [client(server, s) for s in stores]
        async with contextlib.AsyncExitStack() as stack:  # closed even when an assert fails
            for c, s in zip(clients, stores, strict=True):
                stack.push_async_callback(s.aclose)
                stack.push_async_callback(c.aclose)
            stack.push_async_callback(seed.aclose)
            results = await asyncio.gather(
                *(c.activate(i + 1) for i, c in enumerate(clients)), return_exceptions=True
            )
        # One lock TTL at most (a generous margin: only a wait per worker would break it).
        assert time.monotonic() - started < 1.5 * 3, time.monotonic() - started
        for result in results:
            assert isinstance(result, b24.RefreshFailed), result
            assert isinstance(result.__cause__, b24.RefreshOutcomeUnknown)
            assert "authorize the application again" in str(result.__cause__)
        assert server.state.rejected_refreshes == 0  # the spent token never went again
        assert server.state.token_requests == 1 and server.state.activations.total() == 0


async def test_a_store_that_cannot_write_the_new_pair_stops_the_client() -> None:
    class Broken(b24.FileTokenStore):
        writes = 0

        def _dump(self, data: dict[str, Any]) -> None:
            Broken.writes += 1
            if "spending_refresh_token" not in data and Broken.writes > 2:
                raise OSError(28, "No space left on device")
            super()._dump(data)

    async with serve(flows=100) as server:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"aiob24flow-broken-{os.getpid()}.json"
        try:
            store = Broken(path)
            tokens = pair(server, lifetime=0.0)
            async with client(server, store, tokens) as c:
                report = await c.activate_many(range(1, 101))
            assert len(report.failed) == 100 and server.state.activations.total() == 0
            first = next(iter(report.failed.values()))
            cause = first if isinstance(first, b24.RefreshFailed) else first.__cause__
            assert isinstance(cause, b24.RefreshFailed)
            assert server.state.refreshes == 1  # spent, and its successor not stored
        finally:
            for leftover in (path, Path(str(path) + ".lock")):
                leftover.unlink(missing_ok=True)


# -- processes -------------------------------------------------------------------------------


async def run_workers(args_for: list[list[str]]) -> list[tuple[int, str, str]]:
    procs = [
        await asyncio.create_subprocess_exec(
            str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for args in args_for
    ]
    out = []
    for proc in procs:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode is not None
        out.append((proc.returncode, stdout.decode(), stderr.decode()))
    return out


@pytest.mark.parametrize("where", ["redis", "file"])
async def test_four_processes_refresh_once_per_expiry(
    where: str, redis_url: str, tmp_path: Path
) -> None:
    lifetime = 1.5
    async with serve(flows=10_000, token_lifetime=lifetime) as server:
        issued = time.time()
        tokens = pair(server, lifetime=lifetime)
        path = tmp_path / "tokens.json"
        write_token_file(server, path, tokens.to_json())
        extra = (
            ["--oauth-redis", redis_url, "--oauth-key", f"t:four:{free_port()}"]
            if where == "redis"
            else []
        )
        args = [
            ["activate", f"{1 + 2500 * w}-{2500 * (w + 1)}", "--oauth", str(path), "--json",
             "--burst", "5", "--per-second", "10", *extra]
            for w in range(4)
        ]  # fmt: skip
        results = await run_workers(args)
        elapsed = time.time() - issued
    for code, out, err in results:
        assert code == 0, err[-800:]
        assert json.loads(out)["summary"]["succeeded"] == 2500
    assert all(server.state.activations[i] == 1 for i in range(1, 10_001))
    assert server.state.rejected_refreshes == 0  # no invalid_grant: nobody sent a spent token
    # Every token but the last lived its full lifetime, so there were at most
    # elapsed / lifetime expiries, and one refresh per expiry: four workers refreshing on
    # their own would show four times as many. (A worker learns of a fractional lifetime
    # only from the 401, so a cycle can be a little longer than the lifetime.)
    # No lower bound from the wall time: on a loaded machine the workers start late and
    # wait between batches, so fewer tokens expire than elapsed / lifetime (a worker that
    # missed a refresh would have failed its flows above).
    expiries = elapsed / lifetime
    refreshes = server.state.refreshes
    assert 1 <= refreshes <= expiries + 1, (refreshes, elapsed)


async def test_two_cli_runs_on_one_token_file_refresh_once(tmp_path: Path) -> None:
    async with serve(flows=200) as server:
        path = tmp_path / "tokens.json"
        expired = pair(server, lifetime=0.0)  # both runs must refresh
        write_token_file(server, path, expired.to_json())
        results = await run_workers(
            [["activate", "1-100", "--oauth", str(path), "--plan", "unlimited"],
             ["activate", "101-200", "--oauth", str(path), "--plan", "unlimited"]]
        )  # fmt: skip
        assert [r[0] for r in results] == [0, 0], [r[2][-500:] for r in results]
        assert server.state.refreshes == 1 and server.state.rejected_refreshes == 0
        assert server.state.activations.total() == 200
        saved = json.loads(path.read_text())
        assert saved["refresh_token"] in server.state.refresh_tokens
        assert "spending_refresh_token" not in saved


async def test_a_store_on_redis_without_an_append_only_file_warns_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The test server runs with ``appendonly no``: a restart could lose a refreshed pair,
    and with it the portal; the store says so once, at its first read."""
    import logging

    caplog.set_level(logging.WARNING, logger="aiob24flow")
    store = b24.RedisTokenStore(redis_url, f"t:aof:{free_port()}")
    try:
        await store.read()
        await store.read()
    finally:
        await store.aclose()
    warnings = [r for r in caplog.records if "appendonly no" in r.getMessage()]
    assert len(warnings) == 1
    assert "on_refresh" in warnings[0].getMessage()
