"""``FlowClient``: constructors, the send pipeline and the public operations.

One call, top to bottom::

    FlowClient.activate(517)       validate input, build the call
      -> retrying (tenacity)       re-send only what provably did not run
        -> operating budget        hold back a method the portal is about to block
          -> limiter.acquire()     reserve a slot in the portal's leaky bucket
            -> auth.headers()      webhook path or Bearer token (refresh when due)
              -> transport.post()  one aiohttp POST
              -> parse_response()  the result, or the typed error
"""

from __future__ import annotations

import asyncio
import logging
import time as _time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import attrs
import tenacity

from . import _bulk, _json
from ._auth import (
    DEFAULT_TOKEN_URL,
    Auth,
    OAuthAuth,
    OAuthTokens,
    OnRefresh,
    Refresher,
    WebhookAuth,
)
from ._batch import BatchResult, Commands, normalize_commands, parse_batch
from ._envelope import Envelope, parse_response
from ._errors import (
    B24Error,
    InvalidToken,
    OperationTimeLimit,
    QueryLimitExceeded,
    TokenExpired,
)
from ._limiter import Limiter, RateLimit, bucket_for
from ._methods import ACTIVATE, GET, PIN
from ._operating import OperatingBudget
from ._redact import redact
from ._redis import RedisBucket
from ._retry import RetryPolicy, retrying, should_retry
from ._stats import Stats
from ._transport import AiohttpTransport, Timeout, Transport
from ._validate import check_bool, check_flow_id, check_flow_ids, check_method

__all__ = ["ACTIVATE", "GET", "PIN", "FlowClient"]

logger = logging.getLogger("aiob24flow")


Sleep = Callable[[float], Awaitable[None]]
ProgressCallback = Callable[["_bulk.Progress"], None]


@attrs.frozen
class _Options:
    retry: RetryPolicy
    timeout: Timeout
    concurrency: int


class _Core:
    """What every ``with_options`` copy of a client shares."""

    def __init__(
        self,
        auth: Auth,
        transport: AiohttpTransport | Transport,
        limiter: Limiter,
        budget: OperatingBudget,
        sleep: Sleep,
    ) -> None:
        self.auth = auth
        self.transport = transport
        self.limiter = limiter
        self.budget = budget
        self.sleep = sleep
        self.stats = Stats()
        self.closed = False


def _make_limiter(origin: str, rate_limit: RateLimit | None, limiter: Limiter | None) -> Limiter:
    if limiter is not None:
        return limiter
    rate_limit = RateLimit.standard() if rate_limit is None else rate_limit
    if not isinstance(rate_limit, RateLimit):
        raise TypeError("rate_limit must be an aiob24flow.RateLimit")
    if rate_limit.backend is not None:
        make = getattr(rate_limit.backend, "limiter_for", None)
        if make is None:
            raise TypeError("RateLimit.backend must provide limiter_for(origin, rate_limit)")
        result: Limiter = make(origin, rate_limit)
        return result
    return bucket_for(origin, rate_limit)


def _check_concurrency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"concurrency must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"concurrency must be >= 1, got {value!r}")
    return value


class FlowClient:
    """An asyncio client for one Bitrix24 portal.

    Build it with ``FlowClient.from_webhook`` or ``FlowClient.from_oauth``; use it as an
    async context manager or call ``aclose()``.
    """

    def __init__(self, core: _Core, options: _Options, *, owner: bool = True) -> None:
        self._core = core
        self._options = options
        self._owner = owner

    # -- construction -------------------------------------------------------------------

    @classmethod
    def _build(
        cls,
        make_auth: Callable[[AiohttpTransport | Transport, Timeout, Sleep], Auth],
        *,
        rate_limit: RateLimit | None,
        limiter: Limiter | None,
        session: aiohttp.ClientSession | None,
        transport: Transport | None,
        retry: RetryPolicy | None,
        timeout: Timeout | None,
        concurrency: int,
        operating_limit: float,
        sleep: Sleep | None,
    ) -> FlowClient:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise TypeError("session must be an aiohttp.ClientSession")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be an aiob24flow.RetryPolicy")
        if timeout is not None and not isinstance(timeout, Timeout):
            raise TypeError("timeout must be an aiob24flow.Timeout")
        concurrency = _check_concurrency(concurrency)
        real_sleep: Sleep = sleep or asyncio.sleep
        tx: AiohttpTransport | Transport = transport or AiohttpTransport(session)
        options = _Options(retry or RetryPolicy(), timeout or Timeout(), concurrency)
        auth = make_auth(tx, options.timeout, real_sleep)
        chosen = _make_limiter(auth.origin, rate_limit, limiter)
        if sleep is not None and isinstance(chosen, RedisBucket):
            # A Redis bucket belongs to this client and sleeps with its sleep; the
            # in-process bucket is shared by every client of the portal and keeps its own.
            chosen.sleep = sleep
        backend = rate_limit.backend if rate_limit is not None else None
        budget_for = getattr(backend, "budget_for", None)
        budget: OperatingBudget = (
            budget_for(auth.origin, real_sleep)
            if budget_for is not None
            else OperatingBudget(limit=operating_limit, sleep=real_sleep)
        )
        core = _Core(auth, tx, chosen, budget, real_sleep)
        return cls(core, options)

    @classmethod
    def from_webhook(
        cls,
        url: str,
        *,
        rate_limit: RateLimit | None = None,
        limiter: Limiter | None = None,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeout | None = None,
        concurrency: int = 50,
        operating_limit: float = 480.0,
        sleep: Sleep | None = None,
    ) -> FlowClient:
        """A client for an inbound webhook ``https://PORTAL/rest/USER_ID/CODE/``.

        ``rate_limit`` defaults to the standard plan (burst 50, 2/s); ``session`` is used and
        never closed; ``concurrency`` caps batch requests in flight during bulk work (the
        limiter sets the pace); ``sleep`` is injectable for tests.
        """
        auth = WebhookAuth(url)
        return cls._build(
            lambda tx, t, s: auth,
            rate_limit=rate_limit,
            limiter=limiter,
            session=session,
            transport=transport,
            retry=retry,
            timeout=timeout,
            concurrency=concurrency,
            operating_limit=operating_limit,
            sleep=sleep,
        )

    @classmethod
    def from_oauth(
        cls,
        endpoint: str,
        tokens: OAuthTokens,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_url: str = DEFAULT_TOKEN_URL,
        on_refresh: OnRefresh | None = None,
        refresher: Refresher | None = None,
        rate_limit: RateLimit | None = None,
        limiter: Limiter | None = None,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeout | None = None,
        concurrency: int = 50,
        operating_limit: float = 480.0,
        sleep: Sleep | None = None,
    ) -> FlowClient:
        """A client for an OAuth 2 application: ``endpoint`` is ``https://PORTAL/rest/``.

        On ``expired_token`` (or shortly before ``tokens.expires_at``) the client refreshes
        once, at ``token_url`` with ``client_id``/``client_secret`` or through your
        ``refresher``, awaits ``on_refresh(new_tokens)`` and re-sends the refused call once.
        """

        def make(tx: AiohttpTransport | Transport, timeout: Timeout, sleep: Sleep) -> Auth:
            return OAuthAuth(
                endpoint,
                tokens,
                client_id=client_id,
                client_secret=client_secret,
                token_url=token_url,
                on_refresh=on_refresh,
                refresher=refresher,
                transport=tx,
                timeout=timeout,
                sleep=sleep,
            )

        return cls._build(
            make,
            rate_limit=rate_limit,
            limiter=limiter,
            session=session,
            transport=transport,
            retry=retry,
            timeout=timeout,
            concurrency=concurrency,
            operating_limit=operating_limit,
            sleep=sleep,
        )

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: Timeout | None = None,
        concurrency: int | None = None,
    ) -> FlowClient:
        """A copy with other retry, timeout or concurrency settings, sharing the session,
        limiter, tokens and stats. Closing the copy does not close the original."""
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be an aiob24flow.RetryPolicy")
        if timeout is not None and not isinstance(timeout, Timeout):
            raise TypeError("timeout must be an aiob24flow.Timeout")
        options = _Options(
            retry if retry is not None else self._options.retry,
            timeout if timeout is not None else self._options.timeout,
            _check_concurrency(concurrency)
            if concurrency is not None
            else self._options.concurrency,
        )
        return FlowClient(self._core, options, owner=False)

    async def __aenter__(self) -> FlowClient:
        start = getattr(self._core.limiter, "start", None)
        if start is not None:
            try:
                await start()  # a shared limiter says now, not mid-job, that it is away
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session the client opened (a passed-in session stays open)."""
        if not self._owner or self._core.closed:
            return
        self._core.closed = True
        close = getattr(self._core.transport, "aclose", None)
        if close is not None:
            await close()

    def __repr__(self) -> str:
        return f"<FlowClient {self._core.auth.describe()}>"

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters shared by this client and its copies."""
        stats = self._core.stats.copy()
        stats.refreshes = getattr(self._core.auth, "refreshes", 0)
        return stats

    @property
    def tokens(self) -> OAuthTokens | None:
        """The current OAuth tokens (None for webhooks)."""
        tokens = getattr(self._core.auth, "tokens", None)
        return tokens if isinstance(tokens, OAuthTokens) else None

    @property
    def concurrency(self) -> int:
        return self._options.concurrency

    # -- the send pipeline --------------------------------------------------------------

    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self._core.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        logger.info("retrying after %s (attempt %d)", type(exc).__name__, state.attempt_number)

    async def _request(
        self,
        method: str,
        payload: Mapping[str, Any],
        budget_methods: Iterable[str],
        commands: int = 1,
    ) -> Envelope:
        if self._core.closed:
            raise RuntimeError("the client is closed")
        try:
            body = _json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"params must be JSON-serialisable: {exc}") from None
        methods = tuple(budget_methods)
        # Fast path: most requests succeed at once and need no retry machinery.
        try:
            return await self._send_once(method, body, methods, commands)
        except Exception as exc:
            if self._options.retry.attempts == 1 or not should_retry(exc):
                raise
            first_failure = exc
        # Refused: tenacity takes over, counting the attempt already made as its first.
        made = False
        async for attempt in retrying(
            self._options.retry, sleep=self._core.sleep, before_sleep=self._on_retry
        ):
            with attempt:
                if not made:
                    made = True
                    raise first_failure
                return await self._send_once(method, body, methods, commands)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(
        self, method: str, body: bytes, budget_methods: tuple[str, ...], commands: int
    ) -> Envelope:
        core = self._core
        resent = False
        while True:
            await core.budget.wait(budget_methods)
            core.stats.limiter_wait_seconds += await core.limiter.acquire()
            headers, token = await core.auth.headers()
            headers["Content-Type"] = "application/json"
            core.stats.requests += 1
            core.stats.commands += commands
            started = _time.monotonic()
            try:
                raw = await core.transport.post(
                    core.auth.url(method), body, headers, self._options.timeout
                )
                envelope = parse_response(raw, method)
            except B24Error as exc:
                _log_request(method, commands, started, exc)
                if exc.method is None:
                    exc.method = method
                failure = exc
            else:
                _log_request(method, commands, started, raw.status)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("%s body: %s", method, redact(body.decode("utf-8", "replace")))
                core.budget.observe(method, envelope.time)
                return envelope
            if isinstance(failure, (TokenExpired, InvalidToken)):
                # A 401 means the call did not run: refresh if needed, then re-send once
                # (also when another call refreshed while this one was in flight).
                if not resent and await core.auth.recover(token, failure):
                    resent = True
                    continue
            elif isinstance(failure, QueryLimitExceeded):
                core.stats.query_limit_refusals += 1
                await core.limiter.refused()
            elif isinstance(failure, OperationTimeLimit):
                core.stats.operation_limit_refusals += 1
                core.budget.refused(failure)
            elif failure.may_have_run:
                core.stats.unknown_outcomes += 1
            raise failure

    # -- single calls -------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call any REST method; return its ``result`` or raise its typed error.

        The method name is sent exactly as written (``tasks.flow.Flow.*`` needs the
        capital ``Flow``).
        """
        check_method(method, in_url=True)
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("params must be a mapping or None")
        payload = dict(params or {})
        envelope = await self._request(method, payload, (method,))
        return envelope.result

    async def activate(self, flow_id: int) -> bool:
        """Toggle a flow's active state (the portal answers True: it toggled).

        A refused call is retried; a call whose answer was lost raises ``ResponseLost`` or
        ``ServerError`` (``may_have_run``) and is never re-sent blindly.
        """
        check_flow_id(flow_id)
        return bool(await self.call(ACTIVATE, {"flowId": flow_id}))

    async def pin(self, flow_id: int) -> bool:
        """Toggle the flow's pin for the calling user; return the new pinned state."""
        check_flow_id(flow_id)
        return bool(await self.call(PIN, {"flowId": flow_id}))

    async def get(self, flow_id: int) -> dict[str, Any]:
        """``tasks.flow.Flow.get``: the flow as a dict (``active`` tells its state)."""
        check_flow_id(flow_id)
        result = await self.call(GET, {"flowId": flow_id})
        return result if isinstance(result, dict) else {}

    async def batch(self, commands: Commands, *, halt: bool = False) -> BatchResult:
        """Send up to 50 commands in one ``batch`` request.

        ``commands`` is a mapping key -> (method, params) or a sequence of such pairs (the
        result is then keyed by index). Per-command errors come back in
        ``BatchResult.errors``; only an error of the whole request is raised.
        """
        check_bool(halt, "halt")
        wire_keys, methods, cmds = normalize_commands(commands)
        user_keys: list[Any] = (
            wire_keys if isinstance(commands, Mapping) else list(range(len(wire_keys)))
        )
        return await self._batch(wire_keys, methods, cmds, user_keys, halt=halt)

    async def _batch(
        self,
        wire_keys: list[str],
        methods: list[str],
        cmds: list[str],
        user_keys: list[Any],
        *,
        halt: bool,
    ) -> BatchResult:
        payload = {"halt": 1 if halt else 0, "cmd": dict(zip(wire_keys, cmds, strict=True))}
        budget_methods = ("batch", *dict.fromkeys(methods))
        envelope = await self._request("batch", payload, budget_methods, commands=len(cmds))
        result = parse_batch(envelope.result, envelope.time, wire_keys, methods, user_keys)
        if result.times:
            # The newest figure per method is all the budget needs.
            method_of = dict(zip(user_keys, methods, strict=True))
            latest = {method_of[key]: time for key, time in result.times.items()}
            for sub_method, time in latest.items():
                self._core.budget.observe(sub_method, time)
        for err in result.errors.values():
            if isinstance(err, OperationTimeLimit):
                self._core.budget.refused(err)
        return result

    # -- bulk operations ----------------------------------------------------------------

    async def activate_many(
        self,
        ids: Iterable[int],
        *,
        verify: bool = False,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport:
        """Toggle every flow in ``ids`` once, 50 per batch, at the limiter's pace.

        Returns a ``BulkReport``: ``succeeded`` (id -> True), ``failed`` (id -> error; the
        portal did not toggle it) and ``unknown`` (id -> error; it may have toggled). With
        ``verify=True`` the states are read before sending and read back after lost
        answers, so nothing is left ``unknown`` that a read can settle.
        Setting ``stop`` sends no new batch; what was not sent is reported ``failed``.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(verify, "verify")
        if verify:
            return await _bulk.toggle_verified(self, flow_ids, on_progress, stop)
        return await _bulk.toggle_many(self, ACTIVATE, flow_ids, on_progress, stop)

    async def pin_many(
        self,
        ids: Iterable[int],
        *,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport:
        """Toggle the pin of every flow in ``ids`` once; ``succeeded`` holds the new states."""
        flow_ids = check_flow_ids(ids)
        return await _bulk.toggle_many(self, PIN, flow_ids, on_progress, stop)

    async def get_many(self, ids: Iterable[int]) -> _bulk.BulkReport:
        """Read many flows (``succeeded``: id -> the flow dict). Safe to repeat."""
        flow_ids = check_flow_ids(ids)
        return await _bulk.read_flows(self, flow_ids)

    async def set_active(
        self,
        ids: Iterable[int],
        active: bool,
        *,
        max_rounds: int = 5,
        dry_run: bool = False,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport:
        """Make every flow in ``ids`` active (True) or inactive (False).

        Reads the states, toggles only what differs, and after any lost answer reads again
        and toggles only what is still wrong, for at most ``max_rounds`` rounds.
        ``succeeded`` holds the flows now in the desired state and ``changed`` the ones this
        call toggled. ``dry_run`` reads and reports what would change (in ``changed``)
        without toggling.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(active, "active")
        check_bool(dry_run, "dry_run")
        rounds = _check_rounds(max_rounds)
        desired = dict.fromkeys(flow_ids, active)
        return await _bulk.converge_active(
            self, flow_ids, desired, rounds, on_progress, stop, dry_run=dry_run
        )

    async def set_pinned(
        self,
        ids: Iterable[int],
        pinned: bool,
        *,
        max_rounds: int = 5,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport:
        """Make every flow in ``ids`` pinned (True) or unpinned for the calling user.

        Pin state cannot be read, but each pin answers the new state: pin, look at the
        answer, and pin again where it is not the desired one (or the answer was lost).
        """
        flow_ids = check_flow_ids(ids)
        check_bool(pinned, "pinned")
        rounds = _check_rounds(max_rounds)
        return await _bulk.converge_pinned(self, flow_ids, pinned, rounds, on_progress, stop)


def _log_request(method: str, commands: int, started: float, outcome: int | B24Error) -> None:
    """The one INFO line per HTTP request (nothing secret: no URL, no body)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    elapsed = _time.monotonic() - started
    plural = "" if commands == 1 else "s"
    if isinstance(outcome, int):
        logger.info(
            "POST %s -> %d (%d command%s) in %.3fs", method, outcome, commands, plural, elapsed
        )
    else:
        logger.info(
            "POST %s failed after %.3fs (%d command%s): %s",
            method,
            elapsed,
            commands,
            plural,
            redact(str(outcome)),
        )


def _check_rounds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("max_rounds must be an int")
    if value < 1:
        raise ValueError(f"max_rounds must be >= 1, got {value!r}")
    return value
