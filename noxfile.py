"""Test what users install: ``nox -s tests-latest tests-lowest`` (and ``nox -s tests``).

- ``tests-latest``: the newest release of every dependency (what ``pip install aiob24flow``
  gives a new user today), on the Python running nox.
- ``tests-lowest``: the lowest versions ``pyproject.toml`` declares for the runtime
  dependencies, pinned exactly, on the Python running nox.
- ``tests``: the suite on each Python the package supports that this machine has
  (``nox -s tests``; missing interpreters are skipped).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests-latest", "tests-lowest"]
nox.options.error_on_missing_interpreters = False

ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # keep in line with the classifiers


def _dependencies() -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - nox on 3.10
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as fh:
        deps: list[str] = tomllib.load(fh)["project"]["dependencies"]
    return deps


def lowest_pins() -> list[str]:
    """``name==floor`` for every runtime dependency declared as ``name>=floor``."""
    pins = []
    for requirement in _dependencies():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        if match is None:
            raise ValueError(f"cannot pin the floor of {requirement!r}: declare it as name>=X")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def _suite(session: nox.Session) -> None:
    session.run("python", "-m", "pip", "list", "--format=freeze")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(name="tests-latest", venv_backend="venv")
def tests_latest(session: nox.Session) -> None:
    """The newest releases of everything."""
    session.install("--upgrade", "pip")
    session.install("--upgrade", "--upgrade-strategy", "eager", f"{ROOT}[test]")
    _suite(session)


@nox.session(name="tests-lowest", venv_backend="venv")
def tests_lowest(session: nox.Session) -> None:
    """The declared floors of the runtime dependencies, exactly."""
    session.install("--upgrade", "pip")
    session.install(f"{ROOT}[test]", *lowest_pins())
    _suite(session)


@nox.session(python=PYTHONS, venv_backend="venv")
def tests(session: nox.Session) -> None:
    """The suite on each supported Python found on this machine."""
    session.install(f"{ROOT}[test]")
    _suite(session)
