"""``emulator``: serve an emulated portal (the emulator's own command line)."""

from __future__ import annotations

import argparse

from .._run import Subparsers

__all__ = ["register"]


def _serve(args: argparse.Namespace) -> int:
    from ...emulator.__main__ import main as emulator_main

    return emulator_main(args.rest)


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    # Every argument after the name goes to the emulator's own parser (its --help too).
    parser = sub.add_parser(
        "emulator", help="serve an emulated portal (see --help)", add_help=False
    )
    parser.set_defaults(func=_serve, passthrough=True)
