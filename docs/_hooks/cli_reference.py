"""mkdocs hook: the command-line reference, generated from the parser at build time.

A page that holds the line ``<!-- cli-reference -->`` gets it replaced with one section
per command, built from ``aiob24flow.cli.build_parser()`` (and, for ``aiob24flow
emulator``, which hands its arguments to the emulator's own parser, from
``aiob24flow.emulator.__main__.build_parser()``): usage, description, and every argument
with its help, choices and default. The reference cannot drift from the program: it *is*
the program's parser. ``tests/test_docs.py`` checks that every option appears.

Run it alone to print the Markdown: ``python docs/_hooks/cli_reference.py``.
"""

from __future__ import annotations

import argparse
from typing import Any

MARKER = "<!-- cli-reference -->"
WIDTH = 88


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        params: dict[str, Any] = dict(vars(action), prog=parser.prog)
        text = text % params
    return " ".join(text.split())


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    if action.choices is not None and action.metavar is None:
        metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            a for a in group._group_actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]  # fmt: skip
        if not actions:
            continue
        title = group.title or "arguments"
        lines += ["", f"**{title}**", "", "| argument | meaning |", "|---|---|"]
        for action in actions:
            meaning = _help(parser, action)
            default = action.default
            show_default = (
                action.option_strings
                and action.nargs != 0
                and default not in (None, argparse.SUPPRESS, False, "")
                and default != []
                and "default" not in meaning
            )
            if show_default:
                meaning += f" (default: `{default}`)"
            lines.append(f"| `{_escape(_invocation(action))}` | {_escape(meaning)} |")
    return lines


def _section(parser: argparse.ArgumentParser, title: str, note: str = "") -> list[str]:
    lines = [f"### `{title}`", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()), ""]
    if note:
        lines += [note, ""]
    lines += ["```text", _usage(parser), "```"]
    lines += _arguments(parser)
    return [*lines, ""]


def reference() -> str:
    """The Markdown reference of every command."""
    from aiob24flow.cli import build_parser
    from aiob24flow.emulator.__main__ import build_parser as emulator_parser

    top = build_parser()
    lines = _section(top, "aiob24flow")
    commands = _subcommands(top)
    for name, sub in commands.items():
        if name == "emulator":
            sub = emulator_parser()
            note = "(`python -m aiob24flow.emulator` takes the same arguments.)"
            lines += _section(sub, "aiob24flow emulator", note)
        else:
            lines += _section(sub, sub.prog)
            for nested in _subcommands(sub).values():  # e.g. ``aiob24flow jobs show``
                lines += _section(nested, nested.prog)
    return "\n".join(lines)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())


if __name__ == "__main__":
    print(reference())
