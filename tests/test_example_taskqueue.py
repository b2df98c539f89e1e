"""examples/taskqueue (issue 25, part 5): a journaled job in a real task queue.

Real parts only: a redis-server on loopback, arq worker processes started from the
example's own settings, a SIGKILL, and the emulator (in this process, over real sockets)
counting what really toggled. The first worker is killed from inside the emulator the
moment a request of the job arrives, so that request runs with nobody left to record its
answer; a new worker takes the job once arq's in-progress mark of the dead one expires,
and resumes it from the journal, in slices.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import aiob24flow as b24
from tests.conftest import redis_server, serve

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
if not (ROOT / "examples" / "taskqueue").is_dir():  # the sdist ships tests/, not examples/
    pytest.skip("examples/taskqueue is not in this tree", allow_module_level=True)
if os.environ.get("AIOB24FLOW_REQUIRE_QUEUE"):
    import arq  # noqa: F401 - .ci/run's queue step installs it: a missing arq is an error
else:
    pytest.importorskip("arq")  # the `queue` extra (not in `test`: arq pins redis < 6)

from arq import create_pool  # noqa: E402
from arq.jobs import Job, JobResult, JobStatus  # noqa: E402

from examples.taskqueue.worker import QUEUE_NAME, redis_at  # noqa: E402

FLOWS = 2000  # 40 batch requests of 50: about 4 s at the client's pace
# The client paces 5 + 10/s; the emulator's own bucket is roomier, so no request is
# refused (a refused request does not run, and the test wants every one it gets to run).
CLIENT_RATE = {"B24_BURST": "5", "B24_PER_SECOND": "10"}
# Deliveries of 2 s (the job needs two after the kill) and a dead worker's job back 14 s
# after it was taken (arq: job timeout + 10 s).
JOB_TIMEOUT = "4"
PORTAL_RATE = {"burst": 10.0, "leak": 20.0}
# The request whose arrival kills the first worker: past the client's burst (requests are
# 0.1 s apart by then), well before the last.
KILL_AT = 8
JOB_ID = "nightly-activation"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A redis-server of this test's own (arq's queue keys are not prefixed per test)."""
    with redis_server() as url:
        yield url


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``arq examples.taskqueue.worker.WorkerSettings``, as the example's README runs it."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "arq", "examples.taskqueue.worker.WorkerSettings", "-v"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # arq stops on SIGTERM; the example's shutdown closes the client
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def logs(tmp_path: Path) -> str:
    """The workers' output, for a failure's message."""
    return "\n".join(
        f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
        for path in sorted(tmp_path.glob("worker*.log"))
    )


async def until(condition: Callable[[], bool], what: str, seconds: float, tmp: Path) -> None:
    """Poll, bounded: no fixed sleeps."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {seconds:g} s\n{logs(tmp)}"
        await asyncio.sleep(0.05)


async def enqueue(env: dict[str, str], *args: str) -> str:
    """The example's enqueue script, as its README runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.taskqueue.enqueue", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def outcome(redis_url: str, job_id: str, seconds: float, tmp: Path) -> JobResult:
    """What arq stored when the job ended (polled, bounded)."""
    redis = await create_pool(redis_at(redis_url))
    try:
        job = Job(job_id, redis, _queue_name=QUEUE_NAME)
        deadline = time.monotonic() + seconds
        while (status := await job.status()) != JobStatus.complete:
            assert time.monotonic() < deadline, (
                f"job {job_id} still {status} after {seconds:g} s\n{logs(tmp)}"
            )
            await asyncio.sleep(0.2)
        info = await job.result_info()
        assert info is not None
        return info
    finally:
        await redis.aclose()


async def test_a_killed_workers_job_is_delivered_again_and_resumed_without_a_second_toggle(
    redis_url: str, tmp_path: Path
) -> None:
    async with serve(flows=FLOWS, latency=0.02, **PORTAL_RATE) as server:
        env = {
            **os.environ,
            **CLIENT_RATE,
            "TASKQUEUE_JOB_TIMEOUT": JOB_TIMEOUT,
            "REDIS_URL": redis_url,
            "B24_WEBHOOK_URL": server.webhook_url(),
            "JOURNAL_PATH": str(tmp_path / "journal.db"),
        }
        first = start_worker(env, tmp_path / "worker1.log")
        workers = [first]
        arrived = 0
        wait = server.portal.sleep

        async def kill_on_arrival(seconds: float) -> None:
            # The portal's latency wait, after the whole request is in: the KILL_AT-th
            # request will run (the emulator finishes what it received, as PHP does), but
            # its answer has nobody to go to, so the journal has its intent and no answer.
            nonlocal arrived
            arrived += 1
            if arrived == KILL_AT:
                os.kill(first.pid, signal.SIGKILL)
            await wait(seconds)

        server.portal.sleep = kill_on_arrival
        try:
            await enqueue(env, JOB_ID, f"1-{FLOWS}")
            await until(lambda: first.poll() is not None, "the kill", 30, tmp_path)
            assert first.returncode == -signal.SIGKILL, logs(tmp_path)
            await server.portal.idle()  # what the dead worker sent has run
            toggled_by_first = server.state.activations.total()
            assert 0 < toggled_by_first < FLOWS

            workers.append(start_worker(env, tmp_path / "worker2.log"))
            done = await outcome(redis_url, JOB_ID, 45, tmp_path)
            # Enqueued again: arq keeps the result under the id, so nothing is queued.
            requests = server.state.requests
            assert "already in the queue" in await enqueue(env, JOB_ID, f"1-{FLOWS}")
            assert server.state.requests == requests
        finally:
            for worker in workers:
                stop(worker)
        await server.portal.idle()
        activations = server.state.activations

    assert done.success, f"{done.result!r}\n{logs(tmp_path)}"
    result = done.result
    # Killed in the first delivery; the second resumed and ran out of its slice; a third
    # (at least) finished.
    assert result["deliveries"] >= 3, result["deliveries"]
    succeeded = set(result["succeeded"])
    unknown = set(result["unknown"])
    assert not result["failed"]
    assert succeeded | unknown == set(range(1, FLOWS + 1))  # the report covers every flow
    assert not succeeded & unknown
    # No flow toggled twice: the resumed job sent only what the dead worker had not.
    assert max(activations.values()) == 1
    assert all(activations[i] == 1 for i in succeeded)
    # The request that arrived as the worker died ran with its answer lost: its flows are
    # in doubt. activate_many reports them unknown and never sends them again, and the
    # portal shows each of them toggled once.
    assert len(unknown) >= 50
    assert sum(activations[i] for i in unknown) >= 50
    async with b24.SqliteJournal(tmp_path / "journal.db") as journal:
        record = await journal.read_job(JOB_ID)
    assert record is not None and record.finished
