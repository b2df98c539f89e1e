"""Credentials: webhook URLs and OAuth 2 tokens with single-flight refresh.

An auth object says where a method is sent (``url``) and which headers go with it
(``headers``). OAuth refreshes at most once at a time per client: every call that meets
``expired_token`` waits on the same refresh and re-sends once with the new token. A refresh
token is never sent twice: after a refresh whose answer was lost, or one the OAuth server
refused, the client stops with that error instead of trying the spent token again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time as _time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol
from urllib.parse import urlencode

from ._errors import (
    B24Error,
    RefreshOutcomeUnknown,
    RefreshRejected,
    RequestNotSent,
    ResponseLost,
    TokenExpired,
    TokenStoreError,
)
from ._redact import MASK, redact
from ._telemetry import Telemetry
from ._tokens import LockLost, OAuthTokens, OnRefresh, Refresher, TokenStore
from ._transport import Timeout, Transport
from ._validate import check_base_url

__all__ = [
    "DEFAULT_TOKEN_URL",
    "Auth",
    "OAuthAuth",
    "WebhookAuth",
]

logger = logging.getLogger("aiob24flow")

DEFAULT_TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"
"""Bitrix24's OAuth server: where ``FlowClient.from_oauth`` refreshes tokens by default."""


class Auth(Protocol):
    """Where a method is sent and with which credentials; what the client asks of one."""

    origin: str
    can_refresh: bool

    @property
    def refreshes(self) -> int:
        """Refreshes this auth made (0 for a webhook)."""
        ...

    @property
    def tokens(self) -> OAuthTokens | None:
        """The OAuth pair in use (None for a webhook)."""
        ...

    def url(self, method: str) -> str: ...

    def describe(self) -> str: ...

    async def headers(self) -> tuple[dict[str, str], str]: ...

    async def refresh_after(self, stale: str) -> None: ...

    async def recover(self, stale: str, error: B24Error) -> bool:
        """After a 401 on token ``stale``: True when a re-send may succeed."""
        ...


class WebhookAuth:
    """``https://portal/rest/USER/CODE/``: the code is the credential, kept out of reprs."""

    can_refresh = False
    refreshes = 0
    tokens: OAuthTokens | None = None

    def __init__(self, url: object) -> None:
        origin, path, host = check_base_url(url, "url")
        segments = [s for s in path.split("/") if s]
        if len(segments) < 3 or segments[-3] != "rest":
            raise ValueError("url must look like https://PORTAL/rest/USER_ID/WEBHOOK_CODE/")
        self.origin = origin
        self.host = host
        self.user = segments[-2]
        self._base = f"{origin}/{'/'.join(segments)}/"

    def url(self, method: str) -> str:
        return self._base + method

    def describe(self) -> str:
        return redact(f"webhook {self.origin}/rest/{self.user}/***/")

    async def headers(self) -> tuple[dict[str, str], str]:
        return {}, ""

    async def refresh_after(self, stale: str) -> None:  # pragma: no cover - never called
        raise RuntimeError("webhooks cannot refresh")

    async def recover(self, stale: str, error: B24Error) -> bool:
        return False


def _store_error(what: str, exc: BaseException, *, spent: bool) -> TokenStoreError:
    """The store failed: say how, and whether a refresh token was spent on the way."""
    detail = redact(f"{type(exc).__name__}: {exc}")
    if spent:
        outcome = (
            "a refresh token WAS spent: the new pair is lost unless on_refresh saved it; "
            "authorize the application again if it was not saved"
        )
    else:
        outcome = "no refresh token was spent"
    error = TokenStoreError(f"the token store could not be {what} ({detail}); {outcome}")
    error.refresh_token_spent = spent
    return error


@contextlib.contextmanager
def _store_failures(what: str) -> Iterator[None]:
    """A store's own failure (``OSError``, a Redis error) as a typed ``TokenStoreError``;
    the library's errors pass as they are."""
    try:
        yield
    except (B24Error, LockLost):
        raise
    except Exception as exc:
        raise _store_error(what, exc, spent=False) from exc


# Refresh answers that say the grant was not looked at: safe to send the same token again.
_TRANSIENT_REFRESH_ERRORS = frozenset({"temporarily_unavailable"})


class OAuthAuth:
    """Bearer tokens for ``https://portal/rest/METHOD`` with single-flight refresh."""

    can_refresh = True

    def __init__(  # noqa: PLR0913 - the OAuth options, each named by from_oauth
        self,
        endpoint: object,
        tokens: OAuthTokens | None,
        *,
        store: TokenStore | None = None,
        client_id: str | None,
        client_secret: str | None,
        token_url: str,
        on_refresh: OnRefresh | None,
        refresher: Refresher | None,
        transport: Transport,
        timeout: Timeout,
        wall_clock: Callable[[], float] = _time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        refresh_attempts: int = 3,
        telemetry: Telemetry | None = None,
    ) -> None:
        origin, path, host = check_base_url(endpoint, "endpoint")
        if tokens is None and store is None:
            raise TypeError("tokens must be an aiob24flow.OAuthTokens (or pass store=)")
        if tokens is not None and not isinstance(tokens, OAuthTokens):
            raise TypeError("tokens must be an aiob24flow.OAuthTokens")
        if store is not None and not isinstance(store, TokenStore):
            raise TypeError("store must be a TokenStore (read, seed, lock)")
        if refresher is None:
            if not isinstance(client_id, str) or not client_id:
                raise ValueError("client_id is required unless refresher= is given")
            if not isinstance(client_secret, str) or not client_secret:
                raise ValueError("client_secret is required unless refresher= is given")
            check_base_url(token_url, "token_url")
        if on_refresh is not None and not callable(on_refresh):
            raise TypeError("on_refresh must be an async callable")
        if refresher is not None and not callable(refresher):
            raise TypeError("refresher must be an async callable")
        self.origin = origin
        self.host = host
        self._base = f"{origin}{path if path.endswith('/') else path + '/'}"
        # Until the store is read, a placeholder that never goes on the wire.
        self.tokens = tokens if tokens is not None else OAuthTokens("", "")
        self._seed = tokens
        self._store = store
        self._loaded = store is None
        self._load_lock = asyncio.Lock()
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        self._on_refresh = on_refresh
        self._refresher = refresher
        self._transport = transport
        self._timeout = timeout
        self._now = wall_clock
        self._sleep = sleep
        self._refresh_attempts = refresh_attempts
        self._telemetry = telemetry
        self._inflight: asyncio.Future[None] | None = None
        self._dead: B24Error | None = None
        self._set_at = wall_clock()
        self.refreshes = 0

    def url(self, method: str) -> str:
        return self._base + method

    def describe(self) -> str:
        return redact(f"oauth {self._base}")

    def _margin(self) -> float:
        # Refresh a little before expiry: 5% of the token's life, at most a minute (so a
        # one-hour token is refreshed once per 59 minutes).
        if self.tokens.expires_at is None:
            return 0.0
        return min(60.0, max(0.0, (self.tokens.expires_at - self._set_at) * 0.05))

    async def _load(self) -> None:
        """With a store: read the pair once at start (seeding an empty store)."""
        async with self._load_lock:
            store = self._store
            if self._loaded or store is None:
                return
            with _store_failures("read"):
                stored = await store.read()
                if stored.tokens is None and self._seed is not None:
                    await store.seed(self._seed)
                    stored = await store.read()
            if stored.tokens is None:
                raise self._stop(
                    RefreshRejected("the token store is empty and no tokens were given")
                )
            self._adopt(stored.tokens)
            self._loaded = True

    def _adopt(self, tokens: OAuthTokens) -> None:
        if tokens != self.tokens:
            self.tokens = tokens
            self._set_at = self._now()

    async def headers(self) -> tuple[dict[str, str], str]:
        if self._dead is not None:
            raise self._dead
        if not self._loaded:
            await self._load()
        expires_at = self.tokens.expires_at
        if expires_at is not None and self._now() >= expires_at - self._margin():
            await self.refresh_after(self.tokens.access_token)
        token = self.tokens.access_token
        return {"Authorization": f"Bearer {token}"}, token

    async def recover(self, stale: str, error: B24Error) -> bool:
        if self.tokens.access_token != stale:
            return True  # refreshed while this call was in flight: send with the new token
        if self._store is not None:
            # Another worker may have refreshed (which voids our token): adopt its pair.
            with _store_failures("locked or read"):
                stored = await self._store.read()
                unchanged = stored.tokens is None or stored.tokens.access_token == stale
                if unchanged and not isinstance(error, TokenExpired):
                    # A refresh elsewhere voids the token before its holder stores the new
                    # pair: wait for the holder (the lock), then read again.
                    async with self._store.lock() as lease:
                        stored = await lease.read()
            if stored.tokens is not None and stored.tokens.access_token != stale:
                self._adopt(stored.tokens)
                return True
        if isinstance(error, TokenExpired):
            await self.refresh_after(stale)
            return True
        return False

    async def refresh_after(self, stale: str) -> None:
        """Make sure the token ``stale`` is replaced; one refresh at a time."""
        if self._dead is not None:
            raise self._dead
        if self.tokens.access_token != stale:
            return  # someone else already refreshed it
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(
                self._refresh_shared(stale) if self._store is not None else self._refresh()
            )
        # shield: one waiter being cancelled must not cancel the refresh the others await.
        await asyncio.shield(self._inflight)

    async def _fetch(self, old: OAuthTokens) -> OAuthTokens:
        """One refresh of ``old`` (under its span, when telemetry is on)."""
        telemetry = self._telemetry
        if telemetry is None:
            return await self._fetch_once(old)
        probe = telemetry.refresh(None if self._refresher else self._token_url)
        try:
            new = await self._fetch_once(old)
        except BaseException as exc:
            probe.end(exc)
            raise
        probe.end(None)
        return new

    async def _fetch_once(self, old: OAuthTokens) -> OAuthTokens:
        """One refresh of ``old``: through the refresher, or at the OAuth server."""
        try:
            new = await (self._refresher(old) if self._refresher else self._refresh_at_server())
        except B24Error as exc:
            logger.error("token refresh failed: %s", self._scrub(str(exc)))
            raise
        except Exception as exc:  # a custom refresher's own failure, typed for the waiters
            logger.error("token refresher failed: %s", type(exc).__name__)
            raise RefreshRejected(f"refresher failed: {type(exc).__name__}") from exc
        if not isinstance(new, OAuthTokens):
            raise self._stop(RefreshRejected("refresher did not return OAuthTokens"))
        return new

    async def _refresh(self) -> None:
        await self._install(await self._fetch(self.tokens))

    async def _refresh_shared(self, stale: str) -> None:
        """Refresh once across every worker of the store (see ``_store.py``)."""
        store = self._store
        assert store is not None  # only called with a store
        with _store_failures("locked or read"):
            await self._refresh_locked(store, stale)

    async def _refresh_locked(self, store: TokenStore, stale: str) -> None:
        late = False
        async with store.lock() as lease:
            current = await lease.read()
            pair = current.tokens
            if pair is None:
                raise self._stop(RefreshRejected("the token store is empty"))
            if pair.access_token != stale:
                self._adopt(pair)  # another worker refreshed: nothing to send
                return
            if current.spending is not None and current.spending == pair.refresh_token:
                raise self._stop(
                    RefreshOutcomeUnknown(
                        "another worker sent this refresh token and did not store the answer "
                        "(it died or lost its lock): the token may be spent and is never sent "
                        "again; authorize the application again"
                    )
                )
            self._adopt(pair)
            try:
                await lease.mark_spending(pair.refresh_token)
            except LockLost:
                raise RefreshRejected("lost the refresh lock before refreshing") from None
            except Exception as exc:  # the store cannot record: do not spend the token
                raise self._stop(_store_error("written", exc, spent=False)) from exc
            try:
                new = await self._fetch(pair)
            except B24Error:
                if self._dead is None:  # never left, or refused unconsumed: not spent
                    await lease.clear_spending()
                raise
            try:
                await lease.write(new)
            except LockLost:
                late = True
            except Exception as exc:
                # The grant is spent and its successor could not be stored.
                raise self._stop(_store_error("written", exc, spent=True)) from exc
        if late:
            # Paused past the lock's TTL: write only if nobody moved on since (the pair
            # is still the one we spent and the record still names it).
            async with store.lock() as again:
                now = await again.read()
                if now.tokens != pair or now.spending != pair.refresh_token:
                    raise self._stop(
                        RefreshRejected("lost the refresh lock; another worker moved on")
                    )
                await again.write(new)
        await self._install(new)

    async def _install(self, new: OAuthTokens) -> None:
        self.tokens = new
        self._set_at = self._now()
        self.refreshes += 1
        logger.info("access token refreshed (refresh #%d)", self.refreshes)
        if self._on_refresh is not None:
            try:
                await self._on_refresh(new)
            except Exception as exc:
                # The old refresh token is spent and the new pair lives only in memory:
                # sending on would make every later refresh depend on this process.
                logger.error("on_refresh failed (%s): new tokens not saved", type(exc).__name__)
                error = RefreshRejected(
                    f"on_refresh failed ({type(exc).__name__}): the refreshed tokens were "
                    "not saved; the client stops"
                )
                error.__cause__ = exc
                raise self._stop(error) from exc

    def _scrub(self, text: str) -> str:
        """Redact, and mask the secrets this client holds should a server echo them."""
        for secret in (self.tokens.refresh_token, self.tokens.access_token, self._client_secret):
            if secret and len(secret) >= 4:
                text = text.replace(secret, MASK)
        return redact(text)

    def _stop(self, error: B24Error) -> B24Error:
        # The refresh token is refused or may be spent: never send it again.
        self._dead = error
        return error

    async def _refresh_at_server(self) -> OAuthTokens:
        body = urlencode(
            {
                "grant_type": "refresh_token",
                "client_id": self._client_id or "",
                "client_secret": self._client_secret or "",
                "refresh_token": self.tokens.refresh_token,
            }
        ).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        delay = 0.25
        for attempt in range(1, self._refresh_attempts + 1):
            try:
                raw = await self._transport.post(self._token_url, body, headers, self._timeout)
            except RequestNotSent as exc:
                error: B24Error = exc  # never left: the same token may go again
            except ResponseLost as exc:
                raise self._stop(
                    RefreshOutcomeUnknown(
                        f"refresh answer lost ({exc.description}); the refresh token may be spent"
                    )
                ) from None
            else:
                try:
                    data = json.loads(raw.body) if raw.body else None
                except ValueError:
                    data = None
                code = str(data.get("error") or "") if isinstance(data, dict) else ""
                text = str(data.get("error_description") or "") if isinstance(data, dict) else ""
                text = self._scrub(text)
                if raw.status == 200 and isinstance(data, dict) and not code:
                    if not isinstance(data.get("access_token"), str) or not isinstance(
                        data.get("refresh_token"), str
                    ):
                        # The grant is spent and nothing usable came back.
                        raise self._stop(
                            RefreshRejected(
                                "the OAuth server answered without an access_token and "
                                "refresh_token; the refresh token is spent",
                                status=raw.status,
                            )
                        )
                    try:
                        return OAuthTokens.from_token_response(data, self._now())
                    except (TypeError, ValueError) as exc:
                        raise self._stop(
                            RefreshRejected(f"unusable token answer: {exc}", status=raw.status)
                        ) from None
                if code in _TRANSIENT_REFRESH_ERRORS:
                    error = RefreshRejected(text, code=code, status=raw.status)
                elif code and raw.status < 500:
                    raise self._stop(RefreshRejected(text or code, code=code, status=raw.status))
                else:
                    raise self._stop(
                        RefreshOutcomeUnknown(
                            f"OAuth server answered HTTP {raw.status}; the refresh token may be spent",  # noqa: E501
                            code=code,
                            status=raw.status,
                        )
                    )
            if attempt == self._refresh_attempts:
                raise RefreshRejected(
                    f"refresh failed {attempt} times: {error.description}",
                    code=error.code,
                    status=error.status,
                )
            await self._sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover
