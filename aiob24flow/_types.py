"""Type aliases shared by the modules (no behaviour)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Union

__all__ = ["JSON", "Clock", "Sleep"]

#: A clock in seconds (``loop.time`` for pacing, ``time.time`` for wall-clock deadlines).
Clock = Callable[[], float]
#: An awaitable sleep (``asyncio.sleep``, or a fake in tests).
Sleep = Callable[[float], Awaitable[None]]
#: A decoded JSON value, as ``FlowClient.call`` returns it.
JSON = Union[dict[str, "JSON"], list["JSON"], str, int, float, bool, None]  # noqa: UP007
