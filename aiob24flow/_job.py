"""A bulk job: flows are bound to a request only when that request can leave.

``Job`` owns a queue of flow ids that no request has claimed yet. Workers first wait for
their turn (connection slot, operating budget, rate limiter, token) and only then, at the
last moment before the request leaves, claim up to 50 ids (``_Claim.body``). So a stop, a
close, a cancellation or an error acts at one point: the claim refuses, and every flow
still in the queue is reported ``failed`` with a not-sent error. Workers that are waiting
are interrupted at once (``Interrupts``); requests already on the wire finish and are
folded in.

``Control`` is what the rounds of one public operation share (``set_active`` reads,
toggles and reads again): the caller's stop event, the reason sending ended, the
exception that aborted the operation and the progress counts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from . import _json
from ._batch import MAX_COMMANDS, BatchResult
from ._errors import (
    B24Error,
    BatchCommandError,
    ClientClosed,
    RefreshFailed,
    RequestNotSent,
    ResponseLost,
    ServerError,
    Stopped,
    Unreachable,
    is_systemic,
)
from ._retry import should_retry

if TYPE_CHECKING:
    from ._client import FlowClient

__all__ = ["Control", "Job", "Progress", "ProgressCallback"]


@attrs.frozen
class Progress:
    """Where a bulk operation stands: passed to ``on_progress`` after every batch."""

    total: int
    done: int
    succeeded: int
    failed: int
    unknown: int


ProgressCallback = Callable[[Progress], None]


class Control:
    """The stop signal, end reason, abort error and progress of one bulk operation."""

    def __init__(
        self,
        total: int,
        stop: asyncio.Event | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.total = total
        self.stop = stop
        self.on_progress = on_progress
        self.succeeded = self.failed = self.unknown = 0
        #: Why sending ended (None while it goes on).
        self.halted: BaseException | None = None
        #: The exception that ends the operation with ``BulkAborted``.
        self.aborted: BaseException | None = None
        self._jobs: list[Job] = []
        self._unsent: B24Error | None = None

    @property
    def stopping(self) -> bool:
        if self.halted is None and self.stop is not None and self.stop.is_set():
            self.halt(Stopped("stopped before sending"))
        return self.halted is not None

    def halt(self, reason: BaseException) -> None:
        """Send nothing more: interrupt every waiting worker of every running job."""
        if self.halted is not None:
            return
        self.halted = reason
        for job in self._jobs:
            job.interrupt()

    def abort(self, error: BaseException) -> None:
        if self.aborted is None:
            self.aborted = error
        self.halt(error)

    def unsent_error(self) -> B24Error:
        """The one error shared by every flow that was never sent."""
        if self._unsent is None:
            reason = self.halted
            if isinstance(reason, (Stopped, ClientClosed)):
                self._unsent = reason
            else:
                self._unsent = Stopped("not sent: the job ended before this flow's turn")
                self._unsent.__cause__ = reason
        return self._unsent

    def add(self, ok: int, failed: int, unknown: int) -> None:
        self.succeeded += ok
        self.failed += failed
        self.unknown += unknown
        callback = self.on_progress
        if callback is None or self.aborted is not None:
            return
        done = self.succeeded + self.failed + self.unknown
        try:
            callback(
                Progress(
                    self.total, min(done, self.total), self.succeeded, self.failed, self.unknown
                )
            )
        except Exception as exc:  # the caller's callback: end the job, then raise
            self.on_progress = None
            self.abort(exc)


def _withheld(error: BaseException) -> bool:
    """Errors of a request that waited and was not sent, and that the next one would meet."""
    return isinstance(error, (Stopped, ClientClosed, RefreshFailed, Unreachable)) or (
        type(error).__name__ == "LimiterUnavailable"
    )


class _Claim:
    """One batch request of a job: its flows are chosen when ``body()`` is called."""

    __slots__ = ("ids", "job", "keys")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.ids: list[int] | None = None
        self.keys: list[str] = []

    @property
    def commands(self) -> int:
        return len(self.ids) if self.ids is not None else 0

    def body(self) -> bytes:
        """Called right before the request leaves (and before every re-send)."""
        job = self.job
        if job.control.stopping:
            raise job.stopped_error()
        if self.ids is None:
            self.ids = job.claim()
            self.keys = [str(i) for i in self.ids]
        method = job.method
        cmd = {key: f"{method}?flowId={key}" for key in self.keys}
        return _json.dumps({"halt": 0, "cmd": cmd})


class Job:
    """Send one method for many flows; sort each flow into ok / failed / unknown."""

    def __init__(
        self,
        client: FlowClient,
        method: str,
        ids: Sequence[int],
        control: Control,
        *,
        repeatable: bool,
        max_sends: int,
        report_progress: bool = True,
    ) -> None:
        self.client = client
        self.method = method
        self.control = control
        self.repeatable = repeatable
        self.max_sends = max_sends
        self.report_progress = report_progress
        self.queue: deque[int] = deque(ids)
        self.ok: dict[int, Any] = {}
        self.failed: dict[int, B24Error] = {}
        self.unknown: dict[int, B24Error] = {}
        self._resent: dict[int, int] = {}  # sends so far, only for flows sent again
        self._intents = 0  # workers that will claim once admitted
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    # -- control ------------------------------------------------------------------------

    def stopped_error(self) -> B24Error:
        return self.control.unsent_error()

    def interrupt(self) -> None:
        control = self.control

        self.client._core.interrupts.interrupt(control.unsent_error, self._tasks)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def claim(self) -> list[int]:
        """Bind up to 50 queued flows to the request that is about to leave."""
        queue = self.queue
        take = min(MAX_COMMANDS, len(queue))
        self._intents -= 1
        return [queue.popleft() for _ in range(take)]

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        control = self.control
        if not self.queue:
            return
        if control.stopping:
            self._account_unsent()
            return
        workers = min(self.client.concurrency, -(-len(self.queue) // MAX_COMMANDS))
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._worker()) for _ in range(workers)]
        self._tasks.update(tasks)
        watcher = loop.create_task(self._watch_stop()) if control.stop is not None else None
        control._jobs.append(self)
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # Cancelled by the caller (or a bug): nothing more leaves.
            control.halt(Stopped("cancelled"))
            for task in tasks:
                task.cancel()
            raise
        finally:
            control._jobs.remove(self)
            if watcher is not None:
                watcher.cancel()
        self._account_unsent()

    async def _watch_stop(self) -> None:
        assert self.control.stop is not None
        await self.control.stop.wait()
        self.control.halt(Stopped("stopped before sending"))

    def _account_unsent(self) -> None:
        if not self.queue:
            return
        error = self.stopped_error()
        count = len(self.queue)
        for flow_id in self.queue:
            self.failed[flow_id] = error
        self.queue.clear()
        self._progress(0, count, 0)

    def _progress(self, ok: int, failed: int, unknown: int) -> None:
        if self.report_progress and (ok or failed or unknown):
            self.control.add(ok, failed, unknown)

    async def _worker(self) -> None:
        control = self.control
        while True:
            if control.halted is not None:
                return
            if len(self.queue) <= self._intents * MAX_COMMANDS:
                if not self.queue and self._intents == 0:
                    self._notify()
                    return
                await self._changed.wait()
                continue
            self._intents += 1
            claim = _Claim(self)
            try:
                await self._send(claim)
            finally:
                if claim.ids is None:
                    self._intents -= 1  # never claimed: the intent lapses
                self._notify()

    async def _send(self, claim: _Claim) -> None:
        try:
            result = await self.client._send_claim(claim, self.method)
        except B24Error as exc:
            self._fold_error(claim, exc)
        except Exception as exc:  # a bug or an odd failure: never guess what happened
            if claim.ids is not None:
                lost = ResponseLost(f"internal error: {type(exc).__name__}", method=self.method)
                lost.__cause__ = exc
                lost.finished = False
                for flow_id in claim.ids:
                    self.unknown[flow_id] = lost
                self._progress(0, 0, len(claim.ids))
            self.control.abort(exc)
        else:
            self._fold(claim.ids or [], result)

    # -- folding answers ----------------------------------------------------------------

    def _again(self, flow_id: int, error: B24Error) -> bool:
        """Queue a flow whose command did not run (or, for reads, was lost) again, within
        its send budget; False when the budget is spent."""
        sends = self._resent.get(flow_id, 1)
        if sends >= self.max_sends:
            return False
        self._resent[flow_id] = sends + 1
        self.queue.append(flow_id)
        return True

    def _fold_error(self, claim: _Claim, error: B24Error) -> None:
        ids = claim.ids
        if ids is None:
            # Withheld before any flow was bound to it: nothing was sent. An error met
            # while waiting (closed, refresh failed, limiter away) meets every request.
            if not isinstance(error, Stopped):
                self.control.halt(error)
            return
        ok = failed = unknown = 0
        if error.may_have_run and not self.repeatable:
            for flow_id in ids:
                self.unknown[flow_id] = error
            unknown = len(ids)
        else:
            # A refusal of the whole request already had its retries; a lost read is
            # sent again within each flow's budget.
            for flow_id in ids:
                if error.may_have_run and self._again(flow_id, error):
                    continue
                if error.may_have_run:
                    self.unknown[flow_id] = error
                    unknown += 1
                else:
                    self.failed[flow_id] = error
                    failed += 1
        if _withheld(error) or is_systemic(error):
            self.control.halt(error)
        self._progress(ok, failed, unknown)

    def _fold(self, ids: list[int], result: BatchResult) -> None:
        ok = failed = unknown = 0
        errors, results = result.errors, result.results
        systemic: B24Error | None = None
        for flow_id in ids:
            error = errors.get(flow_id)
            if error is None and flow_id in results:
                self.ok[flow_id] = results[flow_id]
                ok += 1
                continue
            if error is None:  # in neither map: it may have run
                error = ServerError("missing from the batch answer", method=self.method)
            if error.may_have_run:
                if self.repeatable and self._again(flow_id, error):
                    continue
                self.unknown[flow_id] = error
                unknown += 1
            elif _requeue_refusal(error) and self._again(flow_id, error):
                continue
            else:
                self.failed[flow_id] = error
                failed += 1
                if systemic is None and is_systemic(error):
                    systemic = error
        if systemic is not None:
            self.control.halt(systemic)
        self._progress(ok, failed, unknown)


def _requeue_refusal(error: B24Error) -> bool:
    """A command refused before it ran, worth sending again in a later batch."""
    if isinstance(error, RequestNotSent):
        return should_retry(error)
    return should_retry(error) or (
        isinstance(error, BatchCommandError) and error.code == "ERROR_BATCH_LENGTH_EXCEEDED"
    )
