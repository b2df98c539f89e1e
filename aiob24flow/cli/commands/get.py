"""``get``: read flows."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..._client import FlowClient
from ..._report import BulkReport
from .._run import BulkCommand, JobHooks, Subparsers

__all__ = ["TEXT_FIELDS", "field_names", "get_fields", "register"]

TEXT_FIELDS = ("active", "name")  # what ``get`` prints without --fields or --json


def field_names(text: str) -> list[str]:
    """``--fields active,name``: non-empty names (``get_many`` drops repeats)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty field name in {text!r}")
    return names


def get_fields(args: argparse.Namespace) -> Sequence[str] | None:
    """The fields ``get`` keeps: as asked; else what the text report prints; whole flows
    for --json."""
    if args.fields is not None:
        fields: list[str] = args.fields
        return fields
    return None if args.json else TEXT_FIELDS


class Get(BulkCommand):
    name = "get"
    help = "read flows (active state, name)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--fields",
            type=field_names,
            metavar="NAMES",
            help="comma-separated flow fields to keep, e.g. active,name (default: "
            "active,name; with --json, whole flows)",
        )

    async def send(
        self, client: FlowClient, args: argparse.Namespace, ids: list[int], hooks: JobHooks
    ) -> BulkReport[Any]:
        return await client.get_many(
            ids, fields=get_fields(args), on_progress=hooks.on_progress, stop=hooks.stop
        )

    def answer(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        lines = []
        for flow_id, flow in report.succeeded.items():
            shown = " ".join(f"{name}={value!r}" for name, value in flow.items())
            lines.append(f"  flow {flow_id}: {shown or '(none of the fields asked)'}")
        return lines

    def notes(self, args: argparse.Namespace, report: BulkReport[Any]) -> list[str]:
        if args.fields is None or not report.succeeded:
            return []
        seen = {name for flow in report.succeeded.values() for name in flow}
        missing = [name for name in dict.fromkeys(args.fields) if name not in seen]
        if not missing:
            return []
        names = ", ".join(repr(name) for name in missing)
        return [
            f"no flow returned has the field{'s' if len(missing) > 1 else ''} {names} "
            "(names are case-sensitive, as the portal spells them: active, name, ownerId ...)"
        ]


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    Get().register(sub, parents)
