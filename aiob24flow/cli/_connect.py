"""Building the client: the network and pace options, and ``make_client``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .._argtypes import OneLineParser, count, non_negative, positive
from .._auth import DEFAULT_TOKEN_URL
from .._client import FlowClient
from .._limiter import RateLimit
from .._redact import redact
from ._credentials import TokenFile, token_store, with_redis
from ._errors import UsageError

__all__ = ["add_connection_options", "make_client", "rate_limit"]

_PRESETS = {
    "standard": RateLimit.standard,
    "enterprise": RateLimit.enterprise,
    "unlimited": RateLimit.unlimited,
}


def add_connection_options(parser: OneLineParser) -> None:
    net = parser.add_argument_group("network")
    net.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="trust the CA certificates in this PEM file (default: the system's)",
    )
    net.add_argument(
        "--proxy",
        metavar="URL",
        help="send every request through this http:// proxy "
        "(default: $HTTPS_PROXY / $NO_PROXY when set)",
    )
    pace = parser.add_argument_group("pace")
    pace.add_argument(
        "--plan",
        choices=list(_PRESETS),
        default="standard",
        help="rate-limit preset (default: standard, 50 + 2/s)",
    )
    pace.add_argument("--burst", type=positive, help="override the preset's burst")
    pace.add_argument("--per-second", type=positive, help="override the preset's leak rate")
    pace.add_argument(
        "--headroom",
        type=non_negative,
        metavar="SLOTS",
        help="request slots kept free below the burst, to absorb arrival jitter "
        "(default: 50 ms worth, at least 0.5)",
    )
    pace.add_argument(
        "--redis",
        metavar="URL",
        help="share the rate limit with other processes through Redis "
        "(pip install 'aiob24flow[redis]')",
    )
    pace.add_argument(
        "--concurrency",
        type=count(1, 10_000),
        default=50,
        help="batch requests in flight at most (default 50)",
    )


def rate_limit(args: argparse.Namespace) -> RateLimit:
    """The preset of ``--plan`` with ``--burst``, ``--per-second``, ``--headroom`` over it."""
    limit = _PRESETS[args.plan]()
    backend = None
    if args.redis:
        from .._redis import RedisLimiter

        backend = with_redis("--redis", lambda: RedisLimiter(args.redis))
    try:
        return RateLimit(
            burst=args.burst if args.burst is not None else limit.burst,
            per_second=args.per_second if args.per_second is not None else limit.per_second,
            headroom=args.headroom if args.headroom is not None else limit.headroom,
            backend=backend,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_client(args: argparse.Namespace, store: TokenFile | None = None) -> FlowClient:
    common: dict[str, Any] = {
        "rate_limit": rate_limit(args),
        "concurrency": args.concurrency,
        # The CLI honours HTTPS_PROXY / NO_PROXY like other command-line HTTP tools.
        "trust_env": True,
        "proxy": args.proxy,
    }
    if args.ca_bundle:
        if not os.path.isfile(args.ca_bundle):
            raise UsageError(f"--ca-bundle {args.ca_bundle}: no such file")
        common["ssl"] = args.ca_bundle
    webhook = args.webhook or os.environ.get("B24_WEBHOOK_URL")
    try:
        if args.oauth:
            store = store or TokenFile(args.oauth)
            return FlowClient.from_oauth(
                store.data["endpoint"],
                store.tokens(),
                store=token_store(args, store),
                client_id=store.data.get("client_id"),
                client_secret=store.data.get("client_secret"),
                token_url=store.data.get("token_url") or DEFAULT_TOKEN_URL,
                **common,
            )
        if args.oauth_redis:
            raise UsageError(
                "--oauth-redis needs --oauth FILE for the endpoint and client credentials"
            )
        if webhook:
            return FlowClient.from_webhook(webhook, **common)
    except (TypeError, ValueError) as exc:
        raise UsageError(redact(str(exc))) from None
    raise UsageError("no credentials: pass --webhook URL, set B24_WEBHOOK_URL, or --oauth FILE")
