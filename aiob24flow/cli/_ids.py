"""Flow ids from the command line, id files and standard input."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from .._argtypes import OneLineParser
from .._validate import MAX_FLOW_ID
from ._errors import UsageError

__all__ = ["ids_options", "parse_ids"]

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"


def ids_options() -> argparse.ArgumentParser:
    """The ids arguments, as a parent parser for every command that takes flow ids."""
    parser = OneLineParser(add_help=False)
    parser.add_argument(
        "ids", nargs="*", metavar="ID", help="flow ids: 517, ranges 100-250, or - to read stdin"
    )
    parser.add_argument(
        "--ids-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read flow ids from a file, - for stdin (white space or commas; blank "
        "lines, # comments and one header line are skipped)",
    )
    return parser


def _flow_id(text: str, token: str) -> int:
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_FLOW_ID:
        raise UsageError(
            f"bad flow id {token!r} (expected an integer from 1 to 2**63-1, or FROM-TO)"
        )
    return int(text)


def _expand(token: str) -> Iterator[int]:
    token = token.strip()
    if not token:
        return
    if "-" in token[1:]:
        low, _, high = token.partition("-")
        if not (_DIGITS.fullmatch(low) and _DIGITS.fullmatch(high)):
            raise UsageError(f"bad flow id range {token!r} (expected FROM-TO)")
        start, end = _flow_id(low, token), _flow_id(high, token)
        if end < start:
            raise UsageError(f"bad flow id range {token!r}")
        if end - start > 1_000_000:
            raise UsageError(f"flow id range {token!r} is too large")
        yield from range(start, end + 1)
        return
    yield _flow_id(token, token)


def parse_ids(
    tokens: Sequence[str], files: Sequence[str], stdin: TextIO | None = None
) -> list[int]:
    """Flow ids from arguments (``5``, ``100-250``, ``-`` for stdin) and files (``-`` for
    stdin), in order, duplicates dropped.

    Files (and stdin) hold ids separated by white space or commas; blank lines and ``#``
    comments are skipped, and a first line that is not ids is a header. A CSV header with
    several columns picks the column named ``id`` (any case; else the first).
    """
    texts: list[str] = []
    stdin_read = False

    def read_stdin() -> str:
        nonlocal stdin_read
        if stdin_read:
            raise UsageError("standard input can be read only once (- given twice)")
        stdin_read = True
        try:
            return (stdin or sys.stdin).read()
        except UnicodeDecodeError:
            raise UsageError("cannot read standard input: not UTF-8 text") from None

    for token in tokens:
        if token == "-":
            texts.extend(_id_lines(read_stdin(), "standard input"))
        else:
            texts.extend(token.replace(",", " ").split())
    for path in files:
        if path == "-":
            texts.extend(_id_lines(read_stdin(), "standard input"))
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                content = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read {path}: not UTF-8 text") from None
        texts.extend(_id_lines(content, path))
    ids = list(dict.fromkeys(flow_id for text in texts for flow_id in _expand(text)))
    if not ids:
        raise UsageError("no flow ids given (arguments, --ids-file or - for stdin)")
    return ids


def _looks_like_ids(line: str) -> bool:
    first = line.replace(",", " ").split()[0]
    return bool(re.fullmatch(r"[0-9]+(-[0-9]+)?", first))


def _id_lines(content: str, where: str) -> list[str]:
    """The id tokens of a file: comments, blank lines and one header line dropped."""
    tokens: list[str] = []
    column: int | None = None
    seen_content = False
    for number, raw in enumerate(content.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not seen_content:
            seen_content = True
            if not _looks_like_ids(line):  # a header line
                cells = [c.strip().strip('"').lower() for c in line.split(",")]
                if len(cells) > 1:
                    column = cells.index("id") if "id" in cells else 0
                continue
        if column is not None:
            cells = line.split(",")
            if column >= len(cells):
                raise UsageError(f"{where}: line {number} has no column {column + 1}")
            tokens.append(cells[column].strip().strip('"'))
        else:
            tokens.extend(line.replace(",", " ").split())
    return tokens
