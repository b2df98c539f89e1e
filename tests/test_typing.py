"""The public types, as a user program sees them under ``mypy --strict``.

mypy runs from a directory outside the repository, so it finds the package the way a
user's checker does: through the installed (or editable-installed) distribution.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "typing" / "user_program.py"


def test_a_user_program_type_checks_under_strict_mypy(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    target = tmp_path / "user_program.py"
    shutil.copy(PROGRAM, target)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
