"""``activate`` and ``pin``: toggle each flow once.

Both portal methods flip a state (an active flow is switched off); the help and the
report say so, and point to ``set-active`` / ``set-pinned`` for setting a state.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..._client import FlowClient
from ..._journal import JobSpec
from ..._report import BulkReport
from .._run import BulkCommand, JobHooks, Subparsers

__all__ = ["register"]


class _Toggle(BulkCommand):
    on, off = "", ""  # the two states: "active", "inactive"
    setter = ""  # the command that sets the state instead
    journaled = True

    def __init__(self) -> None:
        self.help = (
            f"toggle each flow: {self.on} becomes {self.off}, {self.off} becomes {self.on} "
            f"(to set a state: {self.setter} --on/--off)"
        )
        self.description = (
            f"Toggle each flow: a flow that is {self.on} becomes {self.off}, and one that is "
            f"{self.off} becomes {self.on}. To make flows {self.on} or {self.off} whatever "
            f"their state now, use: aiob24flow {self.setter} --on/--off ID..."
        )

    def title(self, args: argparse.Namespace) -> str:
        return f"{self.name} (toggle)"

    def details(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        if not report.succeeded and not report.unknown:  # nothing was (or may be) toggled
            return []
        return [
            f"  toggled: {self.on} -> {self.off}, {self.off} -> {self.on}; "
            f"to set a state instead: aiob24flow {self.setter} --on/--off"
        ]


class Activate(_Toggle):
    name = "activate"
    on, off = "active", "inactive"
    setter = "set-active"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--verify",
            action="store_true",
            help="read states before and after lost answers so nothing stays unknown",
        )

    def job_spec(self, args: argparse.Namespace, ids: list[int]) -> JobSpec:
        return JobSpec("activate_many", ids, None, bool(args.verify))

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.activate_many(
            ids,
            verify=args.verify,
            on_progress=hooks.on_progress,
            stop=hooks.stop,
            journal=hooks.journal,
            job_id=hooks.job_id,
        )


class Pin(_Toggle):
    name = "pin"
    on, off = "pinned", "unpinned"
    setter = "set-pinned"

    def job_spec(self, args: argparse.Namespace, ids: list[int]) -> JobSpec:
        return JobSpec("pin_many", ids)

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.pin_many(
            ids,
            on_progress=hooks.on_progress,
            stop=hooks.stop,
            journal=hooks.journal,
            job_id=hooks.job_id,
        )

    def details(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        lines = super().details(args, report)
        if len(report.succeeded) <= 20:
            lines += [
                f"  flow {flow_id}: pinned={pinned}" for flow_id, pinned in report.succeeded.items()
            ]
        return lines


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    Activate().register(sub, parents)
    Pin().register(sub, parents)
