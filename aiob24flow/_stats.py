"""Counters a client keeps about its own traffic (``FlowClient.stats()``)."""

from __future__ import annotations

import attrs

__all__ = ["Stats"]


@attrs.define
class Stats:
    """What a client (and every ``with_options`` copy of it) has done so far.

    ``requests`` counts HTTP requests sent to the portal, ``commands`` the REST calls they
    carried (a batch of 50 counts 50), ``retries`` the re-sends after a refusal,
    ``query_limit_refusals`` the 503 QUERY_LIMIT_EXCEEDED answers, ``limiter_wait_seconds``
    the time spent waiting for the rate limiter, ``refreshes`` the OAuth token refreshes,
    ``unknown_outcomes`` the requests whose answer was lost.
    """

    requests: int = 0
    commands: int = 0
    retries: int = 0
    query_limit_refusals: int = 0
    operation_limit_refusals: int = 0
    limiter_wait_seconds: float = 0.0
    refreshes: int = 0
    unknown_outcomes: int = 0

    def copy(self) -> Stats:
        """A snapshot that later traffic does not change."""
        return attrs.evolve(self)
