"""``main``: parse the command line, run the command, turn what it raised into an exit
code (the one place that does)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._argtypes import OneLineParser
from .._errors import B24Error
from .._version import __version__
from ._connect import add_connection_options
from ._credentials import add_credential_options
from ._errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, CommandError, error_text
from ._ids import ids_options
from ._report import add_output_options, silence_stdout
from .commands import REGISTER

__all__ = ["build_parser", "main"]


def _common_options() -> argparse.ArgumentParser:
    """Credentials, network, pace and output: shared by every command that sends."""
    parser = OneLineParser(add_help=False)
    add_credential_options(parser)
    add_connection_options(parser)
    add_output_options(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="aiob24flow",
        description="Toggle Bitrix24 flows (tasks.flow.Flow.activate / pin) exactly once.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.set_defaults(passthrough=False)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND --help)"
    )
    parents = [_common_options(), ids_options()]
    for register in REGISTER:
        register(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if rest and not args.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        code: int = args.func(args)
        return code
    except CommandError as exc:  # a usage error (2), a journal that cannot be used ...
        print(f"aiob24flow: error: {exc}", file=sys.stderr)
        return exc.code
    except B24Error as exc:
        print(f"aiob24flow: {error_text(exc)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        print("aiob24flow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away before the job ended: say nothing more
        silence_stdout()
        return EXIT_OK
