"""The one thread a ``SqliteJournal`` runs SQLite in, with group commit.

Every SQLite call of a journal runs in this thread, in the order it was submitted, so the
event loop never waits on disk I/O and one connection is never used by two threads.
Writes are grouped: every write queued when the thread wakes goes into one transaction,
one commit (one sync with ``durable=True``), its rows merged into one ``INSERT`` per table.

- A write the caller waits for (an intent: durable before its request leaves) is
  committed at once with whatever else is queued, unless other requests are in flight
  (``company``) and intents come faster than one a ``GROUP_WINDOW``: then it may wait up
  to that window for their successors' intents, as PostgreSQL's ``commit_delay`` waits
  while ``commit_siblings`` are active. At full speed one commit (one sync) covers several
  requests, for a millisecond or two of latency that costs no throughput (the requests in
  flight keep the portal busy). At the portal's pace (one request every few hundred
  milliseconds) each intent is committed at once.
- A write nobody waits for (an answer) may linger a few milliseconds for company, so that
  answers ride with the next intent's commit.

A failed commit fails every write of its group, and every write after it: a job never
runs on without its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SqliteWorker", "Statement"]

#: How long a group of writes nobody waits for may wait for more (seconds).
LINGER = 0.02
#: How long an intent with company may wait for more intents (seconds): it stops waiting
#: once ``min(company, GROUP_MAX)`` intents are queued, ``company`` being how many other
#: requests are in flight (none or one: it does not wait at all).
GROUP_WINDOW = 0.002
GROUP_MAX = 8


Statement = tuple[str, Sequence[Any]]


class _Op:
    __slots__ = ("call", "company", "future", "loop", "statements")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        statements: Sequence[Statement] = (),
        call: Callable[[sqlite3.Connection], Any] | None = None,
        company: int = 0,
    ) -> None:
        self.loop = loop
        self.future = future
        self.statements = statements
        self.call = call
        self.company = company


class SqliteWorker:
    """Runs ``connect()``'s connection in a thread of its own (a daemon: a process that
    forgot ``aclose()`` still exits; SQLite rolls back what was not committed)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        linger: float = LINGER,
        window: float = GROUP_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._linger = linger
        self._window = window
        self._clock = clock
        self._ops: deque[_Op] = deque()
        self._waited = 0  # queued writes somebody waits for
        self._first = 0.0  # when the first of them was queued
        self._last = -math.inf  # when the latest waited-for write was queued
        self._recent = False  # the first came within a window of the one before it
        self._company = 0  # the most company any of them has
        self._enough = 0  # while gathering: the queued intents that end the wait early
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

    def write(
        self, statements: Sequence[Statement], *, wait: bool, company: int = 0
    ) -> asyncio.Future[Any] | None:
        """Queue writes (committed together, in order); with ``wait``, a future done once
        they are committed. ``company``: how many other requests are in flight (their
        intents will follow soon): with two or more, the commit may wait for them."""
        if self.failed is not None:
            raise self.failed
        if not wait:
            self._submit(_Op(None, None, statements), wake=False)
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._submit(_Op(loop, future, statements, company=company), wake=True)
        return future

    def _submit(self, op: _Op, *, wake: bool) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the journal is closed")
            self._ops.append(op)
            if op.future is not None and op.call is None:
                now = self._clock()
                if not self._waited:
                    # Intents that come this often are worth waiting for; one after a
                    # pause (the portal's pace) is committed at once.
                    self._first, self._recent = now, now - self._last < self._window
                self._last = now
                self._waited += 1
                self._company = max(self._company, op.company)
                # While the thread gathers, each wake-up costs a GIL hand-off: wake it
                # only when there are enough.
                wake = self._waited >= self._enough
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
                try:
                    self._process(db, group)
                except BaseException as exc:  # a bug: fail the group and all later writes
                    self.failed = self.failed or exc
                    self._settle(group, exc)
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
            if not self._waited:
                # Only writes nobody waits for: give the next intent a chance to join.
                if not self._closing:
                    self._cond.wait(self._linger)
            elif self._recent and self._waited < self._company:
                self._gather()
            group = list(self._ops)
            self._ops.clear()
            self._waited = self._company = 0
            return group

    def _gather(self) -> None:
        """Wait (under the lock) for the intents of the requests in flight, a little: the
        window counts from the first intent's queueing (it may have waited for a commit)."""
        deadline = self._first + self._window
        try:
            while not self._closing:
                self._enough = min(self._company, GROUP_MAX)
                left = deadline - self._clock()
                if self._waited >= self._enough or left <= 0:
                    return
                self._cond.wait(left)
        finally:
            self._enough = 0

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
                if db.in_transaction:  # a call must end what it began
                    raise sqlite3.OperationalError("a journal call left a transaction open")
            except BaseException as exc:
                if db.in_transaction:  # never let a later write join it: roll it back
                    db.execute("ROLLBACK")
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
            if db.in_transaction:  # a lone statement would join it, not commit
                raise sqlite3.OperationalError("a transaction is open on the journal")
            statements = merged([s for op in writes for s in op.statements])
            if len(statements) == 1:  # one statement is its own transaction
                db.execute(*statements[0])
            else:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, args in statements:
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


#: The most parameters in one statement (SQLite's lowest ``SQLITE_MAX_VARIABLE_NUMBER``).
_MAX_VARIABLES = 999
#: An insert that can take more rows: ``INSERT [OR ...] INTO table VALUES (?,...,?)``.
_PLAIN_INSERT = re.compile(r"(INSERT(?: OR [A-Z]+)? INTO (\w+)) VALUES (\((?:\?,)*\?\))")


def merged(statements: list[Statement]) -> list[Statement]:
    """The statements of one commit, the rows inserted into each table merged into a
    multi-row ``INSERT``: each call into SQLite hands the GIL to the event loop and back,
    which costs more than the row. Anything else (an ``UPDATE``, another clause, two kinds
    of insert into one table) keeps them all as they are, in order."""
    rows: dict[str, list[Sequence[Any]]] = {}
    parsed: dict[str, re.Match[str]] = {}
    tables: dict[str, str] = {}
    for sql, args in statements:
        plain = parsed.get(sql) or _PLAIN_INSERT.fullmatch(sql)
        if plain is None or tables.setdefault(plain[2], sql) != sql:
            return statements
        parsed[sql] = plain
        rows.setdefault(sql, []).append(args)
    out: list[Statement] = []
    for sql, table_rows in rows.items():
        head, values = parsed[sql][1], parsed[sql][3]
        per = _MAX_VARIABLES // (values.count("?"))
        for start in range(0, len(table_rows), per):
            chunk = table_rows[start : start + per]
            if len(chunk) == 1:
                out.append((sql, chunk[0]))
            else:
                out.append((f"{head} VALUES {','.join([values] * len(chunk))}",
                            [arg for row in chunk for arg in row]))  # fmt: skip
    return out
