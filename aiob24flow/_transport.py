"""One HTTP POST, and the line between "never sent" and "outcome unknown".

The transport knows nothing of Bitrix24 envelopes: it sends bytes and returns the status
and bytes of the answer. Its only job beyond that is to say, when there is no answer,
whether the request may have reached the portal, because both flow methods are toggles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import aiohttp
import attrs
import yarl

from ._errors import RequestNotSent, ResponseLost
from ._redact import redact

__all__ = ["AiohttpTransport", "RawResponse", "Timeout", "Transport"]


@attrs.frozen
class Timeout:
    """Per-request timeouts in seconds.

    ``connect`` bounds connection set-up (a connect timeout means the request never left);
    ``read`` bounds the wait for the answer after sending (a read timeout means the call
    may have run). The portal stops a request after 60 s, so the default read timeout of
    75 s means that a timed-out call has finished (or died) by the time it is read back.
    ``settle`` is how long bulk work waits before reading back flows whose connection was
    lost, so a call the portal may still be running has finished first.
    """

    connect: float = 10.0
    read: float = 75.0
    settle: float = 1.0

    def __attrs_post_init__(self) -> None:
        for name in ("connect", "read", "settle"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Timeout.{name} must be a number >= 0, got {value!r}")
        if self.connect == 0 or self.read == 0:
            raise ValueError("Timeout.connect and Timeout.read must be positive")


@attrs.frozen
class RawResponse:
    status: int
    body: bytes


class Transport(Protocol):
    """Anything that can POST bytes and tell "not sent" from "answer lost"."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> RawResponse:
        """Send one request. Raise ``RequestNotSent`` or ``ResponseLost`` on failure."""
        ...


class AiohttpTransport:
    """The default transport: one ``aiohttp.ClientSession``, owned or borrowed."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None
        # Parsed once: a bulk job posts to the same few URLs with the same timeouts.
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the aiohttp session passed to the client is closed")
            # Keep-alive connections, no per-host cap below the limiter's pace.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            # The portal sets no cookie we need: skip the per-response cookie work.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> RawResponse:
        session = self._get_session()
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=None,
                sock_connect=timeout.connect,
                connect=timeout.connect,
                sock_read=timeout.read,
            )
        target = self._urls.get(url)
        if target is None:
            target = yarl.URL(url)
            if len(self._urls) < 256:
                self._urls[url] = target
        try:
            async with session.post(
                target,
                data=body,
                headers=dict(headers),
                timeout=client_timeout,
                allow_redirects=False,
            ) as response:
                data = await response.read()
                return RawResponse(response.status, data)
        except aiohttp.ConnectionTimeoutError as exc:
            raise RequestNotSent(f"connect timeout: {redact(str(exc))}") from None
        except aiohttp.ClientConnectorError as exc:
            raise RequestNotSent(f"cannot connect: {type(exc).__name__}") from None
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Sent, or partly sent: the portal may have run the call.
            raise ResponseLost(f"answer lost: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
