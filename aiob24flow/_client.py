"""``FlowClient``: constructors, lifecycle, single calls and the bulk entry points.

One call, top to bottom::

    FlowClient.activate(517)       validate input, build the call
      -> Pipeline.send()           retry -> auth (401) -> admission -> one request
                                   (``_pipeline.py``: one concern per layer)

Bulk operations validate their input here and hand a ``Pipeline`` to ``_bulk``; the jobs
never see the client.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _bulk
from ._auth import DEFAULT_TOKEN_URL, Auth, OAuthAuth, WebhookAuth
from ._batch import BatchResult, Commands, normalize_commands
from ._config import ClientOptions, Settings, ssl_option
from ._job import Progress
from ._job_telemetry import observed
from ._journal import Journal, check_job_id
from ._limiter import Limiter, RateLimit, bucket_for, portal_key
from ._methods import ACTIVATE, GET, PIN
from ._operating import OperatingBudget
from ._pipeline import Fixed, Pipeline, Shared, encode
from ._report import BulkReport
from ._retry import RetryPolicy
from ._stats import Stats
from ._telemetry import Telemetry, build_telemetry
from ._timeout import Timeout
from ._tokens import OAuthTokens, OnRefresh, Refresher, TokenStore
from ._transport import AiohttpTransport, Transport
from ._types import JSON, Sleep
from ._validate import check_bool, check_fields, check_flow_id, check_flow_ids, check_method

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

__all__ = ["ACTIVATE", "GET", "JSON", "PIN", "FlowClient"]

ProgressCallback = Callable[[Progress], None]
MakeAuth = Callable[[Transport, Timeout, Sleep, "Telemetry | None"], Auth]


def _build_shared(settings: Settings, make_auth: MakeAuth) -> Shared:
    """Transport, auth, limiter and budget from checked settings."""
    sleep = settings.real_sleep
    timeout = settings.request.timeout
    telemetry = build_telemetry(settings.tracer_provider, settings.meter_provider)
    tx: Transport
    if settings.transport is not None:
        tx = settings.transport
        auth = make_auth(tx, timeout, sleep, telemetry)
    else:
        aio = AiohttpTransport(
            settings.session,
            connections=settings.request.concurrency,
            max_response=settings.max_response_size,
            proxy=settings.proxy,
            trust_env=settings.trust_env,
        )
        auth = make_auth(aio, timeout, sleep, telemetry)
        # Judged after the auth has parsed the portal's URL: ssl=False needs loopback.
        aio.use_ssl(ssl_option(settings.ssl, auth.origin))
        tx = aio
    rate_limit = settings.rate_limit or RateLimit.standard()
    backend = rate_limit.backend
    limiter: Limiter
    budget: OperatingBudget
    if settings.limiter is not None:
        limiter = settings.limiter
    elif backend is not None:
        # A shared bucket belongs to this client and sleeps with its sleep; the
        # in-process bucket is shared by every client of the portal and keeps its own.
        limiter = backend.limiter_for(auth.origin, rate_limit, settings.sleep)
    else:
        limiter = bucket_for(auth.origin, rate_limit)
    if backend is not None:
        budget = backend.budget_for(auth.origin, sleep)
    else:
        budget = OperatingBudget(limit=settings.operating_limit, sleep=sleep)
    return Shared(auth, tx, limiter, budget, sleep, settings.request.concurrency, telemetry)


class FlowClient:
    """An asyncio client for one Bitrix24 portal.

    Build it with ``FlowClient.from_webhook`` or ``FlowClient.from_oauth``; use it as an
    async context manager or call ``aclose()``.
    """

    def __init__(self, pipeline: Pipeline, *, owner: bool = True) -> None:
        self._pipeline = pipeline
        self._owner = owner

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_webhook(cls, url: str, **options: Unpack[ClientOptions]) -> FlowClient:
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
        Every option is described in ``ClientOptions``.
        """
        settings = Settings.from_options(options)
        auth = WebhookAuth(url)
        shared = _build_shared(settings, lambda tx, t, s, telemetry: auth)
        return cls(Pipeline(shared, settings.request))

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
        **options: Unpack[ClientOptions],
    ) -> FlowClient:
        """A client for an OAuth 2 application: ``endpoint`` is ``https://PORTAL/rest/``.

        On ``expired_token`` (or shortly before ``tokens.expires_at``) the client refreshes
        once, at ``token_url`` with ``client_id``/``client_secret`` or through your
        ``refresher``, awaits ``on_refresh(new_tokens)`` and re-sends the refused call once.

        ``store`` (a ``RedisTokenStore``, a ``FileTokenStore`` or your own ``TokenStore``)
        shares the tokens with every worker of the portal: the client reads the pair from
        it at start (seeding it with ``tokens`` only when it is empty) and after every 401,
        and refreshes under the store's lock, once across all workers; a refresh token is
        never sent twice, across processes too. The other options are ``ClientOptions``.
        """
        settings = Settings.from_options(options)

        def make(tx: Transport, timeout: Timeout, sleep: Sleep, tel: Telemetry | None) -> Auth:
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
                telemetry=tel,
            )

        return cls(Pipeline(_build_shared(settings, make), settings.request))

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: Timeout | None = None,
        concurrency: int | None = None,
    ) -> FlowClient:
        """A copy with other retry, timeout or concurrency settings, sharing the session,
        limiter, tokens and stats. Closing the copy does not close the original."""
        pipeline = self._pipeline
        options = pipeline.options.replace(retry=retry, timeout=timeout, concurrency=concurrency)
        return FlowClient(Pipeline(pipeline.shared, options), owner=False)

    async def __aenter__(self) -> FlowClient:
        try:
            await self._pipeline.shared.limiter.start()  # a shared limiter says now: away
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
        if self._owner:
            await self._pipeline.shared.close()

    def __repr__(self) -> str:
        return f"<FlowClient {self._pipeline.shared.auth.describe()}>"

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters shared by this client and its copies."""
        shared = self._pipeline.shared
        stats = shared.stats.copy()
        stats.refreshes = shared.auth.refreshes
        return stats

    @property
    def tokens(self) -> OAuthTokens | None:
        """The current OAuth tokens (None for webhooks)."""
        return self._pipeline.shared.auth.tokens

    @property
    def concurrency(self) -> int:
        """Batch requests a bulk job keeps in flight at most."""
        return self._pipeline.options.concurrency

    @property
    def limiter(self) -> Limiter:
        """The rate limiter this client paces with (shared by the clients of a portal)."""
        return self._pipeline.shared.limiter

    @property
    def portal(self) -> str:
        """The portal this client talks to: scheme, host and port, no credential
        (``https://example.bitrix24.com:443``); the command line names jobs by it."""
        return portal_key(self._pipeline.shared.auth.origin)

    def _durable(
        self,
        journal: Journal | None,
        job_id: str | None,
        on_progress: ProgressCallback | None,
        stop: asyncio.Event | None,
    ) -> _bulk.Durable | None:
        """The journaled run of a bulk call, when ``journal`` is given (checked first)."""
        if journal is None:
            if job_id is not None:
                raise ValueError("job_id needs journal= (where the job is written)")
            return None
        if not isinstance(journal, Journal):
            raise TypeError("journal must be an aiob24flow.SqliteJournal or RedisJournal")
        return _bulk.Durable(self._pipeline, journal, check_job_id(job_id), on_progress, stop)

    async def _observed(
        self, operation: str, ids: Sequence[int], job: Awaitable[BulkReport[Any]]
    ) -> BulkReport[Any]:
        """Every bulk operation runs here: its span, its flows counted, its log record."""
        return await observed(self._pipeline.shared.telemetry, operation, len(ids), job)

    # -- single calls -------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> JSON:
        """Call any REST method; return its ``result`` or raise its typed error.

        The method name is sent exactly as written (``tasks.flow.Flow.*`` needs the
        capital ``Flow``).
        """
        check_method(method, in_url=True)
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("params must be a mapping or None")
        envelope = await self._pipeline.send(method, Fixed(encode(dict(params or {}))), (method,))
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
        return await self._pipeline.send_batch(wire_keys, methods, cmds, user_keys, halt=halt)

    async def activate_many(
        self,
        ids: Iterable[int],
        *,
        verify: bool = False,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        journal: Journal | None = None,
        job_id: str | None = None,
    ) -> BulkReport[bool]:
        """Toggle every flow in ``ids`` once, 50 per batch, at the limiter's pace.

        Returns a ``BulkReport``: ``succeeded`` (id -> True), ``failed`` (id -> error; the
        portal did not toggle it) and ``unknown`` (id -> error; it may have toggled). With
        ``verify=True`` the states are read before sending and read back after lost
        answers, so nothing is left ``unknown`` that a read can settle.
        Setting ``stop`` sends no new batch; what was not sent is reported ``failed``.
        ``changed`` lists the flows toggled.

        ``journal`` and ``job_id`` make the job survive its process: what each request
        will do is written before it leaves and what it did when the answer comes; the
        same call with the same ``job_id`` after a crash resumes it (never toggling a flow
        twice) and returns the stored report once it finished. See ``SqliteJournal``.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(verify, "verify")
        _check_controls(on_progress, stop)
        durable = self._durable(journal, job_id, on_progress, stop)
        job: Awaitable[BulkReport[Any]]
        if durable is not None:
            job = durable.toggle(ACTIVATE, flow_ids, verify)
        elif verify:
            job = _bulk.toggle_verified(self._pipeline, flow_ids, on_progress, stop)
        else:
            job = _bulk.toggle_many(self._pipeline, ACTIVATE, flow_ids, on_progress, stop)
        return await self._observed("activate_many", flow_ids, job)

    async def pin_many(
        self,
        ids: Iterable[int],
        *,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        journal: Journal | None = None,
        job_id: str | None = None,
    ) -> BulkReport[bool]:
        """Toggle the pin of every flow in ``ids`` once; ``succeeded`` holds the new states.
        ``journal``/``job_id`` as for ``activate_many``."""
        flow_ids = check_flow_ids(ids)
        _check_controls(on_progress, stop)
        durable = self._durable(journal, job_id, on_progress, stop)
        if durable is not None:
            job = durable.toggle(PIN, flow_ids, False)
        else:
            job = _bulk.toggle_many(self._pipeline, PIN, flow_ids, on_progress, stop)
        return await self._observed("pin_many", flow_ids, job)

    async def get_many(
        self,
        ids: Iterable[int],
        *,
        fields: Iterable[str] | None = None,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> BulkReport[dict[str, Any]]:
        """Read many flows (``succeeded``: id -> the flow dict). Safe to repeat.

        ``fields`` (for example ``("active", "name")``) keeps only those keys of each flow
        (the ones it has) and drops the rest as each answer arrives: for many flows, a
        fraction of the memory and of the garbage collector's work. Setting ``stop``
        sends no new batch; the flows not read are reported ``failed`` (``Stopped``).
        """
        flow_ids = check_flow_ids(ids)
        kept = check_fields(fields)
        _check_controls(on_progress, stop)
        job = _bulk.read_flows(self._pipeline, flow_ids, kept, on_progress, stop)
        return await self._observed("get_many", flow_ids, job)

    async def set_active(
        self,
        ids: Iterable[int],
        active: bool,
        *,
        max_rounds: int = 5,
        dry_run: bool = False,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        journal: Journal | None = None,
        job_id: str | None = None,
    ) -> BulkReport[bool]:
        """Make every flow in ``ids`` active (True) or inactive (False).

        Reads the states, toggles only what differs, and after any lost answer reads again
        and toggles only what is still wrong. Each flow is toggled at most ``max_rounds``
        times; rounds go on while any flow is unsettled within that budget. A state read
        after a dropped connection is trusted only once the lost request must have
        finished (``Timeout.portal_limit``) unless it already shows the desired state.
        ``succeeded`` holds the flows now in the desired state and ``changed`` the ones this
        call toggled. ``dry_run`` reads and reports what would change (in ``changed``)
        without toggling. ``journal``/``job_id`` as for ``activate_many``: a resumed
        job reads back what an earlier run left in doubt and re-reads nothing settled.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(active, "active")
        check_bool(dry_run, "dry_run")
        rounds = _check_rounds(max_rounds)
        _check_controls(on_progress, stop)
        if dry_run and journal is not None:
            raise ValueError("dry_run changes nothing: it takes no journal")
        durable = self._durable(journal, job_id, on_progress, stop)
        job: Awaitable[BulkReport[Any]]
        if durable is not None:
            job = durable.set_active(flow_ids, active, rounds)
        elif dry_run:
            job = _bulk.plan_active(self._pipeline, flow_ids, active, on_progress, stop)
        else:
            job = _bulk.converge_active(self._pipeline, flow_ids, active, rounds, on_progress, stop)
        return await self._observed("set_active", flow_ids, job)

    async def set_pinned(
        self,
        ids: Iterable[int],
        pinned: bool,
        *,
        max_rounds: int = 5,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        journal: Journal | None = None,
        job_id: str | None = None,
    ) -> BulkReport[bool]:
        """Make every flow in ``ids`` pinned (True) or unpinned for the calling user.

        Pin state cannot be read, but each pin answers the new state: pin, look at the
        answer, and pin again where it is not the desired one (or the answer was lost,
        once the lost request must have finished). A flow whose answer was lost
        ``max_rounds`` times is reported unknown; each flow is pinned at most
        ``2 * max_rounds + 1`` times. ``journal``/``job_id`` as for ``activate_many``: a
        resumed job pins a flow left in doubt again only once its lost pin must be done.
        """
        flow_ids = check_flow_ids(ids)
        check_bool(pinned, "pinned")
        rounds = _check_rounds(max_rounds)
        _check_controls(on_progress, stop)
        durable = self._durable(journal, job_id, on_progress, stop)
        if durable is not None:
            job = durable.set_pinned(flow_ids, pinned, rounds)
        else:
            job = _bulk.converge_pinned(self._pipeline, flow_ids, pinned, rounds, on_progress, stop)
        return await self._observed("set_pinned", flow_ids, job)


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
