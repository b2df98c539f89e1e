"""Convergence: ``set_active``, ``set_pinned`` and ``activate_many(verify=True)`` as objects.

Each operation is a class whose state is its attributes and whose steps are its methods;
``run()`` drives the rounds and returns the ``BulkReport``. What is kept per flow is a byte
(its ``Outcome``) and a bit of state; maps hold only the flows with an error or a lost
answer, so a million flows cost about as much as the report itself.

Read-back after a lost answer follows one rule (protocol.md §10: the portal keeps
executing a request whose connection dropped): a state read is trusted for a flow only
if it shows the lost toggle took effect, or if it was made after the lost request must
have finished (``sent_at + Timeout.portal_limit``). Until then the flow is neither
re-sent nor reported.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import attrs

from ._errors import B24Error, ServerError, Stopped
from ._job import (
    FAILED,
    OK_FALSE,
    OK_TRUE,
    OK_VALUE,
    UNKNOWN,
    Control,
    Job,
    ProgressCallback,
    SendLog,
)
from ._journal import JobLog
from ._methods import ACTIVATE, GET, PIN
from ._pipeline import Pipeline
from ._report import BulkReport, build_report, finish, guarded, unsent_error

__all__ = [
    "ActiveConvergence",
    "ActivePlan",
    "Journaled",
    "PinConvergence",
    "active_of",
    "run_job",
    "toggle_verified",
]


async def run_job(  # noqa: PLR0913 - a Job's switches, passed through
    pipeline: Pipeline,
    method: str,
    ids: Sequence[int],
    control: Control,
    *,
    repeatable: bool = False,
    max_sends: int | None = None,
    report_progress: bool = True,
    transform: Callable[[Any], Any] | None = None,
    log: SendLog | None = None,
) -> Job:
    """One job of ``method`` over ``ids``, run to its end under ``control`` (writing
    ahead to ``log`` when the job is journaled)."""
    job = Job(
        pipeline,
        method,
        ids,
        control,
        repeatable=repeatable,
        max_sends=pipeline.options.retry.attempts if max_sends is None else max_sends,
        report_progress=report_progress,
        transform=transform,
        log=log,
    )
    await job.run()
    return job


def active_of(flow: Any) -> bool:
    """Keep one bit of a ``tasks.flow.Flow.get`` result: the rest is dropped at once."""
    active = flow.get("active") if isinstance(flow, dict) else None
    if not isinstance(active, bool):
        raise ValueError("flow has no boolean 'active'")
    return active


def wait_until(errors: Iterable[B24Error], limit: float) -> float | None:
    """The loop time after which every request of ``errors`` is surely done (None: now)."""
    latest: float | None = None
    for error in errors:
        if error.finished or error.sent_at is None:
            continue
        done = error.sent_at + limit
        latest = done if latest is None else max(latest, done)
    return latest


async def sleep_until(pipeline: Pipeline, when: float | None) -> None:
    if when is None:
        return
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await pipeline.pause(delay)


async def settle_pause(pipeline: Pipeline, lost: Iterable[B24Error]) -> None:
    """Before the first read after lost answers, give the portal a moment to finish."""
    if wait_until(lost, 0.0) is not None:
        settle = pipeline.options.timeout.settle
        if settle > 0:
            await pipeline.pause(settle)


@attrs.frozen
class Journaled:
    """A journaled run: where it writes ahead, and what earlier runs left (by position):
    toggles sent without a recorded answer (``doubt``), toggles sent per flow (``sent``)."""

    log: JobLog
    doubt: dict[int, B24Error] = attrs.Factory(dict)
    sent: dict[int, int] = attrs.Factory(dict)


#: Read requests between two journal writes of a journaled ``set_active``'s first reads:
#: what a run stopped while reading reads again, at most (about two minutes at the
#: standard portal's pace; a pause for the answers in flight at the end of each).
READ_CHUNK = 200


class _ActiveReads:
    """What ``set_active`` and its plan share: reading the ``active`` bit of flows."""

    def __init__(
        self,
        pipeline: Pipeline,
        ids: Sequence[int],
        control: Control,
        log: JobLog | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.ids = ids
        self.control = control
        self.log = log
        self.outcome = bytearray(len(ids))  # PENDING / OK_TRUE (settled) / FAILED / UNKNOWN
        self.changed = bytearray(len(ids))
        self.errors: dict[int, B24Error] = {}  # position -> why failed / unknown
        self.read_states = bytearray(len(ids))  # the first read: OK_TRUE / OK_FALSE
        self.unjournaled: list[int] = []  # settled positions the journal does not hold yet

    def settle(
        self, position: int, code: int, error: B24Error | None = None, *, journal: bool = True
    ) -> None:
        self.outcome[position] = code
        if error is not None:
            self.errors[position] = error
        if journal and self.log is not None:
            self.unjournaled.append(position)

    async def journal_settled(self) -> None:
        """One journal row for the flows settled since the last one (a read showed the
        desired state, a flow went out of budget): a resumed run leaves them alone."""
        positions, self.unjournaled = self.unjournaled, []
        if not positions or self.log is None:
            return
        ids = [self.ids[p] for p in positions]
        codes = bytes(self.outcome[p] for p in positions)
        changed = bytes(self.changed[p] for p in positions)
        errors = {i: self.errors[p] for i, p in enumerate(positions) if p in self.errors}
        try:
            await self.log.settle(ids, codes, changed, errors)
        except B24Error as exc:  # the journal failed: send nothing more
            self.control.halt(exc)

    async def read(self, positions: Sequence[int]) -> Job:
        ids = self.ids
        subset = ids if len(positions) == len(ids) else [ids[p] for p in positions]
        return await run_job(self.pipeline, GET, subset, self.control, repeatable=True,
                             report_progress=False, transform=active_of)  # fmt: skip

    async def read_first(self, skip: Collection[int] = ()) -> None:
        """Read every flow once (but those in ``skip``); a flow that cannot be read is
        never toggled: failed."""
        positions: Sequence[int] = range(len(self.ids))
        if skip:
            positions = [p for p in positions if p not in skip]
        job = await self.read(positions)
        errors = job.errors()
        for j, error in errors.items():
            self.settle(positions[j], FAILED, error)
        self.control.add(0, len(errors), 0)
        if len(positions) == len(self.ids):
            self.read_states = job.status
        else:
            for j, position in enumerate(positions):
                self.read_states[position] = job.status[j]
        await self.journal_settled()

    def first_states(self) -> Iterator[tuple[int, bool]]:
        for position, code in enumerate(self.read_states):
            if code in (OK_TRUE, OK_FALSE):
                yield position, code == OK_TRUE


class ActivePlan(_ActiveReads):
    """``set_active(..., dry_run=True)``: read, and report what would change."""

    def __init__(
        self, pipeline: Pipeline, ids: Sequence[int], active: bool, control: Control
    ) -> None:
        super().__init__(pipeline, ids, control)
        self.active = active

    async def run(self) -> BulkReport[Any]:
        await guarded(self.control, self._plan)
        succeeded: dict[int, Any] = {}
        failed: dict[int, B24Error] = {}
        unsent: B24Error | None = None
        for position, flow_id in enumerate(self.ids):
            code = self.outcome[position]
            if code == OK_TRUE:
                succeeded[flow_id] = self.read_states[position] == OK_TRUE
            elif code == FAILED:
                failed[flow_id] = self.errors[position]
            else:  # never read: the job ended first
                if unsent is None:
                    unsent = unsent_error(self.control)
                failed[flow_id] = unsent
        changed = tuple(self.ids[p] for p in range(len(self.ids)) if self.changed[p])
        return finish(BulkReport(succeeded, failed, {}, changed), self.control)

    async def _plan(self) -> None:
        await self.read_first()
        for position, state in self.first_states():
            self.settle(position, OK_TRUE)
            self.changed[position] = state != self.active


class ActiveConvergence(_ActiveReads):
    """Bring each flow's ``active`` to ``desired(id)``: read, toggle what differs, and
    after lost answers read again and toggle only what is still wrong.

    Each flow is toggled at most ``max_sends`` times; rounds go on while any flow is
    unsettled and within that budget. ``states`` (id -> active) skips the first read.
    ``result_value(id)`` is what ``succeeded`` holds (default: the desired state).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        ids: Sequence[int],
        desired: Callable[[int], bool],
        max_sends: int,
        control: Control,
        *,
        result_value: Callable[[int], Any] | None = None,
        states: dict[int, bool] | None = None,
        journaled: Journaled | None = None,
    ) -> None:
        super().__init__(pipeline, ids, control, journaled.log if journaled else None)
        doubt = journaled.doubt if journaled else None
        sent = journaled.sent if journaled else None
        self.desired = desired
        self.max_sends = max_sends
        self.value = result_value or desired
        self.states = states
        # position -> the error of its lost toggle; a resumed job starts with the flows
        # an earlier run sent without a recorded answer (``doubt``).
        self.lost: dict[int, B24Error] = dict(doubt or {})
        self.doubt = list(self.lost)
        # position -> toggles sent, once more than one (or sent by an earlier run)
        self.sends: dict[int, int] = dict(sent or {})
        self.sent_once = False  # the first round sends each wrong flow once: no map for that
        self.limit = pipeline.options.timeout.portal_limit

    async def run(self) -> BulkReport[Any]:
        """Converge; the report, or ``BulkAborted`` carrying it."""
        return finish(await self.converge(), self.control)

    async def converge(self) -> BulkReport[Any]:
        """Converge; the report even when an exception ended it (``control.aborted``)."""
        await guarded(self.control, self._converge)
        return self.report()

    def first_states(self) -> Iterator[tuple[int, bool]]:
        if self.states is None:
            yield from super().first_states()
            return
        lost = self.lost
        for position, flow_id in enumerate(self.ids):
            if position not in lost:
                yield position, self.states[flow_id]

    async def _converge(self) -> None:
        # The work ahead: a read of each flow (unless given), a toggle at most.
        self.control.expect(len(self.ids) * (1 if self.states is not None else 2))
        check: Iterable[tuple[int, bool]] = ()
        first_wrong = array("q")
        if self.states is None and self.log is not None:
            first_wrong = await self.read_sorted(skip=self.lost)
        else:
            if self.states is None:
                await self.read_first(skip=self.lost)
            check = self.first_states()
        if self.doubt:  # an earlier run's toggles without an answer: the lost-answer rule
            check = [*check, *await self.read_back(self.doubt)]
        control = self.control
        while not control.stopping:
            wrong = await self.sort_journaled(check)
            if first_wrong:
                wrong, first_wrong = first_wrong + wrong, array("q")
                control.expect(len(wrong))
            if not wrong:
                break
            newly_lost = await self.toggle(wrong)
            if not newly_lost:
                break
            control.expect(len(newly_lost))  # a read-back each
            if control.stopping:
                for position in newly_lost:
                    self.settle(position, UNKNOWN, self.lost[position], journal=False)
                break
            check = await self.read_back(newly_lost)

    async def read_sorted(self, skip: Collection[int]) -> array[int]:
        """A journaled job's first reads, in chunks of ``READ_CHUNK`` requests, each
        sorted and journaled as it ends: a run stopped while reading resumes without
        reading again the flows it found in the desired state. The flows to toggle."""
        positions: Sequence[int] = range(len(self.ids))
        if skip:
            positions = [p for p in positions if p not in skip]
        step = READ_CHUNK * 50
        wrong = array("q")
        for start in range(0, len(positions), step):
            if self.control.stopping:  # the rest is reported never sent, and not journaled
                break
            chunk = positions[start : start + step]
            job = await self.read(chunk)
            errors = job.errors()
            for j, error in errors.items():
                self.settle(chunk[j], FAILED, error)
            self.control.add(0, len(errors), 0)
            status = job.status
            read = [(p, status[j] == OK_TRUE) for j, p in enumerate(chunk)
                    if status[j] in (OK_TRUE, OK_FALSE)]  # fmt: skip
            wrong.extend(self.sort(read))
            left = len(positions) - start - len(chunk)
            self.control.expect(2 * left + len(wrong))  # reads and toggles ahead
            await self.journal_settled()
        return wrong

    def sort(self, check: Iterable[tuple[int, bool]]) -> array[int]:
        """Settle the flows in the desired state and those out of budget; return the
        positions to toggle."""
        ids, desired, sends = self.ids, self.desired, self.sends
        spent = 1 if self.sent_once else 0
        wrong = array("q")
        settled = 0
        for position, state in check:
            if state == desired(ids[position]):
                self.settle(position, OK_TRUE)
                settled += 1
            elif sends.get(position, spent) >= self.max_sends:
                error = self.lost.get(position) or ServerError("did not converge", method=ACTIVATE)
                self.settle(position, UNKNOWN, error)
                settled += 1
            else:
                wrong.append(position)
        self.control.add(settled, 0, 0)
        return wrong

    async def sort_journaled(self, check: Iterable[tuple[int, bool]]) -> array[int]:
        wrong = self.sort(check)
        self.control.expect(len(wrong))  # now the toggles ahead are known
        await self.journal_settled()
        return wrong

    async def toggle(self, wrong: array[int]) -> list[int]:
        """Toggle each wrong flow once; return the positions whose answer was lost."""
        sends = self.sends
        for position in wrong:
            if self.sent_once or position in sends:  # a resumed flow counts its sends
                sends[position] = sends.get(position, 1) + 1
        self.sent_once = True
        job = await run_job(self.pipeline, ACTIVATE, [self.ids[p] for p in wrong],
                            self.control, max_sends=1, report_progress=False,
                            log=self.log)  # fmt: skip
        newly_lost: list[int] = []
        ok = failed = 0
        for j, position in enumerate(wrong):
            code = job.status[j]
            if code in (OK_TRUE, OK_FALSE, OK_VALUE):
                self.settle(position, OK_TRUE, journal=False)  # its answer is journaled
                self.changed[position] = 1
                ok += 1
            elif code == FAILED:
                self.settle(position, FAILED, job.error(j), journal=False)
                failed += 1
            elif code == UNKNOWN:
                self.lost[position] = job.error(j)
                newly_lost.append(position)
        self.control.add(ok, failed, 0)
        return newly_lost

    async def read_back(self, positions: list[int]) -> list[tuple[int, bool]]:
        """Settle flows whose toggle was lost; return the trusted wrong states."""
        lost, control = self.lost, self.control
        await settle_pause(self.pipeline, [lost[p] for p in positions])
        wrong: list[tuple[int, bool]] = []
        waited = False  # once slept until the lost requests must be done, reads are proof
        pending = positions
        while pending and not control.stopping:
            job = await self.read(pending)
            later = []
            settled = unsettled = 0
            for j, position in enumerate(pending):
                code = job.status[j]
                if code not in (OK_TRUE, OK_FALSE):  # unread: still in doubt
                    self.settle(position, UNKNOWN, lost[position], journal=False)
                    unsettled += 1
                elif (code == OK_TRUE) == self.desired(self.ids[position]):
                    # The lost toggle took effect (and it cannot run twice).
                    self.settle(position, OK_TRUE)
                    self.changed[position] = 1
                    settled += 1
                elif not waited and wait_until([lost[position]], self.limit) is not None:
                    later.append(position)  # its lost request may still run: wait for it
                else:
                    wrong.append((position, code == OK_TRUE))
            control.add(settled, 0, unsettled)
            await self.journal_settled()
            pending = later
            if pending:
                await sleep_until(self.pipeline, wait_until([lost[p] for p in pending], self.limit))
                waited = True
        for position in pending:  # stopped while waiting for the portal
            self.settle(position, UNKNOWN, lost[position], journal=False)  # still in doubt
        return wrong

    def report(self) -> BulkReport[Any]:
        """Every flow, in input order (not raising: see ``run``)."""
        succeeded: dict[int, Any] = {}
        failed: dict[int, B24Error] = {}
        unknown: dict[int, B24Error] = {}
        unsent: B24Error | None = None
        for position, code in enumerate(self.outcome):
            flow_id = self.ids[position]
            if code == OK_TRUE:
                succeeded[flow_id] = self.value(flow_id)
            elif code == FAILED:
                failed[flow_id] = self.errors[position]
            elif code == UNKNOWN:
                unknown[flow_id] = self.errors[position]
            elif position in self.lost:  # the job ended while its lost toggle was unsettled
                unknown[flow_id] = self.lost[position]
            else:  # never sent: the job ended first
                if unsent is None:
                    unsent = unsent_error(self.control)
                failed[flow_id] = unsent
        changed = tuple(self.ids[p] for p in range(len(self.ids)) if self.changed[p])
        return BulkReport(succeeded, failed, unknown, changed)


async def toggle_verified(
    pipeline: Pipeline,
    ids: Sequence[int],
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport[Any]:
    """``activate_many(verify=True)``: toggle each flow exactly once, settled by read-back.

    One operation for progress: a flow that cannot be read is counted failed at once.
    """
    control = Control(len(ids), stop, on_progress)
    control.expect(2 * len(ids))  # a read and a toggle each

    async def snapshot() -> Job:
        return await run_job(pipeline, GET, ids, control, repeatable=True,
                             report_progress=False, transform=active_of)  # fmt: skip

    job: Job | None = await guarded(control, snapshot)
    before: dict[int, bool] = {}
    unread: dict[int, B24Error] = {}
    if job is not None:
        job.fill(before, unread, unread)  # never read, so never toggled: failed
    if job is None or control.halted is not None:
        return build_report(ids, {}, unread, {}, control=control)
    control.add(0, len(unread), 0)
    readable = [i for i in ids if i in before]
    report = await ActiveConvergence(
        pipeline,
        readable,
        lambda flow_id: not before[flow_id],
        pipeline.options.retry.attempts,
        control,
        result_value=lambda _: True,
        states=before,
    ).converge()
    return build_report(
        ids, report.succeeded, {**unread, **report.failed}, report.unknown,
        set(report.changed), control,
    )  # fmt: skip


class PinConvergence:
    """Pin until each flow's answer says ``pinned``.

    A lost pin is sent again only once the lost request must have finished (pin state
    cannot be read, and a late pin would flip the flow back). A flow whose answer was
    lost ``max_sends`` times is reported unknown; a lost pin costs up to two more (one to
    learn the state, one to correct it), so a flow is pinned at most
    ``2 * max_sends + 1`` times.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        ids: Sequence[int],
        pinned: bool,
        max_sends: int,
        control: Control,
        *,
        log: JobLog | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.ids = ids
        self.pinned = pinned
        self.max_sends = max_sends
        self.control = control
        self.log = log
        self.succeeded: dict[int, Any] = {}
        self.failed: dict[int, B24Error] = {}
        self.unknown: dict[int, B24Error] = {}
        # What earlier rounds (or runs, for a resumed job) learnt of each flow:
        self.before: dict[int, bool] = {}  # the state before the first clean answer
        self.lost: dict[int, B24Error] = {}  # the error of its last lost pin
        self.sends: dict[int, int] = {}
        self.losses: dict[int, int] = {}
        self.limit = pipeline.options.timeout.portal_limit

    async def run(self) -> BulkReport[Any]:
        """Converge; the report, or ``BulkAborted`` carrying it."""
        return finish(await self.converge(), self.control)

    async def converge(self) -> BulkReport[Any]:
        """Converge; the report even when an exception ended it (``control.aborted``)."""
        await guarded(self.control, self._converge)
        pinned = self.pinned
        changed = {i for i in self.succeeded if self.before.get(i, not pinned) != pinned}
        return build_report(self.ids, self.succeeded, self.failed, self.unknown, changed)

    async def _converge(self) -> None:
        pending = list(self.ids)
        control = self.control
        control.expect(len(pending))
        if self.lost:  # a resumed job: pins an earlier run sent without an answer
            await sleep_until(self.pipeline, wait_until(self.lost.values(), self.limit))
        while pending and not control.stopping:
            go = await self.within_budget(pending)
            if not go:  # every pending flow is out of budget, and so reported
                pending = []
                break
            sent = await run_job(self.pipeline, PIN, go, control, max_sends=1,
                                 report_progress=False, log=self.log)  # fmt: skip
            pending = self.fold(go, sent)
            control.expect(len(pending))
            if sent.unknown and not control.stopping:
                lost = list(sent.unknown.values())
                await settle_pause(self.pipeline, lost)
                await sleep_until(self.pipeline, wait_until(lost, self.limit))
        self.account_stopped(pending)

    async def within_budget(self, pending: list[int]) -> list[int]:
        """The flows to pin this round; those out of budget are unknown (journaled, so a
        resumed job leaves them alone)."""
        go = []
        out: list[int] = []
        for flow_id in pending:
            if (
                self.losses.get(flow_id, 0) >= self.max_sends
                or self.sends.get(flow_id, 0) > 2 * self.max_sends
            ):
                self.unknown[flow_id] = self.lost.get(flow_id) or ServerError(
                    "did not converge", method=PIN
                )
                out.append(flow_id)
            else:
                self.sends[flow_id] = self.sends.get(flow_id, 0) + 1
                go.append(flow_id)
        if out:
            self.control.add(0, 0, len(out))
            await self.journal_unknown(out)
        return go

    async def journal_unknown(self, ids: list[int]) -> None:
        if self.log is None:
            return
        errors = dict(enumerate(self.unknown[i] for i in ids))
        try:
            await self.log.settle(ids, bytes([UNKNOWN]) * len(ids), bytes(len(ids)), errors)
        except B24Error as exc:
            self.control.halt(exc)

    def fold(self, go: list[int], sent: Job) -> list[int]:
        """Sort one round's answers; return the flows to pin again."""
        self.failed.update(sent.failed)
        answered, lost_now = sent.ok, sent.unknown
        again = []
        done = 0
        for flow_id in go:
            if flow_id in answered:
                state = bool(answered[flow_id])
                if flow_id not in self.before and flow_id not in self.lost:
                    self.before[flow_id] = not state  # the first clean answer tells the old state
                if state == self.pinned:
                    self.succeeded[flow_id] = state
                    self.lost.pop(flow_id, None)
                    done += 1
                else:
                    again.append(flow_id)
            elif flow_id in lost_now:
                self.lost[flow_id] = lost_now[flow_id]
                self.losses[flow_id] = self.losses.get(flow_id, 0) + 1
                again.append(flow_id)
        self.control.add(done, len(sent.failed), 0)
        return again

    def account_stopped(self, pending: list[int]) -> None:
        """Flows still pending when the operation stopped."""
        for flow_id in pending:
            if flow_id in self.lost:
                self.unknown[flow_id] = self.lost[flow_id]
            else:  # pinned once, answered the other state, then the job stopped
                now = "unpinned" if self.pinned else "pinned"
                error = Stopped(f"stopped before pinning again: the flow is now {now}")
                error.__cause__ = self.control.halted
                self.failed[flow_id] = error
