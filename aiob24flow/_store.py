"""OAuth tokens shared by many workers: a store, a refresh lock, and a spending record.

Bitrix24 refresh tokens are single-use, so processes that share a portal's tokens must
refresh once between them. A ``TokenStore`` holds the current pair, a lock for the refresh,
and a *spending record*: before a holder sends a refresh token it writes which token it is
spending. The client's refresh (``_auth.OAuthAuth``) is then:

1. take the store's lock, read the pair;
2. if another process has already replaced the token, adopt the new pair (no refresh);
3. if a spending record names the current refresh token, its holder died (or lost its
   lock) after sending it: that token may be spent, so never send it again; raise
   ``RefreshOutcomeUnknown`` (the application must authorize again);
4. otherwise record the spending, refresh, write the new pair (which clears the record)
   and only then release the lock.

Writes are *fenced*: ``RedisTokenStore`` writes only while its lock token is still the one
in Redis (a compare in Lua), so a holder paused past its lock's TTL cannot overwrite the
pair written by the next holder. ``FileTokenStore`` locks with ``fcntl.flock``, which the
kernel releases when a process dies and which cannot expire under a living one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import tempfile
import time as _time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._redact import redact
from ._redis import import_redis
from ._tokens import LockLost, OAuthTokens, StoredTokens, TokenLease, TokenStore

__all__ = [
    "FileTokenStore",
    "LockLost",
    "RedisTokenStore",
    "StoredTokens",
    "TokenLease",
    "TokenStore",
]

logger = logging.getLogger("aiob24flow")

_TOKEN_FIELDS = ("access_token", "refresh_token", "expires_at", "member_id",
                 "client_endpoint", "scope")  # fmt: skip


def _tokens_to_fields(tokens: OAuthTokens) -> dict[str, str]:
    data = tokens.to_json()
    return {k: json.dumps(data.get(k)) for k in _TOKEN_FIELDS}


def _tokens_from_fields(fields: dict[str, Any]) -> OAuthTokens | None:
    if not fields.get("access_token") or not fields.get("refresh_token"):
        return None
    data = {k: json.loads(fields[k]) for k in _TOKEN_FIELDS if fields.get(k) is not None}
    return OAuthTokens.from_json(data)


# -- Redis ------------------------------------------------------------------------------------

# KEYS[1] the pair's hash, KEYS[2] the lock; ARGV[1] the lock token, then field/value pairs.
_WRITE_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'spending')
return 1
"""
_SPEND_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'spending')
else redis.call('HSET', KEYS[1], 'spending', ARGV[2]) end
return 1
"""
# KEYS[1] the pair's hash; ARGV field/value pairs. Only an empty store is seeded.
_SEED_LUA = """
if redis.call('HEXISTS', KEYS[1], 'refresh_token') == 1 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTokenStore:
    """One portal's tokens in one Redis hash (``aiob24flow[redis]``).

    ``key`` names the hash (one per portal, e.g. its ``member_id``); the refresh lock is
    ``key + ":lock"``: ``SET NX PX lock_ttl`` with a random token, released by a Lua
    compare-and-delete. Every write is fenced by the same compare.

    ``url_or_client`` is a Redis URL (the store opens a pool and ``aclose()`` closes it)
    or a ``redis.asyncio.Redis`` made with ``decode_responses=True`` (left open).
    """

    def __init__(
        self,
        url_or_client: Any = "redis://127.0.0.1:6379/0",
        key: str = "aiob24flow:tokens",
        *,
        lock_ttl: float = 30.0,
        poll: float = 0.05,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty str")
        if not isinstance(lock_ttl, (int, float)) or isinstance(lock_ttl, bool) or lock_ttl <= 0:
            raise ValueError("lock_ttl must be a positive number of seconds")
        if isinstance(url_or_client, str):

            self._redis = import_redis().from_url(url_or_client, decode_responses=True)
            self._owns = True
            self._url = redact(url_or_client)
        else:
            self._redis = url_or_client
            self._owns = False
            self._url = "<client>"
        self.key = key
        self.lock_key = f"{key}:lock"
        self.lock_ttl = float(lock_ttl)
        self._poll = poll
        self._checked = False

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._url}, key={self.key!r})"

    async def _check_persistence(self) -> None:
        """Warn once when Redis says it keeps no append-only file: a restart then brings
        back an RDB snapshot (minutes old) or nothing, and a pair refreshed since is lost
        with the portal's access, unless ``on_refresh`` saved it elsewhere."""
        self._checked = True
        try:
            answer = await self._redis.config_get("appendonly")
        except Exception:  # CONFIG is often disabled on managed Redis: nothing to say
            return
        value = answer.get("appendonly") if isinstance(answer, dict) else None
        if value == "no":
            logger.warning(
                "RedisTokenStore at %s: Redis runs with appendonly no, so a restart can "
                "lose the refreshed tokens (and the portal's access with them); run Redis "
                "with appendonly yes, or save each pair with on_refresh as well",
                self._url,
            )

    async def read(self) -> StoredTokens:
        if not self._checked:
            await self._check_persistence()
        fields = await self._redis.hgetall(self.key)
        return StoredTokens(_tokens_from_fields(fields), fields.get("spending") or None)

    async def seed(self, tokens: OAuthTokens) -> bool:
        # One script: a reader never sees the refresh token without the access token
        # (two commands, HSETNX then HSET, let a second worker read a half-seeded hash
        # as empty).
        args = [item for pair in _tokens_to_fields(tokens).items() for item in pair]
        return bool(await self._redis.eval(_SEED_LUA, 1, self.key, *args))

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[_RedisLease]:
        token = secrets.token_hex(16)
        ttl_ms = max(1, int(self.lock_ttl * 1000))
        delay = self._poll
        while not await self._redis.set(self.lock_key, token, nx=True, px=ttl_ms):
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        try:
            yield _RedisLease(self, self._redis, token)
        finally:
            with contextlib.suppress(Exception):
                await self._redis.eval(_RELEASE_LUA, 1, self.lock_key, token)

    async def aclose(self) -> None:
        """Close the connection pool this store opened."""
        if self._owns:
            await self._redis.aclose()


class _RedisLease:
    """The lock of a ``RedisTokenStore``, held: every write fenced by the lock token."""

    def __init__(self, store: RedisTokenStore, redis: Any, token: str) -> None:
        self._store = store
        self._redis = redis
        self.token = token

    async def read(self) -> StoredTokens:
        return await self._store.read()

    async def _fenced(self, script: str, *args: str) -> None:
        store = self._store
        if not await self._redis.eval(script, 2, store.key, store.lock_key, self.token, *args):
            raise LockLost("the refresh lock expired before the write")

    async def mark_spending(self, refresh_token: str) -> None:
        await self._fenced(_SPEND_LUA, refresh_token)

    async def clear_spending(self) -> None:
        await self._fenced(_SPEND_LUA, "")

    async def write(self, tokens: OAuthTokens) -> None:
        flat: list[str] = []
        for name, value in _tokens_to_fields(tokens).items():
            flat += [name, value]
        await self._fenced(_WRITE_LUA, *flat)


# -- a file -----------------------------------------------------------------------------------


class FileTokenStore:
    """The tokens in a JSON file (the CLI's ``--oauth`` file), for workers on one machine.

    Rewritten atomically (a temporary file, ``fsync``, ``os.replace``) with mode 0600; a
    symlink is followed and its target rewritten. Other keys in the file (``endpoint``,
    ``client_id`` ...) are kept. The refresh lock is ``fcntl.flock`` on ``FILE.lock`` beside
    the target: one refresh across every process on the machine.

    POSIX only: Windows has no ``flock``, and its ``os.replace`` fails while another
    process has the file open (a worker reading the tokens), so the rewrite would not be
    safe to share there either. On Windows use ``RedisTokenStore``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"FileTokenStore({self.path!r})"

    @property
    def target(self) -> str:
        return os.path.realpath(self.path)

    def load(self) -> dict[str, Any]:
        """The file's whole JSON object: the tokens and whatever else is kept beside them
        (the CLI's ``endpoint``, ``client_id`` ...); ``{}`` when there is no file yet."""
        return self._load()

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.target, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"{self.path} must hold a JSON object")
        return data

    def _dump(self, data: dict[str, Any]) -> None:
        target = self.target
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)  # atomic: readers see the old or the new file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _stored(self) -> StoredTokens:
        data = self._load()
        tokens = None
        if isinstance(data.get("access_token"), str) and isinstance(data.get("refresh_token"), str):
            tokens = OAuthTokens.from_json(data)
        spending = data.get("spending_refresh_token")
        return StoredTokens(tokens, spending if isinstance(spending, str) else None)

    async def read(self) -> StoredTokens:
        return self._stored()

    async def seed(self, tokens: OAuthTokens) -> bool:
        async with self._flock():
            data = self._load()
            if data.get("refresh_token"):
                return False
            data.update(tokens.to_json())
            self._dump(data)
            return True

    @contextlib.asynccontextmanager
    async def _flock(self) -> AsyncIterator[None]:
        try:
            import fcntl
        except ImportError:  # Windows: see the class docstring
            raise NotImplementedError(
                "FileTokenStore needs POSIX file locks (fcntl.flock); on Windows use "
                "RedisTokenStore"
            ) from None

        fd = os.open(self.target + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Wait in a thread: a blocking flock must not stall the event loop.
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[_FileLease]:
        async with self._flock():
            yield _FileLease(self._stored, self._load, self._dump)


class _FileLease:
    """The lock of a ``FileTokenStore``, held (the flock is the fence)."""

    def __init__(
        self,
        stored: Callable[[], StoredTokens],
        load: Callable[[], dict[str, Any]],
        dump: Callable[[dict[str, Any]], None],
    ) -> None:
        self._stored = stored
        self._load = load
        self._dump = dump

    async def read(self) -> StoredTokens:
        return self._stored()

    async def mark_spending(self, refresh_token: str) -> None:
        data = self._load()
        data["spending_refresh_token"] = refresh_token
        data["spending_since"] = _time.time()
        self._dump(data)

    async def clear_spending(self) -> None:
        data = self._load()
        data.pop("spending_refresh_token", None)
        data.pop("spending_since", None)
        self._dump(data)

    async def write(self, tokens: OAuthTokens) -> None:
        data = self._load()
        data.update(tokens.to_json())
        data.pop("spending_refresh_token", None)
        data.pop("spending_since", None)
        self._dump(data)
