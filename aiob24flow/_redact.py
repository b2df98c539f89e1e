"""Keep secrets out of logs, reprs and exception messages.

Webhook codes live in URL paths (``/rest/USER/CODE/``); tokens and secrets live in
``auth``/``access_token``/``refresh_token``/``client_secret`` parameters, including inside
batch ``cmd`` strings. Everything printed about a request goes through ``redact``.
"""

from __future__ import annotations

import re

_WEBHOOK = re.compile(r"(/rest/[^/\s?#]+/)([^/\s?#]+)(/)")
_PARAM = re.compile(
    r"((?:^|[?&\s\"'{,])(?:auth|access_token|refresh_token|client_secret|code|password)"
    r"[\"']?\s*[=:]\s*[\"']?)([^&\s\"',}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)(\S+)", re.IGNORECASE)
# ``scheme://user:password@host`` (also Redis URLs ``redis://:password@host``).
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)")

MASK = "***"


def redact(text: str) -> str:
    """Mask webhook codes, tokens and secrets in ``text``."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _WEBHOOK.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _PARAM.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)


def redact_url(url: object) -> str:
    """A URL as text with the webhook code, tokens and passwords masked.

    Made for ``opentelemetry-instrumentation-aiohttp-client``'s ``url_filter`` (it passes
    a ``yarl.URL``): ``AioHttpClientInstrumentor().instrument(url_filter=redact_url)``
    keeps the credential out of its ``url.full``. Accepts a ``str`` as well.
    """
    return redact(str(url))


def mask_secret(secret: str) -> str:
    """A stand-in for a secret in a repr: its length only."""
    return f"<{len(secret)} chars>" if secret else "<empty>"
