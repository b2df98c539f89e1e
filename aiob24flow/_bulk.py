"""Bulk work: chunking into batches, reports, read-back and convergence.

``_send`` is the one engine: it packs one method over many flow ids into batches of 50,
runs up to ``concurrency`` batch requests at once (the limiter sets the pace), and sorts
every flow into ok / failed / unknown. Refusals (the command did not run) are re-queued
into later batches; lost answers are re-sent only for reads (``repeatable``), never for
toggles. The public operations (``toggle_many``, ``converge_active``, ...) build on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._batch import MAX_COMMANDS
from ._errors import B24Error, BatchCommandError, RequestNotSent, ResponseLost, ServerError
from ._methods import ACTIVATE, GET, PIN
from ._retry import should_retry

if TYPE_CHECKING:
    from ._client import FlowClient

__all__ = ["BulkReport", "Progress"]


@attrs.frozen
class Progress:
    """Where a bulk operation stands: passed to ``on_progress`` after every batch."""

    total: int
    done: int
    succeeded: int
    failed: int
    unknown: int


@attrs.frozen
class BulkReport:
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

    succeeded: dict[int, Any]
    failed: dict[int, B24Error]
    unknown: dict[int, BaseException]
    changed: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unknown

    def __len__(self) -> int:
        return len(self.succeeded) + len(self.failed) + len(self.unknown)

    def summary(self) -> dict[str, int]:
        return {
            "total": len(self),
            "succeeded": len(self.succeeded),
            "changed": len(self.changed),
            "failed": len(self.failed),
            "unknown": len(self.unknown),
        }


ProgressCallback = Callable[[Progress], None]


@attrs.define
class _Tally:
    ok: dict[int, Any] = attrs.field(factory=dict)
    failed: dict[int, B24Error] = attrs.field(factory=dict)
    unknown: dict[int, BaseException] = attrs.field(factory=dict)


class _Progress:
    """Cumulative counts over one bulk operation, reported after each batch."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.callback = callback
        self.succeeded = self.failed = self.unknown = 0

    def add(self, ok: int, failed: int, unknown: int) -> None:
        self.succeeded += ok
        self.failed += failed
        self.unknown += unknown
        if self.callback is not None:
            done = self.succeeded + self.failed + self.unknown
            self.callback(
                Progress(
                    self.total, min(done, self.total), self.succeeded, self.failed, self.unknown
                )
            )


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), MAX_COMMANDS):
        yield list(ids[start : start + MAX_COMMANDS])


async def _send(
    client: FlowClient,
    method: str,
    ids: Sequence[int],
    *,
    repeatable: bool,
    stop: asyncio.Event | None,
    progress: _Progress | None,
) -> _Tally:
    """Call ``method`` with ``flowId`` for each id; sort every id into ok/failed/unknown."""
    tally = _Tally()
    last_error: dict[int, BaseException] = {}
    pending = list(ids)
    passes = client._options.retry.attempts
    for _ in range(passes):
        if not pending:
            break
        requeue: list[int] = []
        chunks = _chunks(pending)  # shared by the workers: each batch is taken once

        async def worker(chunks: Iterator[list[int]], requeue: list[int]) -> None:
            for chunk in chunks:
                if stop is not None and stop.is_set():
                    for flow_id in chunk:
                        tally.failed[flow_id] = RequestNotSent(
                            "stopped before sending", method=method
                        )
                    if progress is not None:
                        progress.add(0, len(chunk), 0)
                    continue
                await _one_batch(
                    client, method, chunk, tally, requeue, last_error, repeatable, progress
                )

        workers = min(client.concurrency, (len(pending) + MAX_COMMANDS - 1) // MAX_COMMANDS)
        await asyncio.gather(*(worker(chunks, requeue) for _ in range(workers)))
        pending = requeue
    for flow_id in pending:  # still refused (or, for reads, still lost) after every pass
        error = last_error[flow_id]
        if isinstance(error, B24Error) and not error.may_have_run:
            tally.failed[flow_id] = error
        else:
            tally.unknown[flow_id] = error
    return tally


async def _one_batch(
    client: FlowClient,
    method: str,
    chunk: list[int],
    tally: _Tally,
    requeue: list[int],
    last_error: dict[int, BaseException],
    repeatable: bool,
    progress: _Progress | None,
) -> None:
    keys = [str(flow_id) for flow_id in chunk]
    cmds = [f"{method}?flowId={flow_id}" for flow_id in chunk]
    ok = failed = unknown = 0
    try:
        result = await client._batch(keys, [method] * len(chunk), cmds, chunk, halt=False)
    except B24Error as exc:
        if exc.may_have_run and not repeatable:
            for flow_id in chunk:
                tally.unknown[flow_id] = exc
            unknown = len(chunk)
        elif exc.may_have_run:
            requeue.extend(chunk)
            last_error.update(dict.fromkeys(chunk, exc))
        else:
            # Refused as a whole, after the retry policy gave up: nothing ran.
            for flow_id in chunk:
                tally.failed[flow_id] = exc
            failed = len(chunk)
    except Exception as exc:  # a bug or an odd failure: never guess what happened
        for flow_id in chunk:
            tally.unknown[flow_id] = exc
        unknown = len(chunk)
    else:
        errors, results = result.errors, result.results
        for flow_id in chunk:
            error = errors.get(flow_id)
            if error is not None:
                if should_retry(error) or (
                    isinstance(error, BatchCommandError)
                    and error.code == "ERROR_BATCH_LENGTH_EXCEEDED"
                ):
                    requeue.append(flow_id)  # did not run: send again in a later batch
                    last_error[flow_id] = error
                else:
                    tally.failed[flow_id] = error
                    failed += 1
            elif flow_id in results:
                tally.ok[flow_id] = results[flow_id]
                ok += 1
            elif repeatable:
                requeue.append(flow_id)
                last_error[flow_id] = ServerError("missing from the batch answer", method=method)
            else:
                tally.unknown[flow_id] = ServerError("missing from the batch answer", method=method)
                unknown += 1
    if progress is not None and (ok or failed or unknown):
        progress.add(ok, failed, unknown)


async def _settle(client: FlowClient, lost: dict[int, BaseException]) -> None:
    """Before reading back after a dropped connection, let the portal finish the call.

    A 5xx is an answer (the portal is done); a read timeout outlasts the portal's own 60 s
    limit; only a connection lost mid-call may leave the portal still running it.
    """
    if any(isinstance(e, ResponseLost) for e in lost.values()):
        settle = client._options.timeout.settle
        if settle > 0:
            await client._core.sleep(settle)


def _report(
    ids: Sequence[int],
    succeeded: dict[int, Any],
    failed: dict[int, B24Error],
    unknown: dict[int, BaseException],
    changed: set[int] | None = None,
) -> BulkReport:
    """Put every id in exactly one map, in input order (first map that has it wins)."""
    out_ok: dict[int, Any] = {}
    out_failed: dict[int, B24Error] = {}
    out_unknown: dict[int, BaseException] = {}
    for flow_id in ids:
        if flow_id in succeeded:
            out_ok[flow_id] = succeeded[flow_id]
        elif flow_id in failed:
            out_failed[flow_id] = failed[flow_id]
        elif flow_id in unknown:
            out_unknown[flow_id] = unknown[flow_id]
        else:  # pragma: no cover - a bug: never drop an id silently
            out_unknown[flow_id] = RuntimeError("aiob24flow lost track of this flow")
    changed_ids = tuple(i for i in ids if changed and i in changed)
    return BulkReport(out_ok, out_failed, out_unknown, changed_ids)


async def toggle_many(
    client: FlowClient,
    method: str,
    ids: Sequence[int],
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport:
    progress = _Progress(len(ids), on_progress)
    tally = await _send(client, method, ids, repeatable=False, stop=stop, progress=progress)
    return _report(ids, tally.ok, tally.failed, tally.unknown)


async def read_flows(client: FlowClient, ids: Sequence[int]) -> BulkReport:
    tally = await _send(client, GET, ids, repeatable=True, stop=None, progress=None)
    return _report(ids, tally.ok, tally.failed, tally.unknown)


async def _read_active(client: FlowClient, ids: Sequence[int]) -> _Tally:
    """Read ``active`` of each flow (reads are safe to repeat after a lost answer)."""
    tally = await _send(client, GET, ids, repeatable=True, stop=None, progress=None)
    states: dict[int, Any] = {}
    for flow_id, flow in tally.ok.items():
        if isinstance(flow, dict) and isinstance(flow.get("active"), bool):
            states[flow_id] = flow["active"]
        else:
            tally.failed[flow_id] = ServerError("flow has no boolean 'active'", method=GET)
    tally.ok = states
    return tally


async def converge_active(
    client: FlowClient,
    ids: Sequence[int],
    desired: dict[int, bool],
    rounds: int,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
    *,
    dry_run: bool = False,
    result_value: Callable[[int], Any] | None = None,
) -> BulkReport:
    """Bring each flow's ``active`` to ``desired[id]``: read, toggle what differs, and
    after lost answers read again and toggle only what is still wrong."""
    progress = _Progress(len(ids), on_progress)
    read = await _read_active(client, ids)
    failed: dict[int, B24Error] = dict(read.failed)
    unknown: dict[int, BaseException] = dict(read.unknown)
    succeeded: dict[int, Any] = {}
    changed: set[int] = set()
    value = result_value or (lambda flow_id: desired[flow_id])
    states = read.ok
    progress.add(0, len(failed), len(unknown))
    if dry_run:
        would = {i for i, state in states.items() if state != desired[i]}
        succeeded = dict(states)
        return _report(ids, succeeded, failed, unknown, would)
    check = [i for i in ids if i in states]
    lost: dict[int, BaseException] = {}
    for _ in range(rounds):
        wrong = []
        right = 0
        for flow_id in check:
            if states[flow_id] == desired[flow_id]:
                succeeded[flow_id] = value(flow_id)
                right += 1
            else:
                wrong.append(flow_id)
        if right:
            progress.add(right, 0, 0)
        if not wrong:
            check = []
            break
        sent = await _send(client, ACTIVATE, wrong, repeatable=False, stop=stop, progress=None)
        for flow_id in sent.ok:
            succeeded[flow_id] = value(flow_id)
            changed.add(flow_id)
        failed.update(sent.failed)
        progress.add(len(sent.ok), len(sent.failed), 0)
        if not sent.unknown:
            check = []
            break
        # Lost answers: the flow may or may not have toggled. Read it to find out.
        lost.update(sent.unknown)
        await _settle(client, sent.unknown)
        reread = await _read_active(client, list(sent.unknown))
        for flow_id in (*reread.failed, *reread.unknown):
            unknown[flow_id] = lost[flow_id]
        if reread.failed or reread.unknown:
            progress.add(0, 0, len(reread.failed) + len(reread.unknown))
        for flow_id, state in reread.ok.items():
            if state == desired[flow_id]:
                changed.add(flow_id)
            states[flow_id] = state
        check = [i for i in wrong if i in reread.ok]
    for flow_id in check:  # rounds ran out with the flow still in the wrong state
        unknown[flow_id] = lost.get(flow_id) or ServerError("did not converge", method=ACTIVATE)
    return _report(ids, succeeded, failed, unknown, changed)


async def toggle_verified(
    client: FlowClient,
    ids: Sequence[int],
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport:
    """``activate_many(verify=True)``: toggle each flow exactly once, settled by read-back."""
    snapshot = await _read_active(client, ids)
    desired = {flow_id: not state for flow_id, state in snapshot.ok.items()}
    readable = [i for i in ids if i in desired]
    report = await converge_active(
        client,
        readable,
        desired,
        client._options.retry.attempts,
        on_progress,
        stop,
        result_value=lambda _: True,
    )
    failed: dict[int, B24Error] = {**snapshot.failed, **report.failed}
    for flow_id, error in snapshot.unknown.items():
        # Never read, so never toggled: the portal did not apply it.
        failed[flow_id] = error if isinstance(error, B24Error) else ServerError(str(error))
    return _report(ids, report.succeeded, failed, report.unknown)


async def converge_pinned(
    client: FlowClient,
    ids: Sequence[int],
    pinned: bool,
    rounds: int,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
) -> BulkReport:
    """Pin until each flow's answer says ``pinned``; a lost answer means pin again."""
    progress = _Progress(len(ids), on_progress)
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    before: dict[int, bool] = {}
    lost: dict[int, BaseException] = {}
    pending = list(ids)
    for _ in range(rounds):
        if not pending:
            break
        sent = await _send(client, PIN, pending, repeatable=False, stop=stop, progress=None)
        failed.update(sent.failed)
        again = []
        done = 0
        for flow_id in pending:
            if flow_id in sent.ok:
                state = bool(sent.ok[flow_id])
                if flow_id not in before and flow_id not in lost:
                    before[flow_id] = not state  # the first clean answer tells the old state
                if state == pinned:
                    succeeded[flow_id] = state
                    done += 1
                else:
                    again.append(flow_id)
            elif flow_id in sent.unknown:
                lost[flow_id] = sent.unknown[flow_id]
                again.append(flow_id)
        progress.add(done, len(sent.failed), 0)
        pending = again
        await _settle(client, sent.unknown)
    unknown = {
        flow_id: lost.get(flow_id) or ServerError("did not converge", method=PIN)
        for flow_id in pending
    }
    changed = {i for i in succeeded if before.get(i, not pinned) != pinned}
    return _report(ids, succeeded, failed, unknown, changed)
