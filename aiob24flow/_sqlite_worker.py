"""The one thread a ``SqliteJournal`` runs SQLite in, with group commit.

Every SQLite call of a journal runs in this thread, in the order it was submitted, so the
event loop never waits on disk I/O and one connection is never used by two threads.
Writes are grouped: every write queued when the thread wakes goes into one transaction,
one commit (one sync with ``durable=True``). A write the caller waits for (an intent:
durable before its request leaves) is committed at once, with whatever else is queued; a
write nobody waits for (an answer) may linger a few milliseconds for company, so that at
full speed many answers and the next intent share a commit. A failed commit fails every
write of its group, and every write after it: a job never runs on without its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SqliteWorker", "Statement"]

#: How long a group of writes nobody waits for may wait for more (seconds).
LINGER = 0.02


Statement = tuple[str, Sequence[Any]]


class _Op:
    __slots__ = ("call", "future", "loop", "statements")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        statements: Sequence[Statement] = (),
        call: Callable[[sqlite3.Connection], Any] | None = None,
    ) -> None:
        self.loop = loop
        self.future = future
        self.statements = statements
        self.call = call


class SqliteWorker:
    """Runs ``connect()``'s connection in a thread of its own (a daemon: a process that
    forgot ``aclose()`` still exits; SQLite rolls back what was not committed)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], linger: float = LINGER) -> None:
        self._connect = connect
        self._linger = linger
        self._ops: deque[_Op] = deque()
        self._cond = threading.Condition()
        self._idle = True  # waiting for work (not lingering): a write must wake it
        self._closing = False
        #: The error that failed a commit: every later write fails with it.
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aiob24flow-journal", daemon=True)
        self._thread.start()

    # -- the event loop's side ----------------------------------------------------------

    def call(self, call: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """Run ``call(connection)`` in the thread, after what is queued; its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._submit(_Op(loop, future, call=call), wake=True)
        return future

    def write(self, statements: Sequence[Statement], *, wait: bool) -> asyncio.Future[Any] | None:
        """Queue writes (committed together, in order); with ``wait``, a future done once
        they are committed."""
        if self.failed is not None:
            raise self.failed
        if not wait:
            self._submit(_Op(None, None, statements), wake=False)
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._submit(_Op(loop, future, statements), wake=True)
        return future

    def _submit(self, op: _Op, *, wake: bool) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the journal is closed")
            self._ops.append(op)
            if wake or self._idle:
                self._cond.notify()

    def close(self) -> None:
        """Let the thread commit what is queued, then close the connection and end."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    # -- the thread's side --------------------------------------------------------------

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                group = self._next_group()
                if group is None:
                    return
                if db is None:
                    try:
                        db = self._connect()
                    except BaseException as exc:
                        self._settle(group, exc)
                        continue
                self._process(db, group)
        finally:
            if db is not None:
                db.close()

    def _next_group(self) -> list[_Op] | None:
        with self._cond:
            while not self._ops and not self._closing:
                self._idle = True
                self._cond.wait()
            self._idle = False
            if not self._ops:
                return None  # closing, nothing left
            if not self._closing and all(op.future is None for op in self._ops):
                # Only writes nobody waits for: give the next intent a chance to join.
                self._cond.wait(self._linger)
            group = list(self._ops)
            self._ops.clear()
            return group

    def _process(self, db: sqlite3.Connection, group: list[_Op]) -> None:
        writes: list[_Op] = []
        for op in group:
            if op.call is None:
                writes.append(op)
                continue
            self._commit(db, writes)
            writes = []
            try:
                result = op.call(db)
            except BaseException as exc:
                self._settle([op], exc)
            else:
                self._settle([op], None, result)
        self._commit(db, writes)

    def _commit(self, db: sqlite3.Connection, writes: list[_Op]) -> None:
        if not writes:
            return
        if self.failed is not None:
            self._settle(writes, self.failed)
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for op in writes:
                    for sql, args in op.statements:
                        db.execute(sql, args)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except BaseException as exc:
            self.failed = exc
            self._settle(writes, exc)
        else:
            self._settle(writes, None)

    @staticmethod
    def _settle(ops: list[_Op], error: BaseException | None, result: Any = None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[Any]]] = {}
        for op in ops:
            if op.future is not None and op.loop is not None:
                by_loop.setdefault(op.loop, []).append(op.future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures, error, result)


def _resolve(futures: list[asyncio.Future[Any]], error: BaseException | None, result: Any) -> None:
    for future in futures:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
