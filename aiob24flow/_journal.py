"""The write-ahead journal of a bulk job: what it will do before a request leaves, what it
did when the answer comes; and the records a resumed run reads back.

A ``Journal`` (``SqliteJournal``, ``RedisJournal``) holds many jobs, each under a
caller-chosen ``job_id``. ``Journal.open_job(job_id, spec)`` takes the job for one runner
(``JobBusy`` if another holds it, ``JobMismatch`` if the id names another spec) and returns
a ``JobLog`` with what earlier runs left (``JobRecord``). The job then writes, per request
and never per flow:

- ``intent(method, ids)``: before the request's first byte leaves (durable on return);
- ``answer(seq, codes, errors)``: the outcome of each flow of that request;
- ``settle(ids, codes, changed, errors)``: outcomes decided without a request of their own
  (a read showed the desired state; a flow out of its budget);
- ``snapshot(ids, states)``: the states ``verify=True`` read before toggling;
- ``finish(report)``: the job is done; running it again returns this report.

Records are encoded here, once for every backend: flow ids as packed little-endian
integers (a request's as they are, more zlib-compressed), outcome codes as bytes, errors
as small JSON objects.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from . import _errors
from ._errors import B24Error, JobMismatch, ServerError

__all__ = [
    "MAX_JOB_ID",
    "OPERATIONS",
    "Answer",
    "Intent",
    "JobLog",
    "JobRecord",
    "JobSpec",
    "JobSummary",
    "Journal",
    "Settle",
    "check_job_id",
    "decode_errors",
    "decode_ids",
    "encode_errors",
    "encode_ids",
    "mismatch",
]

#: The journaled operations, as recorded in a spec.
OPERATIONS = ("activate_many", "pin_many", "set_active", "set_pinned")


@attrs.frozen
class JobSpec:
    """What a job is: the same ``job_id`` with another spec is ``JobMismatch``."""

    operation: str
    ids: Sequence[int] = attrs.field(eq=False, repr=False)
    desired: bool | None = None
    verify: bool = False
    digest: str = attrs.field(init=False)

    @digest.default
    def _digest(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.operation}|{self.desired}|{self.verify}|".encode())
        h.update(_packed(self.ids))
        return h.hexdigest()

    def differs(self, stored: JobSpec) -> str:
        """What ``stored`` (the spec a job was started with) has that this one has not,
        as a phrase: ``another operation (pin_many)``."""
        if stored.operation != self.operation:
            return f"another operation ({stored.operation})"
        if stored.desired != self.desired:
            return f"another desired state ({stored.desired})"
        if stored.verify != self.verify:
            return f"verify={stored.verify}"
        return f"other flow ids ({len(stored.ids)} of them, in their order)"

    def describe(self) -> str:
        """One line, e.g. ``set_active(active=False) 20000 flows``."""
        args = []
        if self.desired is not None:
            args.append(f"{'pinned' if self.operation == 'set_pinned' else 'active'}="
                        f"{self.desired}")  # fmt: skip
        if self.verify:
            args.append("verify=True")
        return f"{self.operation}({', '.join(args)}) {len(self.ids)} flows"


@attrs.frozen
class Intent:
    """A request about to leave: ``ids`` with ``method``, sent at unix time ``sent_at``
    (the latest send when it was re-sent after a refusal)."""

    seq: int
    method: str
    sent_at: float
    ids: Sequence[int]


@attrs.frozen
class Answer:
    """The outcome of each flow of intent ``seq``: ``Outcome`` codes in its order."""

    seq: int
    codes: bytes
    errors: dict[int, B24Error]


@attrs.frozen
class Settle:
    """Flows settled without a request of their own (``Outcome`` codes; ``changed``)."""

    ids: Sequence[int]
    codes: bytes
    changed: bytes
    errors: dict[int, B24Error]


@attrs.frozen
class JobSummary:
    """A line of ``aiob24flow jobs``: ``state`` is "finished" or "unfinished" (running,
    or its runner stopped); ``counts`` are the report's for a finished job, else how many
    flows were sent and answered so far."""

    job_id: str
    operation: str
    desired: bool | None
    verify: bool
    total: int
    state: str
    counts: dict[str, int]
    updated_at: float


@attrs.define
class JobRecord:
    """What earlier runs of a job left, in the order it was written."""

    spec: JobSpec
    finished: bool = False
    report: dict[str, Any] | None = None  # the encoded report of a finished job
    intents: list[Intent] = attrs.Factory(list)
    answers: dict[int, Answer] = attrs.Factory(dict)
    settles: list[Settle] = attrs.Factory(list)
    snapshots: list[tuple[Sequence[int], bytes]] = attrs.Factory(list)


class JobLog(Protocol):
    """One runner's hold on one job: the records of earlier runs, and the writes."""

    @property
    def record(self) -> JobRecord: ...

    async def intent(self, method: str, ids: Sequence[int], seq: int | None) -> int: ...

    async def answer(self, seq: int, codes: bytes, errors: dict[int, B24Error]) -> None: ...

    async def settle(
        self, ids: Sequence[int], codes: bytes, changed: bytes, errors: dict[int, B24Error]
    ) -> None: ...

    async def snapshot(self, ids: Sequence[int], states: bytes) -> None: ...

    async def finish(self, report: dict[str, Any]) -> None: ...

    def held(self) -> bool:
        """Whether this runner still holds the job, judged locally with no I/O (a Redis
        lease not renewed within its TTL is not). Checked right before a request leaves,
        after its intent is written: a runner paused past its lease sends nothing."""
        ...

    async def release(self) -> None:
        """Let another runner take the job (also when this one failed)."""
        ...


@runtime_checkable
class Journal(Protocol):
    """Where jobs are journaled. Every method raises ``JournalError`` when the journal
    cannot be reached, read or written."""

    async def open_job(self, job_id: str, spec: JobSpec) -> JobLog:
        """Take ``job_id`` for this runner: a new job, or the one earlier runs left.
        ``JobMismatch`` (another spec) and ``JobBusy`` (another runner) before anything."""
        ...

    async def jobs(self) -> list[JobSummary]: ...

    async def read_job(self, job_id: str) -> JobRecord | None: ...

    async def forget(self, job_id: str) -> bool: ...

    async def aclose(self) -> None: ...


#: The longest job id.
MAX_JOB_ID = 200


def mismatch(job_id: str, stored: JobSpec, spec: JobSpec) -> JobMismatch:
    """The error for ``job_id`` run with ``spec`` when it was started with ``stored``."""
    reason = spec.differs(stored)
    error = JobMismatch(
        f"job {job_id!r} was started with {reason}; use another job id, or forget the old job"
    )
    error.reason = reason
    return error


def check_job_id(job_id: object) -> str:
    """The rule for a job id, the same for ``FlowClient``, every journal and the command
    line (which shows, lists and forgets jobs by it): printable characters on one line,
    no surrounding spaces, at most ``MAX_JOB_ID`` of them."""
    if job_id is None:
        raise ValueError("a journaled call needs job_id= (a str naming the job)")
    if not isinstance(job_id, str):
        raise TypeError(f"job_id must be a str, got {type(job_id).__name__}")
    if not job_id or not job_id.isprintable() or job_id != job_id.strip():
        raise ValueError(
            f"job_id {job_id!r} must be printable characters on one line, without "
            "surrounding spaces"
        )
    if len(job_id) > MAX_JOB_ID:
        raise ValueError(f"job_id has at most {MAX_JOB_ID} characters, got {len(job_id)}")
    return job_id


# -- encoding ---------------------------------------------------------------------------


def _packed(ids: Sequence[int]) -> bytes:
    packed = ids if isinstance(ids, array) and ids.typecode == "q" else array("q", ids)
    if sys.byteorder == "big":  # pragma: no cover - the journal is little-endian everywhere
        packed = array("q", packed)
        packed.byteswap()
    return packed.tobytes()


#: Up to this many ids (a request's, at most 50) are stored as they are: compressing 50 ids
#: costs more CPU than the write itself, and saves a few bytes a flow.
_PLAIN_UP_TO = 64
# The first byte of a plain blob; a compressed one starts 0x78 (zlib, 32 KiB window).
_INT32, _INT64 = b"\x04", b"\x08"


def encode_ids(ids: Sequence[int]) -> bytes:
    """Flow ids, little-endian: a request's few as plain int32 (int64 when one is larger),
    more of them zlib-compressed int64 (consecutive ids shrink a lot)."""
    if len(ids) > _PLAIN_UP_TO:
        return zlib.compress(_packed(ids), 1)
    try:
        plain, tag = array("i", ids), _INT32
    except OverflowError:
        plain, tag = array("q", ids), _INT64
    if sys.byteorder == "big":  # pragma: no cover
        plain.byteswap()
    return tag + plain.tobytes()


def decode_ids(blob: bytes) -> array[int]:
    tag = blob[:1]
    ids = array("i") if tag == _INT32 else array("q")
    ids.frombytes(blob[1:] if tag in (_INT32, _INT64) else zlib.decompress(blob))
    if sys.byteorder == "big":  # pragma: no cover
        ids.byteswap()
    return ids if ids.typecode == "q" else array("q", ids)


def encode_errors(errors: dict[int, B24Error]) -> str:
    """``{index: error}`` as JSON: the class by name, and what ``B24Error`` carries."""
    return json.dumps(
        [
            [i, type(e).__name__, e.code, e.description, e.status, e.method]
            for i, e in errors.items()
        ],
        separators=(",", ":"),
    )


def decode_errors(text: str | bytes | None) -> dict[int, B24Error]:
    if not text:
        return {}
    out: dict[int, B24Error] = {}
    for i, name, code, description, status, method in json.loads(text):
        cls = getattr(_errors, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, B24Error)):
            cls = ServerError
        try:
            error = cls(description, code=code, status=status, method=method)
        except TypeError:  # a class with another constructor (BulkAborted): keep the text
            error = ServerError(description, code=code, status=status, method=method)
        out[int(i)] = error
    return out
