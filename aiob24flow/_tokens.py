"""OAuth tokens and where they are kept: the pair, the token-store protocol, its lease.

``_auth`` (the client's refresh) and ``_store`` (file and Redis stores) both depend on
these names and on nothing of each other.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import attrs

from ._redact import mask_secret

__all__ = [
    "LockLost",
    "OAuthTokens",
    "OnRefresh",
    "Refresher",
    "StoredTokens",
    "TokenLease",
    "TokenStore",
]


@attrs.frozen(repr=False)
class OAuthTokens:
    """An OAuth 2 token pair and what the token endpoint says with it.

    ``expires_at`` is a unix time (None when unknown). The repr shows no secret.
    """

    access_token: str
    refresh_token: str
    expires_at: float | None = None
    member_id: str | None = None
    client_endpoint: str | None = None
    scope: str | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("access_token", "refresh_token"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"OAuthTokens.{name} must be a str")
        if self.expires_at is not None and (
            isinstance(self.expires_at, bool) or not isinstance(self.expires_at, (int, float))
        ):
            raise TypeError("OAuthTokens.expires_at must be a unix time (float) or None")
        if self.expires_at is not None and not (
            math.isfinite(self.expires_at) and self.expires_at >= 0
        ):
            raise ValueError(
                f"OAuthTokens.expires_at must be a finite unix time >= 0, got {self.expires_at!r}"
            )

    def __repr__(self) -> str:
        return (
            f"OAuthTokens(access_token={mask_secret(self.access_token)}, "
            f"refresh_token={mask_secret(self.refresh_token)}, expires_at={self.expires_at!r}, "
            f"member_id={self.member_id!r}, client_endpoint={self.client_endpoint!r}, "
            f"scope={self.scope!r})"
        )

    def to_json(self) -> dict[str, Any]:
        """A plain dict for storage (contains the secrets)."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OAuthTokens:
        """Tokens from ``to_json`` output (unknown keys are ignored)."""
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_token_response(cls, body: dict[str, Any], now: float) -> OAuthTokens:
        """Tokens from an OAuth server answer received at unix time ``now``."""
        # expires_in is relative: immune to clock skew and to ``expires`` being whole seconds.
        expires_in = body.get("expires_in")
        expires = body.get("expires")
        if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
            # A non-positive lifetime is nonsense: treat the expiry as unknown rather than
            # refreshing again before every call.
            expires = now + float(expires_in) if expires_in > 0 else None
        elif not isinstance(expires, (int, float)) or isinstance(expires, bool):
            expires = None
        scope = body.get("scope")
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            expires_at=None if expires is None else float(expires),
            member_id=None if body.get("member_id") is None else str(body["member_id"]),
            client_endpoint=body.get("client_endpoint"),
            scope=None if scope is None else str(scope),
        )


Refresher = Callable[[OAuthTokens], Awaitable[OAuthTokens]]
OnRefresh = Callable[[OAuthTokens], Awaitable[None]]


class LockLost(Exception):
    """The refresh lock expired (or was taken over) before the write: nothing was written."""


@attrs.frozen(repr=False)
class StoredTokens:
    """What a store holds: the pair (None when empty) and the spending record."""

    tokens: OAuthTokens | None
    spending: str | None = None

    def __repr__(self) -> str:
        return f"StoredTokens(tokens={self.tokens!r}, spending={self.spending is not None})"


class TokenLease(Protocol):
    """The refresh lock, held: reads and fenced writes."""

    async def read(self) -> StoredTokens: ...

    async def mark_spending(self, refresh_token: str) -> None:
        """Record, before sending it, the refresh token about to be spent."""
        ...

    async def clear_spending(self) -> None:
        """The refresh never left: the token is not spent."""
        ...

    async def write(self, tokens: OAuthTokens) -> None:
        """Store the new pair and clear the spending record; ``LockLost`` if not held."""
        ...


@runtime_checkable
class TokenStore(Protocol):
    """Where many workers keep one portal's OAuth tokens."""

    async def read(self) -> StoredTokens:
        """The pair now (no lock): at start and after a 401."""
        ...

    async def seed(self, tokens: OAuthTokens) -> bool:
        """Store ``tokens`` only if the store is empty; True when they were stored."""
        ...

    def lock(self) -> contextlib.AbstractAsyncContextManager[TokenLease]:
        """Hold the refresh lock (waiting for it) for one refresh."""
        ...
