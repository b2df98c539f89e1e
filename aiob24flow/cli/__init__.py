"""The ``aiob24flow`` command line (also ``python -m aiob24flow``).

Exit codes: 0 everything done, 1 some flows failed or are unknown, 2 usage error (also a
``--job-id`` that names a job started with another command or ids), 74 the ``--journal``
cannot be opened, read or written (sysexits' EX_IOERR), 75 another runner holds the job
(EX_TEMPFAIL: try again later), 130 interrupted (Ctrl-C; the report of what happened to
every flow is printed first; a journaled job resumes when the command is run again).

``main`` (``_main.py``) parses and runs ``args.func``; each module of ``commands``
registers its own subparsers; ``_run.py`` is the loop every bulk command shares.
"""

from __future__ import annotations

from ._errors import (
    EXIT_BUSY,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_JOURNAL,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    UsageError,
)
from ._ids import parse_ids
from ._main import build_parser, main
from ._progress import ProgressBar
from ._report import JSON_SCHEMA, id_ranges, report_json, summary_lines

__all__ = [
    "EXIT_BUSY",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_JOURNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "JSON_SCHEMA",
    "CommandError",
    "ProgressBar",
    "UsageError",
    "build_parser",
    "id_ranges",
    "main",
    "parse_ids",
    "report_json",
    "summary_lines",
]
