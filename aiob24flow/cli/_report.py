"""What a bulk command prints: the text summary, the ``--json`` document, the stderr line
for an error that ended the whole job, and the output options."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from .._argtypes import OneLineParser
from .._client import FlowClient
from .._errors import AuthError, B24Error, MethodNotFound, RefreshFailed, Unreachable, is_systemic
from .._redact import redact
from .._report import BulkReport
from ._errors import error_text
from ._logs import LOG_FORMATS

__all__ = [
    "JSON_SCHEMA",
    "add_output_options",
    "id_ranges",
    "note",
    "plural",
    "report_json",
    "silence_stdout",
    "summary_lines",
    "systemic_cause",
    "systemic_line",
    "text_report",
    "write_json",
]

JSON_SCHEMA = 1  # bump on any incompatible change of report_json (and say so in CHANGELOG)


def add_output_options(parser: OneLineParser) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print a machine-readable report")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    out.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0,
        help="log requests (-v INFO, -vv DEBUG), secrets redacted",
    )
    out.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log records as text lines or one JSON object each (json logs INFO without -v)",
    )


# -- the JSON document -------------------------------------------------------------------


def _error_json(error: BaseException) -> dict[str, Any]:
    if not isinstance(error, B24Error):
        return {"type": type(error).__name__, "description": error_text(error)}
    out: dict[str, Any] = {
        "type": type(error).__name__,
        "code": error.code,
        "description": redact(error.description),
        "status": error.status,
        "may_have_run": error.may_have_run,
    }
    cause = error.__cause__
    if cause is not None:
        out["cause"] = {"type": type(cause).__name__, "description": error_text(cause)}
    return out


def report_json(
    report: BulkReport[Any],
    client: FlowClient | None = None,
    *,
    command: str = "",
    dry_run: bool = False,
    interrupted: bool = False,
    job_id: str | None = None,
) -> dict[str, Any]:
    """The ``--json`` document; README's "JSON output" section describes every field."""
    out: dict[str, Any] = {
        "schema": JSON_SCHEMA,
        "command": command,
        "dry_run": dry_run,
        "interrupted": interrupted,
        "job_id": job_id,
        "summary": report.summary(),
        "succeeded": {str(k): v for k, v in report.succeeded.items()},
        "changed": list(report.changed),
        "failed": {str(k): _error_json(v) for k, v in report.failed.items()},
        "unknown": {str(k): _error_json(v) for k, v in report.unknown.items()},
    }
    if client is not None:
        out["stats"] = attrs.asdict(client.stats())
    return out


def write_json(document: dict[str, Any], out: TextIO) -> None:
    json.dump(document, out, indent=2)
    out.write("\n")


# -- the text summary --------------------------------------------------------------------


def id_ranges(ids: Sequence[int], limit: int = 160) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3 7"``, cut at ``limit`` characters."""
    parts: list[str] = []
    ordered = sorted(ids)
    start = prev = ordered[0] if ordered else 0
    for flow_id in [*ordered[1:], None]:
        if flow_id is not None and flow_id == prev + 1:
            prev = flow_id
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if flow_id is not None:
            start = prev = flow_id
    text = " ".join(parts) if ordered else ""
    return text if len(text) <= limit else text[: limit - 4].rsplit(" ", 1)[0] + " ..."


def plural(count: int, noun: str) -> str:
    """``1 flow``, ``2 flows``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary_lines(report: BulkReport[Any], *, changed_label: str = "changed") -> list[str]:
    s = report.summary()
    lines = [f"  {'total':<12} {s['total']:>7}", f"  {'succeeded':<12} {s['succeeded']:>7}"]
    if report.changed or changed_label != "changed":
        lines.append(f"  {changed_label:<12} {s['changed']:>7}")
    for label, part in (("failed", report.failed), ("unknown", report.unknown)):
        lines.append(f"  {label:<12} {len(part):>7}")
        by_reason: dict[str, list[int]] = {}
        for flow_id, error in part.items():
            by_reason.setdefault(error_text(error, typed=True), []).append(flow_id)
        ranked = sorted(by_reason.items(), key=lambda item: -len(item[1]))
        for reason, flow_ids in ranked[:8]:
            ids = "id" if len(flow_ids) == 1 else "ids"
            lines.append(
                f"    {plural(len(flow_ids), 'flow'):>10} ({reason}): {ids} {id_ranges(flow_ids)}"
            )
    return lines


def text_report(
    title: str,
    count: int,
    report: BulkReport[Any],
    *,
    changed_label: str = "changed",
    elapsed: float,
    requests: int,
    details: Sequence[str] = (),
) -> list[str]:
    """The text report: a title line, the summary, the time and requests it took, then
    what the command adds."""
    return [
        f"{title}: {plural(count, 'flow')}",
        *summary_lines(report, changed_label=changed_label),
        f"  {'elapsed':<12} {elapsed:>7.1f} s, {plural(requests, 'request')}",
        *details,
    ]


def note(text: str) -> None:
    """A remark on stderr beside the report (``--quiet`` callers skip it)."""
    print(f"aiob24flow: note: {text}", file=sys.stderr)


# -- an error that ended the job ---------------------------------------------------------


def systemic_cause(report: BulkReport[Any]) -> B24Error | None:
    """The error that ended the job for every flow, if one did."""
    for error in report.failed.values():
        for candidate in (error, error.__cause__):
            if isinstance(candidate, B24Error) and is_systemic(candidate):
                return candidate
    return None


def systemic_line(error: B24Error) -> str:
    """One clear line for an error that every flow would meet."""
    cause = error.__cause__
    text = error_text(cause if isinstance(error, RefreshFailed) and cause else error, typed=True)
    if isinstance(error, AuthError):
        return f"the portal refused the credentials: {text}"
    if isinstance(error, MethodNotFound):
        return f"the portal does not know the method: {text}"
    if isinstance(error, Unreachable):
        return text  # its message says it: "cannot reach the portal: connection refused"
    if isinstance(error, RefreshFailed):
        return f"no valid OAuth token (the refresh failed): {text}"
    return f"the job ended: {text}"


def silence_stdout() -> None:
    """The reader of stdout went away (``| head``): that is not an error of the job. Point
    stdout at the null device so Python does not complain again when it flushes at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
