"""Journaled jobs (write ahead, resume, one runner at a time) against the emulator, on
every journal: ``SqliteJournal`` in a temporary file and ``RedisJournal`` on a real
redis-server (a fresh key prefix per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow.emulator import Faults
from tests.conftest import serve, unique_prefix

FAST = b24.Timeout(portal_limit=1.0, settle=0.05)

#: A new journal on the test's store (another handle on the same database or prefix, as
#: another process would open it).
Journals = Callable[[], b24.Journal]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def journals(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journals]:
    opened: list[b24.Journal] = []
    if request.param == "sqlite":
        path = tmp_path / "j.db"

        def make() -> b24.Journal:
            opened.append(b24.SqliteJournal(path))
            return opened[-1]
    else:
        url: str = request.getfixturevalue("redis_url")
        prefix = unique_prefix()

        def make() -> b24.Journal:
            opened.append(b24.RedisJournal(url, prefix=prefix))
            return opened[-1]

    yield make
    for journal in opened:
        await journal.aclose()


@pytest.fixture
def journal(journals: Journals) -> b24.Journal:
    return journals()


def client_for(server: Any, **options: Any) -> b24.FlowClient:
    options.setdefault("rate_limit", b24.RateLimit.unlimited())
    options.setdefault("timeout", FAST)
    return b24.FlowClient.from_webhook(server.webhook_url(), **options)


async def test_a_finished_job_run_again_returns_its_report_and_sends_nothing(
    journal: b24.Journal,
) -> None:
    async with serve(flows=300) as server:
        async with client_for(server) as client:
            first = await client.activate_many(range(1, 301), journal=journal, job_id="a")
            sent = server.state.requests
            again = await client.activate_many(range(1, 301), journal=journal, job_id="a")
        assert server.state.requests == sent  # nothing sent the second time
        assert all(server.state.activations[i] == 1 for i in range(1, 301))
        assert first.ok and again.succeeded == first.succeeded
        assert again.changed == first.changed == tuple(range(1, 301))


async def test_another_spec_under_the_same_job_id_is_a_mismatch(journal: b24.Journal) -> None:
    async with serve(flows=10) as server:
        async with client_for(server) as client:
            await client.activate_many([1, 2], journal=journal, job_id="a")
            sent = server.state.requests
            for call, reason in (
                (client.activate_many([2, 1], journal=journal, job_id="a"),
                 "other flow ids (2 of them, in their order)"),
                (client.activate_many([1, 2], verify=True, journal=journal, job_id="a"),
                 "verify=False"),
                (client.set_active([1, 2], False, journal=journal, job_id="a"),
                 "another operation (activate_many)"),
                (client.pin_many([1, 2], journal=journal, job_id="a"),
                 "another operation (activate_many)"),
            ):  # fmt: skip
                with pytest.raises(b24.JobMismatch) as raised:
                    await call
                assert raised.value.reason == reason
                assert f"job 'a' was started with {reason};" in str(raised.value)
        assert server.state.requests == sent


async def test_a_job_held_by_another_runner_is_busy(journals: Journals) -> None:
    async with serve(flows=10) as server:
        other, journal = journals(), journals()
        spec = b24.JobSpec("activate_many", [1, 2, 3])
        held = await other.open_job("a", spec)
        async with client_for(server) as client:
            with pytest.raises(b24.JobBusy):
                await client.activate_many([1, 2, 3], journal=journal, job_id="a")
            assert server.state.requests == 0
            await held.release()
            report = await client.activate_many([1, 2, 3], journal=journal, job_id="a")
        assert report.ok


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"job_id": "a"}, ValueError),
        ({"journal": "x.db", "job_id": "a"}, TypeError),
        ({"journal": "JOURNAL", "job_id": ""}, ValueError),
        ({"journal": "JOURNAL", "job_id": None}, ValueError),
        ({"journal": "JOURNAL", "job_id": 5}, TypeError),
        ({"journal": "JOURNAL", "job_id": " task "}, ValueError),  # the CLI could not name it
        ({"journal": "JOURNAL", "job_id": "a\nb"}, ValueError),
        ({"journal": "JOURNAL", "job_id": "x" * 201}, ValueError),
    ],
)
async def test_bad_journal_arguments_send_nothing(
    journal: b24.Journal, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    async with serve(flows=3) as server:
        if kwargs.get("journal") == "JOURNAL":
            kwargs["journal"] = journal
        async with client_for(server) as client:
            with pytest.raises(error):
                await client.activate_many([1], **kwargs)
        assert server.state.requests == 0


async def test_a_stopped_job_resumes_with_what_was_never_sent(journal: b24.Journal) -> None:
    async with serve(flows=500) as server:
        stop = asyncio.Event()

        def progress(p: b24.Progress) -> None:
            if p.done >= 100:
                stop.set()

        async with client_for(server, concurrency=1) as client:
            first = await client.activate_many(
                range(1, 501), on_progress=progress, stop=stop, journal=journal, job_id="s"
            )
            assert first.failed  # stopped: the rest was never sent
            second = await client.activate_many(range(1, 501), journal=journal, job_id="s")
        assert all(server.state.activations[i] == 1 for i in range(1, 501))
        assert second.ok and len(second.changed) == 500


async def test_a_cancelled_run_leaves_flows_in_doubt_and_set_active_settles_them(
    journal: b24.Journal,
) -> None:
    """The first run's toggles are cut unanswered and still run 0.5 s later (as a portal's
    PHP does); the run is cancelled (as a process dies). The resumed run must not trust a
    read that shows no change before the lost requests must have finished."""
    activate = frozenset({"tasks.flow.Flow.activate"})
    faults = Faults(drop_then_run=1.0, run_after=0.5, methods=activate)
    async with serve(flows=100, active_ratio=1.0, faults=faults) as server:
        async with client_for(server) as client:
            task = asyncio.create_task(
                client.set_active(range(1, 101), False, journal=journal, job_id="x")
            )
            while server.state.activations.total() == 0 and server.state.late_pending == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        server.portal.config.faults.drop_then_run = 0.0
        async with client_for(server) as client:
            report = await client.set_active(range(1, 101), False, journal=journal, job_id="x")
        await asyncio.sleep(0.7)  # anything still due on the portal has run by now
        assert report.ok, report.summary()
        assert all(not server.state.flows[i].active for i in range(1, 101))
        assert all(server.state.activations[i] == 1 for i in range(1, 101))
        assert len(report.changed) == 100


@pytest.mark.parametrize("kind", ["corrupt", "directory", "missing-dir"])
async def test_a_journal_that_cannot_be_opened_is_an_error_before_any_request(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "j.db"
    if kind == "corrupt":
        path.write_bytes(b"this is not a database" * 100)
    elif kind == "directory":
        path.mkdir()
    else:
        path = tmp_path / "no" / "such" / "dir" / "j.db"
    async with serve(flows=10) as server, b24.SqliteJournal(path) as journal:
        async with client_for(server) as client:
            with pytest.raises(b24.JournalError, match="journal") as raised:
                await client.activate_many(range(1, 11), journal=journal, job_id="a")
        assert server.state.requests == 0
        if kind != "corrupt":  # where the files go, for a path SQLite cannot open
            assert "a directory this process can write" in str(raised.value)


class _FailingAfter:
    """A journal whose job log fails its writes after ``n`` intents (a disk that fills)."""

    def __init__(self, inner: b24.SqliteJournal, n: int) -> None:
        self.inner = inner
        self.n = n

    async def open_job(self, job_id: str, spec: b24.JobSpec) -> Any:
        log = await self.inner.open_job(job_id, spec)
        budget = self

        class Log:
            record = log.record

            async def intent(self, method: str, ids: Any, seq: int | None) -> int:
                if budget.n <= 0:
                    raise b24.JournalError("journal: disk full")
                budget.n -= 1
                return await log.intent(method, ids, seq)

            def __getattr__(self, name: str) -> Any:
                return getattr(log, name)

        return Log()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_journal_that_fails_mid_job_sends_nothing_more(tmp_path: Path) -> None:
    async with (
        serve(flows=1000) as server,
        b24.SqliteJournal(tmp_path / "j.db") as inner,
        client_for(server, concurrency=1) as client,
    ):
        journal: Any = _FailingAfter(inner, 3)
        report = await client.activate_many(range(1, 1001), journal=journal, job_id="a")
    assert server.state.requests == 3  # the three batches whose intents were written
    assert len(report.succeeded) == 150
    assert len(report.failed) == 850 and not report.unknown
    assert all(server.state.activations[i] == 1 for i in range(1, 151))
    assert server.state.activations.total() == 150


async def test_set_active_stopped_while_reading_keeps_what_it_read_settled(
    journal: b24.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiob24flow._converge as converge

    monkeypatch.setattr(converge, "READ_CHUNK", 1)  # a journal write every read request
    ids = range(1, 301)
    async with serve(flows=300, active_ratio=0.5) as server:
        inactive = {i for i in ids if not server.state.flows[i].active}
        stop = b24.Stop()

        def after_three_reads(progress: b24.Progress) -> None:
            if server.state.calls["tasks.flow.Flow.get"] >= 150:
                stop.set()

        async with client_for(server, concurrency=1) as client:
            first = await client.set_active(
                ids, False, journal=journal, job_id="r", stop=stop, on_progress=after_three_reads
            )
            read = server.state.calls["tasks.flow.Flow.get"]
            assert 150 <= read < 300 and server.state.activations.total() == 0
            settled = {i for i in range(1, read + 1) if i in inactive}
            assert set(first.succeeded) == settled  # journaled as each chunk ended
            second = await client.set_active(ids, False, journal=journal, job_id="r")
        assert second.ok and len(second.succeeded) == 300
        # The resume read every flow but those the first run found inactive, once.
        assert server.state.calls["tasks.flow.Flow.get"] - read == 300 - len(settled)
        assert all(not server.state.flows[i].active for i in ids)
        assert all(server.state.activations[i] == (i not in inactive) for i in ids)


async def test_verify_stopped_while_reading_keeps_what_it_read(
    journal: b24.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiob24flow._converge as converge

    monkeypatch.setattr(converge, "READ_CHUNK", 1)  # a snapshot every read request
    ids = range(1, 301)
    async with serve(flows=300, active_ratio=0.5) as server:
        before = {i: server.state.flows[i].active for i in ids}
        stop = b24.Stop()

        def after_three_reads(progress: b24.Progress) -> None:
            if server.state.calls["tasks.flow.Flow.get"] >= 150:
                stop.set()

        async with client_for(server, concurrency=1) as client:
            await client.activate_many(
                ids, verify=True, journal=journal, job_id="v", stop=stop,
                on_progress=after_three_reads,
            )  # fmt: skip
            read = server.state.calls["tasks.flow.Flow.get"]
            assert 150 <= read < 300 and server.state.activations.total() == 0
            second = await client.activate_many(ids, verify=True, journal=journal, job_id="v")
        assert second.ok and len(second.changed) == 300
        # The resume read only what the first run had not: its snapshot is journaled.
        assert server.state.calls["tasks.flow.Flow.get"] - read == 300 - read
        assert all(server.state.activations[i] == 1 for i in ids)
        assert all(server.state.flows[i].active is not before[i] for i in ids)
