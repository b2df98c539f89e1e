"""OAuth 2 against the emulator: single-flight refresh, rotation, failures, no leaks."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import aiob24flow as b24
from aiob24flow._pipeline import MAX_TOKEN_RECOVERIES
from aiob24flow.emulator import EmulatorServer, Faults
from tests.conftest import oauth_client, serve, tokens_of

# Every test here runs against the plain and the TLS emulator.
pytestmark = pytest.mark.usefixtures("both_schemes")


def expire_all(server: EmulatorServer) -> None:
    for entry in server.state.access_tokens.values():
        entry.expires_at = 0


async def test_calls_with_bearer_token() -> None:
    async with serve(flows=10) as server:
        tokens = tokens_of(server.state.issue_tokens())
        async with oauth_client(server, tokens) as client:
            assert await client.activate(1) is True
            assert await client.pin(1) is True
            report = await client.activate_many(range(2, 10))
        assert report.ok and server.state.activations.total() == 9
        assert server.state.refreshes == 0


async def test_100_concurrent_calls_on_expired_token_make_one_refresh() -> None:
    saved: list[b24.OAuthTokens] = []

    async def on_refresh(tokens: b24.OAuthTokens) -> None:
        saved.append(tokens)

    async with serve(flows=100) as server:
        tokens = tokens_of(server.state.issue_tokens())  # expires_at unknown to the client
        expire_all(server)
        async with oauth_client(server, tokens, on_refresh=on_refresh) as client:
            results = await asyncio.gather(*(client.activate(i) for i in range(1, 101)))
            assert results == [True] * 100
            assert client.tokens is not None and client.tokens.access_token != tokens.access_token
            assert client.stats().refreshes == 1 and client.stats().retries == 0
        assert server.state.refreshes == 1 and server.state.token_requests == 1
        assert server.state.rejected_refreshes == 0
        assert len(saved) == 1 and saved[0] == client.tokens
        assert all(server.state.activations[i] == 1 for i in range(1, 101))


async def test_proactive_refresh_before_expiry() -> None:
    async with serve(flows=10) as server:
        tokens = tokens_of(server.state.issue_tokens(), expires_at=time.time() - 1)
        async with oauth_client(server, tokens) as client:
            await client.activate(1)
        assert server.state.refreshes == 1
        assert server.state.requests == 1  # no 401 round trip


async def test_bulk_job_survives_many_expiries() -> None:
    lifetime = 1.5
    saved: list[b24.OAuthTokens] = []

    async def on_refresh(tokens: b24.OAuthTokens) -> None:
        saved.append(tokens)

    async with serve(flows=3000, token_lifetime=lifetime, burst=10, leak=20.0) as server:
        body = server.state.issue_tokens()
        tokens = tokens_of(body, expires_at=time.time() + lifetime)
        async with oauth_client(
            server,
            tokens,
            on_refresh=on_refresh,
            rate_limit=b24.RateLimit(10, 20),
            sleep=asyncio.sleep,
            concurrency=8,
        ) as client:
            started = time.monotonic()
            report = await client.activate_many(range(1, 3001))
            elapsed = time.monotonic() - started
        assert report.ok, report.summary()
        assert all(server.state.activations[i] == 1 for i in range(1, 3001))
        assert server.state.refreshes >= 1
        assert server.state.refreshes <= elapsed / lifetime + 1
        assert server.state.rejected_refreshes == 0
        assert server.state.refused_503 == 0
        assert len(saved) == server.state.refreshes
        assert len({t.refresh_token for t in saved}) == len(saved)


async def test_refresh_endpoint_failing_once_is_retried() -> None:
    faults = Faults(token_faults=["unavailable"])
    async with serve(flows=10, faults=faults) as server:
        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with oauth_client(server, tokens) as client:
            assert await client.activate(1) is True
        assert server.state.token_requests == 2 and server.state.refreshes == 1
        assert server.state.activations[1] == 1


async def test_refresh_hanging_fails_every_waiter_and_never_resends() -> None:
    faults = Faults(token_faults=["hang"], hang_seconds=3.0)
    async with serve(flows=20, faults=faults) as server:
        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with oauth_client(server, tokens, timeout=b24.Timeout(connect=1, read=0.3)) as client:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.activate(i) for i in range(1, 11)), return_exceptions=True),
                timeout=2.5,
            )
            # Never sent: the calls raise RefreshFailed (not sent), the cause tells why.
            assert all(isinstance(r, b24.RefreshFailed) for r in results)
            assert all(isinstance(r.__cause__, b24.RefreshOutcomeUnknown) for r in results)
            assert not any(r.may_have_run for r in results)  # type: ignore[union-attr]
            with pytest.raises(b24.RefreshFailed):
                await client.activate(11)
        assert server.state.token_requests == 1  # the refresh token went out once
        assert server.state.activations.total() == 0


async def test_invalid_grant_is_terminal_and_typed() -> None:
    async with serve(flows=10, faults=Faults(token_faults=["invalid_grant"])) as server:
        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with oauth_client(server, tokens) as client:
            results = await asyncio.gather(
                *(client.activate(i) for i in range(1, 6)), return_exceptions=True
            )
            assert all(isinstance(r, b24.RefreshFailed) for r in results)
            assert all(isinstance(r.__cause__, b24.RefreshRejected) for r in results)
            assert all(r.code == "invalid_grant" for r in results)  # type: ignore[union-attr]
            with pytest.raises(b24.RefreshFailed):
                await client.pin(1)
        assert server.state.token_requests == 1


async def test_invalid_client() -> None:
    async with serve(flows=10) as server:
        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with oauth_client(server, tokens, client_secret="wrong-secret") as client:
            with pytest.raises(b24.RefreshFailed) as info:
                await client.activate(1)
        assert isinstance(info.value.__cause__, b24.RefreshRejected)
        assert info.value.code == "invalid_client" and "wrong-secret" not in str(info.value)


async def test_expired_again_after_fresh_token_raises_without_looping() -> None:
    async with serve(flows=10, token_lifetime=-1) as server:  # every token born expired
        tokens = tokens_of(server.state.issue_tokens())
        async with oauth_client(server, tokens) as client:
            with pytest.raises(b24.TokenExpired):
                await client.activate(1)
        # Bounded: a few new tokens, then the portal's refusal stands.
        rounds = MAX_TOKEN_RECOVERIES
        assert server.state.refreshes == rounds and server.state.requests == rounds + 1
        assert server.state.activations.total() == 0


async def test_a_new_token_that_expired_before_its_turn_is_refreshed_again() -> None:
    """A worker starved past a short token's life: the re-sent request meets the new token
    expired too; it refreshes once more instead of failing the call."""
    async with serve(flows=10) as server:
        handed_out: list[str] = []

        async def refresher(old: b24.OAuthTokens) -> b24.OAuthTokens:
            status, body = server.state.refresh(
                server.portal.config.client_id, server.portal.config.client_secret,
                old.refresh_token,
            )  # fmt: skip
            assert status == 200
            handed_out.append(body["access_token"])
            if len(handed_out) == 1:  # expired by the time the request goes again
                expire_all(server)
            return b24.OAuthTokens.from_token_response(body, time.time())

        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with b24.FlowClient.from_oauth(
            server.oauth_endpoint, tokens, refresher=refresher,
            rate_limit=b24.RateLimit.unlimited(),
        ) as client:  # fmt: skip
            assert await client.activate(1) is True
        assert len(handed_out) == 2 and server.state.requests == 3
        assert server.state.activations[1] == 1


async def test_pluggable_refresher() -> None:
    calls: list[b24.OAuthTokens] = []
    async with serve(flows=10) as server:

        async def refresher(old: b24.OAuthTokens) -> b24.OAuthTokens:
            calls.append(old)
            status, body = server.state.refresh(
                server.portal.config.client_id,
                server.portal.config.client_secret,
                old.refresh_token,
            )
            assert status == 200
            return b24.OAuthTokens.from_token_response(body, time.time())

        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with b24.FlowClient.from_oauth(
            server.oauth_endpoint,
            tokens,
            refresher=refresher,
            rate_limit=b24.RateLimit.unlimited(),
        ) as client:
            await asyncio.gather(*(client.activate(i) for i in range(1, 6)))
        assert calls == [tokens] and server.state.token_requests == 0


def test_from_oauth_validation() -> None:
    tokens = b24.OAuthTokens("a", "r")
    with pytest.raises(ValueError, match="client_id"):
        b24.FlowClient.from_oauth("https://x.bitrix24.com/rest/", tokens)
    with pytest.raises(TypeError, match="tokens"):
        b24.FlowClient.from_oauth(
            "https://x.bitrix24.com/rest/",
            ("a", "r"),  # type: ignore[arg-type]
            client_id="c",
            client_secret="s",
        )
    with pytest.raises(ValueError, match="token_url"):
        b24.FlowClient.from_oauth(
            "https://x.bitrix24.com/rest/",
            tokens,
            client_id="c",
            client_secret="s",
            token_url="http://oauth.example.com/",
        )


async def test_no_secret_in_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiob24flow")
    faults = Faults(seed=4, error_before=0.05, error_after=0.05, drop_after=0.05)
    async with serve(flows=600, faults=faults, token_lifetime=0.4) as server:
        first = server.state.issue_tokens()
        tokens = tokens_of(first, expires_at=time.time() + 0.4)
        secret = server.portal.config.client_secret
        async with oauth_client(
            server, tokens, sleep=asyncio.sleep, rate_limit=b24.RateLimit(5, 10), concurrency=2
        ) as client:
            report = await client.activate_many(range(1, 601), verify=True)
            texts = [repr(client), repr(client.tokens), repr(report), str(client.stats())]
            texts += [str(e) + repr(e) for e in (*report.failed.values(), *report.unknown.values())]
        assert server.state.refreshes >= 2
        server.portal.config.faults = Faults()  # the last call must get through
        async with b24.FlowClient.from_webhook(
            server.webhook_url(), rate_limit=b24.RateLimit.unlimited()
        ) as hook:
            await hook.batch({"a": ("tasks.flow.Flow.pin", {"flowId": 1, "auth": "tok-in-cmd"})})
            texts.append(repr(hook))
    secrets = {
        secret,
        server.state.webhooks[1],
        "tok-in-cmd",
        first["access_token"],
        first["refresh_token"],
    }
    secrets |= set(server.state.access_tokens) | set(server.state.spent_refresh_tokens)
    everything = "\n".join(texts + [r.getMessage() for r in caplog.records])
    assert "refreshed" in everything and "POST batch" in everything
    leaked = [s for s in secrets if s in everything]
    assert not leaked


async def test_unknown_token_is_a_typed_error_without_refresh() -> None:
    async with serve(flows=10) as server:
        tokens = b24.OAuthTokens("not-a-token", "not-a-refresh-token")
        async with oauth_client(server, tokens) as client:
            with pytest.raises(b24.InvalidToken) as info:
                await client.activate(1)
        assert (info.value.code, info.value.status) == ("invalid_token", 401)
        assert "not-a-token" not in str(info.value) + repr(info.value)
        assert server.state.token_requests == 0 and server.state.activations.total() == 0


async def test_failing_refresher_gives_every_waiter_a_typed_error() -> None:
    calls = 0

    async def refresher(old: b24.OAuthTokens) -> b24.OAuthTokens:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise KeyError("store is down")

    async with serve(flows=10) as server:
        tokens = tokens_of(server.state.issue_tokens())
        expire_all(server)
        async with b24.FlowClient.from_oauth(
            server.oauth_endpoint,
            tokens,
            refresher=refresher,
            rate_limit=b24.RateLimit.unlimited(),
        ) as client:
            results = await asyncio.gather(
                *(client.activate(i) for i in range(1, 9)), return_exceptions=True
            )
        assert all(isinstance(r, b24.RefreshFailed) for r in results)
        assert all(isinstance(r.__cause__, b24.RefreshRejected) for r in results)
        assert calls == 1 and server.state.activations.total() == 0
