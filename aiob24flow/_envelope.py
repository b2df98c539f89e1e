"""Turn an HTTP answer into the method's result or a typed error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from . import _json
from ._errors import ServerError, error_from_envelope
from ._redact import redact
from ._transport import RawResponse

__all__ = ["Envelope", "parse_response"]


@attrs.frozen
class Envelope:
    """A successful answer: ``result`` plus the portal's ``time`` object (may be empty)."""

    result: Any
    time: dict[str, Any]


def parse_response(
    raw: RawResponse, method: str, decode: Callable[[bytes], Any] = _json.loads
) -> Envelope:
    """Return the envelope of a successful call or raise the error it carries."""
    try:
        body = decode(raw.body) if raw.body else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        # {"result": ..., "error": null} is a success; the legacy "HTTP 200 with error"
        # form is an error.
        if error not in (None, ""):
            raise error_from_envelope(body, status=raw.status, method=method)
        if raw.status == 200 and "result" in body:
            time = body.get("time")
            return Envelope(body["result"], time if isinstance(time, dict) else {})
    # A proxy page, an empty body, or a 5xx without an envelope: nothing says the call
    # did not run, nor that the portal is done with it (a gateway may answer while PHP
    # still executes).
    snippet = raw.body[:120].decode("utf-8", "replace") if raw.body else "empty body"
    unexpected = ServerError(
        f"unexpected answer: {redact(snippet)}",
        code="ERROR_UNEXPECTED_ANSWER",
        status=raw.status,
        method=method,
    )
    unexpected.finished = False
    raise unexpected
