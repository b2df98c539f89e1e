"""The run loop of a bulk command: ids in, one client, the job under Ctrl-C, the report
out, and the exit code."""

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
from .._job import Progress
from .._report import BulkReport
from ._connect import make_client
from ._credentials import TokenFile
from ._errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK
from ._ids import read_ids
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
    """What a bulk call gets from the run loop: progress reports and the stop event."""

    on_progress: Callable[[Progress], None] | None
    stop: asyncio.Event


class BulkCommand:
    """A command that runs one bulk job over flow ids.

    A subclass names itself, adds its own arguments, sends the job (``send``) and says
    what its text report adds; the run loop here does the rest.
    """

    name = ""
    help = ""
    description: str | None = None  # the longer text of ``COMMAND --help``

    def register(self, sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
        parser = sub.add_parser(
            self.name, parents=parents, help=self.help, description=self.description
        )
        parser.set_defaults(func=self)
        self.add_arguments(parser)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own arguments (none by default)."""

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
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
    flow_ids = read_ids(args.ids, args.ids_file)
    if flow_ids.repeats:
        tell(f"{plural(flow_ids.repeats, 'repeated flow id')} dropped (each flow is sent once)")
    ids = flow_ids.ids
    store = TokenFile(args.oauth) if args.oauth else None
    if store is not None and not args.oauth_redis:
        store.check_writable()
    client = make_client(args, store, tell)
    show_bar = not args.quiet and not args.json and sys.stderr.isatty()
    started = time.monotonic()
    with CtrlC(asyncio.current_task()) as ctrl_c:
        try:
            async with client:
                with ProgressBar(show_bar, len(ids), command.name) as on_progress:
                    hooks = JobHooks(on_progress, ctrl_c.stop)
                    report = await command.send(client, args, ids, hooks)
                job = _Job(command, args, ids, report, client, time.monotonic() - started)
                try:
                    _print_report(job, out, ctrl_c.interrupted)
                except BrokenPipeError:
                    silence_stdout()
        except asyncio.CancelledError:  # the second Ctrl-C
            raise KeyboardInterrupt from None
    for line in command.notes(args, report):
        tell(line)
    if store is not None and store.save_error is not None:
        print(store.save_failure(spent=client.stats().refreshes > 0), file=sys.stderr)
        return EXIT_INCOMPLETE
    if ctrl_c.interrupted:
        return EXIT_INTERRUPTED
    cause = systemic_cause(report)
    if cause is not None:
        print(f"aiob24flow: {systemic_line(cause)}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


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


def _print_report(job: _Job, out: TextIO, interrupted: bool) -> None:
    command, args, report = job.command, job.args, job.report
    dry_run = command.dry_run(args)
    if args.json:
        document = report_json(
            report, job.client, command=command.name, dry_run=dry_run, interrupted=interrupted
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
