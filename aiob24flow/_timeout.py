"""``Timeout``: how long a request may take, and how long the portal may keep running it."""

from __future__ import annotations

import math

import attrs

__all__ = ["Timeout"]


def _number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


@attrs.frozen
class Timeout:
    """Per-request timeouts in seconds.

    ``connect`` bounds connection set-up (a connect timeout means the request never left);
    ``read`` bounds each wait for data after sending (a read timeout means the call may
    have run); ``total`` bounds the whole request, so a server trickling bytes cannot hold
    a call (default ``connect + read``). The portal stops a request after 60 s
    (``portal_limit``), so the default read timeout of 75 s means that a timed-out call
    has finished by the time it is read back.

    A dropped connection is different: the portal keeps executing the request (protocol.md
    §10), so a flow whose request was lost that way is read back (or re-sent) only once
    ``portal_limit`` seconds have passed since the request left, unless a read shows the
    request already took effect. ``settle`` is how long bulk work waits before the first
    such read.
    """

    connect: float = 10.0
    read: float = 75.0
    settle: float = 1.0
    total: float | None = None
    portal_limit: float = 60.0

    def __attrs_post_init__(self) -> None:
        for name in ("connect", "read", "settle", "portal_limit"):
            value = getattr(self, name)
            if not _number(value):
                raise ValueError(f"Timeout.{name} must be a finite number >= 0, got {value!r}")
        if self.total is not None and not (_number(self.total) and self.total > 0):
            raise ValueError(f"Timeout.total must be a positive number, got {self.total!r}")
        if self.connect == 0 or self.read == 0:
            raise ValueError("Timeout.connect and Timeout.read must be positive")

    @property
    def deadline(self) -> float:
        """The whole-request bound in effect."""
        return self.total if self.total is not None else self.connect + self.read
