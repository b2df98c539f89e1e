"""How a journal writes, below the jobs: the encoding of flow ids, the multi-row inserts
a commit is made of, and the group commit of the SQLite journal's thread (intents with
company share one commit; a lone intent is committed at once)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from aiob24flow._journal import decode_ids, encode_ids
from aiob24flow._sqlite_worker import GROUP_MAX, SqliteWorker, merged


@pytest.mark.parametrize(
    ("ids", "first_byte"),
    [
        ([], b"\x04"),
        ([1, 2, 3], b"\x04"),
        (list(range(1000, 1050)), b"\x04"),  # a request's ids: plain int32
        ([-(2**31), 2**31 - 1], b"\x04"),
        ([2**31, 5], b"\x08"),  # one id past int32: plain int64
        ([2**62, -(2**62)], b"\x08"),
        (list(range(1, 65)), b"\x04"),  # 64: still plain
        (list(range(1, 66)), b"x"),  # more than a request's: zlib
        (list(range(10**6, 10**6 + 1000, 7)), b"x"),
    ],
)
def test_ids_round_trip_in_the_encoding_their_count_and_size_call_for(
    ids: list[int], first_byte: bytes
) -> None:
    blob = encode_ids(ids)
    assert blob[:1] == first_byte
    assert list(decode_ids(blob)) == ids
    assert decode_ids(blob).typecode == "q"


def test_a_request_s_ids_take_four_bytes_a_flow() -> None:
    assert len(encode_ids(list(range(7000, 7050)))) == 1 + 4 * 50


INTENT = "INSERT INTO intents VALUES (?,?,?)"
ANSWER = "INSERT OR REPLACE INTO answers VALUES (?,?)"
PLAIN_ANSWER = "INSERT INTO answers VALUES (?,?)"


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        ([], []),
        ([(INTENT, (1, 2, 3))], [(INTENT, (1, 2, 3))]),
        (  # rows of each table merged, the tables in order of first appearance
            [(ANSWER, ("a", 1)), (INTENT, (1, 2, 3)), (ANSWER, ("b", 2)), (INTENT, (4, 5, 6))],
            [
                ("INSERT OR REPLACE INTO answers VALUES (?,?),(?,?)", ["a", 1, "b", 2]),
                ("INSERT INTO intents VALUES (?,?,?),(?,?,?)", [1, 2, 3, 4, 5, 6]),
            ],
        ),
        (  # an UPDATE: everything as it was, in order
            [(INTENT, (1, 2, 3)), ("UPDATE intents SET x=?", (1,)), (INTENT, (4, 5, 6))],
            [(INTENT, (1, 2, 3)), ("UPDATE intents SET x=?", (1,)), (INTENT, (4, 5, 6))],
        ),
        (  # two kinds of insert into one table: their order matters
            [(ANSWER, ("a", 1)), (PLAIN_ANSWER, ("a", 2)), (ANSWER, ("b", 3))],
            [(ANSWER, ("a", 1)), (PLAIN_ANSWER, ("a", 2)), (ANSWER, ("b", 3))],
        ),
        (  # a clause after the values, numbered parameters: not a plain insert
            [(INTENT + " ON CONFLICT DO NOTHING", (1, 2, 3)), (INTENT, (4, 5, 6))],
            [(INTENT + " ON CONFLICT DO NOTHING", (1, 2, 3)), (INTENT, (4, 5, 6))],
        ),
        (
            [("INSERT INTO t VALUES (?1,?2)", (1, 2)), ("INSERT INTO t VALUES (?1,?2)", (3, 4))],
            [("INSERT INTO t VALUES (?1,?2)", (1, 2)), ("INSERT INTO t VALUES (?1,?2)", (3, 4))],
        ),
    ],
)
def test_a_commit_s_inserts_are_merged_per_table(
    statements: list[tuple[str, tuple[object, ...]]], expected: list[object]
) -> None:
    assert merged(statements) == expected  # type: ignore[arg-type]


def test_merged_inserts_stay_under_sqlite_s_lowest_parameter_limit(tmp_path: Path) -> None:
    rows = [(INTENT, (i, i + 1, i + 2)) for i in range(0, 3 * 700, 3)]
    statements = merged(rows)  # type: ignore[arg-type]
    assert [len(args) for _, args in statements] == [999, 999, 102]
    db = sqlite3.connect(tmp_path / "m.db")
    db.execute("CREATE TABLE intents(a, b, c)")
    for sql, args in statements:
        db.execute(sql, args)
    assert db.execute("SELECT COUNT(*), SUM(a) FROM intents").fetchone() == (
        700,
        sum(range(0, 2100, 3)),
    )


class Counting:
    """A database for ``SqliteWorker`` whose commits are counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("CREATE TABLE IF NOT EXISTS t(v)")
        db.set_trace_callback(self._trace)
        return db

    def _trace(self, sql: str) -> None:
        if sql == "COMMIT" or sql.startswith("INSERT"):  # a lone INSERT commits itself
            self.commits += 1


class Clock:
    """The worker's clock, moved by the test (the window itself is real: 60 s, so a wait
    that should not happen fails the test's 10 s timeout)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def started(db: Counting, clock: Clock) -> SqliteWorker:
    """A worker that has committed one intent (intents now come "often")."""
    worker = SqliteWorker(db.connect, window=60.0, clock=clock)
    await asyncio.wait_for(worker.write([("INSERT INTO t VALUES (-1)", ())], wait=True), 10)  # type: ignore[arg-type]
    return worker


async def test_intents_with_company_share_one_commit(tmp_path: Path) -> None:
    db = Counting(tmp_path / "g.db")
    worker = await started(db, Clock())  # only enough company ends the wait
    try:
        before = db.commits
        futures = [
            worker.write([("INSERT INTO t VALUES (?)", (i,))], wait=True, company=3)
            for i in range(3)
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 10)  # type: ignore[arg-type]
        assert db.commits - before == 1
        rows = await worker.call(lambda c: c.execute("SELECT v FROM t").fetchall())
        assert rows == [(-1,), (0,), (1,), (2,)]
    finally:
        worker.close()


async def test_a_lone_intent_is_committed_at_once(tmp_path: Path) -> None:
    db = Counting(tmp_path / "l.db")
    worker = await started(db, Clock())  # a wait would fail the test's timeout
    try:
        for company in (0, 1):  # at most one other request in flight
            done = worker.write([("INSERT INTO t VALUES (?)", (company,))], wait=True,
                                company=company)  # fmt: skip
            await asyncio.wait_for(done, 10)  # type: ignore[arg-type]
    finally:
        worker.close()


async def test_a_group_waits_for_at_most_group_max_intents(tmp_path: Path) -> None:
    db = Counting(tmp_path / "m.db")
    worker = await started(db, Clock())
    try:
        futures = [
            worker.write([("INSERT INTO t VALUES (?)", (i,))], wait=True, company=1000)
            for i in range(GROUP_MAX)
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 10)  # type: ignore[arg-type]
    finally:
        worker.close()


async def test_closing_ends_a_wait_for_company(tmp_path: Path) -> None:
    db = Counting(tmp_path / "c.db")
    worker = await started(db, Clock())
    done = worker.write([("INSERT INTO t VALUES (?)", (1,))], wait=True, company=5)
    for _ in range(10_000):  # until the thread waits for company (a poll, not a timing)
        if worker._enough:
            break
        await asyncio.sleep(0.001)
    assert worker._enough == 5
    worker.close()
    await asyncio.wait_for(done, 10)  # type: ignore[arg-type]
    check = sqlite3.connect(tmp_path / "c.db")
    assert check.execute("SELECT v FROM t").fetchall() == [(-1,), (1,)]


async def test_an_intent_after_a_pause_is_committed_at_once(tmp_path: Path) -> None:
    db = Counting(tmp_path / "p.db")
    clock = Clock()
    worker = await started(db, clock)
    try:
        clock.now += 61  # the portal's pace: longer than a window since the last intent
        done = worker.write([("INSERT INTO t VALUES (1)", ())], wait=True, company=5)
        await asyncio.wait_for(done, 10)  # type: ignore[arg-type]
    finally:
        worker.close()


async def test_a_transaction_a_failed_call_left_open_is_rolled_back_not_joined(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    db = Counting(path)
    worker = SqliteWorker(db.connect)
    try:

        def half_done(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            c.execute("INSERT INTO t VALUES (0)")
            raise sqlite3.OperationalError("database is locked")  # as a failed forget

        with pytest.raises(sqlite3.OperationalError):
            await worker.call(half_done)
        done = worker.write([("INSERT INTO t VALUES (?)", (1,))], wait=True)
        await asyncio.wait_for(done, 10)  # type: ignore[arg-type]
        other = sqlite3.connect(path)  # what another process sees: committed
        assert other.execute("SELECT v FROM t").fetchall() == [(1,)]
    finally:
        worker.close()


async def test_a_write_that_fails_in_the_thread_fails_every_later_write(tmp_path: Path) -> None:
    db = Counting(tmp_path / "f.db")
    worker = SqliteWorker(db.connect)
    try:
        bad = [("INSERT INTO t VALUES (?)", None), ("INSERT INTO t VALUES (?)", None)]
        with pytest.raises(TypeError):
            await asyncio.wait_for(worker.write(bad, wait=True), 10)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            worker.write([("INSERT INTO t VALUES (?)", (1,))], wait=True)
    finally:
        worker.close()


async def test_each_intent_tells_how_many_other_requests_are_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiob24flow import JobSpec, SqliteJournal

    async with SqliteJournal(tmp_path / "j.db", durable=False) as journal:
        a = await journal.open_job("a", JobSpec("activate_many", list(range(1, 501))))
        b = await journal.open_job("b", JobSpec("pin_many", list(range(1, 501))))
        worker = journal._thread()
        told: list[int] = []
        write = worker.write

        def recording(statements: list[object], *, wait: bool, company: int = 0) -> object:
            if wait:
                told.append(company)
            return write(statements, wait=wait, company=company)  # type: ignore[arg-type]

        monkeypatch.setattr(worker, "write", recording)
        s1 = await a.intent("m", [1], None)
        await a.intent("m", [2], None)
        await b.intent("m", [3], None)  # the journal counts every job's requests
        await a.answer(s1, b"\x01", {})
        await a.answer(s1, b"\x01", {})  # an answer counts once
        await a.intent("m", [4], s1)  # a re-send is no new request
        await b.intent("m", [5], None)
        await a.release()  # its requests in flight are no longer counted
        await b.intent("m", [6], None)
        await b.release()
        assert told == [0, 1, 2, 0, 2, 2]
