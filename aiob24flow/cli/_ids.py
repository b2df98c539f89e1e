"""Flow ids from the command line, id files and standard input."""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections.abc import Sequence
from typing import TextIO

import attrs

from .._argtypes import OneLineParser
from .._validate import MAX_FLOW_ID
from ._errors import UsageError

__all__ = ["MAX_RANGE", "FlowIds", "ids_options", "parse_ids", "read_ids"]

#: The most ids one ``FROM-TO`` range may name: a typo such as ``1-100000000`` should not
#: queue a hundred million flows. Longer lists go in an id file.
MAX_RANGE = 1_000_000

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"
_ID_OR_RANGE = re.compile(r"[0-9]+(-[0-9]+)?")


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
        "lines, # comments and one header line are skipped; a CSV header picks its id "
        "column)",
    )
    return parser


@attrs.frozen
class FlowIds:
    """The ids to send, in order, each once; ``repeats`` counts the repeats dropped."""

    ids: list[int]
    repeats: int


@attrs.frozen
class _Token:
    """One id or range as written, and where: None for an argument, else "FILE, line N"."""

    text: str
    where: str | None = None


def _flow_id(text: str, token: _Token) -> int:
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_FLOW_ID:
        raise _bad(
            token, f"bad flow id {token.text!r} (expected an integer from 1 to 2**63-1, or FROM-TO)"
        )
    return int(text)


def _bad(token: _Token, message: str) -> UsageError:
    return UsageError(f"{token.where}: {message}" if token.where else message)


def _expand(token: _Token) -> range:
    text = token.text.strip()
    if "-" not in text[1:]:
        flow_id = _flow_id(text, token)
        return range(flow_id, flow_id + 1)
    low, _, high = text.partition("-")
    if not (_DIGITS.fullmatch(low) and _DIGITS.fullmatch(high)):
        raise _bad(token, f"bad flow id range {text!r} (expected FROM-TO)")
    start, end = _flow_id(low, token), _flow_id(high, token)
    if end < start:
        raise _bad(token, f"bad flow id range {text!r} (FROM is above TO)")
    if end - start + 1 > MAX_RANGE:
        raise _bad(
            token,
            f"flow id range {text!r} names {end - start + 1} ids; one range may name at "
            f"most {MAX_RANGE} (split it, or list the ids in --ids-file)",
        )
    return range(start, end + 1)


def read_ids(tokens: Sequence[str], files: Sequence[str], stdin: TextIO | None = None) -> FlowIds:
    """Flow ids from arguments (``5``, ``100-250``, ``-`` for stdin) and files (``-`` for
    stdin), in order, repeats dropped and counted.

    Files (and stdin) hold ids separated by white space or commas; blank lines and ``#``
    comments are skipped, and a first line that is not ids is a header. A CSV header with
    several columns must name an ``id`` column (any case): its cells are the ids.
    """
    texts: list[_Token] = []
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
            texts.extend(_Token(text) for text in token.replace(",", " ").split())
    for path in files:
        content = read_stdin() if path == "-" else _read_file(path)
        texts.extend(_id_lines(content, "standard input" if path == "-" else path))
    ranges = [_expand(token) for token in texts]
    ids = list(dict.fromkeys(itertools.chain.from_iterable(ranges)))
    if not ids:
        raise UsageError("no flow ids given (arguments, --ids-file or - for stdin)")
    return FlowIds(ids, sum(map(len, ranges)) - len(ids))


def parse_ids(
    tokens: Sequence[str], files: Sequence[str], stdin: TextIO | None = None
) -> list[int]:
    """The ids of ``read_ids``, in order, each once."""
    return read_ids(tokens, files, stdin).ids


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: not UTF-8 text") from None


def _header_column(line: str, where: str) -> int | None:
    """The column a header line picks: None for a one-cell header (a plain list)."""
    cells = [cell.strip().strip('"') for cell in line.split(",")]
    if len(cells) == 1:
        return None
    lowered = [cell.lower() for cell in cells]
    if "id" not in lowered:
        raise UsageError(
            f"{where}: the CSV header has no 'id' column (columns: {', '.join(cells)})"
        )
    return lowered.index("id")


def _id_lines(content: str, where: str) -> list[_Token]:
    """The id tokens of a file: comments, blank lines and one header line dropped."""
    tokens: list[_Token] = []
    column: int | None = None
    seen_content = False
    for number, raw in enumerate(content.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        here = f"{where}, line {number}"
        if not seen_content:
            seen_content = True
            if not _ID_OR_RANGE.fullmatch(line.replace(",", " ").split()[0]):  # a header
                column = _header_column(line, where)
                continue
        if column is None:
            tokens.extend(_Token(text, here) for text in line.replace(",", " ").split())
            continue
        cells = line.split(",")
        if column >= len(cells):
            raise UsageError(f"{here}: no column {column + 1}")
        cell = cells[column].strip().strip('"')
        if cell:  # an empty cell names no flow
            tokens.append(_Token(cell, here))
    return tokens
