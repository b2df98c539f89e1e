"""Jobs that survive the process, through the real console script against the emulator:
``--journal`` / ``--job-id`` on the toggles and setters, ``--portal-limit``, and
``aiob24flow jobs`` (list, show, forget)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow._limiter import portal_key
from aiob24flow._methods import ACTIVATE
from aiob24flow.emulator import Faults
from tests.conftest import CLI_SCRIPT, free_port, redis_server, run_cli, serve
from tests.test_cli_platform import NO_FCNTL

if not CLI_SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)

FAST = ["--plan", "unlimited"]
AGAIN = "if this run is interrupted, run the same command again to resume it"
JOB_LINE = re.compile(r"job ([a-z-]+-[0-9a-f]{16}): " + re.escape(AGAIN))


async def run(server: Any, *args: str, **kwargs: Any) -> tuple[int, str, str]:
    return await run_cli(*args, "--webhook", server.webhook_url(), **kwargs)


def auto_id(command: str, spec: b24.JobSpec, server: Any) -> str:
    """The job id the command line derives when no --job-id is given: what it sends, and
    to which portal."""
    portal = portal_key(server.webhook_url())
    return f"{command}-{hashlib.sha256(f'{spec.digest}|{portal}'.encode()).hexdigest()[:16]}"


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- a journaled run ----------------------------------------------------------------------


async def test_a_journaled_run_names_its_job_once_and_a_rerun_sends_nothing(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=100) as server:
        code, out, err = await run(server, "activate", "1-60", "--journal", journal, *FAST)
        assert code == 0, err
        ids = JOB_LINE.findall(err)
        assert ids == [auto_id("activate", b24.JobSpec("activate_many", range(1, 61)), server)]
        assert err.count("job ") == 1
        sent = server.state.requests
        code, again, err = await run(server, "activate", "1-60", "--journal", journal, *FAST)
        assert code == 0, err
        assert server.state.requests == sent  # the stored report; nothing sent
        assert f"job {ids[0]} was finished by an earlier run" in err
        assert f"aiob24flow jobs forget {ids[0]} --journal {journal}" in err  # to paste
        assert all(server.state.activations[i] == 1 for i in range(1, 61))
        assert re.search(r"succeeded +60\n", again) and re.search(r"changed +60\n", again)
        code, out, _ = await run(server, "activate", "1-60", "--journal", journal, "--json")
        assert json.loads(out)["job_id"] == ids[0]
        code, out, _ = await run(server, "activate", "1-2", "--json", *FAST)
        assert json.loads(out)["job_id"] is None


async def test_the_job_id_is_a_digest_of_what_is_sent_not_of_credentials_or_pace(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=10) as server:

        async def job_of(*args: str, env: dict[str, str] | None = None) -> str:
            extra = () if env else ("--webhook", server.webhook_url())
            code, _, err = await run_cli(*args, "--journal", journal, *extra, env=env)
            assert code == 0, err
            found = re.findall(r"job ([a-z-]+-[0-9a-f]{16})", err)
            assert len(set(found)) == 1, err
            return str(found[0])

        first = await job_of("set-active", "--on", "1", "2")
        paced = await job_of(
            "set-active", "--on", "1", "2", "--plan", "enterprise", "--concurrency", "3",
            "--portal-limit", "5", "--headroom", "1", "-v",
            env={"B24_WEBHOOK_URL": server.webhook_url()},
        )  # fmt: skip
        assert paced == first  # credentials from elsewhere, another pace: the same job
        others = {
            await job_of("set-active", "--off", "1", "2"),
            await job_of("set-pinned", "--on", "1", "2"),
            await job_of("activate", "1", "2"),
            await job_of("activate", "1", "2", "--verify"),
            await job_of("pin", "1", "2"),
            await job_of("set-active", "--on", "1", "2", "3"),
            await job_of("set-active", "--on", "2", "1"),
        }
        assert len(others) == 7 and first not in others
        assert first == auto_id("set-active", b24.JobSpec("set_active", [1, 2], True), server)


async def test_journal_option_errors_are_one_line_exit_2_and_send_nothing(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=10) as server:
        for args, message in [
            (["activate", "1", "--job-id", "x"], "--job-id needs --journal"),
            (["set-active", "--off", "1", "--dry-run", "--journal", journal], "--dry-run"),
            (["activate", "1", "--journal", ""], "empty journal location"),
            (["activate", "1", "--journal", "https://x.example/"], "redis:// URL"),
            (["activate", "1", "--journal", journal, "--job-id", ""], "not a job id"),
            (["activate", "1", "--journal", journal, "--job-id", "a\tb"], "not a job id"),
            (["activate", "1", "--journal", journal, "--job-id", "x" * 201], "at most 200"),
            (["get", "1", "--journal", journal], "unrecognized arguments"),
        ]:
            code, out, err = await run(server, *args)
            assert (code, out) == (2, ""), (args, err)
            assert message in one_line(err), (args, err)
        assert server.state.requests == 0
        assert not os.path.exists(journal)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
async def test_portal_limit_must_be_a_positive_number(value: str) -> None:
    async with serve(flows=10) as server:
        code, out, err = await run(server, "activate", "1", f"--portal-limit={value}")
        assert (code, out) == (2, "")
        assert "--portal-limit" in one_line(err)
        assert server.state.requests == 0


async def test_portal_limit_is_how_long_a_lost_request_may_run(tmp_path: Path) -> None:
    # Every toggle's connection drops at once and the portal runs it 2 s later. The first
    # read-back (after about 1 s) still shows the old state, which is trusted only once
    # --portal-limit has passed since the send: 3 s here, 60 s (a minute more) by default.
    faults = Faults(drop_then_run=1.0, run_after=2.0, methods=frozenset({ACTIVATE}))
    async with serve(flows=20, faults=faults) as server:
        started = time.monotonic()
        code, out, err = await run(
            server, "set-active", "--off", "1-20", "--portal-limit", "3", "--json", *FAST
        )
        assert time.monotonic() - started < 20
        assert code == 0, err
        assert json.loads(out)["summary"]["succeeded"] == 20
        assert all(server.state.activations[i] == 1 for i in range(1, 21))
        assert not any(server.state.active_states().values())


# -- jobs that cannot run -----------------------------------------------------------------


async def test_a_mismatched_job_exits_2_with_one_line_and_sends_nothing(tmp_path: Path) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=10) as server:
        code, _, err = await run(server, "activate", "1-3", "--journal", journal, "--job-id", "n")
        assert code == 0, err
    for args in (["activate", "1-4"], ["pin", "1-3"], ["activate", "1-3", "--verify"]):
        async with serve(flows=10) as other:
            code, out, err = await run(other, *args, "--journal", journal, "--job-id", "n")
            assert (code, out) == (2, ""), err
            assert one_line(err) == (
                "aiob24flow: error: job n was started with another command or ids; use "
                f"another --job-id or `aiob24flow jobs forget n --journal {journal}`"
            )
            assert other.state.requests == 0


async def test_the_same_command_against_another_portal_is_another_job(tmp_path: Path) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=10) as a, serve(flows=10) as b:
        code, _, err = await run(a, "activate", "1-3", "--journal", journal, *FAST)
        assert code == 0, err
        code, _, err_b = await run(b, "activate", "1-3", "--journal", journal, *FAST)
        assert code == 0, err_b
        assert "finished by an earlier run" not in err_b  # not portal a's report
        assert JOB_LINE.findall(err) != JOB_LINE.findall(err_b)
        assert a.state.activations.total() == b.state.activations.total() == 3


async def test_a_busy_job_exits_75_naming_it_and_sends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    spec = b24.JobSpec("activate_many", [1, 2, 3])
    async with serve(flows=10) as server, b24.SqliteJournal(path) as journal:
        job_id = auto_id("activate", spec, server)
        held = await journal.open_job(job_id, spec)  # another runner holds it
        code, out, err = await run(server, "activate", "1-3", "--journal", str(path))
        assert (code, out) == (75, ""), err
        line = one_line(err)  # not even the job line: the job was never taken
        assert line.startswith(f"aiob24flow: error: job {job_id} is held by another runner")
        assert "try again" in line
        assert server.state.requests == 0
        code, _, err = await run_cli("jobs", "forget", job_id, "--journal", str(path))
        assert code == 75 and job_id in one_line(err)
        await held.release()
        code, _, err = await run(server, "activate", "1-3", "--journal", str(path))
        assert code == 0, err
        assert server.state.activations.total() == 3


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def _directory(path: Path) -> None:
    path.mkdir()


def _under_a_file(path: Path) -> Path:
    path.write_text("a file\n")
    return path / "jobs.db"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_corrupt, "file is not a database"),
        (_directory, "unable to open database file"),
        (_under_a_file, "Not a directory|unable to open database file"),
    ],
)
async def test_a_journal_that_cannot_be_opened_is_one_line_exit_74_before_any_request(
    tmp_path: Path, make: Any, reason: str
) -> None:
    path = tmp_path / "jobs.db"
    location = make(path) or path
    async with serve(flows=10) as server:
        code, out, err = await run(server, "activate", "1-3", "--journal", str(location))
        assert (code, out) == (74, ""), err
        line = one_line(err)
        assert line.startswith(f"aiob24flow: error: journal {location}: ")
        assert re.search(reason, line) and line.endswith("; nothing was sent")
        assert server.state.requests == 0


def _mount_namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null"], check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    os.geteuid() == 0 and not _mount_namespaces(),
    reason="as root, a read-only location needs mount namespaces (unshare -m)",
)
async def test_a_journal_in_a_read_only_location_is_one_line_exit_74(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    wrap: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: a read-only bind mount stops even root
        wrap = ["unshare", "-m", "sh", "-c",
                f'mount --bind "{directory}" "{directory}" && '
                f'mount -o remount,bind,ro "{directory}" && exec "$@"', "sh"]  # fmt: skip
    else:
        directory.chmod(0o555)
    try:
        async with serve(flows=10) as server:
            code, out, err = await run(
                server, "activate", "1-3", "--journal", str(directory / "jobs.db"), wrap=wrap
            )
    finally:
        directory.chmod(0o755)
    assert (code, out) == (74, ""), err
    assert one_line(err).endswith("; nothing was sent") and str(directory) in err
    assert server.state.requests == 0
    assert list(directory.iterdir()) == []


@pytest.mark.skipif(not _mount_namespaces(), reason="needs root and mount namespaces")
async def test_a_journal_that_fails_mid_job_stops_sending_and_the_rerun_resumes(
    tmp_path: Path,
) -> None:
    small, kept = tmp_path / "small", tmp_path / "kept"
    small.mkdir()
    kept.mkdir()
    # A tiny file system: the journal fills it part-way through the job. What the journal
    # held is copied out afterwards, as if the disk had been given more room.
    wrap = ["unshare", "-m", "sh", "-c",
            f'mount -t tmpfs -o size=192k tmpfs "{small}" && "$@"; rc=$?; '
            f'for f in "{small}/jobs.db" "{small}/jobs.db-wal"; do '
            f'[ -e "$f" ] && cp "$f" "{kept}/"; done; exit $rc', "sh"]  # fmt: skip
    async with serve(flows=2000) as server:
        code, out, err = await run(
            server, "set-active", "--off", "1-2000", "--journal", str(small / "jobs.db"),
            "--concurrency", "1", *FAST, wrap=wrap,
        )  # fmt: skip
        assert code == 74, err
        sent = server.state.activations.total()
        assert 0 < sent < 2000
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"aiob24flow: error: journal {small / 'jobs.db'}: ")
        assert "full" in last and last.endswith(
            "sending stopped; once the journal works, run the same command again to resume the job"
        )
        # The rerun reads back what the failed run left in doubt and toggles the rest.
        code, out, err = await run(
            server, "set-active", "--off", "1-2000", "--journal", str(kept / "jobs.db"),
            "--json", *FAST,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["summary"]["succeeded"] == 2000
        assert all(server.state.activations[i] == 1 for i in range(1, 2001))


async def test_a_journal_file_without_posix_locks_is_a_usage_error(tmp_path: Path) -> None:
    async with serve(flows=10) as server:
        code, out, err = await run(
            server, "activate", "1", "--journal", str(tmp_path / "jobs.db"),
            wrap=[sys.executable, "-c", NO_FCNTL],
        )  # fmt: skip
        assert (code, out) == (2, "")
        assert "POSIX file locks" in one_line(err) and "redis://" in err
        assert server.state.requests == 0


@pytest.mark.skipif(
    getattr(b24, "RedisJournal", None) is not None, reason="this version has RedisJournal"
)
async def test_a_redis_journal_without_redis_journal_support_is_a_usage_error() -> None:
    async with serve(flows=10) as server:
        code, out, err = await run(server, "activate", "1", "--journal", "redis://127.0.0.1/0")
        assert (code, out) == (2, "")
        assert "needs the Redis journal" in one_line(err)
        assert server.state.requests == 0


# -- Ctrl-C and resume --------------------------------------------------------------------


async def test_ctrl_c_leaves_the_job_resumable_and_every_flow_toggles_once(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=1000) as server:
        job_id = auto_id("activate", b24.JobSpec("activate_many", range(1, 1001)), server)
        code, out, err = await run(
            server, "activate", "1-1000", "--journal", journal,
            "--burst", "1", "--per-second", "4", "--concurrency", "1",
            interrupt_when=lambda: server.state.activations.total() >= 100,
        )  # fmt: skip
        assert code == 130, err
        assert JOB_LINE.findall(err) == [job_id]
        assert f"job {job_id} was interrupted: run the same command again to resume" in err
        first = server.state.activations.total()
        assert 100 <= first < 1000
        assert re.search(rf"succeeded +{first}\n", out)
        code, out, err = await run_cli("jobs", "--journal", journal)
        assert code == 0
        counts = f"succeeded {first}, not sent {1000 - first}"
        assert re.search(rf"{job_id} +activate +1000 +unfinished +{counts} ", out), out
        code, out, err = await run_cli("jobs", "show", job_id, "--journal", journal, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert shown["state"] == "unfinished"
        assert shown["summary"] == {
            "settled": first, "succeeded": first, "failed": 0, "unknown": 0,
            "in_doubt": 0, "not_sent": 1000 - first,
        }  # fmt: skip

        # Run the same command again (at another pace: pace is not part of the job).
        code, out, err = await run(server, "activate", "1-1000", "--journal", journal, *FAST,
                                   "--json")  # fmt: skip
        assert code == 0, err
        resuming = (
            f"(resuming: {first} settled by earlier runs, 0 in doubt, {1000 - first} to send)"
        )
        assert f"job {job_id}: {AGAIN} {resuming}" in err
        report = json.loads(out)
        assert report["summary"] == {
            "total": 1000, "succeeded": 1000, "changed": 1000, "failed": 0, "unknown": 0
        }  # fmt: skip
        assert report["job_id"] == job_id
        assert all(server.state.activations[i] == 1 for i in range(1, 1001))
        code, out, _ = await run_cli("jobs", "--journal", journal)
        assert re.search(rf"{job_id} +activate +1000 +finished +succeeded 1000, changed 1000 ", out)


async def test_a_second_ctrl_c_leaves_flows_in_doubt_and_the_rerun_reads_them_back(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "jobs.db")
    # Every toggle runs, then its answer hangs: all four batches are on the wire when the
    # two Ctrl-Cs come, so the run stops waiting for them and reports them unknown.
    faults = Faults(hang_after=1.0, hang_seconds=4, methods=frozenset({ACTIVATE}))
    async with serve(flows=200, faults=faults) as server:
        args = ["set-active", "--off", "1-200", "--journal", journal, "--json", *FAST,
                "--webhook", server.webhook_url()]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            str(CLI_SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while server.state.activations.total() < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 130, err.decode()
        assert json.loads(out)["summary"]["unknown"] == 200
        code, out_text, err_text = await run_cli(*args)
        assert code == 0, err_text
        assert json.loads(out_text)["summary"]["succeeded"] == 200
        assert all(server.state.activations[i] == 1 for i in range(1, 201))


# -- aiob24flow jobs ------------------------------------------------------------------------


async def _unfinished_job(path: Path) -> None:
    """Flows 1-3 answered, 4-5 sent with no answer recorded (in doubt), 6-10 never sent:
    what a run killed mid-request leaves."""
    async with b24.SqliteJournal(path) as journal:
        log = await journal.open_job("nightly", b24.JobSpec("activate_many", range(1, 11)))
        seq = await log.intent(ACTIVATE, [1, 2, 3], None)
        await log.answer(seq, bytes([1, 1, 1]), {})
        await log.intent(ACTIVATE, [4, 5], None)
        await log.release()


async def test_jobs_show_an_unfinished_job_and_its_resume(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await _unfinished_job(path)
    code, out, err = await run_cli("jobs", "show", "nightly", "--journal", str(path))
    assert code == 0, err
    assert re.match(r"job nightly: activate, 10 flows, unfinished, updated \d{4}-\d\d-\d\d ", out)
    assert "settled by earlier runs: 3 flows" in out
    assert re.search(r"succeeded +3\n", out) and re.search(r"failed +0\n", out)
    assert "in doubt: 2 flows, ids 4-5 (a resume reports them unknown and never sends" in out
    assert "not yet sent: 5 flows" in out
    code, out, err = await run_cli("jobs", "--journal", str(path), "show", "nightly", "--json")
    shown = json.loads(out)
    assert shown["in_doubt"] == [4, 5] and sorted(shown["succeeded"]) == ["1", "2", "3"]
    assert shown["summary"]["not_sent"] == 5 and shown["command"] == "activate"
    assert shown["job_id"] == "nightly"
    code, out, _ = await run_cli("jobs", "--journal", str(path))
    assert "unfinished  succeeded 3, in doubt 2, not sent 5  " in out, out
    code, out, _ = await run_cli("jobs", "--journal", str(path), "--json")
    assert json.loads(out)["jobs"][0]["progress"] == {
        "settled": 3, "succeeded": 3, "failed": 0, "unknown": 0, "in_doubt": 2, "not_sent": 5
    }  # fmt: skip
    async with serve(flows=10) as server:
        code, out, err = await run(
            server, "activate", "1-10", "--journal", str(path), "--job-id", "nightly", "--json"
        )
        assert code == 1, err  # 4 and 5 may have toggled: unknown, never sent again
        report = json.loads(out)
        assert report["summary"]["succeeded"] == 8 and sorted(report["unknown"]) == ["4", "5"]
        assert [server.state.activations[i] for i in range(1, 11)] == [0] * 5 + [1] * 5
    code, out, err = await run_cli("jobs", "show", "nightly", "--journal", str(path))
    assert "finished" in out.splitlines()[0]
    assert re.search(r"unknown +2\n +2 flows \(ResponseLost: in doubt: .*\): ids 4-5\n", out), out


async def test_jobs_lists_the_journal_as_a_table_and_json(tmp_path: Path) -> None:
    journal = str(tmp_path / "jobs.db")
    async with serve(flows=10) as server:
        code, out, err = await run_cli("jobs", "--journal", journal)
        assert code == 74 and one_line(err) == f"aiob24flow: error: no journal at {journal}"
        assert not os.path.exists(journal)  # listing creates nothing
        await run(server, "set-active", "--off", "1-10", "--journal", journal, "--job-id", "off")
        await run(server, "pin", "1", "2", "--journal", journal)
    code, out, err = await run_cli("jobs", "--journal", journal)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "COMMAND", "FLOWS", "STATE", "COUNTS", "UPDATED"]
    assert len(lines) == 3
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    off = rf"off +set-active --off +10 +finished +succeeded 10.* {when}"
    pin = rf"pin-[0-9a-f]{{16}} +pin +2 +finished +succeeded 2, changed 2 +{when}"
    assert [bool(re.fullmatch(off, line)) for line in lines[1:]].count(True) == 1, out
    assert [bool(re.fullmatch(pin, line)) for line in lines[1:]].count(True) == 1, out
    code, out, _ = await run_cli("jobs", "--journal", journal, "--json")
    document = json.loads(out)
    assert document["schema"] == 1 and document["journal"] == journal
    off = next(job for job in document["jobs"] if job["job_id"] == "off")
    assert off["command"] == "set-active --off" and off["desired"] is False
    assert off["state"] == "finished" and off["counts"]["succeeded"] == 10
    assert off["progress"] is None  # only an unfinished job has one
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", off["updated_at"])


async def test_jobs_forget_exits_0_then_1(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await _unfinished_job(path)
    code, out, err = await run_cli("jobs", "forget", "nightly", "--journal", str(path))
    assert (code, out) == (2, ""), err  # what it knows would be lost: --force
    assert "job nightly is unfinished" in one_line(err) and "--force" in one_line(err)
    code, out, _ = await run_cli("jobs", "show", "nightly", "--journal", str(path))
    assert code == 0, out
    code, out, err = await run_cli("jobs", "forget", "nightly", "--journal", str(path), "--force")
    assert (code, out.strip()) == (0, "forgot job nightly"), err
    code, out, err = await run_cli("jobs", "forget", "nightly", "--journal", str(path))
    assert (code, out) == (1, "")
    assert one_line(err) == f"aiob24flow: no job nightly in {path}"
    code, out, err = await run_cli("jobs", "show", "nightly", "--journal", str(path))
    assert code == 1 and "no job nightly" in err
    code, out, _ = await run_cli("jobs", "--journal", str(path))
    assert out == f"no jobs in {path}\n"
    code, _, err = await run_cli("jobs", "forget", "nightly")
    assert code == 2 and "--journal" in one_line(err)


# -- a Redis journal ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def journal_redis() -> Iterator[str]:
    """A redis-server of this module's own (its jobs are listed by ``aiob24flow jobs``)."""
    if getattr(b24, "RedisJournal", None) is None:
        pytest.skip("this version has no RedisJournal")
    with redis_server() as url:
        yield url


@pytest.mark.redis
async def test_a_redis_journal_runs_lists_and_forgets_jobs(journal_redis: str) -> None:
    async with serve(flows=20) as server:
        job_id = auto_id("pin", b24.JobSpec("pin_many", range(1, 21)), server)
        code, _, err = await run(server, "pin", "1-20", "--journal", journal_redis, *FAST)
        assert code == 0, err
        assert JOB_LINE.findall(err) == [job_id]
        sent = server.state.requests
        code, _, err = await run(server, "pin", "1-20", "--journal", journal_redis, *FAST)
        assert code == 0 and server.state.requests == sent
        assert "finished by an earlier run" in err
        assert all(server.state.pin_calls[i] == 1 for i in range(1, 21))
    code, out, _ = await run_cli("jobs", "--journal", journal_redis)
    assert code == 0 and re.search(rf"{job_id} +pin +20 +finished +succeeded 20", out), out
    code, out, _ = await run_cli("jobs", "show", job_id, "--journal", journal_redis)
    assert code == 0 and re.search(r"succeeded +20\n", out)
    code, out, _ = await run_cli("jobs", "forget", job_id, "--journal", journal_redis)
    assert (code, out.strip()) == (0, f"forgot job {job_id}")


@pytest.mark.redis
async def test_a_redis_journal_busy_or_unreachable_sends_nothing(journal_redis: str) -> None:
    spec = b24.JobSpec("activate_many", [1, 2, 3])
    redis_journal: Any = getattr(b24, "RedisJournal", None)
    journal = redis_journal(journal_redis)
    try:
        held = await journal.open_job("held", spec)
        async with serve(flows=10) as server:
            code, out, err = await run(
                server, "activate", "1-3", "--journal", journal_redis, "--job-id", "held"
            )
            assert (code, out) == (75, ""), err
            assert "job held is held by another runner" in one_line(err)
            closed = f"redis://127.0.0.1:{free_port()}/0"
            code, out, err = await run(server, "activate", "1-3", "--journal", closed)
            assert (code, out) == (74, ""), err
            assert one_line(err).endswith("; nothing was sent")
            assert server.state.requests == 0
        await held.release()
    finally:
        await journal.aclose()


def test_the_forget_command_it_suggests_pastes_and_keeps_a_password_out() -> None:
    from aiob24flow.cli._journal import forget_command

    assert forget_command("n", "/tmp/my jobs.db") == (
        "aiob24flow jobs forget n --journal '/tmp/my jobs.db'"
    )
    line = forget_command("job 1", "redis://:s3cret@localhost:6379/0")
    assert "s3cret" not in line
    assert line == "aiob24flow jobs forget 'job 1' --journal 'redis://:***@localhost:6379/0'"
