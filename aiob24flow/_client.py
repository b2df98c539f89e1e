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
import os
import ssl as ssl_
import time as _time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Union
from urllib.parse import urlsplit

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
    is_loopback,
)
from ._batch import BatchResult, BulkAnswer, Commands, normalize_commands, parse_batch, parse_bulk
from ._control import Interrupts
from ._envelope import Envelope, parse_response
from ._errors import (
    B24Error,
    ClientClosed,
    InvalidToken,
    OAuthError,
    OperationTimeLimit,
    QueryLimitExceeded,
    RefreshFailed,
    RequestNotSent,
    TokenExpired,
)
from ._job import Progress
from ._limiter import Limiter, RateLimit, bucket_for
from ._methods import ACTIVATE, GET, PIN
from ._operating import OperatingBudget
from ._redact import redact
from ._redis import RedisBucket
from ._retry import RetryPolicy, retrying, should_retry
from ._stats import Stats
from ._store import TokenStore
from ._transport import DEFAULT_MAX_RESPONSE, AiohttpTransport, Timeout, Transport
from ._validate import (
    check_bool,
    check_fields,
    check_flow_id,
    check_flow_ids,
    check_method,
    check_number,
)

__all__ = ["ACTIVATE", "GET", "JSON", "PIN", "FlowClient"]

logger = logging.getLogger("aiob24flow")

# A request answered 401 is re-sent with a new token at most this many times (a 401 means
# it did not run; a token the portal keeps refusing ends the request).
MAX_TOKEN_RECOVERIES = 3


Sleep = Callable[[float], Awaitable[None]]
#: A decoded JSON value, as ``call`` returns it.
JSON = Union[dict[str, "JSON"], list["JSON"], str, int, float, bool, None]  # noqa: UP007
ProgressCallback = Callable[[Progress], None]


@attrs.frozen
class _Options:
    retry: RetryPolicy
    timeout: Timeout
    concurrency: int


class _Fixed:
    """The body of a single call: known up front, one command."""

    __slots__ = ("_body", "commands")

    def __init__(self, body: bytes, commands: int = 1) -> None:
        self._body = body
        self.commands = commands

    def decode(self, body: bytes) -> Any:
        return _json.loads(body)

    def body(self) -> bytes:
        return self._body


class Outgoing(Protocol):
    """What a request carries; ``body()`` is called at the last moment before it leaves
    (and before every re-send) and may withhold it by raising a ``RequestNotSent``."""

    @property
    def commands(self) -> int: ...

    def body(self) -> bytes: ...

    def decode(self, body: bytes) -> Any:
        """Decode the answer (a bulk batch skips what its job does not read)."""
        ...


class _Core:
    """What every ``with_options`` copy of a client shares."""

    def __init__(
        self,
        auth: Auth,
        transport: AiohttpTransport | Transport,
        limiter: Limiter,
        budget: OperatingBudget,
        sleep: Sleep,
        connections: int,
    ) -> None:
        self.auth = auth
        self.transport = transport
        self.limiter = limiter
        self.budget = budget
        self.sleep = sleep
        self.stats = Stats()
        self.closed = False
        self.interrupts = Interrupts()
        # Requests between "slot taken" and "answer read"; the connector has as many
        # connections, so aiohttp never queues a request we believe has left.
        self.slots = asyncio.Semaphore(connections)
        self.on_wire = 0
        self.idle: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise RuntimeError(
                "this FlowClient is bound to another event loop; create one client per loop"
            )

    def give_back(self) -> None:
        """A slot was reserved for a request that will not be sent."""
        release = getattr(self.limiter, "release", None)
        if release is not None:
            release()


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
        max_response_size: int = DEFAULT_MAX_RESPONSE,
        ssl: SSLOption = None,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> FlowClient:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise TypeError("session must be an aiohttp.ClientSession")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be an aiob24flow.RetryPolicy")
        if timeout is not None and not isinstance(timeout, Timeout):
            raise TypeError("timeout must be an aiob24flow.Timeout")
        concurrency = _check_concurrency(concurrency)
        check_number(operating_limit, "operating_limit", positive=True)
        if (
            isinstance(max_response_size, bool)
            or not isinstance(max_response_size, int)
            or max_response_size < 1024
        ):
            raise ValueError("max_response_size must be an int of at least 1024 bytes")
        if sleep is not None and not callable(sleep):
            raise TypeError("sleep must be an async callable")
        real_sleep: Sleep = sleep or asyncio.sleep
        check_bool(trust_env, "trust_env")
        options = _Options(retry or RetryPolicy(), timeout or Timeout(), concurrency)
        tx: AiohttpTransport | Transport
        if transport is not None:
            tx = transport
            auth = make_auth(tx, options.timeout, real_sleep)
        else:
            tx = AiohttpTransport(
                session,
                connections=concurrency,
                max_response=max_response_size,
                proxy=_proxy_option(proxy),
                trust_env=trust_env,
            )
            auth = make_auth(tx, options.timeout, real_sleep)
            # Judged after the auth has parsed the portal's URL: ssl=False needs loopback.
            tx.use_ssl(_ssl_option(ssl, auth.origin))
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
        core = _Core(auth, tx, chosen, budget, real_sleep, concurrency)
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
        max_response_size: int = DEFAULT_MAX_RESPONSE,
        ssl: SSLOption = None,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> FlowClient:
        """A client for an inbound webhook ``https://PORTAL/rest/USER_ID/CODE/``.

        ``rate_limit`` defaults to the standard plan (burst 50, 2/s); ``session`` is used and
        never closed; ``concurrency`` caps batch requests in flight during bulk work (the
        limiter sets the pace) and, for a session the client opens, its connections;
        ``max_response_size`` caps an answer's bytes (a larger one is abandoned as
        ``ResponseLost``); ``sleep`` is injectable for tests.

        TLS and proxies: ``ssl`` is an ``ssl.SSLContext``, the path of a CA bundle (PEM),
        or ``False`` to skip verification (only for a loopback portal: a test setup);
        ``proxy`` is an ``http://`` forward proxy for every request; ``trust_env=True``
        reads ``HTTPS_PROXY`` / ``NO_PROXY`` (and ``.netrc``) from the environment. They
        apply to sessions the client opens; ``ssl`` and ``proxy`` also to a passed one.
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
            max_response_size=max_response_size,
            ssl=ssl,
            proxy=proxy,
            trust_env=trust_env,
        )

    @classmethod
    def from_oauth(
        cls,
        endpoint: str,
        tokens: OAuthTokens | None = None,
        *,
        store: TokenStore | None = None,
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
        max_response_size: int = DEFAULT_MAX_RESPONSE,
        ssl: SSLOption = None,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> FlowClient:
        """A client for an OAuth 2 application: ``endpoint`` is ``https://PORTAL/rest/``.

        On ``expired_token`` (or shortly before ``tokens.expires_at``) the client refreshes
        once, at ``token_url`` with ``client_id``/``client_secret`` or through your
        ``refresher``, awaits ``on_refresh(new_tokens)`` and re-sends the refused call once.

        ``store`` (a ``RedisTokenStore``, a ``FileTokenStore`` or your own ``TokenStore``)
        shares the tokens with every worker of the portal: the client reads the pair from
        it at start (seeding it with ``tokens`` only when it is empty) and after every 401,
        and refreshes under the store's lock, once across all workers; a refresh token is
        never sent twice, across processes too.
        """

        def make(tx: AiohttpTransport | Transport, timeout: Timeout, sleep: Sleep) -> Auth:
            return OAuthAuth(
                endpoint,
                tokens,
                store=store,
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
            max_response_size=max_response_size,
            ssl=ssl,
            proxy=proxy,
            trust_env=trust_env,
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
        """Close the client for good.

        New calls raise ``ClientClosed`` at once; calls waiting to be sent (connection
        slot, operating budget, rate limiter, token refresh, retry pause) raise
        ``ClientClosed``; requests already on the wire finish (bounded by the timeouts)
        and their callers get the real outcome. Then the session the client opened is
        closed (a passed-in session stays open). A ``with_options`` copy does not close
        the client it was made from.
        """
        core = self._core
        if not self._owner or core.closed:
            return
        core.closed = True
        core.interrupts.interrupt(
            lambda: ClientClosed("not sent: the client was closed while this call waited")
        )
        if core.on_wire:
            core.idle = asyncio.Event()
            await core.idle.wait()
        close = getattr(core.transport, "aclose", None)
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
        """Batch requests a bulk job keeps in flight at most."""
        return self._options.concurrency

    # -- the send pipeline --------------------------------------------------------------

    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self._core.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        logger.info("retrying after %s (attempt %d)", type(exc).__name__, state.attempt_number)

    async def _request(
        self,
        method: str,
        outgoing: Outgoing,
        budget_methods: tuple[str, ...],
    ) -> Envelope:
        core = self._core
        core.check_loop()
        if core.closed:
            raise ClientClosed("the client is closed")
        # Fast path: most requests succeed at once and need no retry machinery.
        try:
            return await self._send_once(method, outgoing, budget_methods)
        except Exception as exc:
            if self._options.retry.attempts == 1 or not should_retry(exc):
                raise
            first_failure = exc
        # Refused: tenacity takes over, counting the attempt already made as its first.
        made = False
        async for attempt in retrying(
            self._options.retry, sleep=self._pause, before_sleep=self._on_retry
        ):
            with attempt:
                if not made:
                    made = True
                    raise first_failure
                return await self._send_once(method, outgoing, budget_methods)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pause(self, seconds: float) -> None:
        """The pause between retries: a waiting section like the limiter's."""
        with self._core.interrupts.waiting():
            await self._core.sleep(seconds)

    async def _token(self) -> tuple[dict[str, str], str]:
        try:
            return await self._core.auth.headers()
        except OAuthError as exc:
            raise _not_sent_for(exc) from exc

    async def _send_once(
        self, method: str, outgoing: Outgoing, budget_methods: tuple[str, ...]
    ) -> Envelope:
        core = self._core
        timeout = self._options.timeout
        recoveries = 0  # 401s answered with a new token for this request
        while True:
            # Waiting: aclose() and a job's stop interrupt these, and only these.
            with core.interrupts.waiting():
                await core.slots.acquire()
            try:
                with core.interrupts.waiting():
                    await core.budget.wait(budget_methods)
                    core.stats.limiter_wait_seconds += await core.limiter.acquire()
                    try:
                        headers, token = await self._token()
                    except BaseException:
                        core.give_back()
                        raise
                # The last moment before the request leaves: claim or withhold.
                try:
                    if core.closed:
                        raise ClientClosed("not sent: the client was closed")
                    body = outgoing.body()
                except BaseException:
                    core.give_back()
                    raise
                headers["Content-Type"] = "application/json"
                commands = outgoing.commands
                sent_at = asyncio.get_running_loop().time()
                core.on_wire += 1
                try:
                    raw = await core.transport.post(core.auth.url(method), body, headers, timeout)
                    envelope = parse_response(raw, method, outgoing.decode)
                except B24Error as exc:
                    if not isinstance(exc, RequestNotSent):
                        core.stats.requests += 1
                        core.stats.commands += commands
                    _log_request(method, commands, sent_at, exc)
                    if exc.method is None:
                        exc.method = method
                    exc.sent_at = sent_at
                    if exc.may_have_run and not exc.finished:
                        elapsed = asyncio.get_running_loop().time() - sent_at
                        exc.finished = elapsed >= timeout.portal_limit
                    failure = exc
                else:
                    core.stats.requests += 1
                    core.stats.commands += commands
                    _log_request(method, commands, sent_at, raw.status)
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("%s body: %s", method, redact(body.decode("utf-8", "replace")))
                    core.budget.observe(method, envelope.time)
                    return envelope
                finally:
                    core.on_wire -= 1
                    if core.on_wire == 0 and core.idle is not None:
                        core.idle.set()
            finally:
                core.slots.release()
            if isinstance(failure, (TokenExpired, InvalidToken)):
                # A 401 means the call did not run: refresh if needed (or adopt the token
                # another call or worker refreshed meanwhile), then re-send. More than one
                # round is rare: a token refreshed again before this request got its turn.
                if recoveries < MAX_TOKEN_RECOVERIES:
                    try:
                        with core.interrupts.waiting():
                            recovered = await core.auth.recover(token, failure)
                    except OAuthError as exc:
                        raise _not_sent_for(exc) from exc
                    if recovered:
                        recoveries += 1
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

    async def _send_claim(self, claim: Outgoing, method: str) -> BulkAnswer:
        """One batch of a bulk job (``_job._Claim``): the flows are bound at send time."""
        envelope = await self._request("batch", claim, ("batch", method))
        answer = parse_bulk(envelope.result, method)
        budget = self._core.budget
        if answer.last_time is not None:
            budget.observe(method, answer.last_time)
        for raw in answer.errors.values():
            if isinstance(raw, dict) and raw.get("error") == "OPERATION_TIME_LIMIT":
                budget.refused(OperationTimeLimit("blocked", method=method))
                break  # once per answer: the method is held either way
        return answer

    # -- single calls -------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> JSON:
        """Call any REST method; return its ``result`` or raise its typed error.

        The method name is sent exactly as written (``tasks.flow.Flow.*`` needs the
        capital ``Flow``).
        """
        check_method(method, in_url=True)
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("params must be a mapping or None")
        envelope = await self._request(method, _Fixed(_encode(dict(params or {}))), (method,))
        result: JSON = envelope.result
        return result

    async def activate(self, flow_id: int) -> bool:
        """Toggle a flow's active state (the portal answers True: it toggled).

        A refused call is retried; a call whose answer was lost raises ``ResponseLost`` or
        ``ServerError`` (``may_have_run``) and is never re-sent blindly.
        """
        check_flow_id(flow_id)
        return bool(await self.call(ACTIVATE, {"flowId": flow_id}))  # the portal says True

    async def pin(self, flow_id: int) -> bool:
        """Toggle the flow's pin for the calling user; return the new pinned state."""
        check_flow_id(flow_id)
        return bool(await self.call(PIN, {"flowId": flow_id}))

    async def get(self, flow_id: int) -> dict[str, Any]:
        """``tasks.flow.Flow.get``: the flow as a dict (``active`` tells its state)."""
        check_flow_id(flow_id)
        result = await self.call(GET, {"flowId": flow_id})
        return dict(result) if isinstance(result, dict) else {}

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
        outgoing = _Fixed(_encode(payload), len(cmds))
        envelope = await self._request("batch", outgoing, budget_methods)
        return self._fold_batch(envelope, wire_keys, methods, user_keys)

    def _fold_batch(
        self,
        envelope: Envelope,
        wire_keys: list[str],
        methods: list[str],
        user_keys: list[Any],
    ) -> BatchResult:
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
    ) -> _bulk.BulkReport[bool]:
        """Toggle every flow in ``ids`` once, 50 per batch, at the limiter's pace.

        Returns a ``BulkReport``: ``succeeded`` (id -> True), ``failed`` (id -> error; the
        portal did not toggle it) and ``unknown`` (id -> error; it may have toggled). With
        ``verify=True`` the states are read before sending and read back after lost
        answers, so nothing is left ``unknown`` that a read can settle.
        Setting ``stop`` sends no new batch; what was not sent is reported ``failed``.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(verify, "verify")
        _check_controls(on_progress, stop)
        if verify:
            return await _bulk.toggle_verified(self, flow_ids, on_progress, stop)
        return await _bulk.toggle_many(self, ACTIVATE, flow_ids, on_progress, stop)

    async def pin_many(
        self,
        ids: Iterable[int],
        *,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport[bool]:
        """Toggle the pin of every flow in ``ids`` once; ``succeeded`` holds the new states."""
        flow_ids = check_flow_ids(ids)
        _check_controls(on_progress, stop)
        return await _bulk.toggle_many(self, PIN, flow_ids, on_progress, stop)

    async def get_many(
        self,
        ids: Iterable[int],
        *,
        fields: Iterable[str] | None = None,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport[dict[str, Any]]:
        """Read many flows (``succeeded``: id -> the flow dict). Safe to repeat.

        ``fields`` (for example ``("active", "name")``) keeps only those keys of each flow
        (the ones it has) and drops the rest as each answer arrives: for many flows, a
        fraction of the memory and of the garbage collector's work. Setting ``stop``
        sends no new batch; the flows not read are reported ``failed`` (``Stopped``).
        """
        flow_ids = check_flow_ids(ids)
        kept = check_fields(fields)
        _check_controls(on_progress, stop)
        return await _bulk.read_flows(self, flow_ids, kept, on_progress, stop)

    async def set_active(
        self,
        ids: Iterable[int],
        active: bool,
        *,
        max_rounds: int = 5,
        dry_run: bool = False,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport[bool]:
        """Make every flow in ``ids`` active (True) or inactive (False).

        Reads the states, toggles only what differs, and after any lost answer reads again
        and toggles only what is still wrong. Each flow is toggled at most ``max_rounds``
        times; rounds go on while any flow is unsettled within that budget. A state read
        after a dropped connection is trusted only once the lost request must have
        finished (``Timeout.portal_limit``) unless it already shows the desired state.
        ``succeeded`` holds the flows now in the desired state and ``changed`` the ones this
        call toggled. ``dry_run`` reads and reports what would change (in ``changed``)
        without toggling.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(active, "active")
        check_bool(dry_run, "dry_run")
        rounds = _check_rounds(max_rounds)
        _check_controls(on_progress, stop)
        return await _bulk.converge_active(
            self, flow_ids, lambda _: active, rounds, on_progress, stop, dry_run=dry_run
        )

    async def set_pinned(
        self,
        ids: Iterable[int],
        pinned: bool,
        *,
        max_rounds: int = 5,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> _bulk.BulkReport[bool]:
        """Make every flow in ``ids`` pinned (True) or unpinned for the calling user.

        Pin state cannot be read, but each pin answers the new state: pin, look at the
        answer, and pin again where it is not the desired one (or the answer was lost,
        once the lost request must have finished). A flow whose answer was lost
        ``max_rounds`` times is reported unknown; each flow is pinned at most
        ``2 * max_rounds + 1`` times.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(pinned, "pinned")
        rounds = _check_rounds(max_rounds)
        _check_controls(on_progress, stop)
        return await _bulk.converge_pinned(self, flow_ids, pinned, rounds, on_progress, stop)


SSLOption = Union[ssl_.SSLContext, str, "os.PathLike[str]", bool, None]


def _ssl_option(value: object, origin: str) -> ssl_.SSLContext | bool | None:
    if value is None or value is True:
        return None  # aiohttp's default: verify against the system's CAs
    if isinstance(value, ssl_.SSLContext):
        return value
    if value is False:
        host = urlsplit(origin).hostname or ""
        if not is_loopback(host):
            raise ValueError(
                "ssl=False (no certificate check) is allowed only for a loopback portal; "
                "pass ssl=<CA bundle path or ssl.SSLContext> instead"
            )
        return False
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        try:
            return ssl_.create_default_context(cafile=path)
        except (OSError, ssl_.SSLError) as exc:
            raise ValueError(f"ssl: cannot load the CA bundle {path!r}: {exc}") from None
    raise TypeError("ssl must be an ssl.SSLContext, a CA bundle path, False or None")


def _proxy_option(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("proxy must be a str URL or None")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("proxy must be an http:// (or https://) proxy URL")
    try:
        parts.port  # noqa: B018 - validates the range
    except ValueError:
        raise ValueError("proxy: the port is not a number from 1 to 65535") from None
    return value


def _encode(payload: Mapping[str, Any]) -> bytes:
    try:
        return _json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"params must be JSON-serialisable: {exc}") from None


def _not_sent_for(error: OAuthError) -> RefreshFailed:
    """The call waited for a token that did not come: it was never sent."""
    failed = RefreshFailed(
        f"not sent: no valid access token ({type(error).__name__}: {error.description})",
        code=error.code,
        status=error.status,
    )
    return failed


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


def _check_controls(on_progress: object, stop: object) -> None:
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be a callable taking an aiob24flow.Progress")
    if stop is not None and not isinstance(stop, asyncio.Event):
        raise TypeError("stop must be an asyncio.Event or None")


def _check_rounds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("max_rounds must be an int")
    if value < 1:
        raise ValueError(f"max_rounds must be >= 1, got {value!r}")
    return value
