"""Journaled jobs killed with SIGKILL and resumed (issue 25: the crash tests).

The emulator runs in this process, so it outlives the kill; the job runs in a process of
its own (forked by a zygote, ``tests/crash_child.py``) that kills itself at a journal
write (right after an intent, or a re-send's, is durable and before its request leaves;
right before an answer is written; after an answer, a settle, a snapshot; before or after
the report) or is killed by this process as one of its requests reaches the portal (the
Kth; the one the portal cuts; the one it refuses). Faults: chosen toggle batches are cut
unanswered and run 0.3 s later (``drop_then_run``), as a portal's PHP does, or refused
with a 503 (not run); a lost answer is settled ``portal_limit`` = 0.8 s after its request
left (the 0.5 s between the two leaves room for a loaded machine).

Then the same call runs again (in this process) to its end, the portal is let finish what
is still due, and the checks read what the portal recorded and what the journal holds:

- every flow in exactly one of succeeded / failed / unknown;
- write ahead: no flow was toggled or pinned more times than the journal holds intents
  for it;
- no request after the kill carried a flow settled before it (no re-send, no re-read);
- ``activate_many`` / ``pin_many``: no flow sent twice or toggled twice; ``unknown`` is
  exactly the flows in doubt, each toggled at most once; every succeeded flow once;
- ``set_active`` / ``verify=True``: every flow in the desired state, toggled exactly as
  many times as needed (0 or 1);
- ``set_pinned``: every flow pinned, pinned at most once plus two per lost pin (one
  more for a flow that was pinned before), and a lost pin re-sent only once it must have
  finished.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import aiob24flow as b24
from aiob24flow._journal import JobRecord
from aiob24flow.emulator import EmulatorServer, Faults, Portal, PortalConfig
from tests.crash_child import TIMEOUT, client_for, open_journal, run_operation

ROOT = Path(__file__).resolve().parent.parent
ZYGOTE = "from tests.crash_child import zygote; zygote()"
JOB = "crash"
ACTIVATE = "tasks.flow.Flow.activate"
GET = "tasks.flow.Flow.get"
PIN = "tasks.flow.Flow.pin"
TOGGLES = frozenset({ACTIVATE, PIN})
FLOWS = 300  # seed 0: 145 active, 155 not (set_active: 3 or 4 toggle batches)
CONCURRENCY = 3
RUN_AFTER = 0.3  # a cut request runs this long after its client saw the cut (< portal_limit)
WAIT = 30.0  # the bound on every wait
OK_CODES = frozenset({1, 2, 3})  # Outcome.OK_TRUE / OK_FALSE / OK_VALUE
OK_TRUE, UNKNOWN = 1, 5

Report = b24.BulkReport[bool]


@attrs.define
class CutFaults(Faults):
    """Faults on chosen requests carrying a toggle, by their ordinals (1 = the first toggle
    batch the portal receives, counted across every run, re-sends included): ``cut`` are
    cut unanswered and run later (``drop_then_run``), ``refuse`` are refused with a 503
    and not run (``limit_503``; the client sends them again).

    ``kill_when`` sees the fault drawn for each request (None: none); when it says so,
    process ``victim`` (a pid) is killed there and then, with the request in the portal's
    hands (so the process is alive: it is waiting for this answer).
    """

    cut: frozenset[int] = frozenset()
    refuse: frozenset[int] = frozenset()
    seen: int = 0
    kill_when: Callable[[str | None], bool] | None = None
    victim: int | None = None

    def draw(self, method: str, commands: frozenset[str] = frozenset()) -> str | None:
        fault = None
        if method in TOGGLES or commands & TOGGLES:
            self.seen += 1
            if self.seen in self.refuse:
                fault = "limit_503"
            elif self.seen in self.cut:
                fault = "drop_then_run"
        victim = self.victim
        if victim is not None and self.kill_when is not None and self.kill_when(fault):
            self.victim = None
            os.kill(victim, signal.SIGKILL)
        return fault


class RecordingPortal(Portal):
    """The emulated portal, also recording every command it runs: (method, flow id)."""

    def __init__(self, config: PortalConfig) -> None:
        super().__init__(config)
        self.commands: list[tuple[str, int]] = []

    def run(self, caller: Any, method: str, params: dict[Any, Any]) -> tuple[Any, dict[str, Any]]:
        flow_id = params.get("flowId")
        if isinstance(flow_id, str) and flow_id.isdigit():
            self.commands.append((method, int(flow_id)))
        return super().run(caller, method, params)


def portal(
    flows: int, *, cut: Iterable[int] = (), refuse: Iterable[int] = (), latency: float = 0.0
) -> RecordingPortal:
    faults = CutFaults(cut=frozenset(cut), refuse=frozenset(refuse), run_after=RUN_AFTER)
    config = PortalConfig(flows=flows, active_ratio=0.5, seed=0, leak=None, latency=latency,
                          faults=faults)  # fmt: skip
    return RecordingPortal(config)


# -- the child ----------------------------------------------------------------------------

#: Kill points this process acts on (the child runs with "none"), checked as each request
#: reaches the portal's fault draw: its Kth request ("requests:K"), the moment the portal
#: cuts one of its requests unanswered ("late"; that request runs later), or refuses one
#: ("refused"; the child would send it again after a pause).
PARENT_POINTS: dict[str, Callable[[EmulatorServer, int, str | None], bool]] = {
    "requests": lambda server, k, _: server.state.requests >= k,
    "late": lambda server, _, fault: fault == "drop_then_run",
    "refused": lambda server, _, fault: fault == "limit_503",
}


class Zygote:
    """A process that has imported the library once and forks each job process (the
    imports cost more than most jobs): ``tests/crash_child.py``."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.running: int | None = None

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), WAIT)
        assert line, "the zygote is gone"
        message: dict[str, Any] = json.loads(line)
        return message

    async def start(self, argv: list[str], log: Path) -> int:
        """Fork a job process; its pid."""
        assert self.proc.stdin is not None and self.running is None
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        self.running = int((await self._read())["pid"])
        return self.running

    async def wait(self) -> int:
        """The job process's exit code (``-9``: SIGKILLed), once it ended."""
        message = await self._read()
        assert message["pid"] == self.running
        self.running = None
        return int(message["code"])

    def close(self) -> None:
        if self.running is not None:  # a failed wait: do not leave the job behind
            os.kill(self.running, signal.SIGKILL)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    forks = Zygote()
    try:
        yield forks
    finally:
        forks.close()


async def run_child(
    zygote: Zygote, server: EmulatorServer, db: Path, operation: str, point: str, *,
    flows: int = FLOWS, concurrency: int = CONCURRENCY,
) -> tuple[int, str]:  # fmt: skip
    """Run the operation in a job process killed at ``point``: (its exit code, its output)."""
    kind, _, count = point.partition(":")
    outside = PARENT_POINTS.get(kind)
    faults = server.portal.config.faults
    assert isinstance(faults, CutFaults)
    log = db.with_name(f"{db.name}.{point.replace(':', '-')}.log")
    argv = [server.webhook_url(), where(db), JOB, operation, "none" if outside else point,
            str(flows), str(concurrency)]  # fmt: skip
    pid = await zygote.start(argv, log)
    if outside is not None:
        k = int(count or 1)
        faults.victim = pid
        faults.kill_when = lambda fault: outside(server, k, fault)
    try:
        code = await zygote.wait()
    finally:
        faults.victim = faults.kill_when = None
    return code, log.read_text(errors="replace") if log.exists() else ""


#: The journals of the Redis cases: the ``db`` path of a case -> ``redis|URL|PREFIX``
#: (a SQLite case's journal is its ``db`` file).
REDIS_JOURNALS: dict[Path, str] = {}


def where(db: Path) -> str:
    """The journal of a case, as the job process is told it (``open_journal``)."""
    return REDIS_JOURNALS.get(db, str(db))


async def resume(server: EmulatorServer, db: Path, operation: str, flows: int = FLOWS) -> Report:
    """The same call, in this process, to its end (once a killed runner's Redis lease has
    expired: ``JobBusy`` until then)."""
    deadline = time.monotonic() + WAIT
    while True:
        journal = open_journal(where(db))
        try:
            async with client_for(server.webhook_url(), CONCURRENCY) as client:
                call = run_operation(client, operation, range(1, flows + 1), journal, JOB)
                return await asyncio.wait_for(call, WAIT)
        except b24.JobBusy:
            assert time.monotonic() < deadline, "the killed runner's lease never expired"
            await asyncio.sleep(0.1)
        finally:
            await journal.aclose()


async def read_record(db: Path) -> JobRecord:
    journal = open_journal(where(db))
    try:
        record = await journal.read_job(JOB)
    finally:
        await journal.aclose()
    assert record is not None
    return record


async def quiet(server: EmulatorServer) -> None:
    """Wait for everything still due on the portal: running requests and late runs."""
    deadline = time.monotonic() + WAIT
    while server.state.late_pending or server.portal.running:
        assert time.monotonic() < deadline, "the portal did not go quiet"
        await asyncio.sleep(0.02)


async def after_kill(server: EmulatorServer) -> int:
    """Let the requests the dead child had on the wire run (the portal keeps running a
    request whose client went away); the index of the first command sent after them."""
    await asyncio.sleep(0.05)
    deadline = time.monotonic() + WAIT
    while server.portal.running:
        assert time.monotonic() < deadline, "the dead child's requests did not end"
        await asyncio.sleep(0.01)
    assert isinstance(server.portal, RecordingPortal)
    return len(server.portal.commands)


# -- what the journal holds ---------------------------------------------------------------


@attrs.define
class Journaled:
    """Per flow, what the journal holds of its toggles (every intent is a toggle or pin)."""

    sends: Counter[int] = attrs.Factory(Counter)
    lost: Counter[int] = attrs.Factory(Counter)  # sends with no answer, or answered unknown
    doubt: set[int] = attrs.Factory(set)  # the last send lost
    settled: set[int] = attrs.Factory(set)  # a resume must neither send nor read it
    times: dict[int, list[tuple[float, bool]]] = attrs.Factory(dict)  # (sent_at, lost)


def journaled(record: JobRecord, operation: str) -> Journaled:
    out = Journaled()
    last: dict[int, int | None] = {}
    for intent in record.intents:
        answer = record.answers.get(intent.seq)
        for i, flow_id in enumerate(intent.ids):
            code = answer.codes[i] if answer is not None else None
            lost = code is None or code == UNKNOWN
            out.sends[flow_id] += 1
            out.lost[flow_id] += lost
            out.times.setdefault(flow_id, []).append((intent.sent_at, lost))
            last[flow_id] = code
    for flow_id, code in last.items():
        if code is None or code == UNKNOWN:
            out.doubt.add(flow_id)
        elif code == OK_TRUE if operation == "set_pinned" else code in OK_CODES:
            out.settled.add(flow_id)  # set_pinned: only an answer saying "pinned"
    for settle in record.settles:
        out.settled.update(settle.ids)
    return out


# -- the checks ---------------------------------------------------------------------------


@attrs.frozen
class Before:
    """The portal before the first run: who was active, who was pinned (by user 1)."""

    active: dict[int, bool]
    pinned: frozenset[int]


def prepare(server: EmulatorServer) -> Before:
    """Pin every third flow first, so that ``set_pinned`` meets both states."""
    for flow_id in range(3, len(server.state.flows) + 1, 3):
        server.state.pins[(flow_id, 1)] = True
    active = {i: f.active for i, f in server.state.flows.items()}
    return Before(active, frozenset(i for (i, _), on in server.state.pins.items() if on))


def check_report_covers(report: Report, flows: int) -> None:
    maps = (report.succeeded, report.failed, report.unknown)
    seen = Counter(flow_id for m in maps for flow_id in m)
    assert set(seen) == set(range(1, flows + 1)), "a flow is missing from the report"
    assert all(n == 1 for n in seen.values()), "a flow is in two maps of the report"
    assert not report.failed, {k: repr(v) for k, v in list(report.failed.items())[:3]}


def check_write_ahead(server: EmulatorServer, operation: str, view: Journaled) -> None:
    """Nothing ran on the portal that was not journaled first."""
    ran = server.state.pin_calls if operation in ("pin_many", "set_pinned") else \
        server.state.activations  # fmt: skip
    other = server.state.activations if ran is server.state.pin_calls else server.state.pin_calls
    assert not +other, "the other toggle ran"
    over = {i: (n, view.sends[i]) for i, n in ran.items() if n > view.sends[i]}
    assert not over, f"toggled more often than journaled (toggles, intents): {over}"


def check_not_resent(server: EmulatorServer, settled: set[int], mark: int) -> None:
    """No request after the kill carried a flow settled before it."""
    assert isinstance(server.portal, RecordingPortal)
    again = [(m, i) for m, i in server.portal.commands[mark:] if i in settled]
    assert not again, f"settled before the kill, sent after it: {again[:5]}"


def check_toggled_once(
    server: EmulatorServer, operation: str, report: Report, view: Journaled
) -> None:
    """``activate_many`` / ``pin_many``: never twice, and what is in doubt is unknown."""
    ran = server.state.activations if operation == "activate_many" else server.state.pin_calls
    assert max(view.sends.values(), default=0) <= 1, "a flow was sent twice"
    assert max(ran.values(), default=0) <= 1, f"toggled twice: {+ran - Counter(set(ran))}"
    assert set(report.unknown) == view.doubt
    assert all(ran[i] == 1 for i in report.succeeded)
    assert set(report.changed) == set(report.succeeded)


def check_active(
    server: EmulatorServer, operation: str, report: Report, before: Before, flows: int
) -> None:
    """``set_active`` / ``verify=True``: every flow as desired, toggled only as needed."""
    ids = range(1, flows + 1)
    if operation == "verify":
        desired = {i: not before.active[i] for i in ids}
    else:
        desired = dict.fromkeys(ids, operation == "set_active_on")
    assert report.ok, report.summary()
    wrong = [i for i in ids if server.state.flows[i].active != desired[i]]
    assert not wrong, f"not in the desired state: {wrong[:10]}"
    needed = {i for i in ids if before.active[i] != desired[i]}
    extra = {i: n for i, n in server.state.activations.items() if n != (i in needed)}
    missing = {i for i in needed if server.state.activations[i] != 1}
    assert not extra and not missing, f"toggled other than needed: {extra} {missing}"
    assert set(report.changed) == needed


def check_pinned(server: EmulatorServer, report: Report, before: Before, view: Journaled) -> None:
    """``set_pinned(True)``: all pinned; one pin (two for a pinned flow) plus two per loss."""
    assert report.ok, report.summary()
    unpinned = [i for i in report.succeeded if not server.state.pins.get((i, 1))]
    assert not unpinned, f"not pinned: {unpinned[:10]}"
    for flow_id in report.succeeded:
        calls = server.state.pin_calls[flow_id]
        base = 2 if flow_id in before.pinned else 1
        assert calls % 2 == base % 2  # it ends pinned
        assert calls <= base + 2 * view.lost[flow_id], (flow_id, calls, view.lost[flow_id])
        if not view.lost[flow_id]:
            assert (flow_id in report.changed) == (flow_id not in before.pinned)


def check_waited(view: Journaled) -> None:
    """A toggle or pin sent again after a lost one only once the lost one must be done."""
    limit = TIMEOUT.portal_limit
    early = []
    for flow_id, sends in view.times.items():
        for (sent_at, lost), (again, _) in itertools.pairwise(sends):
            if lost and again < sent_at + limit - 0.01:
                early.append((flow_id, round(again - sent_at, 3)))
    assert not early, f"re-sent before the lost request must have finished: {early[:5]}"


def check_final(
    server: EmulatorServer, operation: str, report: Report, before: Before, view: Journaled,
    flows: int = FLOWS,
) -> None:  # fmt: skip
    check_report_covers(report, flows)
    check_write_ahead(server, operation, view)
    if operation in ("activate_many", "pin_many"):
        check_toggled_once(server, operation, report, view)
    elif operation == "set_pinned":
        check_pinned(server, report, before, view)
        check_waited(view)
    else:
        check_active(server, operation, report, before, flows)
        check_waited(view)


async def check_finished(server: EmulatorServer, db: Path, operation: str, report: Report) -> None:
    """The job is done: running it again sends nothing and returns the same report."""
    sent = server.state.requests
    again = await resume(server, db, operation)
    assert server.state.requests == sent
    assert again.succeeded == report.succeeded
    assert set(again.unknown) == set(report.unknown)
    assert set(again.changed) == set(report.changed)


# -- the matrix ---------------------------------------------------------------------------

#: Faults by name: (the toggle batches cut unanswered, to run 0.3 s later; those refused).
#: "cut2" cuts a second batch, so that the resume of a job killed late meets a cut of its
#: own; "refuse" refuses the first toggle batch (503: not run, sent again) and cuts one.
FAULTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "clean": ((), ()),
    "cut": ((2,), ()),
    "cut2": ((2, 5), ()),
    "refuse": ((4,), (1,)),
}

CASES = [
    # operation, kill point, faults
    ("activate_many", "intent:1", "clean"),
    ("activate_many", "intent:3", "cut"),
    ("activate_many", "answer-before:2", "cut"),
    ("activate_many", "answer:2", "clean"),
    ("activate_many", "finish", "cut2"),
    ("activate_many", "finished", "cut"),
    ("activate_many", "requests:3", "clean"),
    ("activate_many", "late", "cut"),
    ("activate_many", "resend:1", "refuse"),
    ("pin_many", "intent:1", "cut"),
    ("pin_many", "answer-before:2", "clean"),
    ("pin_many", "answer:1", "cut2"),
    ("pin_many", "requests:2", "cut"),
    ("pin_many", "refused", "refuse"),
    ("verify", "snapshot:1", "cut"),
    ("verify", "intent:2", "cut"),
    ("verify", "answer-before:1", "clean"),
    ("verify", "answer-before:3", "cut2"),
    ("verify", "settle:1", "cut"),
    ("verify", "late", "cut"),
    ("verify", "finish", "clean"),
    ("verify", "resend:1", "refuse"),
    ("set_active_on", "settle:1", "clean"),
    ("set_active_on", "intent:1", "cut"),
    ("set_active_on", "intent:2", "clean"),
    ("set_active_on", "answer-before:1", "cut"),
    ("set_active_on", "answer:1", "cut2"),
    ("set_active_on", "settle:2", "cut"),
    ("set_active_on", "late", "cut"),
    ("set_active_on", "requests:8", "clean"),
    ("set_active_on", "resend:1", "refuse"),
    ("set_active_off", "settle:1", "cut"),
    ("set_active_off", "intent:2", "cut"),
    ("set_active_off", "answer-before:2", "cut"),
    ("set_active_off", "late", "cut"),
    ("set_pinned", "intent:1", "cut"),
    ("set_pinned", "intent:2", "clean"),
    ("set_pinned", "answer-before:1", "cut"),
    ("set_pinned", "answer:2", "cut2"),
    ("set_pinned", "late", "cut"),
    ("set_pinned", "finish", "cut"),
    ("set_pinned", "requests:3", "clean"),
    ("set_pinned", "refused", "refuse"),
]


#: The cases run on ``RedisJournal`` too (one or two of each operation, with cuts).
REDIS_CASES = [
    ("activate_many", "intent:3", "cut"),
    ("activate_many", "answer-before:2", "cut"),
    ("pin_many", "answer:1", "cut2"),
    ("verify", "snapshot:1", "cut"),
    ("verify", "intent:2", "cut"),
    ("set_active_on", "answer-before:1", "cut"),
    ("set_active_on", "settle:2", "cut"),
    ("set_active_off", "late", "cut"),
    ("set_pinned", "answer-before:1", "cut"),
    ("set_pinned", "late", "cut"),
]
ALL_CASES = [
    *[pytest.param(*case, "sqlite", id="-".join(case)) for case in CASES],
    *[
        pytest.param(*case, "redis", id="-".join((*case, "redis")), marks=pytest.mark.redis)
        for case in REDIS_CASES
    ],
]


@pytest.mark.parametrize(("operation", "point", "faults", "journal"), ALL_CASES)
async def test_killed_and_resumed(
    zygote: Zygote, tmp_path: Path, request: pytest.FixtureRequest, operation: str,
    point: str, faults: str, journal: str,
) -> None:  # fmt: skip
    db = tmp_path / "journal.db"
    if journal == "redis":
        url = request.getfixturevalue("redis_url")
        REDIS_JOURNALS[db] = f"redis|{url}|crash{time.monotonic_ns()}"
    cut, refuse = FAULTS[faults]
    latency = 0.02 if point.startswith("requests") else 0.0
    async with EmulatorServer(portal(FLOWS, cut=cut, refuse=refuse, latency=latency)) as server:
        before = prepare(server)
        code, output = await run_child(zygote, server, db, operation, point)
        assert code == -signal.SIGKILL, f"the child was not killed at {point}: {output}"
        mark = await after_kill(server)
        at_kill = journaled(await read_record(db), operation)
        sent = server.state.requests
        report = await resume(server, db, operation)
        if point == "finished":  # the job's report was written: nothing is left to send
            assert server.state.requests == sent
        await quiet(server)  # the dead run's cut requests have run by now
        check_not_resent(server, at_kill.settled, mark)
        check_final(server, operation, report, before, journaled(await read_record(db), operation))
        await check_finished(server, db, operation, report)


@pytest.mark.parametrize("operation", ["activate_many", "verify", "set_active_off", "set_pinned"])
async def test_killed_twice_and_resumed(zygote: Zygote, tmp_path: Path, operation: str) -> None:
    """The resume is killed too (its first answer arrived, not written); a third run ends
    the job."""
    db = tmp_path / "journal.db"
    async with EmulatorServer(portal(FLOWS, cut=(1, 3))) as server:
        before = prepare(server)
        for point in ("intent:2", "answer-before:1"):
            code, output = await run_child(zygote, server, db, operation, point)
            assert code == -signal.SIGKILL, f"the child was not killed at {point}: {output}"
        mark = await after_kill(server)
        at_kill = journaled(await read_record(db), operation)
        report = await resume(server, db, operation)
        await quiet(server)
        check_not_resent(server, at_kill.settled, mark)
        check_final(server, operation, report, before, journaled(await read_record(db), operation))


async def test_a_resumed_set_active_over_20000_flows_resends_nothing_settled(
    zygote: Zygote, tmp_path: Path
) -> None:
    """Killed past half way (after its 100th toggle answer is written, with the flows a
    first read found active already settled), the resumed ``set_active`` sends no request,
    read or toggle, for a flow settled before the kill."""
    flows = 20_000
    db = tmp_path / "journal.db"
    async with EmulatorServer(portal(flows)) as server:
        before = prepare(server)
        code, output = await run_child(
            zygote, server, db, "set_active_on", "answer:100", flows=flows, concurrency=16
        )
        assert code == -signal.SIGKILL, output
        mark = await after_kill(server)
        at_kill = journaled(await read_record(db), "set_active_on")
        assert len(at_kill.settled) > flows // 2
        report = await resume(server, db, "set_active_on", flows)
        await quiet(server)
        assert isinstance(server.portal, RecordingPortal)
        after = server.portal.commands[mark:]
        assert after, "the resume sent nothing"
        assert {m for m, _ in after} <= {GET, ACTIVATE}
        check_not_resent(server, at_kill.settled, mark)
        view = journaled(await read_record(db), "set_active_on")
        check_final(server, "set_active_on", report, before, view, flows)
