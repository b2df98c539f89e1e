"""How the command line logs: ``-v`` (INFO) / ``-vv`` (DEBUG) on stderr, as text lines
or, with ``--log-format json``, one JSON object per record for operators who ship logs."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from .._redact import redact

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# What every record has; the rest of a record's attributes came from ``extra=`` (the
# library's ``event``, ``method``, ``status``, ``duration_s``, ...). Read off a record of
# this Python, which may add attributes (``taskName`` in 3.12).
_STANDARD = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime", "taskName"}
)


def _plain(value: Any) -> Any:
    """A field as JSON: numbers, booleans and null as they are; anything else as redacted
    text (a field of another library may hold a URL)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(value if isinstance(value, str) else repr(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the record's ``extra`` fields, and ``exception`` when there is one.
    Every text goes through ``redact``: no webhook code, token or secret."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, timezone.utc)
        out: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = _plain(value)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def configure_logging(verbose: int, log_format: str) -> None:
    """``-v`` logs INFO, ``-vv`` DEBUG; ``--log-format json`` alone logs INFO as JSON (who
    asks for JSON logs ships them). Neither: Python's default (warnings only)."""
    if not verbose and log_format != "json":
        return
    handler = logging.StreamHandler(sys.stderr)
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, handlers=[handler])
