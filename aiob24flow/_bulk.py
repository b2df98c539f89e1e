"""The bulk operations, each a few lines over ``Job`` and the convergence classes.

``Job`` (``_job.py``) is the one engine: it packs one method over many flow ids into
batches of 50, binds flows to a batch only when that batch can leave, and sorts every
flow into ok / failed / unknown. The operations here run one or more jobs under one
``Control`` (the caller's stop, the progress counts, the reason sending ended) and end
with a ``BulkReport`` (``_report.py``) that accounts for every flow, or with
``BulkAborted`` carrying it. ``set_active``/``set_pinned``/``verify=True`` converge
(``_converge.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ._converge import ActiveConvergence, ActivePlan, PinConvergence, run_job, toggle_verified
from ._durable import (
    History,
    converge_resumed,
    pin_resumed,
    run_journaled,
    toggle_resumed,
    verify_resumed,
)
from ._job import Control, ProgressCallback
from ._journal import JobLog, JobSpec, Journal
from ._methods import ACTIVATE, GET
from ._pipeline import Pipeline
from ._report import BulkReport, job_report

__all__ = [
    "Durable",
    "converge_active",
    "converge_pinned",
    "plan_active",
    "projection",
    "read_flows",
    "toggle_many",
    "toggle_verified",
]


async def toggle_many(
    pipeline: Pipeline,
    method: str,
    ids: Sequence[int],
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """Send ``method`` (a toggle) once for every flow; never re-send what may have run."""
    control = Control(len(ids), stop, on_progress)
    job = await run_job(pipeline, method, ids, control)
    return job_report(job, control, changed=True)


async def read_flows(
    pipeline: Pipeline,
    ids: Sequence[int],
    fields: tuple[str, ...] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> BulkReport[Any]:
    """Read every flow (reads are safe to repeat after a lost answer)."""
    control = Control(len(ids), stop, on_progress)
    transform = None if fields is None else projection(fields)
    job = await run_job(pipeline, GET, ids, control, repeatable=True, transform=transform)
    return job_report(job, control)


def projection(fields: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """Keep ``fields`` of each flow (those it has) and drop the rest of the object as its
    answer is folded: a small dict of plain values, which CPython's collector stops
    tracking, instead of a whole flow of a dict and six lists."""

    def project(flow: Any) -> dict[str, Any]:
        if not isinstance(flow, dict):
            raise ValueError(f"flow is not an object: {type(flow).__name__}")
        return {name: flow[name] for name in fields if name in flow}

    return project


async def converge_active(
    pipeline: Pipeline,
    ids: Sequence[int],
    active: bool,
    max_sends: int,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """``set_active``: each flow's ``active`` brought to ``active``."""
    control = Control(len(ids), stop, on_progress)
    return await ActiveConvergence(pipeline, ids, lambda _: active, max_sends, control).run()


async def plan_active(
    pipeline: Pipeline,
    ids: Sequence[int],
    active: bool,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """``set_active(..., dry_run=True)``: what would change, with nothing toggled."""
    control = Control(len(ids), stop, on_progress)
    return await ActivePlan(pipeline, ids, active, control).run()


async def converge_pinned(
    pipeline: Pipeline,
    ids: Sequence[int],
    pinned: bool,
    max_sends: int,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """``set_pinned``: pin until each flow's answer says ``pinned``."""
    control = Control(len(ids), stop, on_progress)
    return await PinConvergence(pipeline, ids, pinned, max_sends, control).run()


class Durable:
    """The journaled operations of one call: ``journal`` and ``job_id`` given (checked by
    the client), the job taken in the journal before any request."""

    def __init__(
        self,
        pipeline: Pipeline,
        journal: Journal,
        job_id: str,
        on_progress: ProgressCallback | None,
        stop: asyncio.Event | None,
    ) -> None:
        self.pipeline = pipeline
        self.journal = journal
        self.job_id = job_id
        self.on_progress = on_progress
        self.stop = stop

    async def _run(
        self,
        spec: JobSpec,
        run: Callable[[Control, JobLog, History], Any],
    ) -> BulkReport[Any]:
        control = Control(len(spec.ids), self.stop, self.on_progress)
        return await run_journaled(
            self.journal, self.job_id, spec, control, lambda log, h: run(control, log, h)
        )

    async def toggle(self, method: str, ids: Sequence[int], verify: bool) -> BulkReport[Any]:
        p = self.pipeline
        operation = "activate_many" if method == ACTIVATE else "pin_many"
        spec = JobSpec(operation, ids, None, verify)
        if verify:
            return await self._run(spec, lambda c, log, h: verify_resumed(p, ids, c, log, h))
        return await self._run(
            spec, lambda c, log, h: toggle_resumed(p, method, ids, c, log, h)
        )

    async def set_active(self, ids: Sequence[int], active: bool, rounds: int) -> BulkReport[Any]:
        p = self.pipeline
        return await self._run(
            JobSpec("set_active", ids, active),
            lambda c, log, h: converge_resumed(p, ids, lambda _: active, rounds, c, log, h),
        )

    async def set_pinned(self, ids: Sequence[int], pinned: bool, rounds: int) -> BulkReport[Any]:
        p = self.pipeline
        return await self._run(
            JobSpec("set_pinned", ids, pinned),
            lambda c, log, h: pin_resumed(p, ids, pinned, rounds, c, log, h),
        )

