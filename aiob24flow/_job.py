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

A job sends through a ``Pipeline`` (``_pipeline.py``) and knows nothing of ``FlowClient``.
"""

from __future__ import annotations

import asyncio
import enum
import operator
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import repeat
from typing import Any, Protocol

import attrs

from . import _json
from ._batch import MAX_COMMANDS, BulkAnswer, loads_bulk_answer
from ._errors import (
    B24Error,
    BatchCommandError,
    ClientClosed,
    JournalError,
    RequestNotSent,
    ResponseLost,
    ServerError,
    Stopped,
    is_systemic,
    is_withheld,
)
from ._pipeline import Pipeline
from ._retry import should_retry

__all__ = ["Control", "Job", "Outcome", "Progress", "ProgressCallback", "SendLog", "Stop"]


@attrs.frozen
class Progress:
    """Where a bulk operation stands: passed to ``on_progress`` after every batch.

    ``total``/``done`` count flows (``done`` = settled: succeeded, failed or unknown).
    ``steps``/``steps_total`` count the work, one step per flow a request carried — a
    read, a toggle, a read-back — so a bar of ``set_active`` moves while it reads, and its
    ETA means something; ``steps_total`` is the work known so far (it grows when a lost
    answer needs a read-back, and shrinks when a read shows nothing to toggle).
    """

    total: int
    done: int
    succeeded: int
    failed: int
    unknown: int
    steps: int = 0
    steps_total: int = 0


ProgressCallback = Callable[[Progress], None]


class Stop(asyncio.Event):
    """A stop signal for bulk calls, and an ``asyncio.Event``: ``set()`` sends no new
    batch and waits for the answers of those on the wire (their real outcome is
    reported); ``abandon()`` also stops waiting for those answers: their flows are
    reported ``unknown`` at once (the requests may still run on the portal). A plain
    ``asyncio.Event`` works as ``stop=`` too, without ``abandon()``."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = asyncio.Event()

    def abandon(self) -> None:
        """Stop now: send nothing more and do not wait for the answers on the wire."""
        self.set()
        self.abandoned.set()


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
        self.steps = 0
        self.steps_total = total  # one step per flow until an operation says more
        #: Why sending ended (None while it goes on).
        self.halted: BaseException | None = None
        #: The exception that ends the operation with ``BulkAborted``.
        self.aborted: BaseException | None = None
        self._jobs: list[Job] = []
        self._unsent: B24Error | None = None

    def register(self, job: Job) -> None:
        """A job of this operation is running: a halt interrupts its waiting workers."""
        self._jobs.append(job)

    def unregister(self, job: Job) -> None:
        self._jobs.remove(job)

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

    def expect(self, steps: int) -> None:
        """The work still ahead is ``steps`` (reads, toggles, read-backs) from now on."""
        self.steps_total = self.steps + max(0, steps)

    def add(self, ok: int, failed: int, unknown: int, *, steps: int = 0) -> None:
        """Flows settled (and ``steps`` of work done), told to ``on_progress``."""
        self.succeeded += ok
        self.failed += failed
        self.unknown += unknown
        self.steps += steps
        self.steps_total = max(self.steps_total, self.steps)
        callback = self.on_progress
        if callback is None or self.aborted is not None:
            return
        if not (ok or failed or unknown or steps):
            return
        done = self.succeeded + self.failed + self.unknown
        try:
            callback(
                Progress(
                    self.total, min(done, self.total), self.succeeded, self.failed,
                    self.unknown, self.steps, self.steps_total,
                )
            )  # fmt: skip
        except Exception as exc:  # the caller's callback: end the job, then raise
            self.on_progress = None
            self.abort(exc)


class _Claim:
    """One batch request of a job: its flows are chosen when ``body()`` is called."""

    __slots__ = ("ids", "job", "keys", "positions", "seq")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.positions: list[int] | None = None
        self.ids: list[int] | None = None
        self.keys: list[str] = []
        self.seq: int | None = None  # the journal's number for this request's intent

    @property
    def commands(self) -> int:
        return len(self.ids) if self.ids is not None else 0

    def body(self) -> bytes:
        """Called right before the request leaves (and before every re-send)."""
        job = self.job
        if job.control.stopping:
            raise job.stopped_error()
        if self.positions is None:
            positions = self.positions = job.claim()
            all_ids = job.ids
            first, last = positions[0], positions[-1]
            if last - first + 1 == len(positions):  # fresh flows: one slice of the input
                self.ids = list(all_ids[first : last + 1])
            else:
                self.ids = [all_ids[p] for p in positions]
            self.keys = list(map(str, self.ids))
        prefix = job.prefix
        return _json.dumps({"halt": 0, "cmd": {key: prefix + key for key in self.keys}})

    def ready(self) -> Awaitable[None] | None:
        """Write ahead when the job is journaled: the intent is durable before the request
        leaves (each re-send records its new send time)."""
        if self.job.log is None or self.ids is None:
            return None
        return self._write_ahead(self.job.log, self.ids)

    async def _write_ahead(self, log: SendLog, ids: list[int]) -> None:
        self.seq = await log.intent(self.job.method, ids, self.seq)
        if not log.held():  # paused past its lease: another runner may have the job
            raise JournalError("not sent: this runner no longer holds the job")

    def decode(self, body: bytes) -> Any:
        return loads_bulk_answer(body)


class SendLog(Protocol):
    """Where a journaled job writes ahead (``_journal.JobLog``): the intent of a request
    before it leaves, the outcome of each of its flows when its answer is folded."""

    async def intent(self, method: str, ids: Sequence[int], seq: int | None) -> int:
        """Record (durably) that ``ids`` are about to be sent; return the intent's number
        (``seq``: the number of an earlier send of the same request)."""
        ...

    async def answer(self, seq: int, codes: bytes, errors: dict[int, B24Error]) -> None:
        """Record the outcome of each flow of intent ``seq`` (``Outcome`` codes in the
        intent's order; ``errors`` by index)."""
        ...

    def held(self) -> bool:
        """Whether this runner still holds the job (no I/O)."""
        ...


class Outcome(enum.IntEnum):
    """What is known of one flow: a byte per flow in a ``bytearray`` (plus sparse maps for
    errors and for results that are not booleans), so a million flows cost a megabyte."""

    PENDING = 0  # not settled yet
    OK_TRUE = 1  # succeeded; the result is True
    OK_FALSE = 2  # succeeded; the result is False
    OK_VALUE = 3  # succeeded; the result is kept in a side map
    FAILED = 4  # provably not applied
    UNKNOWN = 5  # may have been applied


# Plain ints for the hot paths (a bytearray stores and compares them without __index__).
PENDING, OK_TRUE, OK_FALSE, OK_VALUE, FAILED, UNKNOWN = map(int, Outcome)


class Job:
    """Send one method for many flows; sort each flow into ok / failed / unknown.

    ``transform`` turns each result into what the caller keeps (``set_active`` keeps the
    ``active`` bit of a whole flow); a result it rejects (``ValueError``) is ``failed``.
    """

    def __init__(  # noqa: PLR0913 - the switches of the one engine
        self,
        pipeline: Pipeline,
        method: str,
        ids: Sequence[int],
        control: Control,
        *,
        repeatable: bool,
        max_sends: int,
        report_progress: bool = True,
        transform: Callable[[Any], Any] | None = None,
        log: SendLog | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.log = log
        self.method = method
        self.prefix = f"{method}?flowId="
        self.control = control
        self.repeatable = repeatable
        self.max_sends = max_sends
        self.report_progress = report_progress
        self.transform = transform
        self.ids = ids
        self.status = bytearray(len(ids))
        self._values: dict[int, Any] = {}  # position -> a result that is not a bool
        self._errors: dict[int, B24Error] = {}  # position -> why failed / unknown
        self._cursor = 0  # positions below it were claimed at least once
        self._again: deque[int] = deque()  # positions queued to be sent again
        self._resent: dict[int, int] = {}  # sends so far, only for flows sent again
        self._intents = 0  # workers that will claim once admitted
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._abandoned = False  # Stop.abandon(): the workers were cancelled on purpose

    # -- results, in input order --------------------------------------------------------

    def _value(self, position: int) -> Any:
        code = self.status[position]
        if code == OK_TRUE:
            return True
        if code == OK_FALSE:
            return False
        return self._values[position]

    @property
    def ok(self) -> dict[int, Any]:
        ids, status = self.ids, self.status
        return {ids[p]: self._value(p) for p in range(len(ids)) if OK_TRUE <= status[p] <= OK_VALUE}

    def error(self, position: int) -> B24Error:
        """Why the flow at ``position`` is failed or unknown."""
        return self._errors[position]

    def errors(self) -> dict[int, B24Error]:
        """position -> error, for every failed or unknown flow."""
        return self._errors

    @property
    def failed(self) -> dict[int, B24Error]:
        return {self.ids[p]: e for p, e in sorted(self._errors.items())
                if self.status[p] == FAILED}  # fmt: skip

    @property
    def unknown(self) -> dict[int, B24Error]:
        return {self.ids[p]: e for p, e in sorted(self._errors.items())
                if self.status[p] == UNKNOWN}  # fmt: skip

    def fill(
        self,
        succeeded: dict[int, Any],
        failed: dict[int, B24Error],
        unknown: dict[int, B24Error],
    ) -> None:
        """Add every flow to the map it belongs in, in input order."""
        ids, status, errors = self.ids, self.status, self._errors
        if not succeeded and status.count(OK_TRUE) == len(status):  # every flow: True
            succeeded.update(dict.fromkeys(ids, True))
            return
        for position, code in enumerate(status):
            if code == OK_TRUE:
                succeeded[ids[position]] = True
            elif code == OK_FALSE:
                succeeded[ids[position]] = False
            elif code == OK_VALUE:
                succeeded[ids[position]] = self._values[position]
            elif code == FAILED:
                failed[ids[position]] = errors[position]
            elif code == UNKNOWN:
                unknown[ids[position]] = errors[position]

    # -- control ------------------------------------------------------------------------

    def stopped_error(self) -> B24Error:
        return self.control.unsent_error()

    def interrupt(self) -> None:
        self.pipeline.interrupt(self.control.unsent_error, self._tasks)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def pending(self) -> int:
        return len(self.ids) - self._cursor + len(self._again)

    def claim(self) -> list[int]:
        """Bind up to 50 queued flows to the request that is about to leave."""
        self._intents -= 1
        again = self._again
        taken = [again.popleft() for _ in range(min(MAX_COMMANDS, len(again)))]
        room = MAX_COMMANDS - len(taken)
        if room:
            start = self._cursor
            self._cursor = min(len(self.ids), start + room)
            taken.extend(range(start, self._cursor))
        return taken

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        control = self.control
        if not self.pending():
            return
        if control.stopping:
            self._account_unsent()
            return
        workers = min(self.pipeline.concurrency, -(-self.pending() // MAX_COMMANDS))
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._worker()) for _ in range(workers)]
        self._tasks.update(tasks)
        watcher = loop.create_task(self._watch_stop()) if control.stop is not None else None
        control.register(self)
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # Cancelled by the caller (or a bug): nothing more leaves.
            control.halt(Stopped("cancelled"))
            for task in tasks:
                task.cancel()
            raise
        finally:
            control.unregister(self)
            if watcher is not None:
                watcher.cancel()
        self._account_unsent()

    async def _watch_stop(self) -> None:
        stop = self.control.stop
        assert stop is not None
        await stop.wait()
        self.control.halt(Stopped("stopped before sending"))
        if isinstance(stop, Stop):
            await stop.abandoned.wait()
            self._abandoned = True
            for task in self._tasks:  # the workers, on the wire or idle
                task.cancel()

    def _account_unsent(self) -> None:
        positions = [*self._again, *range(self._cursor, len(self.ids))]
        if not positions:
            return
        error = self.stopped_error()
        for position in positions:
            self.status[position] = FAILED
            self._errors[position] = error
        self._again.clear()
        self._cursor = len(self.ids)
        self._progress(0, len(positions), 0)

    def _progress(self, ok: int, failed: int, unknown: int, *, steps: int = 0) -> None:
        """Flows this job settled (when it reports them) and the work it did."""
        if self.report_progress:
            self.control.add(ok, failed, unknown, steps=steps)
        elif steps:
            self.control.add(0, 0, 0, steps=steps)

    async def _worker(self) -> None:
        try:
            await self._work()
        except asyncio.CancelledError:
            if not self._abandoned:
                raise
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # 3.11+
            if uncancel is not None:
                uncancel()

    async def _work(self) -> None:
        control = self.control
        while True:
            if control.halted is not None:
                return
            pending = self.pending()
            if pending <= self._intents * MAX_COMMANDS:
                if not pending and self._intents == 0:
                    self._notify()
                    return
                await self._changed.wait()
                continue
            self._intents += 1
            claim = _Claim(self)
            try:
                await self._send(claim)
            finally:
                if claim.positions is None:
                    self._intents -= 1  # never claimed: the intent lapses
                self._notify()

    async def _send(self, claim: _Claim) -> None:
        try:
            result = await self.pipeline.send_bulk(claim, self.method)
        except asyncio.CancelledError:
            if self._abandoned and claim.positions is not None:
                # On the wire when the caller abandoned it: it may run on the portal.
                lost = ResponseLost(
                    "abandoned: its answer was not awaited; it may have run",
                    method=self.method,
                )
                lost.finished = False
                lost.sent_at = asyncio.get_running_loop().time()
                for position in claim.positions:
                    self._set_error(position, UNKNOWN, lost)
                self._progress(0, 0, len(claim.positions), steps=len(claim.positions))
            raise
        except B24Error as exc:
            self._fold_error(claim, exc)
        except Exception as exc:  # a bug or an odd failure: never guess what happened
            if claim.positions is not None:
                lost = ResponseLost(f"internal error: {type(exc).__name__}", method=self.method)
                lost.__cause__ = exc
                lost.finished = False
                for position in claim.positions:
                    self._set_error(position, UNKNOWN, lost)
                self._progress(0, 0, len(claim.positions), steps=len(claim.positions))
            self.control.abort(exc)
        else:
            self._fold(claim.positions or [], claim.keys, result)
        if self.log is not None and claim.seq is not None:
            await self._record(claim)

    async def _record(self, claim: _Claim) -> None:
        """The outcome of each flow of an answered (or lost) request, after its intent."""
        assert self.log is not None and claim.seq is not None and claim.positions is not None
        status, errors = self.status, self._errors
        codes = bytes(map(status.__getitem__, claim.positions))
        failed = (
            {i: errors[p] for i, p in enumerate(claim.positions) if status[p] in (FAILED, UNKNOWN)}
            if FAILED in codes or UNKNOWN in codes
            else {}
        )
        try:
            await self.log.answer(claim.seq, codes, failed)
        except B24Error as exc:  # the journal failed: send nothing more
            self.control.halt(exc)

    # -- folding answers ----------------------------------------------------------------

    def _set_error(self, position: int, code: int, error: B24Error) -> None:
        self.status[position] = code
        self._errors[position] = error

    def _set_ok(self, position: int, value: Any) -> bool:
        if self.transform is not None:
            try:
                value = self.transform(value)
            except ValueError as exc:
                self._set_error(position, FAILED, ServerError(str(exc), method=self.method))
                return False
        if value is True:
            self.status[position] = OK_TRUE
        elif value is False:
            self.status[position] = OK_FALSE
        else:
            self.status[position] = OK_VALUE
            self._values[position] = value
        return True

    def _resend(self, position: int) -> bool:
        """Queue a flow whose command did not run (or, for reads, was lost) again, within
        its send budget; False when the budget is spent."""
        sends = self._resent.get(position, 1)
        if sends >= self.max_sends:
            return False
        self._resent[position] = sends + 1
        self._again.append(position)
        return True

    def _fold_error(self, claim: _Claim, error: B24Error) -> None:
        positions = claim.positions
        if positions is None:
            # Withheld before any flow was bound to it: nothing was sent. An error met
            # while waiting (closed, refresh failed, limiter away) meets every request.
            if not isinstance(error, Stopped):
                self.control.halt(error)
            return
        failed = unknown = 0
        # A refusal of the whole request already had its retries; a lost read is sent
        # again within each flow's budget.
        for position in positions:
            if error.may_have_run:
                if self.repeatable and self._resend(position):
                    continue
                self._set_error(position, UNKNOWN, error)
                unknown += 1
            else:
                self._set_error(position, FAILED, error)
                failed += 1
        if is_withheld(error) or is_systemic(error):
            self.control.halt(error)
        self._progress(0, failed, unknown, steps=len(positions))

    def _fold(self, positions: list[int], keys: list[str], answer: BulkAnswer) -> None:
        results, raw_errors = answer.results, answer.errors
        if (
            not raw_errors
            and self.transform is None
            and len(results) == len(keys)
            and all(map(operator.is_, results.values(), repeat(True)))
            and all(map(results.__contains__, keys))
        ):  # the common answer: every command ran and said True
            status = self.status
            for position in positions:
                status[position] = OK_TRUE
            self._progress(len(positions), 0, 0, steps=len(positions))
            return
        ok = failed = unknown = 0
        systemic: B24Error | None = None
        missing: ServerError | None = None  # one error shared by the batch's missing keys
        for position, key in zip(positions, keys, strict=True):
            error = answer.error(key) if raw_errors and key in raw_errors else None
            if error is None and key in results:
                if self._set_ok(position, results[key]):
                    ok += 1
                else:
                    failed += 1
                continue
            if error is None:  # in neither map: it may have run
                if missing is None:
                    missing = ServerError("missing from the batch answer", method=self.method)
                error = missing
            if error.may_have_run:
                if self.repeatable and self._resend(position):
                    continue
                self._set_error(position, UNKNOWN, error)
                unknown += 1
            elif _requeue_refusal(error) and self._resend(position):
                continue
            else:
                self._set_error(position, FAILED, error)
                failed += 1
                if systemic is None and is_systemic(error):
                    systemic = error
        if systemic is None and failed == len(positions):
            systemic = self._refused_alike(positions)
        if systemic is not None:
            self.control.halt(systemic)
        self._progress(ok, failed, unknown, steps=len(positions))

    def _refused_alike(self, positions: list[int]) -> B24Error | None:
        """Every command of a batch refused with one code that means "this credential or
        portal, not this flow" (scope, auth, unknown method): every later batch would
        meet it too, so the job ends here."""
        errors = self._errors
        first = errors[positions[0]]
        if not is_systemic(first, every_command=True):
            return None
        code, kind = first.code, type(first)
        for position in positions:
            error = errors[position]
            if error.code != code or type(error) is not kind:
                return None
        return first


def _requeue_refusal(error: B24Error) -> bool:
    """A command refused before it ran, worth sending again in a later batch."""
    if isinstance(error, RequestNotSent):
        return should_retry(error)
    return should_retry(error) or (
        isinstance(error, BatchCommandError) and error.code == "ERROR_BATCH_LENGTH_EXCEEDED"
    )
