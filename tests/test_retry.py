"""The pure retry decisions, table-tested, and the tenacity policy built from them."""

from __future__ import annotations

import pytest

import aiob24flow as b24
from aiob24flow._retry import retry_delay, retrying, should_retry

POLICY = b24.RetryPolicy(attempts=5, max_elapsed=60, initial_delay=0.5, max_delay=4, jitter=0.5)


def limit_429(reset_at: float | None) -> b24.OperationTimeLimit:
    err = b24.OperationTimeLimit("blocked", code="OPERATION_TIME_LIMIT", status=429)
    err.reset_at = reset_at
    return err


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (b24.QueryLimitExceeded("x", status=503), True),
        (limit_429(None), True),
        (b24.RequestNotSent("connect"), True),
        (b24.ResponseLost("timeout"), False),
        (b24.ServerError("500", status=500), False),
        (b24.TokenExpired("x", status=401), False),
        (b24.InvalidCredentials("x", status=401), False),
        (b24.FlowError("Cannot find flow", code="0", status=400), False),
        (b24.InvalidArgument("x", code="100", status=400), False),
        (b24.MethodNotFound("x", status=404), False),
        (b24.RefreshRejected("x"), False),
        (ValueError("x"), False),
    ],
)
def test_should_retry(exc: BaseException, retry: bool) -> None:
    assert should_retry(exc) is retry


@pytest.mark.parametrize(
    ("exc", "attempt", "rand", "delay"),
    [
        (b24.QueryLimitExceeded("x"), 1, 0.9, 0.0),  # the limiter paces the re-send
        (b24.QueryLimitExceeded("x"), 4, 0.0, 0.0),
        (b24.RequestNotSent("x"), 1, 0.0, 0.5),
        (b24.RequestNotSent("x"), 2, 0.0, 1.0),
        (b24.RequestNotSent("x"), 3, 0.0, 2.0),
        (b24.RequestNotSent("x"), 4, 0.0, 4.0),
        (b24.RequestNotSent("x"), 9, 0.0, 4.0),  # capped at max_delay
        (b24.RequestNotSent("x"), 1, 1.0, 0.25),  # jitter shortens by up to half
        (limit_429(None), 1, 0.0, 0.5),  # reset unknown: backoff
        (limit_429(1000.0 + 30), 1, 0.0, 30.0),  # until the reset time
        (limit_429(1000.0 + 30), 1, 1.0, 30.5),
        (limit_429(1000.0 + 999), 1, 0.0, 60.0),  # never past max_elapsed
        (limit_429(1000.0 - 5), 2, 0.0, 1.0),  # reset already passed: backoff
    ],
)
def test_retry_delay(exc: BaseException, attempt: int, rand: float, delay: float) -> None:
    assert retry_delay(exc, attempt, POLICY, now=1000.0, rand=rand) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"attempts": 0}, ValueError),
        ({"attempts": 1.5}, TypeError),
        ({"max_elapsed": -1}, ValueError),
        ({"jitter": 2}, ValueError),
    ],
)
def test_policy_validation(kwargs: dict[str, float], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        b24.RetryPolicy(**kwargs)  # type: ignore[arg-type]


async def test_tenacity_policy_stops_after_attempts_and_never_retries_unknown() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise b24.RequestNotSent("connect")

    with pytest.raises(b24.RequestNotSent):
        async for attempt in retrying(b24.RetryPolicy(attempts=4, jitter=0), sleep=sleep):
            with attempt:
                await refused()
    assert calls == 4 and slept == [0.5, 1.0, 2.0]

    calls = 0

    async def lost() -> None:
        nonlocal calls
        calls += 1
        raise b24.ResponseLost("timeout")

    with pytest.raises(b24.ResponseLost):
        async for attempt in retrying(b24.RetryPolicy(attempts=4), sleep=sleep):
            with attempt:
                await lost()
    assert calls == 1
