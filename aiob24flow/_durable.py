"""Journaled bulk operations: write ahead, resume, and settle what is in doubt.

``run_journaled`` takes the job in the journal (``JobBusy`` / ``JobMismatch`` /
``JournalError`` before any request), returns the stored report of a finished job, and
otherwise runs the operation over what earlier runs left (``History``):

- a flow settled earlier is neither re-sent nor re-read; it is reported as it was settled
  (a flow toggled earlier is in ``changed``);
- a flow whose request left without a recorded answer is *in doubt*, settled by its
  operation's own rule for a lost answer: ``set_active`` and ``verify=True`` read back and
  trust a read that shows no change only once ``sent_at + Timeout.portal_limit`` has
  passed; ``set_pinned`` pins again only after that moment; plain ``activate_many`` and
  ``pin_many`` report it ``unknown`` and never send it again;
- a flow never sent (or provably not run: refused, withheld, stopped) is sent.

A job is marked finished when no flow is left that a resume would send; the report of a
finished job is kept, and running it again sends nothing.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import _converge
from ._converge import (
    ActiveConvergence,
    Journaled,
    PinConvergence,
    active_of,
    run_job,
)
from ._errors import B24Error, RequestNotSent, ResponseLost
from ._job import FAILED, OK_FALSE, OK_TRUE, OK_VALUE, PENDING, UNKNOWN, Control, Job
from ._journal import (
    JobLog,
    JobRecord,
    JobSpec,
    Journal,
    decode_errors,
    decode_ids,
    encode_errors,
    encode_ids,
)
from ._methods import ACTIVATE, GET
from ._pipeline import Pipeline
from ._report import BulkReport, build_report, finish, guarded, job_report
from ._retry import should_retry

__all__ = ["History", "decode_report", "encode_report", "run_journaled"]

Run = Callable[[JobLog, "History"], Awaitable[BulkReport[Any]]]


def resendable(error: B24Error) -> bool:
    """A flow failed this way provably did not run, and a resume sends it (again)."""
    return not error.may_have_run and (isinstance(error, RequestNotSent) or should_retry(error))


class History:
    """What earlier runs of a job did, per flow id (built once, when a job resumes)."""

    def __init__(self, record: JobRecord, method: str | None = None) -> None:
        #: id -> (code, changed, error): settled without a request of its own
        self.settled: dict[int, tuple[int, bool, B24Error | None]] = {}
        #: id -> (sent_at, code or None when no answer was recorded, error)
        self.last: dict[int, tuple[float, int | None, B24Error | None]] = {}
        self.sends: Counter[int] = Counter()
        self.losses: Counter[int] = Counter()
        #: id -> the state its first pin answered, when no pin of it was lost before
        self.first_state: dict[int, bool] = {}
        #: id -> active, read by ``verify=True`` before toggling
        self.snapshot: dict[int, bool] = {}
        for intent in record.intents:
            if method is not None and intent.method != method:
                continue
            answer = record.answers.get(intent.seq)
            self._fold_intent(intent.ids, intent.sent_at, answer)
        for settle in record.settles:
            for i, flow_id in enumerate(settle.ids):
                error = settle.errors.get(i)
                code = settle.codes[i]
                if code == FAILED and error is not None and resendable(error):
                    continue  # not run: a resume sends it
                self.settled[flow_id] = (code, bool(settle.changed[i]), error)
        for ids, states in record.snapshots:
            for flow_id, code in zip(ids, states, strict=True):
                if code in (OK_TRUE, OK_FALSE):
                    self.snapshot[flow_id] = code == OK_TRUE

    def _fold_intent(self, ids: Sequence[int], sent_at: float, answer: Any) -> None:
        codes = answer.codes if answer is not None else None
        errors = answer.errors if answer is not None else {}
        for i, flow_id in enumerate(ids):
            code = codes[i] if codes is not None else None
            if code == PENDING:
                continue  # refused inside the batch and queued again: not run here
            self.sends[flow_id] += 1
            if code is None or code == UNKNOWN:
                self.losses[flow_id] += 1
            elif code in (OK_TRUE, OK_FALSE) and self.losses[flow_id] == 0:
                self.first_state.setdefault(flow_id, code == OK_TRUE)
            self.last[flow_id] = (sent_at, code, errors.get(i))

    def in_doubt(self, flow_id: int, margin: float = 0.0) -> B24Error | None:
        """The lost-answer error of a flow whose last request may have run, else None.

        The intent is written just before the request leaves; ``margin`` (the connect
        timeout) covers the time it may then still take to leave, so the wait for the
        portal to finish it is never short."""
        last = self.last.get(flow_id)
        if last is None:
            return None
        sent_at, code, error = last
        if code is not None and code != UNKNOWN:
            return None
        return doubt_error(sent_at + margin, error)

    def answered(self, flow_id: int) -> tuple[int, B24Error | None] | None:
        """The settled outcome of the flow's last request (code, error), or None when it
        is in doubt, was never sent, or provably did not run (a resume sends it)."""
        last = self.last.get(flow_id)
        if last is None:
            return None
        _, code, error = last
        if code is None or code == UNKNOWN:
            return None
        if code == FAILED and error is not None and resendable(error):
            return None
        return code, error


def doubt_error(sent_at: float, error: B24Error | None) -> B24Error:
    """A lost answer of an earlier run, with its send time on this loop's clock."""
    if error is None:
        error = ResponseLost(
            "in doubt: the run that sent this request stopped before its answer was "
            "recorded; it may have run"
        )
    error.sent_at = asyncio.get_running_loop().time() - max(0.0, time.time() - sent_at)
    error.finished = False
    return error


async def run_journaled(
    journal: Journal, job_id: str, spec: JobSpec, control: Control, run: Run
) -> BulkReport[Any]:
    """Take the job, run what is left of it, record its report when it is done (nothing
    left that a resume would send, and not stopped)."""
    log = await journal.open_job(job_id, spec)
    try:
        record = log.record
        if record.finished and record.report is not None:
            report = decode_report(record.report, spec.ids)
            control.add(len(report.succeeded), len(report.failed), len(report.unknown),
                        steps=len(report))  # fmt: skip
            return report
        method = {"activate_many": ACTIVATE, "set_active": ACTIVATE}.get(spec.operation)
        report = await run(log, History(record, method))
        if not control.stopping and not any(resendable(e) for e in report.failed.values()):
            await log.finish(encode_report(report, spec.ids))
        return finish(report, control)
    finally:
        await log.release()


# -- the operations ---------------------------------------------------------------------


async def toggle_resumed(
    pipeline: Pipeline, method: str, ids: Sequence[int], control: Control, log: JobLog,
    history: History,
) -> BulkReport[Any]:  # fmt: skip
    """``activate_many`` / ``pin_many``: what was answered stays, what is in doubt is
    ``unknown`` (never sent again), the rest is sent."""
    if not history.last:  # a job's first run: the plain job, and its report as it is
        job = await guarded(control, lambda: run_job(pipeline, method, ids, control, log=log))
        if job is not None:
            return job_report(job, control, changed=True)
        return build_report(ids, {}, {}, {}, control=control)
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    to_send: list[int] = []
    for flow_id in ids:
        doubt = history.in_doubt(flow_id)
        if doubt is not None:
            unknown[flow_id] = doubt
            continue
        answered = history.answered(flow_id)
        if answered is None:
            to_send.append(flow_id)
        elif answered[0] == FAILED:
            failed[flow_id] = answered[1] or ResponseLost("failed")
        else:
            succeeded[flow_id] = answered[0] == OK_TRUE if answered[0] != OK_VALUE else True
    done = len(succeeded) + len(failed) + len(unknown)
    control.add(len(succeeded), len(failed), len(unknown), steps=done)  # done earlier
    job = await guarded(control, lambda: run_job(pipeline, method, to_send, control, log=log))
    if job is not None:
        job.fill(succeeded, failed, unknown)
    changed = set(succeeded)  # each was toggled once, by this run or an earlier one
    return build_report(ids, succeeded, failed, unknown, changed, control)


def _split_active(
    ids: Sequence[int], history: History
) -> tuple[list[int], dict[int, tuple[int, bool, B24Error | None]]]:
    """(the flows still to converge, the flows settled earlier: id -> code, changed, error)."""
    rest: list[int] = []
    settled: dict[int, tuple[int, bool, B24Error | None]] = {}
    for flow_id in ids:
        earlier = history.settled.get(flow_id)
        if earlier is not None:
            settled[flow_id] = earlier
            continue
        answered = history.answered(flow_id)
        if answered is not None and answered[0] in (OK_TRUE, OK_FALSE, OK_VALUE):
            settled[flow_id] = (OK_TRUE, True, None)  # its toggle was answered: done
        elif answered is not None and answered[0] == FAILED:
            settled[flow_id] = (FAILED, False, answered[1])
        else:
            rest.append(flow_id)
    return rest, settled


async def converge_resumed(  # noqa: PLR0913 - the operation's inputs and its resume state
    pipeline: Pipeline,
    ids: Sequence[int],
    desired: Callable[[int], bool],
    max_sends: int,
    control: Control,
    log: JobLog,
    history: History,
    *,
    states: dict[int, bool] | None = None,
    result_value: Callable[[int], Any] | None = None,
) -> BulkReport[Any]:
    """``set_active`` (and the toggles of ``verify=True``) over what is left."""
    rest, settled = _split_active(ids, history)
    value = result_value or desired
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    changed: set[int] = set()
    for flow_id, (code, was_changed, error) in settled.items():
        if code == OK_TRUE:
            succeeded[flow_id] = value(flow_id)
            if was_changed:
                changed.add(flow_id)
        elif code == FAILED:
            failed[flow_id] = error or ResponseLost("failed")
        else:
            unknown[flow_id] = error or ResponseLost("did not converge")
    done = len(succeeded) + len(failed) + len(unknown)
    control.add(len(succeeded), len(failed), len(unknown), steps=done)  # done earlier
    doubt: dict[int, B24Error] = {}
    sent: dict[int, int] = {}
    margin = pipeline.options.timeout.connect
    for position, flow_id in enumerate(rest):
        error = history.in_doubt(flow_id, margin)
        if error is not None:
            doubt[position] = error
        if history.sends[flow_id]:
            sent[position] = history.sends[flow_id]
    report = await ActiveConvergence(
        pipeline, rest, desired, max_sends, control, states=states,
        result_value=result_value, journaled=Journaled(log, doubt, sent),
    ).converge()  # fmt: skip
    succeeded.update(report.succeeded)
    failed.update(report.failed)
    unknown.update(report.unknown)
    changed.update(report.changed)
    return build_report(ids, succeeded, failed, unknown, changed)


async def verify_resumed(
    pipeline: Pipeline, ids: Sequence[int], control: Control, log: JobLog, history: History
) -> BulkReport[Any]:
    """``activate_many(verify=True)``: the snapshot is journaled before any toggle, so a
    resumed job toggles each flow relative to the state read by its first run."""
    before = dict(history.snapshot)
    unread_ids = [i for i in ids if i not in before]
    unread: dict[int, B24Error] = {}
    step = _converge.READ_CHUNK * 50  # journaled by chunk: a stopped run keeps what it read
    for start in range(0, len(unread_ids), step):
        chunk = unread_ids[start : start + step]

        def read_chunk(chunk: list[int] = chunk) -> Awaitable[Job]:
            return run_job(pipeline, GET, chunk, control, repeatable=True,
                           report_progress=False, transform=active_of)  # fmt: skip

        job = await guarded(control, read_chunk)
        if job is None:
            return build_report(ids, {}, {}, {}, control=control)
        read: dict[int, bool] = {}
        job.fill(read, unread, unread)
        try:  # what was read is kept, also by a run that was just stopped
            if read:
                states = bytes(OK_TRUE if s else OK_FALSE for s in read.values())
                await log.snapshot(list(read), states)
        except B24Error as exc:
            control.abort(exc)
            return build_report(ids, {}, {}, {}, control=control)
        if control.halted is not None:
            return build_report(ids, {}, {}, {}, control=control)
        before.update(read)
    control.add(0, len(unread), 0)
    readable = [i for i in ids if i in before]
    report = await converge_resumed(
        pipeline, readable, lambda flow_id: not before[flow_id],
        pipeline.options.retry.attempts, control, log, history, states=before,
        result_value=lambda _: True,
    )  # fmt: skip
    return build_report(ids, report.succeeded, {**unread, **report.failed}, report.unknown,
                        set(report.changed))  # fmt: skip


async def pin_resumed(
    pipeline: Pipeline, ids: Sequence[int], pinned: bool, max_sends: int, control: Control,
    log: JobLog, history: History,
) -> BulkReport[Any]:  # fmt: skip
    """``set_pinned`` over what is left: a pin in doubt is sent again only once it must
    have finished (``PinConvergence`` waits for that before its first round)."""
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    rest: list[int] = []
    for flow_id in ids:
        earlier = history.settled.get(flow_id)
        answered = history.answered(flow_id)
        if earlier is not None:
            unknown[flow_id] = earlier[2] or ResponseLost("did not converge")
        elif answered is not None and answered[0] == FAILED:
            failed[flow_id] = answered[1] or ResponseLost("failed")
        elif answered is not None and (answered[0] == OK_TRUE) == pinned:
            succeeded[flow_id] = pinned
        else:
            rest.append(flow_id)
    done = len(succeeded) + len(failed) + len(unknown)
    control.add(len(succeeded), len(failed), len(unknown), steps=done)  # done earlier
    convergence = PinConvergence(pipeline, rest, pinned, max_sends, control, log=log)
    margin = pipeline.options.timeout.connect
    for flow_id in rest:
        error = history.in_doubt(flow_id, margin)
        if error is not None:
            convergence.lost[flow_id] = error
        convergence.sends[flow_id] = history.sends[flow_id]
        convergence.losses[flow_id] = history.losses[flow_id]
    for flow_id, state in history.first_state.items():
        convergence.before[flow_id] = not state
    report = await convergence.converge()
    succeeded.update(report.succeeded)
    failed.update(report.failed)
    unknown.update(report.unknown)
    changed = {i for i in succeeded if convergence.before.get(i, not pinned) != pinned}
    return build_report(ids, succeeded, failed, unknown, changed)


# -- a finished job's report ----------------------------------------------------------------


def _ids_text(ids: Sequence[int]) -> str:
    return base64.b64encode(encode_ids(ids)).decode("ascii")


def _ids_of(text: str) -> list[int]:
    return list(decode_ids(base64.b64decode(text)))


#: In a stored report, ids that are the job's own (all of them, in order), or the ids
#: that succeeded: the usual case, kept as a mark instead of the ids packed once more.
_THE_JOBS, _THE_SUCCEEDED = "=job", "=succeeded"


def encode_report(report: BulkReport[Any], ids: Sequence[int] = ()) -> dict[str, Any]:
    """A finished job's report, compact: ids packed (``encode_ids``) unless they are the
    job's ``ids`` or those that succeeded, the states as bytes (every journaled
    operation's result is a bool), errors as the journal writes them."""

    def errors(items: dict[int, B24Error]) -> list[str]:
        return [_ids_text(list(items)), encode_errors(dict(enumerate(items.values())))]

    succeeded = list(report.succeeded)
    states = base64.b64encode(bytes(report.succeeded.values())).decode("ascii")  # bools
    changed = list(report.changed)
    return {
        "counts": report.summary(),
        "succeeded": [_THE_JOBS if succeeded == list(ids) else _ids_text(succeeded), states],
        "failed": errors(report.failed),
        "unknown": errors(report.unknown),
        "changed": _THE_SUCCEEDED if changed == succeeded else _ids_text(changed),
    }


def decode_report(data: dict[str, Any], ids: Sequence[int] = ()) -> BulkReport[Any]:
    """The report ``encode_report`` wrote for a job of ``ids``."""

    def errors(pair: list[str]) -> dict[int, B24Error]:
        packed, text = pair
        decoded = decode_errors(text)
        return {flow_id: decoded[i] for i, flow_id in enumerate(_ids_of(packed))}

    packed, states = data["succeeded"]
    keys = list(ids) if packed == _THE_JOBS else _ids_of(packed)
    succeeded = dict(zip(keys, map(bool, base64.b64decode(states)), strict=True))
    changed = data["changed"]
    return BulkReport(
        succeeded,
        errors(data["failed"]),
        errors(data["unknown"]),
        tuple(keys) if changed == _THE_SUCCEEDED else tuple(_ids_of(changed)),
    )
