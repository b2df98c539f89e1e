"""Credentials: the ``--webhook`` URL, the ``--oauth`` token file and where tokens live."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .._argtypes import OneLineParser
from .._redact import redact
from .._store import FileTokenStore, RedisTokenStore, StoredTokens, TokenLease, TokenStore
from .._tokens import OAuthTokens
from ._errors import UsageError, error_text

__all__ = [
    "WEBHOOK_SHAPE",
    "TokenFile",
    "add_credential_options",
    "token_store",
    "webhook_base",
    "with_redis",
]

T = TypeVar("T")


def add_credential_options(parser: OneLineParser) -> None:
    auth = parser.add_argument_group("credentials")
    auth.add_argument(
        "--webhook", metavar="URL", help="inbound webhook URL (default: $B24_WEBHOOK_URL)"
    )
    auth.add_argument(
        "--oauth",
        metavar="FILE",
        help="JSON file with endpoint, client_id, client_secret, access_token, "
        "refresh_token; rewritten atomically after each refresh, locked so that "
        "processes sharing it refresh once",
    )
    auth.add_argument(
        "--oauth-redis",
        metavar="URL",
        help="keep the tokens in Redis instead (shared by workers on many hosts); "
        "--oauth FILE still gives the endpoint and client credentials",
    )
    auth.add_argument(
        "--oauth-key",
        metavar="KEY",
        default="aiob24flow:tokens",
        help="the Redis hash for --oauth-redis (one per portal, e.g. its member_id)",
    )


WEBHOOK_SHAPE = "https://PORTAL/rest/USER_ID/WEBHOOK_CODE/"
_DIGITS = re.compile(r"[0-9]+")


def webhook_base(url: str, source: str) -> tuple[str, str | None]:
    """The webhook ``url`` (from ``source``: --webhook or $B24_WEBHOOK_URL) up to its
    code, and what was trimmed after it, if anything: a URL copied from the portal's
    webhook page often ends in a method name (``.../tasks.flow.Flow.activate.json``).
    The code is never put in a message."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: one line, not a traceback
        raise UsageError(f"{source} is not a URL: expected {WEBHOOK_SHAPE}") from None
    segments = parts.path.split("/")
    rest = len(segments) - 1 - segments[::-1].index("rest") if "rest" in segments else -1
    after = [s for s in segments[rest + 1 :] if s] if rest >= 0 else []
    if rest < 0 or len(after) not in (2, 3) or not _DIGITS.fullmatch(after[0]):
        raise UsageError(
            f"{source} is not a webhook URL: expected {WEBHOOK_SHAPE} (the portal's "
            "address, /rest/, your user id, the webhook code)"
        )
    dropped = [f"the method name {after[2]!r}"] if len(after) == 3 else []
    if parts.query or parts.fragment:
        dropped.append("the query" if parts.query else "the fragment")
    if not dropped:
        return url, None
    base = "/".join([*segments[: rest + 1], *after[:2]]) + "/"
    origin = f"{parts.scheme}://{parts.netloc}"
    shown = redact(f"{origin}{base}")
    return origin + base, f"{source} ended in {' and '.join(dropped)}: using {shown}"


class TokenFile(FileTokenStore):
    """The ``--oauth`` file: a ``FileTokenStore`` that also gives the endpoint and client
    credentials kept beside the tokens, and remembers a failed rewrite for the report.

    ``check_writable`` runs before the first request, so a refresh never spends the
    refresh token and then fails to keep its successor.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.save_error: BaseException | None = None
        try:
            data = self.load()
            if not data and not os.path.exists(self.target):  # load() reads "none" as {}
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read OAuth token file {path}: {error_text(exc)}") from None
        for key in ("endpoint", "access_token", "refresh_token"):
            if not isinstance(data.get(key), str):
                raise UsageError(f"OAuth token file {path} lacks {key!r}")
        self.data: dict[str, Any] = data

    def check_writable(self) -> None:
        """Before the first request: the file can be locked and rewritten."""
        try:
            import fcntl  # noqa: F401 - FileTokenStore's lock; absent on Windows
        except ImportError:
            raise UsageError(
                "--oauth FILE keeps the tokens with POSIX file locks, which this system "
                "lacks: add --oauth-redis URL to keep them in Redis (FILE is then only read)"
            ) from None
        target = self.target
        directory = os.path.dirname(target)
        if not os.access(target, os.W_OK) or not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(
                f"OAuth token file {self.path} cannot be rewritten (its directory "
                f"{directory} must be writable): a refresh would lose the new tokens"
            )

    def tokens(self) -> OAuthTokens:
        try:
            return OAuthTokens.from_json(self.data)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"OAuth token file {self.path}: {error_text(exc)}") from None

    def save_failure(self, *, spent: bool) -> str:
        """The stderr line after a failed rewrite; ``spent``: a refresh went out."""
        tail = (
            "The old refresh token is spent: authorize the application again."
            if spent
            else "The refresh token was not used: fix the file and run again."
        )
        error = error_text(self.save_error) if self.save_error is not None else "unknown error"
        return (
            f"aiob24flow: error: the OAuth token file {self.path} could not be rewritten "
            f"({error}); sending stopped. {tail}"
        )


class _SaveRecorder:
    """The token file as the client uses it: every write that fails is remembered in
    ``file.save_error``, so the report can say the tokens were not saved."""

    def __init__(self, file: TokenFile) -> None:
        self._file = file

    async def read(self) -> StoredTokens:
        return await self._file.read()

    async def seed(self, tokens: OAuthTokens) -> bool:
        return await _recorded(self._file, self._file.seed(tokens))

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[TokenLease]:
        async with self._file.lock() as lease:
            yield _RecordingLease(lease, self._file)


class _RecordingLease:
    def __init__(self, lease: TokenLease, file: TokenFile) -> None:
        self._lease = lease
        self._file = file

    async def read(self) -> StoredTokens:
        return await self._lease.read()

    async def mark_spending(self, refresh_token: str) -> None:
        await _recorded(self._file, self._lease.mark_spending(refresh_token))

    async def clear_spending(self) -> None:
        await _recorded(self._file, self._lease.clear_spending())

    async def write(self, tokens: OAuthTokens) -> None:
        await _recorded(self._file, self._lease.write(tokens))


async def _recorded(file: TokenFile, step: Awaitable[T]) -> T:
    try:
        return await step
    except Exception as exc:  # not a cancellation: that is no failed save
        file.save_error = exc
        raise


def with_redis(option: str, make: Callable[[], T]) -> T:
    """Build what ``option`` names; a missing package or a bad URL is a usage error."""
    try:
        return make()
    except ImportError:
        raise UsageError(
            f"{option} needs the redis package: pip install 'aiob24flow[redis]'"
        ) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad {option} URL: {error_text(exc)}") from None


def token_store(args: argparse.Namespace, file: TokenFile) -> TokenStore:
    """``--oauth FILE``: the file itself, locked across processes on this machine;
    with ``--oauth-redis URL``: a Redis hash under ``--oauth-key`` (seeded from FILE)."""
    if not args.oauth_redis:
        return _SaveRecorder(file)
    return with_redis("--oauth-redis", lambda: RedisTokenStore(args.oauth_redis, args.oauth_key))
