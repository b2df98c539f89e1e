"""Exit codes, the usage error, and the one way the command line words an error."""

from __future__ import annotations

from .._errors import B24Error
from .._redact import redact

__all__ = [
    "EXIT_BUSY",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_JOURNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "error_text",
]

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: The journal (``--journal``) cannot be opened, read or written: sysexits' EX_IOERR.
EXIT_JOURNAL = 74
#: Another runner holds the job: sysexits' EX_TEMPFAIL ("try again later"), since the
#: same command succeeds once that runner ends (or its Redis lease expires).
EXIT_BUSY = 75


class CommandError(Exception):
    """A one-line error that ends the command with exit code ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """A one-line error about the command line; exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def error_text(error: BaseException, *, typed: bool = False) -> str:
    """``error`` on one line with its secrets masked: a portal error by its description
    (else its code), an OS error by its ``strerror``, anything else by ``str``; ``typed``
    puts the class name first (``FlowError: ...``)."""
    if isinstance(error, B24Error):
        text = error.description or error.code
    else:
        text = getattr(error, "strerror", None) or str(error)
    text = " ".join(str(text).split())
    return redact(f"{type(error).__name__}: {text}" if typed else text)
