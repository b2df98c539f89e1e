"""Jobs that survive the process: ``--journal`` / ``--job-id``, opening the journal, the
job id a command derives from what it sends, and the one line for a job that cannot run.

``--journal PATH`` is a ``SqliteJournal``; ``--journal redis://...`` a ``RedisJournal``,
looked up on the package when it is asked for (a version without it says so, exit 2).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
from collections.abc import Callable
from typing import Any

import attrs

import aiob24flow

from .._errors import JobBusy, JobMismatch, JournalError
from .._journal import MAX_JOB_ID, JobLog, JobRecord, JobSpec, JobSummary, Journal, check_job_id
from .._journal_sqlite import SqliteJournal
from .._redact import redact
from .._report import BulkReport
from ._credentials import with_redis
from ._errors import EXIT_BUSY, EXIT_JOURNAL, CommandError, UsageError, error_text
from ._standing import standing

__all__ = [
    "MAX_JOB_ID",
    "AnnouncedJournal",
    "add_journal_options",
    "busy",
    "check_job_options",
    "command_of",
    "existing_journal",
    "job_arg",
    "job_id_for",
    "journal_arg",
    "journal_cause",
    "journal_failure",
    "open_journal",
    "taken_line",
    "unusable",
]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

#: The command each journaled operation is run by.
_COMMANDS = {
    "activate_many": "activate",
    "pin_many": "pin",
    "set_active": "set-active",
    "set_pinned": "set-pinned",
}


def journal_arg(text: str) -> str:
    """``--journal``: a file path or a ``redis://`` URL, not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty journal location")
    if "://" in text and not text.startswith(_REDIS_SCHEMES):
        raise argparse.ArgumentTypeError(
            f"{redact(text)!r} is neither a file path nor a redis:// URL"
        )
    return text


def job_arg(text: str) -> str:
    """``--job-id``: the library's rule (``check_job_id``)."""
    if len(text) > MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"a job id has at most {MAX_JOB_ID} characters")
    try:
        return check_job_id(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a job id (printable characters, no surrounding spaces)"
        ) from None


def add_journal_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("journal (jobs that survive the process)")
    group.add_argument(
        "--journal",
        type=journal_arg,
        metavar="PATH|URL",
        help="write the job ahead to this SQLite file (or redis://HOST/ URL), so that "
        "running the same command again after an interruption or a crash resumes it, "
        "never toggling a flow twice; see `aiob24flow jobs`",
    )
    group.add_argument(
        "--job-id",
        type=job_arg,
        metavar="ID",
        help="the job's name in the journal (default: the command and a digest of what it "
        "sends: the operation, --on/--off, --verify and the ids in order)",
    )


def job_id_for(command: str, spec: JobSpec, portal: str) -> str:
    """``activate-1f2e3d4c5b6a7988``: the command and 64 bits of a digest of the job (the
    operation, the desired state, ``verify``, the ids in order) and the portal (scheme,
    host and port): the same command against another portal is another job. Not the
    credentials or the pace: a rerun with another pace or webhook resumes the same job."""
    digest = hashlib.sha256(f"{spec.digest}|{portal}".encode()).hexdigest()
    return f"{command}-{digest[:16]}"


def command_of(operation: str, desired: bool | None, verify: bool) -> str:
    """The command line that runs a journaled operation: ``set-active --off``."""
    words = [_COMMANDS.get(operation, operation)]
    if desired is not None:
        words.append("--on" if desired else "--off")
    if verify:
        words.append("--verify")
    return " ".join(words)


def check_job_options(args: argparse.Namespace, dry_run: bool) -> bool:
    """Whether the command is journaled; ``--job-id`` alone and ``--dry-run`` with a
    journal are usage errors."""
    location = getattr(args, "journal", None)
    if location is None:
        if getattr(args, "job_id", None) is not None:
            raise UsageError("--job-id needs --journal PATH (where the job is written)")
        return False
    if dry_run:
        raise UsageError("--dry-run changes nothing, so it takes no --journal")
    return True


def open_journal(location: str) -> Journal:
    """The journal ``location`` names, built but not yet touched (no I/O)."""
    if location.startswith(_REDIS_SCHEMES):
        cls: Any = getattr(aiob24flow, "RedisJournal", None)
        if cls is None:
            raise UsageError(
                "--journal redis://... needs the Redis journal (aiob24flow.RedisJournal), "
                "which this version of aiob24flow lacks: use --journal PATH"
            )
        journal = with_redis("--journal", lambda: cls(location))
        if not isinstance(journal, Journal):  # pragma: no cover - the library's own class
            raise UsageError("--journal: aiob24flow.RedisJournal is not a Journal")
        return journal
    try:
        import fcntl  # noqa: F401 - SqliteJournal holds each job with a flock
    except ImportError:
        raise UsageError(
            "--journal PATH holds each job with POSIX file locks, which this system lacks: "
            "use --journal redis://HOST/ (pip install 'aiob24flow[redis]')"
        ) from None
    return SqliteJournal(location)


def existing_journal(location: str) -> Journal:
    """The journal of ``aiob24flow jobs``: one that is not there is an error, not a new
    empty file."""
    if not location.startswith(_REDIS_SCHEMES) and not os.path.exists(location):
        raise CommandError(f"no journal at {location}", EXIT_JOURNAL)
    return open_journal(location)


def journal_failure(error: JournalError, job_id: str, location: str, *, sent: bool) -> CommandError:
    """The one line (and exit code) for a job the journal would not run: another spec
    under its id (2), another runner holding it (75), or a journal that cannot be used
    (74)."""
    if isinstance(error, JobMismatch):
        return UsageError(
            f"job {job_id} was started with another command or ids; use another --job-id "
            f"or `{forget_command(job_id, location)}`"
        )
    if isinstance(error, JobBusy):
        return busy(job_id)
    tail = (
        "sending stopped; once the journal works, run the same command again to resume the job"
        if sent
        else "nothing was sent"
    )
    return unusable(error, location, tail)


def unusable(error: JournalError, location: str, tail: str = "") -> CommandError:
    """A journal that cannot be opened, read or written: one line naming it (74)."""
    text = error_text(error)
    if redact(location) not in text:
        text = f"journal {location}: {text}"
    return CommandError(redact(f"{text}; {tail}" if tail else text), EXIT_JOURNAL)


def busy(job_id: str) -> CommandError:
    """Another runner holds the job (75): the same command works once it has ended."""
    return CommandError(
        f"job {job_id} is held by another runner (a process running it, or a Redis lease "
        "not yet expired); nothing was done: try again once it has ended",
        EXIT_BUSY,
    )


def journal_cause(report: BulkReport[Any]) -> JournalError | None:
    """The journal failure that stopped a job part-way, if one did."""
    for error in report.failed.values():
        for candidate in (error, error.__cause__):
            if isinstance(candidate, JournalError):
                return candidate
    return None


def forget_command(job_id: str, location: str) -> str:
    """The command that deletes ``job_id`` from the journal at ``location``, to paste (a
    password in a Redis URL masked)."""
    return f"aiob24flow jobs forget {shlex.quote(job_id)} --journal {shlex.quote(redact(location))}"


def taken_line(job_id: str, record: JobRecord, location: str) -> str:
    """What the command says once it holds the job (before any request)."""
    again = f"job {job_id}: if this run is interrupted, run the same command again to resume it"
    if record.finished:
        return (
            f"job {job_id} was finished by an earlier run: its report follows, nothing is "
            f"sent (to run it anew: {forget_command(job_id, location)})"
        )
    if record.intents or record.settles or record.snapshots:
        now = standing(record)
        return (
            f"{again} (resuming: {len(now.settled)} settled by earlier runs, "
            f"{len(now.in_doubt)} in doubt, {now.unsent} to send)"
        )
    return again


@attrs.define
class AnnouncedJournal:
    """A ``Journal`` that says which job it took, once it holds it: before any request,
    and never for a job it could not take (a mismatch or a busy job is one line)."""

    journal: Journal
    tell: Callable[[str], None]
    location: str  # as given to --journal

    async def open_job(self, job_id: str, spec: JobSpec) -> JobLog:
        log = await self.journal.open_job(job_id, spec)
        self.tell(taken_line(job_id, log.record, self.location))
        return log

    async def jobs(self) -> list[JobSummary]:
        return await self.journal.jobs()

    async def read_job(self, job_id: str) -> JobRecord | None:
        return await self.journal.read_job(job_id)

    async def forget(self, job_id: str) -> bool:
        return await self.journal.forget(job_id)

    async def aclose(self) -> None:
        await self.journal.aclose()
