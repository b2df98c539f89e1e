"""``jobs``: the jobs of a journal (``--journal``): list them, show one (for an unfinished
job, what running its command again would see), forget one."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

from ..._durable import decode_report
from ..._errors import JobBusy, JournalError
from ..._journal import JobRecord, JobSummary, Journal
from ..._redact import redact
from .._errors import EXIT_INCOMPLETE, EXIT_OK, UsageError
from .._journal import busy, command_of, existing_journal, job_arg, journal_arg, unusable
from .._report import JSON_SCHEMA, id_ranges, plural, report_json, summary_lines, write_json
from .._run import Subparsers, run_loop
from .._standing import standing

__all__ = ["register"]

#: What a resume does with a flow whose answer was lost, by operation.
_DOUBT = {
    "activate_many": "a resume reports them unknown and never sends them again",
    "pin_many": "a resume reports them unknown and never sends them again",
    "set_active": "a resume reads them back and toggles only what did not take; a read "
    "that shows no change is trusted once --portal-limit has passed since the send",
    "set_pinned": "a resume pins them again once their lost pin must have finished "
    "(--portal-limit) and looks at the answer",
}
_VERIFY_DOUBT = _DOUBT["set_active"]


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "jobs",
        help="list the jobs of a journal (--journal); jobs show ID, jobs forget ID",
        description="List the jobs written to a journal by --journal: their id, command, "
        "state, counts and last update. `jobs show ID` prints a job's report (for an "
        "unfinished one: the flows settled, in doubt and not yet sent); `jobs forget ID` "
        "deletes it (exit 1: no such job; 75: a runner holds it).",
    )
    _journal_options(parser, None)
    parser.set_defaults(func=_command(_list))
    actions = parser.add_subparsers(
        dest="action", metavar="ACTION", help="show ID or forget ID (default: list the jobs)"
    )
    show = actions.add_parser(
        "show",
        help="a job's report; for an unfinished job: flows settled, in doubt, not yet sent",
    )
    show.add_argument("job_id", type=job_arg, metavar="ID", help="the job (see `aiob24flow jobs`)")
    _journal_options(show, argparse.SUPPRESS)
    show.set_defaults(func=_command(_show))
    forget = actions.add_parser(
        "forget",
        help="delete a job from the journal (exit 1: no such job; 2: unfinished, without "
        "--force; 75: it is running)",
    )
    forget.add_argument("job_id", type=job_arg, metavar="ID", help="the job to delete")
    forget.add_argument(
        "--force",
        action="store_true",
        help="forget an unfinished job too (what it knows is lost: a new run sends its flows "
        "in doubt again)",
    )
    _journal_options(forget, argparse.SUPPRESS)
    forget.set_defaults(func=_command(_forget))


def _journal_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Given before or after the action (``jobs --journal J show ID``, ``jobs show ID
    # --journal J``): the action's copies default to SUPPRESS, so they keep the other.
    parser.add_argument(
        "--journal",
        type=journal_arg,
        default=default,
        metavar="PATH|URL",
        help="the journal: a SQLite file or a redis:// URL, as given to --journal",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if default is None else default,
        help="print JSON instead of text",
    )


def _command(
    run: Callable[[argparse.Namespace, Journal], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        return run_loop(_with_journal(args, run))

    return command


async def _with_journal(
    args: argparse.Namespace, run: Callable[[argparse.Namespace, Journal], Coroutine[Any, Any, int]]
) -> int:
    location = getattr(args, "journal", None)
    if not location:
        raise UsageError("jobs needs --journal PATH (or redis://URL): the journal to read")
    journal = existing_journal(location)
    try:
        return await run(args, journal)
    except JobBusy:
        raise busy(getattr(args, "job_id", "")) from None
    except JournalError as exc:
        raise unusable(exc, location) from None
    finally:
        await journal.aclose()


# -- jobs ---------------------------------------------------------------------------------


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _counts(counts: dict[str, int]) -> str:
    """``succeeded 207, not sent 193``: the counts that are not zero (not the totals)."""
    shown = [(name, n) for name, n in counts.items() if name not in ("total", "settled")]
    nonzero = [(name, n) for name, n in shown if n] or shown[:1]
    return ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in nonzero)


async def _progress(journal: Journal, jobs: list[JobSummary]) -> dict[str, dict[str, int]]:
    """Where each unfinished job stands (``Standing.counts``), by job id."""
    found = {}
    for job in jobs:
        if job.state != "finished":
            record = await journal.read_job(job.job_id)
            if record is not None:
                found[job.job_id] = standing(record).counts()
    return found


def _job_json(job: JobSummary, progress: dict[str, int] | None) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "command": command_of(job.operation, job.desired, job.verify),
        "operation": job.operation,
        "desired": job.desired,
        "verify": job.verify,
        "total": job.total,
        "state": job.state,
        "counts": job.counts,
        "progress": progress,
        "updated_at": _iso(job.updated_at),
    }


def _table(jobs: list[JobSummary], progress: dict[str, dict[str, int]]) -> list[str]:
    header = ("JOB", "COMMAND", "FLOWS", "STATE", "COUNTS", "UPDATED")
    rows = [header] + [
        (
            job.job_id,
            command_of(job.operation, job.desired, job.verify),
            str(job.total),
            job.state,
            _counts(progress.get(job.job_id, job.counts)),
            _when(job.updated_at),
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i == 2 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


async def _list(args: argparse.Namespace, journal: Journal) -> int:
    jobs = await journal.jobs()
    progress = await _progress(journal, jobs)
    if args.json:
        document = {
            "schema": JSON_SCHEMA,
            "journal": redact(args.journal),
            "jobs": [_job_json(job, progress.get(job.job_id)) for job in jobs],
        }
        write_json(document, sys.stdout)
    elif not jobs:
        print(f"no jobs in {redact(args.journal)}")
    else:
        print("\n".join(_table(jobs, progress)))
    return EXIT_OK


# -- jobs show ----------------------------------------------------------------------------


def _doubt_text(record: JobRecord) -> str:
    spec = record.spec
    return _VERIFY_DOUBT if spec.verify else _DOUBT.get(spec.operation, "")


def _show_text(args: argparse.Namespace, record: JobRecord, summary: JobSummary | None) -> None:
    spec = record.spec
    state = "finished" if record.finished else "unfinished"
    head = f"job {args.job_id}: {command_of(spec.operation, spec.desired, spec.verify)}, "
    head += f"{plural(len(spec.ids), 'flow')}, {state}"
    if summary is not None:
        head += f", updated {_when(summary.updated_at)}"
    print(head)
    if record.finished and record.report is not None:
        print("\n".join(summary_lines(decode_report(record.report, record.spec.ids))))
        return
    now = standing(record)
    print(f"  settled by earlier runs: {plural(len(now.settled), 'flow')}")
    print("\n".join("  " + line for line in summary_lines(now.settled)[1:]))
    doubt = f"  in doubt: {plural(len(now.in_doubt), 'flow')}"
    if now.in_doubt:
        doubt += f", ids {id_ranges(now.in_doubt)} ({_doubt_text(record)})"
    print(doubt)
    print(f"  not yet sent: {plural(now.unsent, 'flow')}")
    print(f"  to resume: run the same command again with --journal {redact(args.journal)}")


def _show_json(args: argparse.Namespace, record: JobRecord, summary: JobSummary | None) -> None:
    spec = record.spec
    document: dict[str, Any] = {
        "schema": JSON_SCHEMA,
        "job_id": args.job_id,
        "command": command_of(spec.operation, spec.desired, spec.verify),
        "state": "finished" if record.finished else "unfinished",
        "total": len(spec.ids),
        "updated_at": _iso(summary.updated_at) if summary is not None else None,
    }
    if record.finished and record.report is not None:
        report = report_json(decode_report(record.report, record.spec.ids))
    else:
        now = standing(record)
        report = report_json(now.settled)
        report["summary"] = now.counts()
        report["in_doubt"] = now.in_doubt
        del report["changed"]
    for key in ("schema", "job_id", "command", "dry_run", "interrupted"):
        report.pop(key, None)
    write_json({**document, **report}, sys.stdout)


async def _show(args: argparse.Namespace, journal: Journal) -> int:
    record = await journal.read_job(args.job_id)
    if record is None:
        print(f"aiob24flow: no job {args.job_id} in {redact(args.journal)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    summary = next((job for job in await journal.jobs() if job.job_id == args.job_id), None)
    (_show_json if args.json else _show_text)(args, record, summary)
    return EXIT_OK


# -- jobs forget --------------------------------------------------------------------------


async def _forget(args: argparse.Namespace, journal: Journal) -> int:
    record = await journal.read_job(args.job_id)
    if record is not None and not record.finished and not args.force:
        held = await journal.open_job(args.job_id, record.spec)  # JobBusy: a runner has it
        await held.release()
        now = standing(record)
        raise UsageError(
            f"job {args.job_id} is unfinished ({plural(len(now.settled), 'flow')} settled, "
            f"{len(now.in_doubt)} in doubt, {now.unsent} not yet sent): forgetting it loses "
            "what it knows, and a new run would send the flows in doubt again (a toggle "
            "flips them back). Resume it by running its command again, or add --force"
        )
    if not await journal.forget(args.job_id):
        print(f"aiob24flow: no job {args.job_id} in {redact(args.journal)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(f"forgot job {args.job_id}")
    return EXIT_OK
