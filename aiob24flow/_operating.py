"""The per-method operating-time budget (``time.operating`` / ``operating_reset_at``).

The portal sums the seconds each method spent executing over 10 minutes and blocks the
method (429 OPERATION_TIME_LIMIT) for this app or webhook once the sum passes the limit.
Every successful answer reports the sum so far; the budget pauses only the method that
nears the limit, until the reported reset time.
"""

from __future__ import annotations

import asyncio
import math
import time as _time
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import OperationTimeLimit
from ._types import Clock, Sleep

__all__ = ["MAX_WAIT", "OperatingBudget"]

_RESET_MARGIN = 1.0  # operating_reset_at is truncated to whole seconds
_PROBE_FIRST = 5.0
_PROBE_MAX = 60.0
# The portal's window is 10 minutes: no block outlasts it (S4's ban is 5 minutes), so a
# reset time further out than this is clamped rather than trusted.
MAX_WAIT = 600.0 + 60.0


class OperatingBudget:
    """Remembers the last ``operating`` figures per method and holds back blocked ones.

    ``limit`` is the portal's budget in seconds (480 in the cloud docs); a method whose
    reported sum reaches ``threshold * limit`` waits until its ``operating_reset_at``.
    """

    def __init__(
        self,
        *,
        limit: float = 480.0,
        threshold: float = 0.9,
        wall_clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.limit = limit
        self.threshold = threshold
        self._now = wall_clock or _time.time
        self._sleep = sleep or asyncio.sleep
        self._operating: dict[str, float] = {}
        self._reset_at: dict[str, float] = {}
        self._probe: dict[str, float] = {}

    def observe(self, method: str, time: Mapping[str, Any] | None) -> None:
        """Record a successful answer's ``time`` object (keys may be missing)."""
        if not time:
            return
        operating = time.get("operating")
        if isinstance(operating, (int, float)) and not isinstance(operating, bool):
            self._operating[method] = float(operating)
        reset_at = time.get("operating_reset_at")
        if (
            isinstance(reset_at, (int, float))
            and not isinstance(reset_at, bool)
            and math.isfinite(reset_at)
        ):
            self._reset_at[method] = min(float(reset_at), self._now() + MAX_WAIT)

    def blocked(self, method: str) -> None:
        """The portal answered 429 for ``method``: hold it until the known reset time.

        When that time is unknown or already past (it is a whole second, and the portal's
        window moves by minutes), probe again after 5 s, doubling up to a minute.
        """
        self._operating[method] = max(self._operating.get(method, 0.0), self.limit)
        now = self._now()
        reset = self._reset_at.get(method)
        if reset is None or reset + _RESET_MARGIN <= now:
            probe = min(_PROBE_MAX, self._probe.get(method, _PROBE_FIRST / 2) * 2)
            self._probe[method] = probe
            self._reset_at[method] = now + probe
        else:
            self._probe.pop(method, None)

    def refused(self, error: OperationTimeLimit) -> None:
        """A 429 for ``error.method``: hold the method and tell the error when it lifts."""
        if error.method:
            self.blocked(error.method)
            error.reset_at = self.reset_at(error.method)

    def reset_at(self, method: str) -> float | None:
        return self._reset_at.get(method)

    def delay(self, methods: Iterable[str]) -> float:
        """Seconds to wait before calling any of ``methods`` (0 when none is near the limit)."""
        now = self._now()
        wait = 0.0
        for method in methods:
            if self._operating.get(method, 0.0) < self.threshold * self.limit:
                continue
            reset = self._reset_at.get(method)
            if reset is None or reset + _RESET_MARGIN <= now:
                # The window has moved on (or we cannot tell): let one call find out.
                self._operating[method] = 0.0
                continue
            wait = max(wait, min(reset + _RESET_MARGIN - now, MAX_WAIT))
        return wait

    async def wait(self, methods: Iterable[str]) -> float:
        delay = self.delay(methods)
        if delay > 0:
            await self._sleep(delay)
        return delay
