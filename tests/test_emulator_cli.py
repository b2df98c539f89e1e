"""The emulator's command line as a user meets it: the console script and
``python -m aiob24flow.emulator`` in a real process (issue 24)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CLI_SCRIPT

LAUNCHERS = {
    "module": [sys.executable, "-m", "aiob24flow.emulator"],
    "console-script": [str(CLI_SCRIPT), "emulator"],
}


def run_emulator(
    launcher: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the emulator to its end (killed after ``timeout``: a refusal must not serve)."""
    if launcher == "console-script" and not CLI_SCRIPT.exists():
        pytest.skip("the aiob24flow console script is not installed")
    return subprocess.run(
        [*LAUNCHERS[launcher], *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_tls_without_trustme_is_one_line_naming_the_extra(launcher: str, tmp_path: Path) -> None:
    # A trustme that cannot be imported, first on the path: as if the extra were missing.
    (tmp_path / "trustme.py").write_text("raise ImportError(\"No module named 'trustme'\")\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    done = run_emulator(launcher, "--tls", "--port", "0", env={"PYTHONPATH": path})
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "pip install 'aiob24flow[tls]'" in done.stderr
    assert done.stderr.startswith("aiob24flow emulator: error: --tls")
