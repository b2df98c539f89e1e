"""The exception tree of aiob24flow.

Every exception the library raises about a call is a ``B24Error``::

    B24Error                         .code .description .status .method .key
    ├── PortalError                  the portal answered with an error envelope
    │   ├── QueryLimitExceeded       503 QUERY_LIMIT_EXCEEDED: refused by the rate limit
    │   ├── OperationTimeLimit       429 OPERATION_TIME_LIMIT: method blocked (.reset_at)
    │   ├── MethodNotFound           404 ERROR_METHOD_NOT_FOUND
    │   ├── AuthError                401/403 before the method ran
    │   │   ├── TokenExpired         expired_token (refresh and re-send)
    │   │   ├── InvalidToken         invalid_token
    │   │   ├── InvalidCredentials   INVALID_CREDENTIALS, NO_AUTH_FOUND (bad webhook)
    │   │   ├── InsufficientScope    insufficient_scope
    │   │   └── AccessDenied         ACCESS_DENIED, user_access_error, OVERLOAD_LIMIT, ...
    │   ├── FlowError                the flow controller refused: code "0"
    │   │   └── InvalidArgument      code "100": flowId missing or not an int
    │   ├── BatchCommandError        ERROR_BATCH_LENGTH_EXCEEDED / _METHOD_NOT_ALLOWED
    │   └── ServerError              5xx (other than the limit refusal) or an odd answer:
    │                                the method MAY have run
    ├── TransportError               no usable answer from the portal
    │   ├── RequestNotSent           the request never left (may_have_run is False)
    │   │   ├── Unreachable          DNS failure or connection refused: not retried
    │   │   ├── LimiterUnavailable   the shared (Redis) limiter is away (``_redis.py``)
    │   │   ├── JournalError         the job's journal failed: nothing more is sent
    │   │   │   ├── JobMismatch      the job id names another job's spec
    │   │   │   └── JobBusy          another runner holds the job
    │   │   ├── Stopped              withheld: the job was stopped or aborted (.__cause__)
    │   │   ├── ClientClosed         withheld: ``aclose()`` was called
    │   │   └── RefreshFailed        withheld: no valid token (cause: the OAuthError)
    │   └── ResponseLost             timeout / disconnect after sending: MAY have run
    ├── OAuthError                   the OAuth server refused or failed a token refresh
    │   ├── RefreshRejected          invalid_grant, invalid_client, ...: terminal
    │   ├── RefreshOutcomeUnknown    refresh sent, answer lost: the refresh token may be spent
    │   └── TokenStoreError          the token store could not be locked, read or written
    └── BulkAborted                  a bulk job ended by an exception (.report, .__cause__)

Outcome classification (both flow methods are toggles): ``error.may_have_run`` is
``True`` only for ``ServerError`` and ``ResponseLost`` (and ``RefreshOutcomeUnknown``).
Everything else provably did not run and may be retried or reported as failed.
A call never raises an ``OAuthError`` itself: a call that could not get a valid token was
not sent and raises ``RefreshFailed`` with the ``OAuthError`` as ``__cause__``.

Errors are mapped by the portal's error code first, then by HTTP status
(see ``error_from_envelope``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._report import BulkReport

__all__ = [
    "NEVER_RETRIED",
    "AccessDenied",
    "AuthError",
    "B24Error",
    "BatchCommandError",
    "BulkAborted",
    "ClientClosed",
    "FlowError",
    "InsufficientScope",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidToken",
    "JobBusy",
    "JobMismatch",
    "JournalError",
    "LimiterUnavailable",
    "MethodNotFound",
    "OAuthError",
    "OperationTimeLimit",
    "PortalError",
    "QueryLimitExceeded",
    "RefreshFailed",
    "RefreshOutcomeUnknown",
    "RefreshRejected",
    "RequestNotSent",
    "ResponseLost",
    "ServerError",
    "Stopped",
    "TokenExpired",
    "TokenStoreError",
    "TransportError",
    "Unreachable",
    "error_from_envelope",
    "is_systemic",
    "is_withheld",
]


class B24Error(Exception):
    """Base of every aiob24flow error about a call.

    ``code`` is the portal's ``error`` as a string (``0`` and ``"0"`` both become ``"0"``),
    ``description`` its ``error_description``, ``status`` the HTTP status (None when there
    was no HTTP answer or inside a batch), ``method`` the REST method and ``key`` the batch
    command key when the error belongs to one command of a batch.
    """

    may_have_run: ClassVar[bool] = False
    #: ``loop.time()`` when the request left (set on errors of sent requests): a request
    #: whose answer was lost is surely finished at the portal only ``Timeout.portal_limit``
    #: seconds after it.
    sent_at: float | None = None
    #: True when the portal is surely done with the request (it answered, even with a
    #: 5xx envelope, or the read timeout outlasted its execution limit).
    finished: bool = True

    def __init__(
        self,
        description: str = "",
        *,
        code: str = "",
        status: int | None = None,
        method: str | None = None,
        key: str | None = None,
    ) -> None:
        self.code = code
        self.description = description
        self.status = status
        self.method = method
        self.key = key
        super().__init__(description)

    def __str__(self) -> str:
        parts = []
        if self.code:
            parts.append(self.code)
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        where = self.method or ""
        if self.key is not None:
            where = f"{where}[{self.key}]"
        head = " ".join(parts)
        text = f"{head}: {self.description}" if head else self.description
        return f"{text} ({where})" if where else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, description={self.description!r}, "
            f"status={self.status!r}, method={self.method!r}, key={self.key!r})"
        )

    def __reduce__(self) -> Any:
        kwargs = {"code": self.code, "status": self.status, "method": self.method, "key": self.key}
        return (_rebuild, (type(self), self.description, kwargs))


def _rebuild(cls: type[B24Error], description: str, kwargs: dict[str, Any]) -> B24Error:
    return cls(description, **kwargs)


class PortalError(B24Error):
    """The portal answered with ``{"error": ..., "error_description": ...}``."""


class QueryLimitExceeded(PortalError):
    """503 QUERY_LIMIT_EXCEEDED: the front end refused the request before it ran."""


class OperationTimeLimit(PortalError):
    """429 OPERATION_TIME_LIMIT: the method is blocked for this app or webhook.

    ``reset_at`` is the unix time when the block is expected to lift, taken from the last
    successful response's ``time.operating_reset_at`` (the 429 itself carries none).
    """

    reset_at: float | None = None


class MethodNotFound(PortalError):
    """404 ERROR_METHOD_NOT_FOUND (also: a flow method sent with the wrong case)."""


class AuthError(PortalError):
    """The portal refused the credentials; the method did not run."""


class TokenExpired(AuthError):
    """401 expired_token: refresh the access token and send again."""


class InvalidToken(AuthError):
    """401 invalid_token: the portal does not know this access token."""


class InvalidCredentials(AuthError):
    """INVALID_CREDENTIALS / NO_AUTH_FOUND: bad webhook user or code, or no credentials."""


class InsufficientScope(AuthError):
    """insufficient_scope: the webhook or token lacks the ``task`` scope."""


class AccessDenied(AuthError):
    """ACCESS_DENIED, user_access_error, OVERLOAD_LIMIT, PORTAL_DELETED and the like."""


class FlowError(PortalError):
    """The flow controller refused (code ``"0"``): no access, not found, unknown error."""


class InvalidArgument(FlowError):
    """Code ``"100"``: ``flowId`` missing or not an integer."""


class BatchCommandError(PortalError):
    """A batch command the portal did not run: too many commands or method not allowed."""


class ServerError(PortalError):
    """A 5xx (other than the limit refusal) or an unexpected answer: the call MAY have run."""

    may_have_run = True


class TransportError(B24Error):
    """No usable HTTP answer."""


class RequestNotSent(TransportError):
    """The connection could not be made: the request provably never reached the portal."""


class Unreachable(RequestNotSent):
    """The portal's host could not be resolved or refused the connection.

    Not retried: it will be the same for every request, so a bulk job ends at once.
    """


class LimiterUnavailable(RequestNotSent):
    """The shared limiter (Redis) could not be reached: the request was not sent."""


class JournalError(RequestNotSent):
    """A journaled job's journal could not be opened, written or read: nothing more is
    sent (a job never runs on without its journal)."""


class JobMismatch(JournalError):
    """The job id names a job with another spec (operation, ids in order, desired state,
    ``verify``): raised before any request. ``reason`` says which differs."""

    reason: str = ""


class JobBusy(JournalError):
    """Another runner holds the job (a live process, or a Redis lease not yet expired):
    raised before any request."""


class Stopped(RequestNotSent):
    """Withheld at the last moment: the job was stopped (``stop=``) or ended by an error
    (the error is the ``__cause__``)."""


class ClientClosed(RequestNotSent):
    """Withheld: ``aclose()`` was called before the request could be sent."""


class RefreshFailed(RequestNotSent):
    """Withheld: the access token had to be refreshed and the refresh failed.

    ``__cause__`` is the ``RefreshRejected`` / ``RefreshOutcomeUnknown`` (or the error of
    ``on_refresh``); the flow call itself was never sent.
    """


class ResponseLost(TransportError):
    """The request was sent but its answer was lost (timeout, disconnect): it MAY have run.

    The portal may still be executing it (``finished`` is False until the portal's
    execution limit has passed since ``sent_at``).
    """

    may_have_run = True
    finished = False


class OAuthError(B24Error):
    """A token refresh at the OAuth server failed."""


class RefreshRejected(OAuthError):
    """The OAuth server refused the refresh (invalid_grant, invalid_client, ...)."""


class RefreshOutcomeUnknown(OAuthError):
    """The refresh was sent but its answer was lost: the refresh token may be spent."""

    may_have_run = True


class TokenStoreError(OAuthError):
    """The token store could not be locked, read or written (a read-only directory, Redis
    away). ``refresh_token_spent`` tells whether a refresh token was spent on the way (then
    the new pair is lost unless ``on_refresh`` saved it)."""

    refresh_token_spent: bool = False


class BulkAborted(B24Error):
    """A bulk job ended by an exception that is not about one flow: a raising
    ``on_progress``, an internal error. Sending stopped first; ``report`` accounts for
    every flow (the unsent ones ``failed`` with ``Stopped``) and ``__cause__`` is the
    original exception."""

    def __init__(
        self, description: str = "", *, report: BulkReport[Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(description, **kwargs)
        self.report: BulkReport[Any] | None = report


_BY_CODE: dict[str, type[PortalError]] = {
    "QUERY_LIMIT_EXCEEDED": QueryLimitExceeded,
    "OPERATION_TIME_LIMIT": OperationTimeLimit,
    "ERROR_METHOD_NOT_FOUND": MethodNotFound,
    "expired_token": TokenExpired,
    "invalid_token": InvalidToken,
    "NO_AUTH_FOUND": InvalidCredentials,
    "INVALID_CREDENTIALS": InvalidCredentials,
    "INVALID_REQUEST": InvalidCredentials,
    "insufficient_scope": InsufficientScope,
    "ACCESS_DENIED": AccessDenied,
    "user_access_error": AccessDenied,
    "authorization_error": AccessDenied,
    "APPLICATION_NOT_FOUND": AccessDenied,
    "CONNECTION_ERROR": AccessDenied,
    "OVERLOAD_LIMIT": AccessDenied,
    "PORTAL_DELETED": AccessDenied,
    "METHOD_CONFIRM_WAITING": AccessDenied,
    "METHOD_CONFIRM_DENIED": AccessDenied,
    "0": FlowError,
    "100": InvalidArgument,
    "ERROR_BATCH_LENGTH_EXCEEDED": BatchCommandError,
    "ERROR_BATCH_METHOD_NOT_ALLOWED": BatchCommandError,
    "INTERNAL_SERVER_ERROR": ServerError,
    "ERROR_UNEXPECTED_ANSWER": ServerError,
}

_BY_STATUS: dict[int, type[PortalError]] = {
    401: AuthError,
    403: AccessDenied,
    404: MethodNotFound,
    429: OperationTimeLimit,
}


def error_from_envelope(
    body: Any,
    *,
    status: int | None,
    method: str | None,
    key: str | None = None,
) -> PortalError:
    """Build the typed error for an ``{"error", "error_description"}`` body.

    The code decides first; the HTTP status only when the code is unknown. A 5xx with an
    unknown code is a ``ServerError`` (it may have run); other unknown codes are plain
    ``PortalError`` (the portal answered with a refusal).
    """
    raw = body.get("error") if isinstance(body, dict) else None
    code = "" if raw is None else str(raw)
    description = body.get("error_description") if isinstance(body, dict) else None
    text = "" if description is None else str(description)
    cls = _BY_CODE.get(code)
    if cls is None:
        if status is not None and status >= 500:
            cls = ServerError
        else:
            cls = _BY_STATUS.get(status or 0, PortalError)
    return cls(text, code=code, status=status, method=method, key=key)


#: Not sent, and not worth sending again: the caller ruled it out (stopped, closed), no
#: valid token, or a host that is unreachable the same way next time.
NEVER_RETRIED: tuple[type[B24Error], ...] = (
    Stopped,
    ClientClosed,
    RefreshFailed,
    Unreachable,
    JournalError,
)


def is_withheld(error: BaseException) -> bool:
    """A request that waited and was not sent, for a reason the next one would meet too
    (``NEVER_RETRIED``, or a shared limiter still away after its retries): it ends a job."""
    return isinstance(error, (*NEVER_RETRIED, LimiterUnavailable))


def is_systemic(error: BaseException, *, every_command: bool = False) -> bool:
    """Will this error be the same for every flow? Then a bulk job ends at once.

    Credentials, scope, an unknown method, an unreachable host, a failed token refresh,
    a closed client. Errors of one flow (no access to it, not found) and pacing refusals
    (503, 429) are not systemic. An auth or unknown-method error of one command of a
    batch is systemic only when ``every_command`` of that batch carried it.
    """
    if isinstance(error, (Unreachable, ClientClosed, RefreshFailed, OAuthError)):
        return True
    if isinstance(error, Stopped):
        return False
    if isinstance(error, (AuthError, MethodNotFound)):
        # A whole-request refusal, or the same refusal for every command of a batch.
        return error.key is None or every_command
    return False
