"""``SqliteJournal``: the embedded default journal (stdlib ``sqlite3``, WAL).

Every SQLite call runs in one thread of the journal's own (``_sqlite_worker.py``), off the
event loop, writes grouped into one commit per wake-up: an intent is committed before its
request leaves; an answer within a few milliseconds of its arrival. ``durable=True`` runs
SQLite with ``synchronous=FULL`` (each commit is synced: it survives power loss);
``durable=False`` with ``synchronous=NORMAL`` (a killed process loses nothing that was
committed; power loss may lose the last commits).

One runner at a time: a job is held by an exclusive ``flock`` on a lock file beside the
database (``PATH.locks/``), which the kernel drops when the holder dies, and which cannot
expire under a living one (POSIX; the journal is not available on Windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ._errors import B24Error, JobBusy, JournalError
from ._journal import (
    Answer,
    Intent,
    JobRecord,
    JobSpec,
    JobSummary,
    Settle,
    check_job_id,
    decode_errors,
    decode_ids,
    encode_errors,
    encode_ids,
    mismatch,
)
from ._sqlite_worker import SqliteWorker, Statement

__all__ = ["SqliteJournal"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs(
    job_id TEXT PRIMARY KEY, digest TEXT NOT NULL, operation TEXT NOT NULL,
    desired INTEGER, verify INTEGER NOT NULL, total INTEGER NOT NULL, ids BLOB NOT NULL,
    state TEXT NOT NULL, counts TEXT, report BLOB, created_at REAL, updated_at REAL);
CREATE TABLE IF NOT EXISTS intents(
    job_id TEXT, seq INTEGER, method TEXT, sent_at REAL, n INTEGER, ids BLOB,
    PRIMARY KEY(job_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers(
    job_id TEXT, seq INTEGER, codes BLOB, errors TEXT,
    PRIMARY KEY(job_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settles(
    job_id TEXT, n INTEGER, ids BLOB, codes BLOB, changed BLOB, errors TEXT,
    PRIMARY KEY(job_id, n)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(
    job_id TEXT, n INTEGER, ids BLOB, states BLOB,
    PRIMARY KEY(job_id, n)) WITHOUT ROWID;
"""
_TABLES = ("intents", "answers", "settles", "snapshots", "jobs")


class SqliteJournal:
    """A journal in the SQLite database at ``path`` (created when missing).

    ``durable=True`` syncs every commit (a job survives power loss); ``False`` survives a
    killed process only, for less I/O. Use one per process (it may hold many jobs); close
    it with ``aclose()``.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if not isinstance(durable, bool):
            raise TypeError("durable must be a bool")
        self.path = os.fspath(path)
        self.durable = durable
        self._worker: SqliteWorker | None = None
        self._in_flight = [0]  # requests of this journal's jobs sent and not yet answered

    def __repr__(self) -> str:
        return f"SqliteJournal({self.path!r}, durable={self.durable})"

    def _error(self, exc: BaseException) -> JournalError:
        text = f"journal {self.path}: {type(exc).__name__}: {exc}"
        if "unable to open database file" in str(exc) or "readonly database" in str(exc):
            text += (
                " (the path must name a file in a directory this process can write: SQLite "
                "keeps PATH-wal, PATH-shm and PATH.locks/ beside it)"
            )
        return JournalError(text)

    # -- the thread ---------------------------------------------------------------------

    def _thread(self) -> SqliteWorker:
        if self._worker is None:  # started on first use: building a journal does no I/O
            self._worker = SqliteWorker(self._connect)
        return self._worker

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(connection, *args)`` in the journal's thread."""
        try:
            result: T = await self._thread().call(lambda db: call(db, *args))
        except (sqlite3.Error, OSError, ValueError, zlib.error) as exc:
            raise self._error(exc) from exc
        return result

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    # -- jobs ---------------------------------------------------------------------------

    async def open_job(self, job_id: str, spec: JobSpec) -> _SqliteJobLog:
        check_job_id(job_id)
        lock = self._lock_path(job_id)
        fd = await self._run(lambda db: _take_lock(lock, job_id))
        try:
            record, next_seq, next_n = await self._run(self._open, job_id, spec)
        except BaseException:
            _drop_lock(fd)
            raise
        return _SqliteJobLog(self._submit, job_id, record, fd, next_seq, next_n, self._in_flight)

    def _lock_path(self, job_id: str) -> str:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:32]
        return os.path.join(self.path + ".locks", digest)

    def _open(
        self, db: sqlite3.Connection, job_id: str, spec: JobSpec
    ) -> tuple[JobRecord, int, int]:
        row = db.execute("SELECT digest FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            now = time.time()
            db.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, spec.digest, spec.operation, _bool(spec.desired), int(spec.verify),
                 len(spec.ids), encode_ids(spec.ids), "unfinished", None, None, now, now),
            )  # fmt: skip
            return JobRecord(spec), 1, 1
        if row[0] != spec.digest:
            stored = self._load(db, job_id)
            assert stored is not None
            raise mismatch(job_id, stored.spec, spec)
        record = self._load(db, job_id, spec)
        assert record is not None
        next_seq = max((i.seq for i in record.intents), default=0) + 1
        return record, next_seq, len(record.settles) + len(record.snapshots) + 1

    def _load(
        self, db: sqlite3.Connection, job_id: str, spec: JobSpec | None = None
    ) -> JobRecord | None:
        row = db.execute(
            "SELECT operation, desired, verify, ids, state, report FROM jobs WHERE job_id=?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        operation, desired, verify, ids, state, report = row
        if spec is None:
            spec = JobSpec(operation, decode_ids(ids), _unbool(desired), bool(verify))
        record = JobRecord(spec, finished=state == "finished")
        if report is not None:
            record.report = json.loads(zlib.decompress(report))
        for seq, method, sent_at, blob in db.execute(
            "SELECT seq, method, sent_at, ids FROM intents WHERE job_id=? ORDER BY seq",
            (job_id,),
        ):
            record.intents.append(Intent(seq, method, sent_at, decode_ids(blob)))
        for seq, codes, errors in db.execute(
            "SELECT seq, codes, errors FROM answers WHERE job_id=?", (job_id,)
        ):
            record.answers[seq] = Answer(seq, bytes(codes), decode_errors(errors))
        for blob, codes, changed, errors in db.execute(
            "SELECT ids, codes, changed, errors FROM settles WHERE job_id=? ORDER BY n",
            (job_id,),
        ):
            record.settles.append(
                Settle(decode_ids(blob), bytes(codes), bytes(changed), decode_errors(errors))
            )
        for blob, states in db.execute(
            "SELECT ids, states FROM snapshots WHERE job_id=? ORDER BY n", (job_id,)
        ):
            record.snapshots.append((decode_ids(blob), bytes(states)))
        return record

    async def read_job(self, job_id: str) -> JobRecord | None:
        """What the journal holds of ``job_id`` (None: no such job), without taking it."""
        check_job_id(job_id)
        return await self._run(self._load, job_id)

    async def jobs(self) -> list[JobSummary]:
        """Every job in the journal, newest first."""
        return await self._run(self._jobs)

    def _jobs(self, db: sqlite3.Connection) -> list[JobSummary]:
        sent = dict(db.execute("SELECT job_id, SUM(n) FROM intents GROUP BY job_id").fetchall())
        rows = db.execute(
            "SELECT job_id, operation, desired, verify, total, state, counts, updated_at "
            "FROM jobs ORDER BY updated_at DESC"
        ).fetchall()
        out = []
        for job_id, operation, desired, verify, total, state, counts, updated in rows:
            numbers = json.loads(counts) if counts else {"total": total}
            if not counts:
                numbers["sent"] = int(sent.get(job_id) or 0)
            out.append(JobSummary(job_id, operation, _unbool(desired), bool(verify), total,
                                  state, numbers, updated))  # fmt: skip
        return out

    async def forget(self, job_id: str) -> bool:
        """Delete a job (``JobBusy`` while a runner holds it); True if it was there."""
        check_job_id(job_id)
        lock = self._lock_path(job_id)
        fd = await self._run(lambda db: _take_lock(lock, job_id))
        try:
            return await self._run(self._forget, job_id)
        finally:
            _drop_lock(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock)

    def _forget(self, db: sqlite3.Connection, job_id: str) -> bool:
        found = db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in _TABLES:  # the table names are ours
                db.execute(f"DELETE FROM {table} WHERE job_id=?", (job_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return found is not None

    async def aclose(self) -> None:
        """Commit what is queued and close the database (after its jobs are done)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            with contextlib.suppress(JournalError):
                await self._run_on(worker, lambda db: None)  # everything before it is done
            worker.close()

    async def _run_on(self, worker: SqliteWorker, call: Callable[[Any], Any]) -> None:
        try:
            await worker.call(call)
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _submit(
        self, statements: Sequence[Statement], wait: bool, company: int = 0
    ) -> Awaitable[None] | None:
        """Hand writes of a job's log to the thread (committed together, and grouped with
        others); with ``wait``, what to await until they are committed."""
        try:
            done = self._thread().write(statements, wait=wait, company=company)
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            raise self._error(exc) from exc
        return None if done is None else self._committed(done)

    async def _committed(self, done: Awaitable[None]) -> None:
        try:
            await done
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc


class _SqliteJobLog:
    """One runner's hold on one job in a ``SqliteJournal``.

    Answers are held briefly and committed with the next write of the job (an intent, most
    often, which is committed before its request leaves anyway), or on their own within
    ``ANSWER_DELAY`` seconds: one commit and one thread hand-off per request instead of two.
    A process that dies in between leaves those flows in doubt, the safe side.
    """

    ANSWER_DELAY = 0.05

    def __init__(
        self,
        submit: Callable[[Sequence[Statement], bool, int], Awaitable[None] | None],
        job_id: str,
        record: JobRecord,
        lock_fd: int,
        next_seq: int,
        next_n: int,
        in_flight: list[int],
    ) -> None:
        self._submit = submit
        self._in_flight = in_flight  # the journal's count, shared by its jobs
        self._open: set[int] = set()  # this job's intents without an answer
        self.job_id = job_id
        self._record = record
        self._fd: int | None = lock_fd
        self._seq = next_seq
        self._n = next_n
        self._held: list[Statement] = []  # answers not handed to the thread yet
        self._flush: asyncio.TimerHandle | None = None
        self._failed: BaseException | None = None

    @property
    def record(self) -> JobRecord:
        return self._record

    async def _write(self, statement: Statement, *, wait: bool = True, company: int = 0) -> None:
        if self._fd is None:
            raise JournalError(f"job {self.job_id!r} was released: nothing more is written")
        if self._failed is not None:
            raise JournalError(f"journal write failed: {self._failed}") from self._failed
        statements, self._held = [*self._held, statement], []
        done = self._submit(statements, wait, company)
        if done is not None:
            await done

    def _hold(self, statement: Statement) -> None:
        self._held.append(statement)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.ANSWER_DELAY, self._flush_held)

    def _flush_held(self) -> None:
        self._flush = None
        statements, self._held = self._held, []
        if statements and self._fd is not None:
            try:
                self._submit(statements, False, 0)
            except JournalError as exc:  # the next write says so: nothing more is sent
                self._failed = exc

    async def intent(self, method: str, ids: Sequence[int], seq: int | None) -> int:
        now = time.time()
        if seq is not None:  # a re-send after a refusal: the latest send time counts
            await self._write(
                ("UPDATE intents SET sent_at=? WHERE job_id=? AND seq=?", (now, self.job_id, seq))
            )
            return seq
        seq, self._seq = self._seq, self._seq + 1
        company = self._in_flight[0]
        self._open.add(seq)
        self._in_flight[0] += 1
        try:
            await self._write(
                ("INSERT INTO intents VALUES (?,?,?,?,?,?)",
                 (self.job_id, seq, method, now, len(ids), encode_ids(ids))),
                company=company,
            )  # fmt: skip
        except BaseException:  # not sent: not in flight
            self._open.discard(seq)
            self._in_flight[0] -= 1
            raise
        return seq

    async def answer(self, seq: int, codes: bytes, errors: dict[int, B24Error]) -> None:
        if self._fd is None:
            raise JournalError(f"job {self.job_id!r} was released: nothing more is written")
        if seq in self._open:
            self._open.discard(seq)
            self._in_flight[0] -= 1
        self._hold(
            ("INSERT OR REPLACE INTO answers VALUES (?,?,?,?)",
             (self.job_id, seq, codes, encode_errors(errors) if errors else None))
        )  # fmt: skip

    async def settle(
        self, ids: Sequence[int], codes: bytes, changed: bytes, errors: dict[int, B24Error]
    ) -> None:
        n, self._n = self._n, self._n + 1
        await self._write(
            ("INSERT INTO settles VALUES (?,?,?,?,?,?)",
             (self.job_id, n, encode_ids(ids), codes, changed,
              encode_errors(errors) if errors else None)),
            wait=False,
        )  # fmt: skip

    async def snapshot(self, ids: Sequence[int], states: bytes) -> None:
        n, self._n = self._n, self._n + 1
        await self._write(
            ("INSERT INTO snapshots VALUES (?,?,?,?)", (self.job_id, n, encode_ids(ids), states))
        )

    async def finish(self, report: dict[str, Any]) -> None:
        counts = json.dumps(report["counts"])
        blob = zlib.compress(json.dumps(report, separators=(",", ":")).encode(), 1)
        await self._write(
            ("UPDATE jobs SET state='finished', counts=?, report=?, updated_at=? "
             "WHERE job_id=?", (counts, blob, time.time(), self.job_id))
        )  # fmt: skip

    def held(self) -> bool:
        """A ``flock`` cannot expire under a living holder."""
        return self._fd is not None

    async def release(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._flush_held()  # what was answered is written before another runner may start
        self._in_flight[0] -= len(self._open)
        self._open.clear()
        fd, self._fd = self._fd, None
        if fd is not None:
            _drop_lock(fd)


def _take_lock(path: str, job_id: str) -> int:
    """An exclusive, non-blocking ``flock`` on the job's lock file: its descriptor."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock the kernel drops when its holder dies
        raise JournalError(
            "SqliteJournal needs POSIX file locks (fcntl); on this system use RedisJournal"
        ) from None

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JobBusy(f"job {job_id!r} is being run by another runner") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _drop_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)  # closing the descriptor drops the flock


def _bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _unbool(value: int | None) -> bool | None:
    return None if value is None else bool(value)
