"""``activate`` and ``pin``: toggle each flow once."""

from __future__ import annotations

import argparse
from typing import Any

from ..._bulk import BulkReport
from ..._client import FlowClient
from .._run import BulkCommand, JobHooks, Subparsers

__all__ = ["register"]


class Activate(BulkCommand):
    name = "activate"
    help = "toggle each flow's active state"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--verify",
            action="store_true",
            help="read states before and after lost answers so nothing stays unknown",
        )

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.activate_many(
            ids, verify=args.verify, on_progress=hooks.on_progress, stop=hooks.stop
        )


class Pin(BulkCommand):
    name = "pin"
    help = "toggle each flow's pin for you"

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.pin_many(ids, on_progress=hooks.on_progress, stop=hooks.stop)

    def details(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        if len(report.succeeded) > 20:
            return []
        return [
            f"  flow {flow_id}: pinned={pinned}" for flow_id, pinned in report.succeeded.items()
        ]


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    Activate().register(sub, parents)
    Pin().register(sub, parents)
