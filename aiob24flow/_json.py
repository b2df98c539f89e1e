"""JSON in and out: orjson when installed (``pip install 'aiob24flow[speed]'``), else stdlib.

Bulk jobs decode one ~12 KB answer per batch (a ``time`` object per command); orjson
does that about three times faster.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["BACKEND", "dumps", "loads"]

try:
    if os.environ.get("AIOB24FLOW_JSON") == "stdlib":  # for side-by-side measurements
        raise ImportError
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]


def _std_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


if orjson is not None:
    BACKEND = "orjson"
    loads = orjson.loads

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
else:  # pragma: no cover - depends on the environment
    BACKEND = "json"
    loads = json.loads
    dumps = _std_dumps
