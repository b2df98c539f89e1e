"""The captured command-line sessions in README.md and docs/, produced by the program.

A session is a fenced ``console`` block between ``<!-- session -->`` and
``<!-- /session -->``. Its ``$ `` lines are the commands; everything else is output, which
this script writes by running the commands (in bash, in a fresh temporary directory, with
the installed ``aiob24flow`` console script first on PATH):

- ``aiob24flow emulator ARGS &`` starts the emulator in the background on a free port
  (``--port 8080`` in the text; the real port is swapped in and out), and prints what it
  printed; it is stopped when the session ends;
- ``export NAME=VALUE`` sets the variable for the commands after it;
- any other line runs as it is (pipes, ``;``, redirections), stdout and stderr together.

    python docs/_tools/sessions.py          # rewrite the sessions in place
    python docs/_tools/sessions.py --check  # exit 1 if a session differs (timings aside)

``tests/test_docs_sessions.py`` runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ("README.md", "docs/cli.md")
START, END = "<!-- session -->", "<!-- /session -->"
SESSION = re.compile(
    rf"(?P<head>{re.escape(START)}\n```console\n)(?P<body>.*?)(?P<tail>```\n{re.escape(END)})",
    re.S,
)
SHOWN_PORT = "8080"
EMULATOR = re.compile(r"^aiob24flow emulator (?P<args>.*) &$")
EXPORT = re.compile(r"^export (?P<name>[A-Z_][A-Z0-9_]*)=(?P<value>\S+)$")
# What varies from run to run: durations ("0.0 s", "elapsed 0.1 s").
TIMING = re.compile(r"\b\d+\.\d+ s\b")
COMMAND_TIMEOUT = 60.0


@dataclass
class Session:
    path: Path
    start: int
    end: int
    body: str

    @property
    def commands(self) -> list[str]:
        return [line[2:] for line in self.body.splitlines() if line.startswith("$ ")]


def sessions(path: Path) -> list[Session]:
    text = path.read_text(encoding="utf-8")
    return [
        Session(path, m.start("body"), m.end("body"), m["body"]) for m in SESSION.finditer(text)
    ]


def normalise(text: str) -> str:
    return TIMING.sub("N.N s", text)


class Shell:
    """Runs one session's commands; holds its environment and its emulator."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        bindir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if k != "B24_WEBHOOK_URL"}
        self.env.update(PATH=bindir + os.pathsep + self.env.get("PATH", ""),
                        PYTHONUNBUFFERED="1", COLUMNS="100", NO_COLOR="1")  # fmt: skip
        self.port = SHOWN_PORT
        self.emulator: subprocess.Popen[bytes] | None = None

    def to_real(self, text: str) -> str:
        return text.replace(f"127.0.0.1:{SHOWN_PORT}", f"127.0.0.1:{self.port}")

    def to_shown(self, text: str) -> str:
        return text.replace(f"127.0.0.1:{self.port}", f"127.0.0.1:{SHOWN_PORT}")

    def start_emulator(self, args: str) -> str:
        words = shlex.split(args)
        if "--port" in words:
            at = words.index("--port")
            del words[at : at + 2]
        ready = os.path.join(self.workdir, ".emulator-port")
        log = os.path.join(self.workdir, ".emulator-out")
        with open(log, "wb") as out:
            self.emulator = subprocess.Popen(
                ["aiob24flow", "emulator", *words, "--port", "0", "--ready-file", ready],
                cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if time.monotonic() > deadline or self.emulator.poll() is not None:
                raise RuntimeError(f"the emulator did not start: {Path(log).read_text()}")
            time.sleep(0.02)
        self.port = Path(ready).read_text().strip()
        return Path(log).read_text()

    def run(self, command: str) -> str:
        emulator = EMULATOR.match(command)
        if emulator:
            return self.to_shown(self.start_emulator(emulator["args"]))
        export = EXPORT.match(command)
        if export:
            self.env[export["name"]] = self.to_real(export["value"])
            return ""
        done = subprocess.run(
            ["bash", "-c", self.to_real(command)],
            cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        return self.to_shown(done.stdout.decode())

    def close(self) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()
            self.emulator.wait(timeout=10)


@contextmanager
def shell() -> Iterator[Shell]:
    with tempfile.TemporaryDirectory(prefix="aiob24flow-session-") as workdir:
        sh = Shell(workdir)
        try:
            yield sh
        finally:
            sh.close()


def produce(session: Session) -> str:
    """The session's text as the program writes it now."""
    out: list[str] = []
    with shell() as sh:
        for command in session.commands:
            out.append(f"$ {command}\n")
            out.append(sh.run(command))
    return "".join(out)


def check(paths: list[Path]) -> list[str]:
    """Unified diffs (normalised) of every session that differs from what the program
    prints now; empty when all agree."""
    diffs = []
    for path in paths:
        for session in sessions(path):
            fresh = produce(session)
            if normalise(fresh) != normalise(session.body):
                diffs.append("".join(difflib.unified_diff(
                    session.body.splitlines(True), fresh.splitlines(True),
                    f"{path.name} (as written)", f"{path.name} (as the program prints it)",
                )))  # fmt: skip
    return diffs


def rewrite(paths: list[Path]) -> None:
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for session in reversed(sessions(path)):
            text = text[: session.start] + produce(session) + text[session.end :]
        path.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not rewrite")
    args = parser.parse_args()
    paths = [ROOT / name for name in FILES]
    if args.check:
        diffs = check(paths)
        sys.stdout.writelines(diffs)
        return 1 if diffs else 0
    rewrite(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
