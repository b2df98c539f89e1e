"""aiob24flow: an asyncio client for Bitrix24 ``tasks.flow.Flow.activate`` and ``.pin``.

Every call lands exactly once, as fast as the portal's limits allow, and the caller always
knows what happened to each flow. See README.md.
"""

from ._auth import DEFAULT_TOKEN_URL, OAuthTokens
from ._batch import BatchResult
from ._bulk import BulkReport, Progress
from ._client import FlowClient
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
    TransportError,
    Unreachable,
)
from ._limiter import LeakyBucket, RateLimit
from ._redis import LimiterUnavailable, RedisLimiter
from ._retry import RetryPolicy
from ._stats import Stats
from ._transport import Timeout

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TOKEN_URL",
    "AccessDenied",
    "AuthError",
    "B24Error",
    "BatchCommandError",
    "BatchResult",
    "BulkAborted",
    "BulkReport",
    "ClientClosed",
    "FlowClient",
    "FlowError",
    "InsufficientScope",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidToken",
    "LeakyBucket",
    "LimiterUnavailable",
    "MethodNotFound",
    "OAuthError",
    "OAuthTokens",
    "OperationTimeLimit",
    "PortalError",
    "Progress",
    "QueryLimitExceeded",
    "RateLimit",
    "RedisLimiter",
    "RefreshFailed",
    "RefreshOutcomeUnknown",
    "RefreshRejected",
    "RequestNotSent",
    "ResponseLost",
    "RetryPolicy",
    "ServerError",
    "Stats",
    "Stopped",
    "Timeout",
    "TokenExpired",
    "TransportError",
    "Unreachable",
    "__version__",
]
