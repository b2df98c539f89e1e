"""The send path, one concern per layer (as httpx's ``_send_handling_*``)::

    Pipeline.send(method, outgoing)      retry: re-send only what provably did not run
      -> _send_authenticated             a 401 is recovered with a new token, then re-sent
        -> _send_admitted                slot, operating budget, limiter, token; claim the body
          -> _send_single                one POST, parse, stats, log

``Shared`` is what every ``with_options`` copy of a client shares (auth, transport,
limiter, budget, stats, the waiting tasks); a ``Pipeline`` is that plus the options of
one copy. Bulk jobs depend on the pipeline, never on ``FlowClient``.

Every wait before a request leaves is a *waiting section* (``Interrupts``): ``aclose()``
and a job's stop interrupt it, and nothing on the wire. ``Outgoing.body()`` is called at
the last moment before the request leaves, so a bulk job binds its flows only then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import tenacity

from . import _json
from ._auth import Auth
from ._batch import BatchResult, BulkAnswer, parse_batch, parse_bulk
from ._config import RequestOptions
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
from ._limiter import Limiter
from ._operating import OperatingBudget
from ._redact import redact
from ._retry import retrying, should_retry
from ._stats import Stats
from ._telemetry import Telemetry, error_type
from ._transport import Transport
from ._types import Sleep

__all__ = ["MAX_TOKEN_RECOVERIES", "Fixed", "Outgoing", "Pipeline", "Shared", "encode"]

logger = logging.getLogger("aiob24flow")

# A request answered 401 is re-sent with a new token at most this many times (a 401 means
# it did not run; a token the portal keeps refusing ends the request).
MAX_TOKEN_RECOVERIES = 3


class Outgoing(Protocol):
    """What a request carries; ``body()`` is called at the last moment before it leaves
    (and before every re-send) and may withhold it by raising a ``RequestNotSent``."""

    @property
    def commands(self) -> int: ...

    def body(self) -> bytes: ...

    def ready(self) -> Awaitable[None] | None:
        """Called after ``body()`` and before the first byte leaves: a journaled job makes
        its intent durable here (write ahead) and returns the awaitable that does it;
        None when there is nothing to write (no coroutine on the hot path)."""
        ...

    def decode(self, body: bytes) -> Any:
        """Decode the answer (a bulk batch skips what its job does not read)."""
        ...


class Fixed:
    """The body of a single call or batch: known up front."""

    __slots__ = ("_body", "commands")

    def __init__(self, body: bytes, commands: int = 1) -> None:
        self._body = body
        self.commands = commands

    def decode(self, body: bytes) -> Any:
        return _json.loads(body)

    def body(self) -> bytes:
        return self._body

    def ready(self) -> None:
        """Nothing to write ahead."""


def encode(payload: Mapping[str, Any]) -> bytes:
    try:
        return _json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"params must be JSON-serialisable: {exc}") from None


class Shared:
    """What a client and every ``with_options`` copy of it share."""

    def __init__(
        self,
        auth: Auth,
        transport: Transport,
        limiter: Limiter,
        budget: OperatingBudget,
        sleep: Sleep,
        connections: int,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.auth = auth
        self.transport = transport
        self.limiter = limiter
        self.budget = budget
        self.sleep = sleep
        self.stats = Stats()
        # None when opentelemetry-api is not installed: the one check per request.
        self.telemetry = telemetry
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

    async def close(self) -> None:
        """Refuse new work, interrupt what waits, let the wire drain, close the transport."""
        if self.closed:
            return
        self.closed = True
        self.interrupts.interrupt(
            lambda: ClientClosed("not sent: the client was closed while this call waited")
        )
        if self.on_wire:
            self.idle = asyncio.Event()
            await self.idle.wait()
        await self.transport.aclose()


class _Ticket:
    """One call across its re-sends: the token its request went out with (a 401 is
    recovered against it), the HTTP requests made so far, the last limiter wait."""

    __slots__ = ("sends", "token", "waited")

    def __init__(self) -> None:
        self.token = ""
        self.sends = 0
        self.waited = 0.0


class Pipeline:
    """The send path of one client (or ``with_options`` copy): ``send``, ``send_bulk``."""

    def __init__(self, shared: Shared, options: RequestOptions) -> None:
        self.shared = shared
        self.options = options

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    @property
    def closed(self) -> bool:
        return self.shared.closed

    # -- what jobs use besides sending ------------------------------------------------------

    def waiting(self) -> AbstractContextManager[None]:
        """A section that ``aclose()`` and a job's stop interrupt (see ``Interrupts``)."""
        return self.shared.interrupts.waiting()  # not wrapped: it is on every request

    def interrupt(
        self,
        make_reason: Callable[[], BaseException],
        only: Collection[asyncio.Task[Any]] | None = None,
    ) -> int:
        """Interrupt the waiting tasks (all, or those in ``only``) with ``make_reason()``."""
        return self.shared.interrupts.interrupt(make_reason, only)

    async def pause(self, seconds: float) -> None:
        """An interruptible sleep (between retries, before a read-back)."""
        with self.waiting():
            await self.shared.sleep(seconds)

    # -- retry ------------------------------------------------------------------------------

    async def send(
        self, method: str, outgoing: Outgoing, budget_methods: tuple[str, ...]
    ) -> Envelope:
        """Send one request; re-send it only while it provably did not run."""
        shared = self.shared
        shared.check_loop()
        if shared.closed:
            raise ClientClosed("the client is closed")
        ticket = _Ticket()
        # Fast path: most requests succeed at once and need no retry machinery.
        try:
            return await self._send_authenticated(method, outgoing, budget_methods, ticket)
        except Exception as exc:
            if self.options.retry.attempts == 1 or not should_retry(exc):
                raise
            first_failure = exc
        # Refused: tenacity takes over, counting the attempt already made as its first.
        made = False
        async for attempt in retrying(
            self.options.retry, sleep=self.pause, before_sleep=self._on_retry
        ):
            with attempt:
                if not made:
                    made = True
                    raise first_failure
                return await self._send_authenticated(method, outgoing, budget_methods, ticket)
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self.shared.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        logger.info(
            "retrying after %s (attempt %d)",
            type(exc).__name__,
            state.attempt_number,
            extra={
                "event": "retry",
                "attempt": state.attempt_number,
                "error_type": None if exc is None else error_type(exc),
            },
        )

    # -- auth -------------------------------------------------------------------------------

    async def _send_authenticated(
        self, method: str, outgoing: Outgoing, budget_methods: tuple[str, ...], ticket: _Ticket
    ) -> Envelope:
        recoveries = 0  # 401s answered with a new token for this request
        while True:
            try:
                return await self._send_admitted(method, outgoing, budget_methods, ticket)
            except (TokenExpired, InvalidToken) as failure:
                # A 401 means the call did not run: refresh if needed (or adopt the token
                # another call or worker refreshed meanwhile), then re-send. More than one
                # round is rare: a token refreshed again before this request got its turn.
                if recoveries >= MAX_TOKEN_RECOVERIES:
                    raise
                try:
                    with self.waiting():
                        recovered = await self.shared.auth.recover(ticket.token, failure)
                except OAuthError as exc:
                    raise not_sent_for(exc) from exc
                if not recovered:
                    raise
                recoveries += 1

    # -- admission --------------------------------------------------------------------------

    async def _send_admitted(
        self,
        method: str,
        outgoing: Outgoing,
        budget_methods: tuple[str, ...],
        ticket: _Ticket,
    ) -> Envelope:
        """Admission: a connection slot, the operating budget, the limiter and a token,
        each a waiting section; then the body is claimed, at the last moment."""
        shared = self.shared
        # Waiting: aclose() and a job's stop interrupt these, and only these.
        with self.waiting():
            await shared.slots.acquire()
        try:
            with self.waiting():
                await shared.budget.wait(budget_methods)
                ticket.waited = await shared.limiter.acquire()
                shared.stats.limiter_wait_seconds += ticket.waited
                try:
                    headers, ticket.token = await shared.auth.headers()
                except BaseException as exc:
                    shared.limiter.release()
                    if isinstance(exc, OAuthError):
                        raise not_sent_for(exc) from exc
                    raise
            try:
                if shared.closed:
                    raise ClientClosed("not sent: the client was closed")
                body = outgoing.body()
                ahead = outgoing.ready()  # write ahead (a journaled job), if it has to
                if ahead is not None:
                    await ahead
            except BaseException:
                shared.limiter.release()
                raise
            headers["Content-Type"] = "application/json"
            return await self._send_single(method, body, headers, outgoing, ticket)
        except B24Error as exc:
            failure = exc
        finally:
            shared.slots.release()
        await self._account(failure)  # with the slot given back
        raise failure

    async def _account(self, failure: B24Error) -> None:
        """What a refusal or a lost answer tells the limiter, the budget and the stats."""
        shared = self.shared
        if isinstance(failure, QueryLimitExceeded):
            shared.stats.query_limit_refusals += 1
            await shared.limiter.refused()  # the portal's bucket is full: resynchronise
        elif isinstance(failure, OperationTimeLimit):
            shared.stats.operation_limit_refusals += 1
            shared.budget.refused(failure)
        elif failure.may_have_run:
            shared.stats.unknown_outcomes += 1

    # -- one request ------------------------------------------------------------------------

    async def _send_single(
        self,
        method: str,
        body: bytes,
        headers: dict[str, str],
        outgoing: Outgoing,
        ticket: _Ticket,
    ) -> Envelope:
        shared = self.shared
        timeout = self.options.timeout
        commands = outgoing.commands
        url = shared.auth.url(method)
        ticket.sends += 1
        attempt = ticket.sends  # a re-sent request is a request of its own (and a span)
        telemetry = shared.telemetry
        probe = None
        if telemetry is not None:
            probe = telemetry.request(method, url, commands, attempt - 1, ticket.waited)
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        shared.on_wire += 1
        try:
            raw = await shared.transport.post(url, body, headers, timeout)
            envelope = parse_response(raw, method, outgoing.decode)
        except B24Error as exc:
            if not isinstance(exc, RequestNotSent):
                shared.stats.requests += 1
                shared.stats.commands += commands
            if exc.method is None:
                exc.method = method
            exc.sent_at = sent_at
            elapsed = loop.time() - sent_at
            if exc.may_have_run and not exc.finished:
                exc.finished = elapsed >= timeout.portal_limit
            _log_request(method, commands, elapsed, exc, attempt)
            if probe is not None:
                probe.end(elapsed, exc.status, exc)
            raise
        except BaseException as exc:  # cancelled on the wire: its span ends all the same
            shared.stats.requests += 1  # it left (an abandoned answer may still run)
            shared.stats.commands += commands
            if probe is not None:
                probe.end(loop.time() - sent_at, None, exc)
            raise
        finally:
            shared.on_wire -= 1
            if shared.on_wire == 0 and shared.idle is not None:
                shared.idle.set()
        shared.stats.requests += 1
        shared.stats.commands += commands
        elapsed = loop.time() - sent_at
        _log_request(method, commands, elapsed, raw.status, attempt)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s body: %s", method, redact(body.decode("utf-8", "replace")))
        if probe is not None:
            probe.end(elapsed, raw.status, None)
        shared.budget.observe(method, envelope.time)
        return envelope

    # -- batches ----------------------------------------------------------------------------

    async def send_bulk(self, outgoing: Outgoing, method: str) -> BulkAnswer:
        """One batch of a bulk job (``method`` for every command): the flows are bound
        when the request leaves, and the answer is folded lean."""
        envelope = await self.send("batch", outgoing, ("batch", method))
        answer = parse_bulk(envelope.result, method)
        budget = self.shared.budget
        if answer.last_time is not None:
            budget.observe(method, answer.last_time)
        for raw in answer.errors.values():
            if isinstance(raw, dict) and raw.get("error") == "OPERATION_TIME_LIMIT":
                budget.refused(OperationTimeLimit("blocked", method=method))
                break  # once per answer: the method is held either way
        return answer

    async def send_batch(
        self,
        wire_keys: list[str],
        methods: list[str],
        cmds: list[str],
        user_keys: list[Any],
        *,
        halt: bool,
    ) -> BatchResult:
        """A ``batch`` of any commands: every result and error, keyed as the caller's."""
        payload = {"halt": 1 if halt else 0, "cmd": dict(zip(wire_keys, cmds, strict=True))}
        budget_methods = ("batch", *dict.fromkeys(methods))
        envelope = await self.send("batch", Fixed(encode(payload), len(cmds)), budget_methods)
        result = parse_batch(envelope.result, envelope.time, wire_keys, methods, user_keys)
        budget = self.shared.budget
        if result.times:
            # The newest figure per method is all the budget needs.
            method_of = dict(zip(user_keys, methods, strict=True))
            latest = {method_of[key]: time for key, time in result.times.items()}
            for sub_method, time in latest.items():
                budget.observe(sub_method, time)
        for err in result.errors.values():
            if isinstance(err, OperationTimeLimit):
                budget.refused(err)
        return result


def not_sent_for(error: OAuthError) -> RefreshFailed:
    """The call waited for a token that did not come: it was never sent."""
    return RefreshFailed(
        f"not sent: no valid access token ({type(error).__name__}: {error.description})",
        code=error.code,
        status=error.status,
    )


def _log_request(
    method: str, commands: int, elapsed: float, outcome: int | B24Error, attempt: int
) -> None:
    """The one INFO record per HTTP request: a readable line, and its fields in ``extra``
    for JSON formatters and structlog (nothing secret: no URL, no body, no token)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    plural = "" if commands == 1 else "s"
    fields = {
        "event": "request",
        "method": method,
        "status": outcome if isinstance(outcome, int) else outcome.status,
        "duration_s": round(elapsed, 6),
        "commands": commands,
        "attempt": attempt,
        "error_type": None if isinstance(outcome, int) else error_type(outcome),
    }
    if isinstance(outcome, int):
        logger.info(
            "POST %s -> %d (%d command%s) in %.3fs",
            method,
            outcome,
            commands,
            plural,
            elapsed,
            extra=fields,
        )
    else:
        logger.info(
            "POST %s failed after %.3fs (%d command%s): %s",
            method,
            elapsed,
            commands,
            plural,
            redact(str(outcome)),
            extra=fields,
        )
