"""What a finished bulk job tells the operator: its span, its flows counted, a log record.

``observed`` wraps each public bulk operation once, at ``FlowClient``'s entry points, so
that every operation (plain, verified, converging, journaled, resumed) is observed the same
way and none of them carries telemetry code of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from ._errors import BulkAborted
from ._report import BulkReport
from ._telemetry import JobProbe, Telemetry, error_type

__all__ = ["observed"]

logger = logging.getLogger("aiob24flow")

R = TypeVar("R", bound=BulkReport[Any])


async def observed(telemetry: Telemetry | None, operation: str, total: int, job: Awaitable[R]) -> R:
    """Run ``job`` (one bulk operation over ``total`` flows) under its INTERNAL span; when
    it ends, count its flows and log one INFO record with its counts."""
    if telemetry is None and not logger.isEnabledFor(logging.INFO):
        return await job
    probe = None if telemetry is None else telemetry.job(operation, total)
    started = time.perf_counter()
    try:
        report = await job
    except BulkAborted as exc:
        cause = exc.__cause__ or exc
        _ended(probe, operation, started, exc.report, cause, f"aborted by {type(cause).__name__}")
        raise
    except BaseException as exc:  # cancelled (or a bug): no report, the span still ends
        how = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
        _ended(probe, operation, started, None, exc, how, total)
        raise
    _ended(probe, operation, started, report, None, "")
    return report


def _ended(
    probe: JobProbe | None,
    operation: str,
    started: float,
    report: BulkReport[Any] | None,
    error: BaseException | None,
    how: str,
    total: int = 0,
) -> None:
    counts = None if report is None else report.summary()
    if probe is not None:
        probe.end(counts, error, how)
    if logger.isEnabledFor(logging.INFO):
        _log_job(operation, time.perf_counter() - started, counts, error, how, total)


def _log_job(
    operation: str,
    elapsed: float,
    counts: dict[str, int] | None,
    error: BaseException | None,
    how: str,
    total: int,
) -> None:
    """The one INFO record per finished job: a readable line and its fields in ``extra``."""
    fields: dict[str, Any] = {
        "event": "job",
        "operation": operation,
        "total": total if counts is None else counts["total"],
        "succeeded": None if counts is None else counts["succeeded"],
        "failed": None if counts is None else counts["failed"],
        "unknown": None if counts is None else counts["unknown"],
        "changed": None if counts is None else counts["changed"],
        "duration_s": round(elapsed, 6),
        "error_type": None if error is None else error_type(error),
    }
    ending = f" ({how})" if how else ""
    if counts is None:
        logger.info("%s of %d flows%s after %.3fs", operation, total, ending, elapsed,
                    extra=fields)  # fmt: skip
        return
    logger.info(
        "%s: %d flows, %d succeeded, %d failed, %d unknown in %.3fs%s",
        operation,
        counts["total"],
        counts["succeeded"],
        counts["failed"],
        counts["unknown"],
        elapsed,
        ending,
        extra=fields,
    )
