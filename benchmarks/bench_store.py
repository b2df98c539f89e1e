"""The cost of a shared token store on the hot path (tokens not expiring).

Single ``activate()`` calls (one HTTP request each, 50 in flight) against an in-process
emulator, side by side in one run: no store, ``FileTokenStore``, ``RedisTokenStore``. The
store is read at start and after a 401 only, so it must add no Redis round trip per
request: the Redis column counts the commands Redis served during the run.

    python benchmarks/bench_store.py          # needs redis-server on PATH
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import aiob24flow as b24
from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig

CALLS = 3000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def redis_commands(redis: Any) -> int:
    stats = await redis.info("stats")
    return int(stats["total_commands_processed"])


async def run(server: EmulatorServer, store: b24.TokenStore | None, label: str,
              redis: Any) -> None:  # fmt: skip
    issued = server.state.issue_tokens()
    tokens = b24.OAuthTokens(
        issued["access_token"], issued["refresh_token"], expires_at=time.time() + 3600
    )
    client = b24.FlowClient.from_oauth(
        server.oauth_endpoint,
        tokens,
        store=store,
        client_id=server.portal.config.client_id,
        client_secret=server.portal.config.client_secret,
        token_url=server.token_url,
        rate_limit=b24.RateLimit.unlimited(),
    )
    before = await redis_commands(redis) if redis is not None else 0
    semaphore = asyncio.Semaphore(50)

    async def one(flow_id: int) -> None:
        async with semaphore:
            await client.activate(flow_id)

    async with client:
        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(one(i) for i in range(1, CALLS + 1)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    used = (await redis_commands(redis) - before) if redis is not None else 0
    print(
        f"{label:<18} calls={CALLS} elapsed={elapsed:6.2f}s requests/s={CALLS / elapsed:7.0f} "
        f"cpu/call={cpu / CALLS * 1e6:6.0f}us redis-commands={used}"
    )


async def main() -> None:
    import redis.asyncio as aioredis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        redis = aioredis.from_url(url)
        config = PortalConfig(flows=CALLS, leak=None)
        with tempfile.TemporaryDirectory() as tmp:
            for label in ("no store", "FileTokenStore", "RedisTokenStore", "no store (again)"):
                async with EmulatorServer(Portal(config)) as server:
                    store: b24.TokenStore | None = None
                    if label == "FileTokenStore":
                        store = b24.FileTokenStore(os.path.join(tmp, "tokens.json"))
                    elif label == "RedisTokenStore":
                        store = b24.RedisTokenStore(url, f"bench:{time.time()}")
                    await run(server, store, label, redis)
                    if isinstance(store, b24.RedisTokenStore):
                        await store.aclose()
        await redis.aclose()
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
