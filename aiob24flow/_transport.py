"""One HTTP POST, and the line between "never sent" and "outcome unknown".

The transport knows nothing of Bitrix24 envelopes: it sends bytes and returns the status
and bytes of the answer. Its only job beyond that is to say, when there is no answer,
whether the request may have reached the portal, because both flow methods are toggles.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import aiohttp
import attrs
import yarl

from ._errors import ClientClosed, RequestNotSent, ResponseLost, Unreachable
from ._redact import redact
from ._timeout import Timeout

__all__ = ["DEFAULT_MAX_RESPONSE", "AiohttpTransport", "RawResponse", "Timeout", "Transport"]


@attrs.frozen
class RawResponse:
    status: int
    body: bytes


@runtime_checkable
class Transport(Protocol):
    """Anything that can POST bytes and tell "not sent" from "answer lost"."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> RawResponse:
        """Send one request. Raise ``RequestNotSent`` or ``ResponseLost`` on failure."""
        ...

    async def aclose(self) -> None:
        """Release what the transport opened (the client calls it once, when closed)."""
        ...


DEFAULT_MAX_RESPONSE = 4 * 1024 * 1024


class AiohttpTransport:
    """The default transport: one ``aiohttp.ClientSession``, owned or borrowed.

    An owned session gets a connector capped at ``connections`` (the client's
    concurrency), so thousands of concurrent calls never open thousands of sockets.
    Answers larger than ``max_response`` bytes are abandoned (``ResponseLost``: the call
    may have run). After ``aclose()`` nothing is sent and no session is re-created.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        connections: int = 100,
        max_response: int = DEFAULT_MAX_RESPONSE,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> None:
        self._session = session
        self._extra: dict[str, object] = {}
        if proxy is not None:
            self._extra["proxy"] = proxy
        self._trust_env = trust_env
        self._owns_session = session is None
        self._connections = connections
        self._max_response = max_response
        self.closed = False
        # Parsed once: a bulk job posts to the same few URLs with the same timeouts.
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self.closed:
            raise ClientClosed("the client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections, limit_per_host=self._connections
            )
            # The portal sets no cookie we need: skip the per-response cookie work.
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=self._trust_env,  # HTTPS_PROXY / NO_PROXY / .netrc when asked
            )
        elif self._session.closed:
            raise ClientClosed("the aiohttp session used by the client is closed")
        return self._session

    def use_ssl(self, ssl: ssl_.SSLContext | bool | None) -> None:
        """The TLS option for every request (None: verify against the system's CAs)."""
        if ssl is None:
            self._extra.pop("ssl", None)
        else:
            self._extra["ssl"] = ssl

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> RawResponse:
        session = self._get_session()
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=timeout.deadline,
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
                headers=headers,
                timeout=client_timeout,
                allow_redirects=False,
                **self._extra,
            ) as response:
                cap = self._max_response
                length = response.content_length
                if length is not None and length > cap:
                    raise ResponseLost(f"answer too large: {length} bytes (cap {cap})")
                if length is not None:
                    data = await response.read()
                else:
                    data = await _read_capped(response, cap)
                return RawResponse(response.status, data)
        except ResponseLost:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise RequestNotSent(f"connect timeout: {redact(str(exc))}") from None
        except aiohttp.ClientConnectorError as exc:
            # Includes TLS handshake and certificate failures: nothing was written yet.
            if _unreachable(exc):
                raise Unreachable(f"cannot reach the portal: {_os_reason(exc)}") from None
            raise RequestNotSent(f"cannot connect: {type(exc).__name__}") from None
        except aiohttp.ClientHttpProxyError as exc:
            # The proxy refused the tunnel (403, 407, 502 ...): the portal never saw it.
            raise Unreachable(f"the proxy refused the connection: HTTP {exc.status}") from None
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Sent, or partly sent: the portal may have run the call.
            raise ResponseLost(f"answer lost: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        self.closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise ResponseLost(f"answer too large: over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _unreachable(exc: aiohttp.ClientConnectorError) -> bool:
    """A DNS failure, a refused connection or a failed TLS handshake (a certificate the
    client does not trust, a port that does not speak TLS): the same for every request."""
    dns = getattr(aiohttp, "ClientConnectorDNSError", None)  # aiohttp >= 3.11
    if dns is not None and isinstance(exc, dns):
        return True
    if isinstance(exc, aiohttp.ClientSSLError):
        return True
    # getattr: aiohttp 3.10.0's certificate error has an ``os_error`` property that raises.
    os_error = getattr(exc, "os_error", None)
    return isinstance(os_error, (socket.gaierror, ConnectionRefusedError, ssl_.SSLError))


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    os_error = getattr(exc, "os_error", None)  # see _unreachable
    if isinstance(os_error, socket.gaierror):
        return "host name not found"
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted ({exc.certificate_error.__class__.__name__})"
    if isinstance(os_error, ssl_.SSLError):
        # e.g. WRONG_VERSION_NUMBER: the port answered, but not in TLS (plain HTTP?).
        reason = (os_error.reason or type(os_error).__name__).replace("_", " ").lower()
        hint = " (does the port speak plain HTTP?)" if "wrong version" in reason else ""
        return f"TLS handshake failed: {reason}{hint}"
    return type(exc).__name__
