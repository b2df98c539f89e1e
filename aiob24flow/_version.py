"""The version, read from the installed distribution (pyproject.toml is its one home)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("aiob24flow")
    """The installed version of aiob24flow (``"0+unknown"`` in a bare source tree)."""
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"
