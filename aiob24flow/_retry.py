"""When to send a refused request again, and after how long.

``should_retry`` and ``retry_delay`` are pure functions of the exception (and of the
attempt number, the wall-clock time and a random draw), table-tested in
``tests/test_retry.py``. ``retrying`` builds the tenacity policy from them.

Only what provably did not run is retried: a toggle whose answer was lost is never sent
again blindly (``B24Error.may_have_run``).
"""

from __future__ import annotations

import random
import time as _time
from collections.abc import Awaitable, Callable

import attrs
import tenacity

from ._errors import NEVER_RETRIED, OperationTimeLimit, QueryLimitExceeded, RequestNotSent

__all__ = ["RetryPolicy", "retry_delay", "retrying", "should_retry"]


def _check_positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"RetryPolicy.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """Bounds for retrying one request (each request has its own count and clock).

    ``attempts`` counts the first try; ``max_elapsed`` stops before a sleep that would end
    past it; delays grow from ``initial_delay`` by doubling up to ``max_delay`` and are
    shortened by up to ``jitter`` (a fraction) at random.
    """

    attempts: int = attrs.field(default=6)
    max_elapsed: float = attrs.field(default=120.0, validator=_check_positive)
    initial_delay: float = attrs.field(default=0.5, validator=_check_positive)
    max_delay: float = attrs.field(default=30.0, validator=_check_positive)
    jitter: float = attrs.field(default=0.25, validator=_check_positive)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"RetryPolicy.attempts must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts!r}")
        if self.jitter > 1:
            raise ValueError(f"RetryPolicy.jitter must be at most 1, got {self.jitter!r}")

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt: nothing is retried."""
        return cls(attempts=1)


def should_retry(exc: BaseException) -> bool:
    """Retry only refusals that say the call did not run and may succeed later.

    Not retried though never sent: a withheld call (``Stopped``, ``ClientClosed``,
    ``RefreshFailed``: sending again is what the caller ruled out) and an unreachable
    host (DNS failure, connection refused: the same next time).
    """
    if isinstance(exc, NEVER_RETRIED):
        return False
    return isinstance(exc, (QueryLimitExceeded, OperationTimeLimit, RequestNotSent))


def retry_delay(
    exc: BaseException,
    attempt: int,
    policy: RetryPolicy,
    *,
    now: float,
    rand: float,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    - QUERY_LIMIT_EXCEEDED: no extra wait; the limiter was resynchronised and its
      computed wait paces the re-send.
    - OPERATION_TIME_LIMIT: until ``reset_at`` when known, else backoff.
    - anything else retried: exponential backoff with jitter.
    """
    if isinstance(exc, QueryLimitExceeded):
        return 0.0
    if isinstance(exc, OperationTimeLimit) and exc.reset_at is not None and exc.reset_at > now:
        return min(exc.reset_at - now, policy.max_elapsed) + rand * policy.jitter
    backoff = min(policy.max_delay, policy.initial_delay * 2.0 ** max(0, attempt - 1))
    return backoff * (1.0 - policy.jitter * rand)


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    wall_clock: Callable[[], float] = _time.time,
    rand: Callable[[], float] = random.random,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.AsyncRetrying:
    """The tenacity policy for one request."""

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return 0.0
        return retry_delay(exc, state.attempt_number, policy, now=wall_clock(), rand=rand())

    kwargs: dict[str, object] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    if before_sleep is not None:
        kwargs["before_sleep"] = before_sleep
    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_before_delay(policy.max_elapsed),
        wait=wait,
        retry=tenacity.retry_if_exception(should_retry),
        reraise=True,
        **kwargs,  # type: ignore[arg-type]
    )
