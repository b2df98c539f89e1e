"""The captured command-line sessions in README.md and docs/cli.md are what the program
prints: each is run again (the console script against a fresh emulator) and compared, with
durations normalised. To update them after a change: ``python docs/_tools/sessions.py``."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import CLI_SCRIPT

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        not CLI_SCRIPT.exists(), reason="the aiob24flow console script is not installed"
    ),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the sessions are bash sessions"),
]


def load_tool() -> ModuleType:
    path = ROOT / "docs" / "_tools" / "sessions.py"
    spec = importlib.util.spec_from_file_location("docs_sessions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_session_is_found() -> None:
    tool = load_tool()
    found = {name: tool.sessions(ROOT / name) for name in tool.FILES}
    assert all(found.values()), found  # README.md and docs/cli.md each show one
    for sessions in found.values():
        for session in sessions:
            assert session.commands[0].startswith("aiob24flow emulator ")


def test_captured_sessions_are_what_the_program_prints() -> None:
    tool = load_tool()
    paths = [ROOT / name for name in tool.FILES]
    with ThreadPoolExecutor(len(paths)) as pool:  # each session has its own emulator
        diffs = [d for found in pool.map(lambda p: tool.check([p]), paths) for d in found]
    assert not diffs, (
        "a captured session differs; run python docs/_tools/sessions.py\n" + "\n".join(diffs)
    )


def test_timings_are_the_only_thing_normalised() -> None:
    tool = load_tool()
    assert tool.normalise("  elapsed          0.1 s, 12 requests") == (
        "  elapsed          N.N s, 12 requests"
    )
    assert tool.normalise("changed 193") == "changed 193"
