"""The PHP behaviours a Bitrix24 portal shows on the wire.

``parse_str`` (bracket syntax), PHP array keys (``"5"`` becomes the int 5), ``json_encode``
of PHP arrays (empty map -> ``[]``, keys 0..n-1 in order -> a list), ``is_numeric``,
truthiness and the string a value becomes (``(string)$x``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "is_numeric",
    "json_encode",
    "parse_str",
    "php_key",
    "php_string",
    "php_truthy",
    "to_php_value",
]

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
# JSON_UNESCAPED_LINE_TERMINATORS). Built on json.dumps (C) and then fixed up: those
# characters only ever occur inside strings in JSON text.
_RAW = str.maketrans(
    {
        "/": "\\/",
        "<": "\\u003C",
        ">": "\\u003E",
        "&": "\\u0026",
        "'": "\\u0027",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)
_ESCAPED_QUOTE = re.compile(r'\\\\|\\"')  # "\\" or "\"", scanned left to right


def _jsonable(value: Any) -> Any:
    """PHP arrays as json_encode sees them: empty -> [], keys 0..n-1 in order -> a list."""
    if isinstance(value, dict):
        if not value:
            return []
        keys = list(value)
        if keys == list(range(len(keys))):
            return [_jsonable(v) for v in value.values()]
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _quote(match: re.Match[str]) -> str:
    return "\\\\" if match.group() == "\\\\" else "\\u0022"


def json_encode(value: Any) -> str:
    """PHP ``json_encode`` of a PHP value with Bitrix's flags (``main/lib/web/json.php``)."""
    text = json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    if '\\"' in text:
        text = _ESCAPED_QUOTE.sub(_quote, text)
    return text.translate(_RAW)


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


def php_string(value: Any) -> str:
    """``(string)$value`` for a scalar: true -> "1", false and null -> "", a float with
    PHP's ``precision`` of 14 significant digits (``0.1 + 0.2`` -> "0.3", ``1e-05`` ->
    "1.0E-5"), unlike ``json_encode``, which keeps every digit."""
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    if isinstance(value, float):
        return _php_float(value)
    return str(value)


def _php_float(value: float) -> str:
    """``zend_gcvt(value, 14, '.', 'E')``, as PHP turns a float into a string."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    mantissa, exponent = f"{abs(value):.13e}".split("e")
    digits = mantissa.replace(".", "").rstrip("0")
    point = int(exponent) + 1  # digits are 0.DDDD x 10**point
    if point < -3 or point > 14:
        power = point - 1
        text = f"{digits[0]}.{digits[1:] or '0'}E{'-' if power < 0 else '+'}{abs(power)}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    elif len(digits) <= point:
        text = digits + "0" * (point - len(digits))
    else:
        text = f"{digits[:point]}.{digits[point:]}"
    return sign + text
