"""A Bitrix24 cloud portal emulator for tests, demos and benchmarks.

``Portal`` holds the state and builds the ``aiohttp.web`` app; ``EmulatorServer`` serves
it on loopback::

    async with EmulatorServer(Portal(PortalConfig(flows=500))) as server:
        client = FlowClient.from_webhook(server.webhook_url(), rate_limit=...)
        ...
        assert server.portal.state.activations[517] == 1

Run it alone with ``python -m aiob24flow.emulator --port 8080 --flows 1000``.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from types import TracebackType

from aiohttp import web

from ._app import ROUTES_KEY, Portal, resolve
from ._state import Faults, Flow, PortalConfig, PortalState, User

__all__ = [
    "EmulatorFarm",
    "EmulatorServer",
    "Faults",
    "Flow",
    "Portal",
    "PortalConfig",
    "PortalState",
    "User",
    "resolve",
]


class EmulatorServer:
    """Serve a ``Portal`` on ``host:port`` (port 0 picks a free one) while in use.

    With ``tls=True`` it serves HTTPS with a throwaway CA and certificate made at start
    (``trustme``, the ``tls`` extra): ``ca_pem`` / ``ca_path`` let clients trust it, and a
    plain-HTTP port (``plain_url``) answers like a real portal does over HTTP. With
    ``https_required`` (default: on when ``tls`` is) a webhook call over plain HTTP gets
    401 ``INVALID_REQUEST`` "Https required." (protocol.md §1.1, §6).
    """

    def __init__(
        self,
        portal: Portal | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool = False,
        https_required: bool | None = None,
        plain_port: int = 0,
    ):
        self.portal = portal or Portal()
        self.host = host
        self.port = port
        self.tls = tls
        self.plain_port = plain_port if tls else port
        self.portal.https_required = tls if https_required is None else https_required
        self.ca_pem: bytes | None = None
        self.ca_path: str | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> PortalState:
        return self.portal.state

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{_host(self.host)}:{self.port}"

    @property
    def plain_url(self) -> str:
        """The plain-HTTP address (the same as ``base_url`` without TLS)."""
        return f"http://{_host(self.host)}:{self.plain_port}"

    def webhook_url(self, user_id: int = 1) -> str:
        return f"{self.base_url}/rest/{user_id}/{self.portal.state.webhooks[user_id]}/"

    @property
    def oauth_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token/"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's throwaway CA."""
        if self.ca_pem is None:
            raise RuntimeError("the server is not serving TLS")
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def _server_context(self) -> ssl.SSLContext:
        try:
            import trustme
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "EmulatorServer(tls=True) needs trustme: pip install 'aiob24flow[tls]'"
            ) from exc
        ca = trustme.CA()
        names = sorted({self.host, "127.0.0.1", "localhost", "::1"})
        cert = ca.issue_cert(*names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.ca_pem = ca.cert_pem.bytes()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="aiob24flow-emulator-")
        self.ca_path = os.path.join(self._tmpdir.name, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        return context

    async def start(self) -> EmulatorServer:
        self._runner = web.AppRunner(self.portal.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        context = self._server_context() if self.tls else None
        self.port = await _listen(self._runner, self.host, self.port, context)
        if self.tls:
            self.plain_port = await _listen(self._runner, self.host, self.plain_port, None)
        else:
            self.plain_port = self.port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    async def __aenter__(self) -> EmulatorServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _listen(
    runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext | None
) -> int:
    site = web.TCPSite(runner, host, port, backlog=1024, ssl_context=context)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else port


class EmulatorFarm:
    """Many portals in one server process: one portal per loopback address, one port.

    ``EmulatorFarm({"127.0.1.1": Portal(...), "127.0.1.2": Portal(...)})`` listens on each
    address (all on one port) and routes a request by the address it arrived on, so each
    portal has its own host, bucket and counters, as separate portals do.
    """

    def __init__(self, portals: dict[str, Portal], port: int = 0) -> None:
        if not portals:
            raise ValueError("portals must not be empty")
        for address in portals:
            if not address.startswith("127."):
                raise ValueError(f"{address}: a farm listens on loopback addresses only")
        self.portals = portals
        self.port = port
        self._runner: web.AppRunner | None = None

    def webhook_url(self, address: str, user_id: int = 1) -> str:
        code = self.portals[address].state.webhooks[user_id]
        return f"http://{address}:{self.port}/rest/{user_id}/{code}/"

    async def start(self) -> EmulatorFarm:
        first = next(iter(self.portals.values()))
        app = first.app()
        app[ROUTES_KEY] = dict(self.portals)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for address in self.portals:
            self.port = await _listen(self._runner, address, self.port, None)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmulatorFarm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
