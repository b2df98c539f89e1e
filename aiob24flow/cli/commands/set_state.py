"""``set-active`` and ``set-pinned``: make flows active (pinned) or not."""

from __future__ import annotations

import argparse
from typing import Any

from ..._client import FlowClient
from ..._journal import JobSpec
from ..._report import BulkReport
from .._report import id_ranges
from .._run import BulkCommand, JobHooks, Subparsers

__all__ = ["register"]


class _SetState(BulkCommand):
    noun = ""
    operation = ""  # the journal's name of the call
    journaled = True

    def __init__(self) -> None:
        self.help = f"make flows {self.noun} (--on) or not (--off), whatever their state now"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument(
            "--on", dest="state", action="store_const", const=True, help=f"make them {self.noun}"
        )
        group.add_argument(
            "--off",
            dest="state",
            action="store_const",
            const=False,
            help=f"make them not {self.noun}",
        )

    def job_spec(self, args: argparse.Namespace, ids: list[int]) -> JobSpec:
        return JobSpec(self.operation, ids, bool(args.state))


class SetActive(_SetState):
    name = "set-active"
    noun = "active"
    operation = "set_active"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="read states and print what would change; toggle nothing",
        )

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.set_active(
            ids,
            args.state,
            dry_run=args.dry_run,
            on_progress=hooks.on_progress,
            stop=hooks.stop,
            journal=hooks.journal,
            job_id=hooks.job_id,
        )

    def dry_run(self, args: argparse.Namespace) -> bool:
        return bool(args.dry_run)

    def answer(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        if not args.dry_run:
            return []
        verb = "activate" if args.state else "deactivate"
        listed = id_ranges(report.changed, limit=10**9) or "nothing"
        return [f"  would {verb}: {listed}"]


class SetPinned(_SetState):
    """No ``--dry-run``: pin state cannot be read."""

    name = "set-pinned"
    noun = "pinned"
    operation = "set_pinned"

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.set_pinned(
            ids,
            args.state,
            on_progress=hooks.on_progress,
            stop=hooks.stop,
            journal=hooks.journal,
            job_id=hooks.job_id,
        )


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    SetActive().register(sub, parents)
    SetPinned().register(sub, parents)
