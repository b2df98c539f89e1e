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

from types import TracebackType

from aiohttp import web

from ._app import Portal, resolve
from ._state import Faults, Flow, PortalConfig, PortalState, User

__all__ = [
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
    """Serve a ``Portal`` on ``host:port`` (port 0 picks a free one) while in use."""

    def __init__(self, portal: Portal | None = None, host: str = "127.0.0.1", port: int = 0):
        self.portal = portal or Portal()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> PortalState:
        return self.portal.state

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def webhook_url(self, user_id: int = 1) -> str:
        return f"{self.base_url}/rest/{user_id}/{self.portal.state.webhooks[user_id]}/"

    @property
    def oauth_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token/"

    async def start(self) -> EmulatorServer:
        self._runner = web.AppRunner(self.portal.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmulatorServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
