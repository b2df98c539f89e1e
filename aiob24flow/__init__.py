"""aiob24flow: an asyncio client for Bitrix24 ``tasks.flow.Flow.activate`` and ``.pin``.

Every call lands exactly once, as fast as the portal's limits allow, and the caller always
knows what happened to each flow. Start with ``FlowClient.from_webhook`` or
``FlowClient.from_oauth``; bulk operations return a ``BulkReport``.

Errors. Every exception the library raises about a call is a ``B24Error`` with ``.code``,
``.description``, ``.status``, ``.method``, ``.key`` and ``.may_have_run``::

    B24Error
    ├── PortalError                  the portal answered with an error envelope
    │   ├── QueryLimitExceeded       503: refused by the rate limit (retried)
    │   ├── OperationTimeLimit       429: method blocked for a while (.reset_at; retried)
    │   ├── MethodNotFound           404 (also a flow method sent with the wrong case)
    │   ├── AuthError                401/403 before the method ran
    │   │   ├── TokenExpired         refreshed and re-sent by the client
    │   │   ├── InvalidToken
    │   │   ├── InvalidCredentials   bad webhook user or code
    │   │   ├── InsufficientScope
    │   │   └── AccessDenied
    │   ├── FlowError                the flow controller refused (no access, not found)
    │   │   └── InvalidArgument
    │   ├── BatchCommandError        a batch command the portal did not run
    │   └── ServerError              5xx or an odd answer: MAY have run
    ├── TransportError
    │   ├── RequestNotSent           never left: safe to send again
    │   │   ├── Unreachable          DNS failure or connection refused
    │   │   ├── LimiterUnavailable   the shared (Redis) limiter is away
    │   │   ├── JournalError         the job's journal failed: nothing more is sent
    │   │   │   ├── JobMismatch      the job id names another job's spec
    │   │   │   └── JobBusy          another runner holds the job
    │   │   ├── Stopped              withheld: the job was stopped or ended (.__cause__)
    │   │   ├── ClientClosed         withheld: aclose() was called
    │   │   └── RefreshFailed        withheld: no valid token (.__cause__: the OAuthError)
    │   └── ResponseLost             sent, answer lost: MAY have run
    ├── OAuthError                   a token refresh failed (the cause of RefreshFailed)
    │   ├── RefreshRejected
    │   ├── RefreshOutcomeUnknown    MAY have spent the refresh token
    │   └── TokenStoreError          the token store could not be locked, read or written
    └── BulkAborted                  a bulk job ended by an exception (.report)

``may_have_run`` is True only for ``ServerError``, ``ResponseLost`` and
``RefreshOutcomeUnknown``: both flow methods are toggles, so such a call is never re-sent
blindly. Bad input raises ``TypeError`` / ``ValueError`` before anything is sent.
"""

from ._auth import DEFAULT_TOKEN_URL
from ._batch import BatchResult
from ._client import FlowClient
from ._config import ClientOptions
from ._errors import (
    AccessDenied,
    AuthError,
    B24Error,
    BatchCommandError,
    BulkAborted,
    ClientClosed,
    FlowError,
    InsufficientScope,
    InvalidArgument,
    InvalidCredentials,
    InvalidToken,
    JobBusy,
    JobMismatch,
    JournalError,
    LimiterUnavailable,
    MethodNotFound,
    OAuthError,
    OperationTimeLimit,
    PortalError,
    QueryLimitExceeded,
    RefreshFailed,
    RefreshOutcomeUnknown,
    RefreshRejected,
    RequestNotSent,
    ResponseLost,
    ServerError,
    Stopped,
    TokenExpired,
    TokenStoreError,
    TransportError,
    Unreachable,
)
from ._job import Progress, Stop
from ._journal import JobSpec, JobSummary, Journal
from ._journal_redis import RedisJournal
from ._journal_sqlite import SqliteJournal
from ._limiter import LeakyBucket, RateLimit
from ._redact import redact_url
from ._redis import RedisLimiter
from ._report import BulkReport
from ._retry import RetryPolicy
from ._stats import Stats
from ._store import FileTokenStore, RedisTokenStore
from ._timeout import Timeout
from ._tokens import LockLost, OAuthTokens, StoredTokens, TokenLease, TokenStore
from ._types import JSON
from ._version import __version__

__all__ = [
    "DEFAULT_TOKEN_URL",
    "JSON",
    "AccessDenied",
    "AuthError",
    "B24Error",
    "BatchCommandError",
    "BatchResult",
    "BulkAborted",
    "BulkReport",
    "ClientClosed",
    "ClientOptions",
    "FileTokenStore",
    "FlowClient",
    "FlowError",
    "InsufficientScope",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidToken",
    "JobBusy",
    "JobMismatch",
    "JobSpec",
    "JobSummary",
    "Journal",
    "JournalError",
    "LeakyBucket",
    "LimiterUnavailable",
    "LockLost",
    "MethodNotFound",
    "OAuthError",
    "OAuthTokens",
    "OperationTimeLimit",
    "PortalError",
    "Progress",
    "QueryLimitExceeded",
    "RateLimit",
    "RedisJournal",
    "RedisLimiter",
    "RedisTokenStore",
    "RefreshFailed",
    "RefreshOutcomeUnknown",
    "RefreshRejected",
    "RequestNotSent",
    "ResponseLost",
    "RetryPolicy",
    "ServerError",
    "SqliteJournal",
    "Stats",
    "Stop",
    "Stopped",
    "StoredTokens",
    "Timeout",
    "TokenExpired",
    "TokenLease",
    "TokenStore",
    "TokenStoreError",
    "TransportError",
    "Unreachable",
    "__version__",
    "redact_url",
]
