"""Bulk operations: reports, read-back and convergence, built on ``_job.Job``.

``Job`` is the one engine: it packs one method over many flow ids into batches of 50,
binds flows to a batch only when that batch can leave, and sorts every flow into ok /
failed / unknown. The operations here run one or more jobs under one ``Control`` (the
caller's stop, the progress counts, the reason sending ended) and end with a report that
accounts for every flow, or with ``BulkAborted`` carrying that report.

Read-back after a lost answer follows one rule (protocol.md §10: the portal keeps
executing a request whose connection dropped): a state read is trusted for a flow only
if it shows the lost toggle took effect, or if it was made after the lost request must
have finished (``sent_at + Timeout.portal_limit``). Until then the flow is neither
re-sent nor reported.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ._errors import B24Error, BulkAborted, ServerError, Stopped
from ._job import (
    FAILED,
    OK_FALSE,
    OK_TRUE,
    OK_VALUE,
    UNKNOWN,
    Control,
    Job,
    Progress,
    ProgressCallback,
)
from ._methods import ACTIVATE, GET, PIN

if TYPE_CHECKING:
    from ._client import FlowClient

__all__ = ["BulkReport", "Progress"]


T = TypeVar("T")


@attrs.frozen
class BulkReport(Generic[T]):
    """What happened to every flow of a bulk operation; each id is in exactly one map.

    - ``succeeded``: id -> the portal's result (activate: True; pin: the new pinned state;
      ``set_active``/``set_pinned``: the flow's state now, which is the desired one);
    - ``failed``: id -> ``B24Error``: the portal did not apply it (no access, not found,
      refused after retries, or never sent);
    - ``unknown``: id -> the error of a request whose answer was lost: it may or may not
      have been applied.

    ``changed`` lists, for ``set_active``/``set_pinned``, the flows this call changed (with
    ``dry_run``: the ones it would change). All maps keep the input order.
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

    def summary(self) -> dict[str, int]:
        """Counts: total, succeeded, changed, failed, unknown."""
        return {
            "total": len(self),
            "succeeded": len(self.succeeded),
            "changed": len(self.changed),
            "failed": len(self.failed),
            "unknown": len(self.unknown),
        }


async def _run(
    client: FlowClient,
    method: str,
    ids: Sequence[int],
    control: Control,
    *,
    repeatable: bool = False,
    max_sends: int | None = None,
    report_progress: bool = True,
    transform: Callable[[Any], Any] | None = None,
) -> Job:
    job = Job(
        client,
        method,
        ids,
        control,
        repeatable=repeatable,
        max_sends=client._options.retry.attempts if max_sends is None else max_sends,
        report_progress=report_progress,
        transform=transform,
    )
    await job.run()
    return job


def _finish(report: BulkReport[Any], control: Control) -> BulkReport[Any]:
    """The report, or ``BulkAborted`` carrying it when an exception ended the operation."""
    error = control.aborted
    if error is not None:
        raise BulkAborted(
            f"bulk job aborted by {type(error).__name__}: {error}", report=report
        ) from error
    return report


def _job_report(job: Job, control: Control) -> BulkReport[Any]:
    """A job that covered every input flow, straight into a report (input order)."""
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    job.fill(succeeded, failed, unknown)
    report: BulkReport[Any] = BulkReport(succeeded, failed, unknown)
    return _finish(report, control)


def _report(
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
                unsent = _unsent_error(control)
            out_failed[flow_id] = unsent
    changed_ids = tuple(i for i in ids if i in changed) if changed else ()
    report = BulkReport(out_ok, out_failed, out_unknown, changed_ids)
    return report if control is None else _finish(report, control)


def _unsent_error(control: Control | None) -> B24Error:
    """The error of a flow that no request carried: why sending ended (or a bug)."""
    if control is not None and control.halted is not None:
        return control.unsent_error()
    return ServerError("aiob24flow lost track of this flow")


async def _guarded(control: Control, run: Callable[[], Any]) -> Any:
    """Run one operation; an unexpected exception ends all sending and is kept for
    ``_report`` to raise as ``BulkAborted`` with the report (None is returned)."""
    try:
        return await run()
    except Exception as exc:
        control.abort(exc)
        return None


async def toggle_many(
    client: FlowClient,
    method: str,
    ids: Sequence[int],
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    control = Control(len(ids), stop, on_progress)
    job = await _run(client, method, ids, control)
    return _job_report(job, control)


async def read_flows(
    client: FlowClient,
    ids: Sequence[int],
    fields: tuple[str, ...] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> BulkReport[Any]:
    control = Control(len(ids), stop, on_progress)
    transform = None if fields is None else _projection(fields)
    job = await _run(client, GET, ids, control, repeatable=True, transform=transform)
    return _job_report(job, control)


def _projection(fields: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """Keep ``fields`` of each flow (those it has) and drop the rest of the object as its
    answer is folded: a small dict of plain values, which CPython's collector stops
    tracking, instead of a whole flow of a dict and six lists."""

    def project(flow: Any) -> dict[str, Any]:
        if not isinstance(flow, dict):
            raise ValueError(f"flow is not an object: {type(flow).__name__}")
        return {name: flow[name] for name in fields if name in flow}

    return project


@attrs.define
class _States:
    """``active`` read for each flow (reads are safe to repeat after a lost answer)."""

    ok: dict[int, bool]
    failed: dict[int, B24Error]
    unknown: dict[int, B24Error]


def _active_of(flow: Any) -> bool:
    """Keep one bit of a ``tasks.flow.Flow.get`` result: the rest is dropped at once."""
    active = flow.get("active") if isinstance(flow, dict) else None
    if not isinstance(active, bool):
        raise ValueError("flow has no boolean 'active'")
    return active


async def _read_active(client: FlowClient, ids: Sequence[int], control: Control) -> _States:
    job = await _run(
        client, GET, ids, control, repeatable=True, report_progress=False, transform=_active_of
    )
    states: dict[int, bool] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    job.fill(states, failed, unknown)
    return _States(states, failed, unknown)


def _wait_until(errors: Sequence[B24Error], limit: float) -> float | None:
    """The loop time after which every request of ``errors`` is surely done (None: now)."""
    latest: float | None = None
    for error in errors:
        if error.finished or error.sent_at is None:
            continue
        done = error.sent_at + limit
        latest = done if latest is None else max(latest, done)
    return latest


async def _sleep_until(client: FlowClient, when: float | None) -> None:
    if when is None:
        return
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await client._pause(delay)


async def _settle(client: FlowClient, lost: Sequence[B24Error]) -> None:
    """Before the first read after lost answers, give the portal a moment to finish."""
    if _wait_until(lost, 0.0) is not None:
        settle = client._options.timeout.settle
        if settle > 0:
            await client._pause(settle)


_OPEN, _SUCCEEDED, _FAILED, _UNKNOWN = range(4)


async def converge_active(
    client: FlowClient,
    ids: Sequence[int],
    desired: Callable[[int], bool],
    max_sends: int,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
    *,
    dry_run: bool = False,
    result_value: Callable[[int], Any] | None = None,
    states: dict[int, bool] | None = None,
) -> BulkReport[Any]:
    """Bring each flow's ``active`` to ``desired(id)``: read, toggle what differs, and
    after lost answers read again and toggle only what is still wrong.

    Each flow is toggled at most ``max_sends`` times; rounds go on while any flow is
    unsettled and within that budget. ``states`` skips the first read.

    What is kept per flow is a byte (its outcome) and a bit of state; maps hold only the
    flows with an error or a lost answer, so a million flows cost about as much as the
    report itself.
    """
    n = len(ids)
    control = Control(n, stop, on_progress)
    value = result_value or desired
    outcome = bytearray(n)  # _OPEN / _SUCCEEDED / _FAILED / _UNKNOWN per position
    changed = bytearray(n)
    errors: dict[int, B24Error] = {}  # position -> why failed / unknown
    lost: dict[int, B24Error] = {}  # position -> the error of its lost toggle
    sends: dict[int, int] = {}  # position -> toggles sent, once more than one
    limit = client._options.timeout.portal_limit
    read_states = bytearray()  # the first read: OK_TRUE / OK_FALSE per position

    def settle(position: int, code: int, error: B24Error | None = None) -> None:
        outcome[position] = code
        if error is not None:
            errors[position] = error

    async def read(positions: Sequence[int]) -> Job:
        subset = ids if len(positions) == n else [ids[p] for p in positions]
        return await _run(client, GET, subset, control, repeatable=True,
                          report_progress=False, transform=_active_of)  # fmt: skip

    async def read_back(positions: list[int]) -> list[tuple[int, bool]]:
        """Settle flows whose toggle was lost; return the trusted wrong states."""
        await _settle(client, [lost[p] for p in positions])
        wrong: list[tuple[int, bool]] = []
        waited = False  # once slept until the lost requests must be done, reads are proof
        pending = positions
        while pending and not control.stopping:
            job = await read(pending)
            later = []
            settled = unsettled = 0
            for j, position in enumerate(pending):
                code = job.status[j]
                if code not in (OK_TRUE, OK_FALSE):
                    settle(position, _UNKNOWN, lost[position])
                    unsettled += 1
                    continue
                state = code == OK_TRUE
                if state == desired(ids[position]):
                    # The lost toggle took effect (and it cannot run twice).
                    settle(position, _SUCCEEDED)
                    changed[position] = 1
                    settled += 1
                elif not waited and _wait_until([lost[position]], limit) is not None:
                    later.append(position)  # its lost request may still run: wait for it
                else:
                    wrong.append((position, state))
            control.add(settled, 0, unsettled)
            pending = later
            if pending:
                await _sleep_until(client, _wait_until([lost[p] for p in pending], limit))
                waited = True
        for position in pending:  # stopped while waiting for the portal
            settle(position, _UNKNOWN, lost[position])
        return wrong

    def first_states() -> Iterator[tuple[int, bool]]:
        if states is not None:
            for position, flow_id in enumerate(ids):
                yield position, states[flow_id]
            return
        for position, code in enumerate(read_states):
            if code in (OK_TRUE, OK_FALSE):
                yield position, code == OK_TRUE

    async def run() -> None:
        nonlocal read_states
        if states is None:
            job = await read(range(n))
            for position, error in job._errors.items():
                settle(position, _FAILED, error)  # never read, so never toggled
            control.add(0, len(job._errors), 0)
            read_states = job.status
        if dry_run:
            for position, state in first_states():
                settle(position, _SUCCEEDED)
                changed[position] = state != desired(ids[position])
            return
        check: Iterable[tuple[int, bool]] = first_states()
        sent_once = False
        while not control.stopping:
            wrong = array("q")
            settled = 0
            for position, state in check:
                if state == desired(ids[position]):
                    settle(position, _SUCCEEDED)
                    settled += 1
                elif sends.get(position, 1 if sent_once else 0) >= max_sends:
                    error = lost.get(position) or ServerError("did not converge", method=ACTIVATE)
                    settle(position, _UNKNOWN, error)
                    settled += 1
                else:
                    wrong.append(position)
            control.add(settled, 0, 0)
            if not wrong:
                break
            if sent_once:  # the first round sends each wrong flow once: no map for that
                for position in wrong:
                    sends[position] = sends.get(position, 1) + 1
            sent_once = True
            job = await _run(client, ACTIVATE, [ids[p] for p in wrong], control,
                             max_sends=1, report_progress=False)  # fmt: skip
            newly_lost: list[int] = []
            ok = failed = 0
            for j, position in enumerate(wrong):
                code = job.status[j]
                if code in (OK_TRUE, OK_FALSE, OK_VALUE):
                    settle(position, _SUCCEEDED)
                    changed[position] = 1
                    ok += 1
                elif code == FAILED:
                    settle(position, _FAILED, job._errors[j])
                    failed += 1
                elif code == UNKNOWN:
                    lost[position] = job._errors[j]
                    newly_lost.append(position)
            control.add(ok, failed, 0)
            if not newly_lost:
                break
            if control.stopping:
                for position in newly_lost:
                    settle(position, _UNKNOWN, lost[position])
                break
            check = await read_back(newly_lost)

    await _guarded(control, run)
    succeeded: dict[int, Any] = {}
    failed_map: dict[int, B24Error] = {}
    unknown_map: dict[int, B24Error] = {}
    unsent: B24Error | None = None
    for position, code in enumerate(outcome):
        flow_id = ids[position]
        if code == _SUCCEEDED:
            if dry_run:
                succeeded[flow_id] = (
                    states[flow_id] if states is not None else read_states[position] == OK_TRUE
                )
            else:
                succeeded[flow_id] = value(flow_id)
        elif code == _FAILED:
            failed_map[flow_id] = errors[position]
        elif code == _UNKNOWN:
            unknown_map[flow_id] = errors[position]
        elif position in lost:  # the job ended while its lost toggle was unsettled
            unknown_map[flow_id] = lost[position]
        else:  # never sent: the job ended first
            if unsent is None:
                unsent = _unsent_error(control)
            failed_map[flow_id] = unsent
    changed_ids = tuple(ids[p] for p in range(n) if changed[p])
    report: BulkReport[Any] = BulkReport(succeeded, failed_map, unknown_map, changed_ids)
    return _finish(report, control)


async def toggle_verified(
    client: FlowClient,
    ids: Sequence[int],
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """``activate_many(verify=True)``: toggle each flow exactly once, settled by read-back."""
    control = Control(len(ids), stop, on_progress)
    snapshot = await _guarded(control, lambda: _read_active(client, ids, control))
    if snapshot is None or control.halted is not None:
        unread = {} if snapshot is None else {**snapshot.failed, **snapshot.unknown}
        return _report(ids, {}, unread, {}, control=control)
    before = snapshot.ok
    readable = [i for i in ids if i in before]
    report = await converge_active(
        client,
        readable,
        lambda flow_id: not before[flow_id],
        client._options.retry.attempts,
        on_progress,
        stop,
        result_value=lambda _: True,
        states=snapshot.ok,
    )
    # Never read, so never toggled: the portal did not apply it.
    failed: dict[int, B24Error] = {**snapshot.failed, **snapshot.unknown, **report.failed}
    return _report(ids, report.succeeded, failed, report.unknown)


async def converge_pinned(
    client: FlowClient,
    ids: Sequence[int],
    pinned: bool,
    max_sends: int,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """Pin until each flow's answer says ``pinned``.

    A lost pin is sent again only once the lost request must have finished (pin state
    cannot be read, and a late pin would flip the flow back). A flow whose answer was
    lost ``max_sends`` times is reported unknown; a lost pin costs up to two more (one to
    learn the state, one to correct it), so a flow is pinned at most
    ``2 * max_sends + 1`` times.
    """
    control = Control(len(ids), stop, on_progress)
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    before: dict[int, bool] = {}
    lost: dict[int, B24Error] = {}
    limit = client._options.timeout.portal_limit

    async def run() -> None:
        sends: dict[int, int] = {}
        losses: dict[int, int] = {}
        pending = list(ids)
        while pending and not control.stopping:
            go = []
            for flow_id in pending:
                if losses.get(flow_id, 0) >= max_sends or sends.get(flow_id, 0) > 2 * max_sends:
                    unknown[flow_id] = lost.get(flow_id) or ServerError(
                        "did not converge", method=PIN
                    )
                    control.add(0, 0, 1)
                else:
                    sends[flow_id] = sends.get(flow_id, 0) + 1
                    go.append(flow_id)
            if not go:
                break
            sent = await _run(client, PIN, go, control, max_sends=1, report_progress=False)
            failed.update(sent.failed)
            again = []
            done = 0
            for flow_id in go:
                if flow_id in sent.ok:
                    state = bool(sent.ok[flow_id])
                    if flow_id not in before and flow_id not in lost:
                        before[flow_id] = not state  # the first clean answer tells the old state
                    if state == pinned:
                        succeeded[flow_id] = state
                        lost.pop(flow_id, None)
                        done += 1
                    else:
                        again.append(flow_id)
                elif flow_id in sent.unknown:
                    lost[flow_id] = sent.unknown[flow_id]
                    losses[flow_id] = losses.get(flow_id, 0) + 1
                    again.append(flow_id)
            control.add(done, len(sent.failed), 0)
            pending = again
            if sent.unknown and not control.stopping:
                await _settle(client, list(sent.unknown.values()))
                await _sleep_until(client, _wait_until(list(sent.unknown.values()), limit))
        for flow_id in pending:
            if flow_id in lost:
                unknown[flow_id] = lost[flow_id]
            else:  # pinned once, answered the other state, then the job stopped
                now = "unpinned" if pinned else "pinned"
                error = Stopped(f"stopped before pinning again: the flow is now {now}")
                error.__cause__ = control.halted
                failed[flow_id] = error

    await _guarded(control, run)
    changed = {i for i in succeeded if before.get(i, not pinned) != pinned}
    return _report(ids, succeeded, failed, unknown, changed, control)
