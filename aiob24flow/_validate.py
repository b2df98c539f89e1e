"""Input checks that run before anything is sent."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "MAX_FLOW_ID",
    "check_base_url",
    "check_bool",
    "check_fields",
    "check_flow_id",
    "check_flow_ids",
    "check_method",
    "check_number",
    "is_loopback",
]


MAX_FLOW_ID = 2**63 - 1  # the portal's ids are signed 64-bit integers


def check_flow_id(value: object, name: str = "flow_id") -> int:
    """A flow id is an ``int`` (not a ``bool``) from 1 to 2**63-1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    if value > MAX_FLOW_ID:
        raise ValueError(f"{name} must be at most 2**63-1, got {value!r}")
    return value


def check_flow_ids(values: object, name: str = "ids") -> list[int]:
    """A collection of distinct flow ids, checked in full before any request."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be an iterable of int flow ids")
    ids = list(values)
    # Fast path for the common case (plain ints >= 1, distinct), at C speed; details
    # only on failure.
    if (
        ids
        and set(map(type, ids)) == {int}
        and min(ids) >= 1
        and max(ids) <= MAX_FLOW_ID
        and len(set(ids)) == len(ids)
    ):
        return ids
    seen: set[int] = set()
    for index, value in enumerate(ids):
        check_flow_id(value, f"{name}[{index}]")
        if value in seen:
            raise ValueError(f"{name}[{index}]: duplicate flow id {value}")
        seen.add(value)
    return ids


def check_method(value: object, name: str = "method", *, in_url: bool = False) -> str:
    """A REST method name: a non-empty str without ``?`` or white space (nor ``/`` when it
    becomes a URL path segment)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value or "?" in value or any(c.isspace() for c in value) or (in_url and "/" in value):
        raise ValueError(f"{name}: invalid method name {value!r}")
    return value


def check_fields(value: object, name: str = "fields") -> tuple[str, ...] | None:
    """None (whole objects) or distinct, non-empty field names; a bare str is refused
    (``fields="active"`` would mean six one-letter fields)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of str field names, or None")
    names = tuple(value)
    for index, field in enumerate(names):
        if not isinstance(field, str):
            raise TypeError(f"{name}[{index}] must be a str, got {type(field).__name__}")
        if not field:
            raise ValueError(f"{name}[{index}] is empty")
    if not names:
        raise ValueError(f"{name} must name at least one field (None keeps whole objects)")
    return tuple(dict.fromkeys(names))


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_number(value: object, name: str, *, positive: bool = False) -> float:
    """A finite real number >= 0 (> 0 with ``positive``); not a bool, not NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def is_loopback(host: str) -> bool:
    """localhost, *.localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: object, name: str) -> tuple[str, str, str]:
    """Validate a base URL; return (origin, path, host). HTTP only on loopback."""
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an https:// URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{name}: plain http:// is allowed only for loopback hosts; use https://")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - urllib checks the range only when asked
    except ValueError:
        raise ValueError(f"{name}: the port is not a number from 1 to 65535") from None
    return f"{parts.scheme}://{parts.netloc}", parts.path, parts.hostname
