"""Building the client: the network and pace options, and ``make_client``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from .._argtypes import OneLineParser, count, non_negative, positive
from .._auth import DEFAULT_TOKEN_URL
from .._client import FlowClient
from .._limiter import RateLimit
from .._redact import redact
from .._timeout import Timeout
from ._credentials import TokenFile, token_store, webhook_base, with_redis
from ._errors import UsageError, error_text

__all__ = ["Note", "add_connection_options", "make_client", "rate_limit"]

Note = Callable[[str], None]

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
    net.add_argument(
        "--portal-limit",
        type=positive,
        default=60.0,
        metavar="SECONDS",
        help="how long a request may keep running on the portal after its answer was lost "
        "(default 60, the cloud's limit; a self-hosted portal has its own PHP "
        "max_execution_time): a read that shows a lost toggle did not take is trusted, and a "
        "lost pin is sent again, only after that",
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


def make_client(
    args: argparse.Namespace, store: TokenFile | None = None, note: Note = print
) -> FlowClient:
    """The client the options describe; ``note`` gets remarks for stderr."""
    common: dict[str, Any] = {
        "rate_limit": rate_limit(args),
        "concurrency": args.concurrency,
        # The CLI honours HTTPS_PROXY / NO_PROXY like other command-line HTTP tools.
        "trust_env": True,
        "proxy": args.proxy,
        "timeout": Timeout(portal_limit=args.portal_limit),
    }
    if args.ca_bundle:
        if not os.path.isfile(args.ca_bundle):
            raise UsageError(f"--ca-bundle {args.ca_bundle}: no such file")
        common["ssl"] = args.ca_bundle
    if args.oauth:
        return _oauth_client(args, store or TokenFile(args.oauth), common)
    if args.oauth_redis:
        raise UsageError("--oauth-redis needs --oauth FILE for the endpoint and client credentials")
    source = "--webhook" if args.webhook else "$B24_WEBHOOK_URL"
    url = args.webhook or os.environ.get("B24_WEBHOOK_URL")
    if not url:
        raise UsageError("no credentials: pass --webhook URL, set B24_WEBHOOK_URL, or --oauth FILE")
    url, trimmed = webhook_base(url, source)
    if trimmed:
        note(trimmed)
    try:
        return FlowClient.from_webhook(url, **common)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad {source}: {error_text(exc)}") from None


def _oauth_client(args: argparse.Namespace, file: TokenFile, common: dict[str, Any]) -> FlowClient:
    try:
        return FlowClient.from_oauth(
            file.data["endpoint"],
            file.tokens(),
            store=token_store(args, file),
            client_id=file.data.get("client_id"),
            client_secret=file.data.get("client_secret"),
            token_url=file.data.get("token_url") or DEFAULT_TOKEN_URL,
            **common,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(redact(str(exc))) from None
