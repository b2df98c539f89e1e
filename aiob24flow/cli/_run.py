"""The run loop of a bulk command: ids in, one client (and the journal of a journaled
command, closed at the end whatever happens), the job under Ctrl-C, the report out, and
the exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TextIO

import attrs

from .._client import FlowClient
from .._errors import JournalError
from .._job import Progress
from .._journal import JobSpec, Journal
from .._report import BulkReport
from ._connect import make_client
from ._credentials import TokenFile
from ._errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK
from ._ids import read_ids
from ._journal import (
    AnnouncedJournal,
    add_journal_options,
    check_job_options,
    job_id_for,
    journal_cause,
    journal_failure,
    open_journal,
)
from ._logs import configure_logging
from ._progress import ProgressBar
from ._report import (
    note,
    plural,
    report_json,
    silence_stdout,
    systemic_cause,
    systemic_line,
    text_report,
    write_json,
)
from ._signals import CtrlC

__all__ = ["BulkCommand", "JobHooks", "Subparsers", "run_loop"]


class Subparsers(Protocol):
    """What a command's ``register`` adds its parser to (``add_subparsers()``)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


@attrs.frozen
class JobHooks:
    """What a bulk call gets from the run loop: progress reports, the stop event, and the
    journal and job id of a journaled command (``--journal``; None otherwise)."""

    on_progress: Callable[[Progress], None] | None
    stop: asyncio.Event
    journal: Journal | None = None
    job_id: str | None = None


class BulkCommand:
    """A command that runs one bulk job over flow ids.

    A subclass names itself, adds its own arguments, sends the job (``send``) and says
    what its text report adds; the run loop here does the rest.
    """

    name = ""
    help = ""
    description: str | None = None  # the longer text of ``COMMAND --help``
    journaled = False  # takes --journal / --job-id (and says what its job is: ``job_spec``)

    def register(self, sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
        parser = sub.add_parser(
            self.name, parents=parents, help=self.help, description=self.description
        )
        parser.set_defaults(func=self)
        self.add_arguments(parser)
        if self.journaled:
            add_journal_options(parser)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own arguments (none by default)."""

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        raise NotImplementedError

    def job_spec(self, args: argparse.Namespace, ids: list[int]) -> JobSpec:
        """What the job sends, as the journal knows it (its default id is a digest)."""
        raise NotImplementedError

    def title(self, args: argparse.Namespace) -> str:
        """The first word of the text report."""
        return self.name

    def dry_run(self, args: argparse.Namespace) -> bool:
        """True when the job only reads (the report says what *would* change)."""
        return False

    def details(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        """Lines the text report shows after the summary (``--quiet`` hides them)."""
        return []

    def answer(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        """What was asked for, printed even with ``--quiet`` (after the details)."""
        return []

    def notes(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        """Remarks for stderr (``--quiet`` hides them)."""
        return []

    def __call__(self, args: argparse.Namespace) -> int:
        configure_logging(args.verbose, args.log_format)
        return run_loop(run_bulk(self, args, sys.stdout))


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run``, on uvloop when it is installed (the ``speed`` extra): a third less
    CPU per request in benchmarks/README.md. ``AIOB24FLOW_NO_UVLOOP=1`` turns it off."""
    if not os.environ.get("AIOB24FLOW_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            result: int = uvloop.run(coro)
            return result
    return asyncio.run(coro)


async def run_bulk(command: BulkCommand, args: argparse.Namespace, out: TextIO) -> int:
    tell = _silent if args.quiet else note
    journaled = check_job_options(args, command.dry_run(args))
    flow_ids = read_ids(args.ids, args.ids_file)
    if flow_ids.repeats:
        tell(f"{plural(flow_ids.repeats, 'repeated flow id')} dropped (each flow is sent once)")
    ids = flow_ids.ids
    store = TokenFile(args.oauth) if args.oauth else None
    if store is not None and not args.oauth_redis:
        store.check_writable()
    client = make_client(args, store, tell)  # no I/O yet
    job_id = _job_id(command, args, ids, client.portal) if journaled else None
    journal = open_journal(args.journal) if journaled else None  # no I/O yet
    try:
        announced = AnnouncedJournal(journal, tell, args.journal) if journal is not None else None
        job = await _run_job(command, args, ids, client, announced, job_id, out)
    except JournalError as exc:  # raised before any request, or by the final write
        sent = client.stats().requests > 0
        raise journal_failure(exc, job_id or "", args.journal, sent=sent) from None
    finally:
        if journal is not None:
            await journal.aclose()
    for line in command.notes(args, job.report):
        tell(line)
    if job.interrupted and job_id is not None:
        tell(
            f"job {job_id} was interrupted: run the same command again to resume it (what "
            "was not sent is sent then; flows in doubt follow the journal's rule)"
        )
    if store is not None and store.save_error is not None:
        print(store.save_failure(spent=client.stats().refreshes > 0), file=sys.stderr)
        return EXIT_INCOMPLETE
    return _exit_code(job)


def _job_id(command: BulkCommand, args: argparse.Namespace, ids: list[int], portal: str) -> str:
    """``--job-id``, else the command and a digest of what it sends and where."""
    given: str | None = args.job_id
    return given or job_id_for(command.name, command.job_spec(args, ids), portal)


async def _run_job(
    command: BulkCommand,
    args: argparse.Namespace,
    ids: list[int],
    client: FlowClient,
    journal: Journal | None,
    job_id: str | None,
    out: TextIO,
) -> _Job:
    """Send the job under Ctrl-C and print its report."""
    show_bar = not args.quiet and not args.json and sys.stderr.isatty()
    started = time.monotonic()
    with CtrlC(asyncio.current_task()) as ctrl_c:
        try:
            async with client:
                with ProgressBar(show_bar, len(ids), command.name) as on_progress:
                    hooks = JobHooks(on_progress, ctrl_c.stop, journal, job_id)
                    report = await command.send(client, args, ids, hooks)
                elapsed = time.monotonic() - started
                job = _Job(command, args, ids, report, client, elapsed, ctrl_c.interrupted, job_id)
                try:
                    _print_report(job, out)
                except BrokenPipeError:
                    silence_stdout()
        except asyncio.CancelledError:  # the third Ctrl-C
            raise KeyboardInterrupt from None
    return job


def _exit_code(job: _Job) -> int:
    if job.interrupted:
        return EXIT_INTERRUPTED
    failure = journal_cause(job.report)
    if failure is not None:  # the journal failed part-way: nothing more was sent
        error = journal_failure(failure, job.job_id or "", str(job.args.journal), sent=True)
        print(f"aiob24flow: error: {error}", file=sys.stderr)
        return error.code
    cause = systemic_cause(job.report)
    if cause is not None:
        print(f"aiob24flow: {systemic_line(cause)}", file=sys.stderr)
    return EXIT_OK if job.report.ok else EXIT_INCOMPLETE


def _silent(text: str) -> None:
    """``--quiet``: progress and notes are not shown."""


@attrs.frozen
class _Job:
    """A finished job, for its report."""

    command: BulkCommand
    args: argparse.Namespace
    ids: list[int]
    report: BulkReport[Any]
    client: FlowClient
    elapsed: float
    interrupted: bool
    job_id: str | None  # the journal's, for a journaled job


def _print_report(job: _Job, out: TextIO) -> None:
    command, args, report, interrupted = job.command, job.args, job.report, job.interrupted
    dry_run = command.dry_run(args)
    if args.json:
        document = report_json(
            report,
            job.client,
            command=command.name,
            dry_run=dry_run,
            interrupted=interrupted,
            job_id=job.job_id,
        )
        write_json(document, out)
        out.flush()
        return
    lines = []
    if not (args.quiet and report.ok):
        lines = text_report(
            command.title(args),
            len(job.ids),
            report,
            changed_label="would change" if dry_run else "changed",
            elapsed=job.elapsed,
            requests=job.client.stats().requests,
            details=command.details(args, report),
        )
    lines += command.answer(args, report)
    if lines:
        print("\n".join(lines), file=out)
    out.flush()
