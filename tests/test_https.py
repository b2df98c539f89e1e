"""The HTTPS path end to end: the TLS emulator, the portal's HTTPS rule, custom CAs,
certificate failures and a real forward proxy (proxy.py) in between."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiob24flow as b24
from tests.conftest import due_tokens, no_sleep, oauth_client, serve

pytest.importorskip("trustme")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def forward_proxy() -> Iterator[str]:
    """A real HTTP forward proxy (proxy.py from PyPI) on loopback."""
    pytest.importorskip("proxy")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port),
            "--num-workers", "1", "--num-acceptors", "1", "--log-level", "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:  # pragma: no cover
            raise RuntimeError("proxy.py did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_webhook_over_tls_with_a_ca_bundle_path() -> None:
    async with serve(flows=100, tls=True) as server:
        assert server.base_url.startswith("https://") and server.ca_path
        async with b24.FlowClient.from_webhook(
            server.webhook_url(), ssl=server.ca_path, rate_limit=b24.RateLimit.unlimited()
        ) as client:
            report = await client.activate_many(range(1, 101))
        assert report.ok and all(server.state.activations[i] == 1 for i in range(1, 101))


async def test_plain_http_webhook_is_refused_like_a_portal() -> None:
    async with serve(flows=5, tls=True) as server:
        plain = server.webhook_url().replace(server.base_url, server.plain_url)
        async with b24.FlowClient.from_webhook(
            plain, rate_limit=b24.RateLimit.unlimited()
        ) as client:
            with pytest.raises(b24.InvalidCredentials) as info:
                await client.activate(1)
        assert info.value.code == "INVALID_REQUEST" and info.value.description == "Https required."
        assert info.value.status == 401 and not info.value.may_have_run
        assert server.state.activations.total() == 0


async def test_an_untrusted_certificate_is_not_sent_and_not_retried() -> None:
    async with serve(flows=5, tls=True) as server:
        async with b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit.unlimited(), sleep=no_sleep
        ) as client:  # the system CAs do not know the emulator's throwaway CA
            with pytest.raises(b24.Unreachable, match="certificate") as info:
                await client.activate(1)
            assert not info.value.may_have_run and client.stats().retries == 0
            report = await client.activate_many(range(1, 6))
        assert len(report.failed) == 5 and server.state.requests == 0


async def test_ssl_false_only_for_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        b24.FlowClient.from_webhook("https://portal.example.com/rest/1/x/", ssl=False)
    with pytest.raises(ValueError, match="CA bundle"):
        b24.FlowClient.from_webhook("https://portal.example.com/rest/1/x/", ssl="/nonexistent")
    with pytest.raises(TypeError, match="ssl"):
        b24.FlowClient.from_webhook("https://p.example/rest/1/x/", ssl=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proxy"):
        b24.FlowClient.from_webhook("https://p.example/rest/1/x/", proxy="socks5://h:1")
    async with (
        serve(flows=5, tls=True) as server,
        b24.FlowClient.from_webhook(
            server.webhook_url(), ssl=False, rate_limit=b24.RateLimit.unlimited()
        ) as client,
    ):
        assert await client.activate(1) is True


async def test_oauth_over_tls_refreshes_and_toggles() -> None:
    async with serve(flows=50, tls=True) as server:
        _, tokens = due_tokens(server)
        async with oauth_client(server, tokens, ssl=server.ssl_context()) as client:
            report = await client.activate_many(range(1, 51))
        assert report.ok and server.state.refreshes == 1
        assert client.tokens is not None and client.tokens.client_endpoint == (
            f"{server.base_url}/rest/"
        )


async def test_500_flows_over_https_through_a_forward_proxy(forward_proxy: str) -> None:
    async with serve(flows=500, tls=True) as server:
        async with b24.FlowClient.from_webhook(
            server.webhook_url(),
            ssl=server.ssl_context(),
            proxy=forward_proxy,
            rate_limit=b24.RateLimit.unlimited(),
        ) as client:
            report = await client.activate_many(range(1, 501))
        assert report.ok, report.summary()
        assert all(server.state.activations[i] == 1 for i in range(1, 501))
        assert server.state.requests == 10


async def test_https_proxy_from_the_environment(
    forward_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with serve(flows=100, tls=True) as server:
        # Through a dead proxy nothing can pass: proof that the variable is honoured.
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
        async with b24.FlowClient.from_webhook(
            server.webhook_url(),
            ssl=server.ssl_context(),
            trust_env=True,
            rate_limit=b24.RateLimit.unlimited(),
            sleep=no_sleep,
        ) as client:
            with pytest.raises(b24.RequestNotSent):
                await client.pin(1)
        assert server.state.requests == 0
        monkeypatch.setenv("HTTPS_PROXY", forward_proxy)
        async with b24.FlowClient.from_webhook(
            server.webhook_url(),
            ssl=server.ssl_context(),
            trust_env=True,
            rate_limit=b24.RateLimit.unlimited(),
        ) as client:
            report = await client.activate_many(range(1, 101))
        assert report.ok and server.state.activations.total() == 100
        # Without trust_env the variable is ignored (the default for a library).
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
        async with b24.FlowClient.from_webhook(
            server.webhook_url(), ssl=server.ssl_context(), rate_limit=b24.RateLimit.unlimited()
        ) as client:
            assert await client.pin(1) is True


async def test_a_proxy_that_refuses_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    async with serve(flows=5, tls=True) as server:
        async with b24.FlowClient.from_webhook(
            server.webhook_url(),
            ssl=server.ssl_context(),
            proxy=f"http://127.0.0.1:{port}",
            rate_limit=b24.RateLimit.unlimited(),
            sleep=no_sleep,
        ) as client:
            with pytest.raises(b24.RequestNotSent):
                await client.activate(1)
        assert server.state.requests == 0


async def test_emulator_cli_serves_tls_and_prints_its_ca(tmp_path: Path) -> None:
    ready = tmp_path / "port"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiob24flow.emulator", "--tls", "--port", "0",
        "--ready-file", str(ready), "--flows", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 20)).decode() for _ in range(3)]
        ca_line = next(line for line in lines if "CA certificate" in line)
        ca_path = ca_line.split(":", 1)[1].strip()
        assert os.path.isfile(ca_path)
        for _ in range(100):
            if ready.exists():
                break
            await asyncio.sleep(0.05)
        port = int(ready.read_text())
        context = ssl.create_default_context(cafile=ca_path)
        async with b24.FlowClient.from_webhook(
            f"https://127.0.0.1:{port}/rest/1/emulator-webhook-code-1/",
            ssl=context,
            rate_limit=b24.RateLimit.unlimited(),
        ) as client:
            assert await client.activate(3) is True
    finally:
        proc.terminate()
        await proc.wait()
