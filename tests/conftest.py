from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow.emulator import EmulatorServer, Faults, Portal, PortalConfig

UNLIMITED = {"leak": None}

# Set by the ``both_schemes`` fixture: serve over TLS, and let clients that pass no ssl=
# trust the emulator's throwaway CA (the client is real; only its CA default is swapped).
_TLS: dict[str, Any] = {"on": False, "context": None}


@asynccontextmanager
async def serve(**config: Any) -> AsyncIterator[EmulatorServer]:
    config.setdefault("leak", None)
    tls = bool(config.pop("tls", _TLS["on"]))
    async with EmulatorServer(Portal(PortalConfig(**config)), tls=tls) as server:
        previous = _TLS["context"]
        if tls:
            _TLS["context"] = server.ssl_context()
        try:
            yield server
        finally:
            _TLS["context"] = previous


@pytest.fixture(params=["http", "https"])
def both_schemes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test against the plain and the TLS emulator (``pytestmark`` in a module)."""
    if request.param == "https":
        pytest.importorskip("trustme")
        from aiob24flow import _client

        choose = _client.ssl_option

        def trusting(value: object, origin: str) -> Any:
            if value is None and _TLS["context"] is not None and origin.startswith("https"):
                return _TLS["context"]
            return choose(value, origin)

        monkeypatch.setitem(_TLS, "on", True)
        monkeypatch.setattr(_client, "ssl_option", trusting)
    return str(request.param)


@pytest.fixture
def emulator() -> Callable[..., Any]:
    """``async with emulator(flows=10, faults=Faults(...)) as server:``"""
    return serve


class FakeClock:
    """A clock and sleep pair: sleeping advances nothing by itself, it records."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def tokens_of(body: dict[str, Any], *, expires_at: float | None = None) -> b24.OAuthTokens:
    return b24.OAuthTokens(body["access_token"], body["refresh_token"], expires_at=expires_at)


def due_tokens(server: EmulatorServer) -> tuple[dict[str, Any], b24.OAuthTokens]:
    """A freshly issued pair the client will refresh before its first call."""
    issued = server.state.issue_tokens()
    return issued, tokens_of(issued, expires_at=1.0)


def oauth_client(
    server: EmulatorServer, tokens: b24.OAuthTokens | None, **kwargs: Any
) -> b24.FlowClient:
    """A client of the emulator's OAuth app (no pacing, no real sleeps unless given)."""
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    kwargs.setdefault("client_id", server.portal.config.client_id)
    kwargs.setdefault("client_secret", server.portal.config.client_secret)
    return b24.FlowClient.from_oauth(
        server.oauth_endpoint, tokens, token_url=server.token_url, **kwargs
    )


#: The installed ``aiob24flow`` console script (modules that run it skip without it).
CLI_SCRIPT = Path(sys.executable).parent / "aiob24flow"


async def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    interrupt_when: Callable[[], bool] | None = None,
    wrap: Sequence[str] = (),
) -> tuple[int, str, str]:
    """Run the console script (under the ``wrap`` command, if any); return (exit code,
    stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if k != "B24_WEBHOOK_URL"}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *wrap,
        str(CLI_SCRIPT),
        *args,
        env=full_env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if interrupt_when is not None:
        # Interrupt only once the job is under way (its SIGINT handler is installed by then).
        deadline = time.monotonic() + 30
        while not interrupt_when() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), timeout=60
    )
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_token_file(server: EmulatorServer, path: Path, tokens: Mapping[str, Any]) -> None:
    """The CLI's ``--oauth`` file for the emulator's app, holding ``tokens``."""
    path.write_text(
        json.dumps(
            {
                "endpoint": server.oauth_endpoint,
                "token_url": server.token_url,
                "client_id": server.portal.config.client_id,
                "client_secret": server.portal.config.client_secret,
                **tokens,
            }
        )
    )


async def no_sleep(seconds: float) -> None:
    """For tests: retries and limiter waits take no real time."""


def free_port() -> int:
    """A loopback port nothing listens on (for a while): an unreachable server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(*options: str) -> Iterator[str]:
    """A real redis-server on a free loopback port, without persistence unless
    ``options`` say otherwise (they come last: e.g. ``--appendonly yes --dir D``); its URL.
    Skips (fails in CI) where redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One redis-server for the whole session (tests keep apart by key prefix)."""
    with redis_server() as url:
        yield url


def unique_prefix() -> str:
    """A key prefix no other test uses (tests share one redis-server)."""
    return f"test{time.monotonic_ns()}"


__all__ = [
    "CLI_SCRIPT",
    "FakeClock",
    "Faults",
    "due_tokens",
    "free_port",
    "no_sleep",
    "oauth_client",
    "redis_server",
    "run_cli",
    "serve",
    "tokens_of",
    "unique_prefix",
    "write_token_file",
]
