"""``BulkReport``: what happened to every flow of a bulk operation, and how it is built.

Every flow ends in exactly one map, in input order: ``succeeded``, ``failed`` (provably
not applied) or ``unknown`` (may have been applied). A flow that no request carried (the
operation ended first) is ``failed`` with the reason sending ended. An operation ended by
an exception raises ``BulkAborted`` carrying the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs

from ._errors import B24Error, BulkAborted, ServerError
from ._job import Control, Job

__all__ = ["BulkReport", "build_report", "finish", "guarded", "job_report", "unsent_error"]

T = TypeVar("T")


@attrs.frozen(repr=False)
class BulkReport(Generic[T]):
    """What happened to every flow of a bulk operation; each id is in exactly one map.

    - ``succeeded``: id -> the portal's result (activate: True; pin: the new pinned state;
      ``set_active``/``set_pinned``: the flow's state now, which is the desired one);
    - ``failed``: id -> ``B24Error``: the portal did not apply it (no access, not found,
      refused after retries, or never sent);
    - ``unknown``: id -> the error of a request whose answer was lost: it may or may not
      have been applied.

    ``changed`` lists the flows this call changed: for ``activate_many``/``pin_many`` every
    flow it toggled (the ``succeeded`` ones), for ``set_active``/``set_pinned`` the flows
    whose state it changed (with ``dry_run``: would change). All keep the input order.
    """

    succeeded: dict[int, T]
    failed: dict[int, B24Error]
    unknown: dict[int, B24Error]
    changed: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every flow succeeded."""
        return not self.failed and not self.unknown

    def __len__(self) -> int:
        return len(self.succeeded) + len(self.failed) + len(self.unknown)

    def __repr__(self) -> str:
        # Counts only: a report of a million flows must not print a million entries.
        counts = ", ".join(f"{k}={v}" for k, v in self.summary().items())
        return f"<BulkReport {counts}>"

    def summary(self) -> dict[str, int]:
        """Counts: total, succeeded, changed, failed, unknown."""
        return {
            "total": len(self),
            "succeeded": len(self.succeeded),
            "changed": len(self.changed),
            "failed": len(self.failed),
            "unknown": len(self.unknown),
        }


def finish(report: BulkReport[Any], control: Control) -> BulkReport[Any]:
    """The report, or ``BulkAborted`` carrying it when an exception ended the operation."""
    error = control.aborted
    if error is not None:
        raise BulkAborted(
            f"bulk job aborted by {type(error).__name__}: {error}", report=report
        ) from error
    return report


def job_report(job: Job, control: Control, *, changed: bool = False) -> BulkReport[Any]:
    """A job that covered every input flow, straight into a report (input order).
    ``changed``: the job toggled, so every flow that succeeded was changed."""
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    job.fill(succeeded, failed, unknown)
    toggled = tuple(succeeded) if changed else ()
    return finish(BulkReport(succeeded, failed, unknown, toggled), control)


def build_report(
    ids: Sequence[int],
    succeeded: dict[int, Any],
    failed: dict[int, B24Error],
    unknown: dict[int, B24Error],
    changed: set[int] | None = None,
    control: Control | None = None,
) -> BulkReport[Any]:
    """Put every id in exactly one map, in input order (first map that has it wins).

    A flow in none of them was never sent (the job ended first): ``failed``.
    """
    out_ok: dict[int, Any] = {}
    out_failed: dict[int, B24Error] = {}
    out_unknown: dict[int, B24Error] = {}
    unsent: B24Error | None = None
    for flow_id in ids:
        if flow_id in succeeded:
            out_ok[flow_id] = succeeded[flow_id]
        elif flow_id in failed:
            out_failed[flow_id] = failed[flow_id]
        elif flow_id in unknown:
            out_unknown[flow_id] = unknown[flow_id]
        else:
            if unsent is None:
                unsent = unsent_error(control)
            out_failed[flow_id] = unsent
    changed_ids = tuple(i for i in ids if i in changed) if changed else ()
    report = BulkReport(out_ok, out_failed, out_unknown, changed_ids)
    return report if control is None else finish(report, control)


def unsent_error(control: Control | None) -> B24Error:
    """The error of a flow that no request carried: why sending ended (or a bug)."""
    if control is not None and control.halted is not None:
        return control.unsent_error()
    return ServerError("aiob24flow lost track of this flow")


async def guarded(control: Control, run: Callable[[], Any]) -> Any:
    """Run one operation; an unexpected exception ends all sending and is kept for
    ``finish`` to raise as ``BulkAborted`` with the report (None is returned)."""
    try:
        return await run()
    except Exception as exc:
        control.abort(exc)
        return None
