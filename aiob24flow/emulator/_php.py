"""The PHP behaviours a Bitrix24 portal shows on the wire.

``parse_str`` (bracket syntax), PHP array keys (``"5"`` becomes the int 5), ``json_encode``
of PHP arrays (empty map -> ``[]``, keys 0..n-1 in order -> a list), ``is_numeric`` and
truthiness.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["is_numeric", "json_encode", "parse_str", "php_key", "php_truthy", "to_php_value"]

_INT_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")
_NUMERIC = re.compile(r"^[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*$")


def php_key(key: str | int) -> str | int:
    """PHP turns decimal-integer string keys into int keys."""
    if isinstance(key, int):
        return key
    return int(key) if _INT_KEY.match(key) and abs(int(key)) < 2**63 else key


def parse_str(query: str) -> dict[str | int, Any]:
    """PHP ``parse_str``: ``a[b][]=1&c=2`` -> ``{"a": {"b": {0: "1"}}, "c": "2"}``."""
    out: dict[str | int, Any] = {}
    for raw_name, value in parse_qsl(query, keep_blank_values=True):
        if "[" in raw_name and raw_name.endswith("]") and not raw_name.startswith("["):
            base, rest = raw_name.split("[", 1)
            subkeys = rest[:-1].split("][")
        else:
            base, subkeys = raw_name, []
        node: dict[str | int, Any] = out
        path: list[str | int] = [php_key(base)]
        for sub in subkeys:
            path.append(sub)
        for index, key in enumerate(path):
            last = index == len(path) - 1
            if key == "":
                ints = [k for k in node if isinstance(k, int)]
                key = max(ints) + 1 if ints else 0
            else:
                key = php_key(key)
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return out


def to_php_value(value: Any) -> Any:
    """A decoded JSON value as PHP sees it: object keys become PHP keys, lists maps."""
    if isinstance(value, dict):
        return {php_key(k): to_php_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return {i: to_php_value(v) for i, v in enumerate(value)}
    return value


# json_encode with JSON_HEX_TAG|JSON_HEX_AMP|JSON_HEX_APOS|JSON_HEX_QUOT and
# JSON_UNESCAPED_UNICODE (protocol.md §1.4): the HEX flags give upper-case hex, "/" is
# escaped (no JSON_UNESCAPED_SLASHES), and U+2028/U+2029 stay escaped (no
# JSON_UNESCAPED_LINE_TERMINATORS).
_ESCAPES = {
    '"': "\\u0022",
    "\\": "\\\\",
    "/": "\\/",
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "'": "\\u0027",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SPECIAL = re.compile("[\"\\\\/<>&'\x00-\x1f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append('"' + _SPECIAL.sub(_escape, value) + '"')
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, (int, float)):
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        if not value:
            out.append("[]")  # an empty PHP array
            return
        keys = list(value)
        if keys == list(range(len(keys))):
            _encode(list(value.values()), out)
            return
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            _encode(str(key), out)
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def json_encode(value: Any) -> str:
    """PHP ``json_encode`` of a PHP value with Bitrix's flags (``main/lib/web/json.php``)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(_NUMERIC.match(value))


def php_truthy(value: Any) -> bool:
    """``isset($x) && $x``: "0", "", 0, false, null and empty arrays are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (dict, list)):
        return bool(value)
    return True
