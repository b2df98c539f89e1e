"""The Redis-shared limiter against a real redis-server on loopback (never mocked)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

import aiob24flow as b24
from aiob24flow._redis import RedisBucket, RedisOperatingBudget
from tests.conftest import free_port, no_sleep, serve, unique_prefix

pytestmark = pytest.mark.redis

SCRIPT = Path(sys.executable).parent / "aiob24flow"


async def test_shared_bucket_admits_burst_then_rate(redis_url: str) -> None:
    backend = b24.RedisLimiter(redis_url, prefix=unique_prefix())
    limit = b24.RateLimit(5, 10, headroom=0)
    a = backend.limiter_for("https://p.bitrix24.com", limit)
    b = backend.limiter_for("https://p.bitrix24.com", limit)  # another "process"
    a.sleep = b.sleep = no_sleep
    waits = await asyncio.gather(*((a if i % 2 else b).acquire() for i in range(15)))
    waits = sorted(waits)
    assert waits[:5] == [0.0] * 5
    # then one every 0.1 s (Redis' clock moves a few ms while the calls run)
    for k, wait in enumerate(waits[5:], start=1):
        assert wait == pytest.approx(k * 0.1, abs=0.03)
    other = backend.limiter_for("https://q.bitrix24.com", limit)
    other.sleep = no_sleep
    assert await other.acquire() == 0.0  # one bucket per portal
    await backend.aclose()


async def test_refusal_resyncs_every_process(redis_url: str) -> None:
    backend = b24.RedisLimiter(redis_url, prefix=unique_prefix())
    limit = b24.RateLimit(50, 2, headroom=0)
    a = backend.limiter_for("https://p.bitrix24.com", limit)
    b = backend.limiter_for("https://p.bitrix24.com", limit)
    a.sleep = b.sleep = no_sleep
    assert await a.acquire() == 0.0
    await a.refused()  # the portal said the bucket is full
    assert await b.acquire() == pytest.approx(0.5, abs=0.02)
    await backend.aclose()


async def test_shared_operating_budget(redis_url: str) -> None:
    backend = b24.RedisLimiter(redis_url, prefix=unique_prefix())
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    one = backend.budget_for("https://p.bitrix24.com", sleep)
    two = backend.budget_for("https://p.bitrix24.com", sleep)
    assert isinstance(one, RedisOperatingBudget)
    one.observe(
        "tasks.flow.Flow.activate", {"operating": 470, "operating_reset_at": time.time() + 30}
    )
    await one.wait(["batch"])  # pushes the figure to Redis
    await two.wait(["tasks.flow.Flow.pin"])
    assert slept == []  # other methods are not held back
    await two.wait(["tasks.flow.Flow.activate"])
    assert slept and slept[0] == pytest.approx(30, abs=1)
    await backend.aclose()


async def test_unreachable_redis_is_a_clear_error_at_start_up() -> None:
    async with serve(flows=10) as server:
        backend = b24.RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
        client = b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit(50, 2, backend=backend)
        )
        with pytest.raises(b24.LimiterUnavailable, match="cannot reach Redis"):
            async with client:
                pass
        assert server.state.requests == 0


async def test_redis_lost_mid_job_fails_remaining_work_as_not_sent() -> None:
    async with serve(flows=200) as server:
        backend = b24.RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
        client = b24.FlowClient.from_webhook(
            server.webhook_url(),
            rate_limit=b24.RateLimit(50, 2, backend=backend),
            retry=b24.RetryPolicy(attempts=2),
            sleep=no_sleep,
        )
        report = await client.activate_many(range(1, 201))  # no start-up check: "mid-job"
        await client.aclose()
        assert len(report.failed) == 200 and not report.unknown
        # The first batch meets it after its retries; it would meet every batch, so the
        # job ends there: the rest are "not sent" with that error as the cause.
        for error in report.failed.values():
            assert isinstance(error, b24.LimiterUnavailable) or (
                isinstance(error, b24.Stopped)
                and isinstance(error.__cause__, b24.LimiterUnavailable)
            )
        assert server.state.requests == 0  # never silent over-sending


async def test_redis_lost_mid_job_local_fallback() -> None:
    async with serve(flows=200, burst=50, leak=2.0) as server:
        backend = b24.RedisLimiter(
            f"redis://127.0.0.1:{free_port()}/0", on_unavailable="local", fallback_share=4
        )
        client = b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit(50, 2, backend=backend), sleep=no_sleep
        )
        report = await client.activate_many(range(1, 201))
        await client.aclose()
        assert report.ok and server.state.activations.total() == 200
        bucket = client.limiter
        assert isinstance(bucket, RedisBucket) and bucket._degraded


def test_backend_validation() -> None:
    with pytest.raises(ValueError, match="on_unavailable"):
        b24.RedisLimiter(on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback_share"):
        b24.RedisLimiter(fallback_share=0)
    assert "secret" not in repr(b24.RedisLimiter("redis://:secret@127.0.0.1:1/0"))


async def run_cli_workers(
    url: str, redis: str | None, workers: int, per_worker: int, per_second: float
) -> list[dict[str, object]]:
    procs = []
    for w in range(workers):
        first, last = w * per_worker + 1, (w + 1) * per_worker
        args = [
            str(SCRIPT),
            "activate",
            f"{first}-{last}",
            "--webhook",
            url,
            "--json",
            "--burst",
            "50",
            "--per-second",
            str(per_second),
            # Four processes and the emulator on two cores: a process descheduled for a
            # moment delivers requests together. 8 slots absorb 0.4 s of that at 20/s.
            "--headroom",
            "8",
        ]
        if redis:
            args += ["--redis", redis]
        procs.append(
            await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        )
    outputs = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, (err.decode()[-500:], out.decode()[:1500])
        outputs.append(json.loads(out))
    return outputs


async def test_four_processes_share_one_bucket(redis_url: str) -> None:
    # The emulator listens on a new port, so the shared bucket's key is new too.
    async with serve(flows=10000, burst=50, leak=20.0) as server:
        started = time.monotonic()
        outputs = await run_cli_workers(server.webhook_url(), redis_url, 4, 2500, 20.0)
        elapsed = time.monotonic() - started
    assert server.state.refused_503 == 0
    assert all(o["summary"]["succeeded"] == 2500 for o in outputs)  # type: ignore[index]
    assert all(server.state.activations[i] == 1 for i in range(1, 10001))
    assert elapsed >= (200 - 50) / 20 * 0.95  # the portal's minimum: nobody cheated


async def test_bucket_keys_carry_no_userinfo(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A password in the webhook URL never reaches a Redis key or a log line, and two
    userinfos of one portal share one bucket (issue: a secret in Redis key names)."""
    import logging

    import redis.asyncio as aioredis

    prefix = unique_prefix()
    backend = b24.RedisLimiter(redis_url, prefix=prefix)
    caplog.set_level(logging.DEBUG, logger="aiob24flow")
    async with serve(flows=3) as server:
        url = server.webhook_url()
        secret = url.replace("://", "://alice:S3CRETPASS@", 1)
        other = url.replace("://", "://bob:OTHERPASS@", 1)
        limit = b24.RateLimit(50, 2, headroom=0, backend=backend)
        for webhook in (secret, other):
            async with b24.FlowClient.from_webhook(webhook, rate_limit=limit) as client:
                await client.activate(1)
                await client.activate_many([2, 3])
    redis = aioredis.from_url(redis_url, decode_responses=True)
    keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
    await redis.aclose()
    await backend.aclose()
    assert keys, "the shared bucket wrote nothing"
    assert not [k for k in keys if "PASS" in k or "@" in k], keys
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    assert f"{prefix}:bucket:http://{host_port}" in keys  # one bucket for both userinfos
    assert len([k for k in keys if ":bucket:" in k]) == 1
    assert "PASS" not in caplog.text
    assert "shared bucket" in caplog.text  # the DEBUG line was written, without the secret
