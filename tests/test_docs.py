"""The documentation stays complete and inside the repository.

- README.md is the front door: at most 200 lines, the two set-up commands as they are;
- links in README.md and docs/ are relative and point at files that exist;
- every page is in the site's navigation;
- the API reference has a section for every public name (``aiob24flow.__all__`` and
  ``aiob24flow.emulator.__all__``), the troubleshooting page every public error class, the
  command-line reference every option of every command;
- the benchmark charts exist and are drawn from the figures benchmarks/README.md records.

(``mkdocs build --strict`` in ``.ci/run`` checks the rest: anchors, rendering, warnings.)
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import aiob24flow
import aiob24flow.emulator

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install '.[cli]' && aiob24flow demo"
TESTS = "python -m pip install -e '.[test]' && python -m pytest -q"
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCED = re.compile(r"^ *```.*?^ *```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if not p.relative_to(DOCS).parts[0].startswith("_"))


def prose(path: Path) -> str:
    """The text of a page without its code (links inside code are not links)."""
    return CODE.sub("", FENCED.sub("", path.read_text(encoding="utf-8")))


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert INSTALL in text and TESTS in text
    assert (
        "async with" not in text.split("```python", 1)[0]
    )  # no top-level async with before the Quick start


@pytest.mark.parametrize("page", [README, *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository(page: Path) -> None:
    for match in LINK.finditer(prose(page)):
        target = match["target"]
        assert "://" not in target and not target.startswith("/"), f"{page.name}: {target}"
        path = target.split("#", 1)[0]
        if path:
            assert (page.parent / path).resolve().exists(), f"{page.name}: {target} does not exist"


def nav_pages() -> set[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return set(re.findall(r"([\w/.-]+\.md)\s*$", nav, re.M))


def test_every_page_is_in_the_navigation() -> None:
    listed = nav_pages()
    present = {str(p.relative_to(DOCS)) for p in pages()}
    assert present == listed, (present - listed, listed - present)


def reference_names() -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    return set(re.findall(r"^::: (\S+)\s*$", text, re.M))


def test_the_api_reference_has_every_public_name() -> None:
    names = reference_names()
    public = {f"aiob24flow.{n}" for n in aiob24flow.__all__}
    public |= {f"aiob24flow.emulator.{n}" for n in aiob24flow.emulator.__all__}
    assert public - names == set(), "missing from docs/reference/"
    assert names - public == set(), "not public, or misspelt"


def test_troubleshooting_explains_every_error_class() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    public = {name: getattr(aiob24flow, name) for name in aiob24flow.__all__}
    errors = [n for n, v in public.items() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(errors) >= 30
    for name in errors:
        # A row of a table ("| `Name` | means | what to do |") or an item of a list.
        assert re.search(rf"^(\| `{name}` \||- `{name}`)", text, re.M), name


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_the_cli_reference_has_every_option() -> None:
    hook = load(DOCS / "_hooks" / "cli_reference.py", "cli_reference")
    assert hook.MARKER in (DOCS / "cli.md").read_text(encoding="utf-8")
    text = hook.reference()
    from aiob24flow.cli import build_parser
    from aiob24flow.emulator.__main__ import build_parser as emulator_parser

    for parser in [*_parsers(build_parser()), emulator_parser()]:
        assert f"### `{parser.prog}`" in text
        for action in parser._actions:
            for option in action.option_strings:
                assert re.search(rf"`[^`]*{re.escape(option)}\b", text), (parser.prog, option)
    rendered = hook.on_page_markdown(f"before\n{hook.MARKER}\nafter")
    assert rendered.startswith("before\n### `aiob24flow`") and rendered.endswith("after")


def test_the_benchmark_charts_come_from_the_recorded_figures() -> None:
    charts = load(ROOT / "benchmarks" / "charts.py", "charts")
    figures = charts.scale_figures((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8"))
    for label in charts.SCALE_SERIES:
        assert sorted(figures[label]) == [10_000, 100_000, 1_000_000], label
    assert figures["activate_many"][1_000_000] == (8.5, 155)
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    for name in ("pacing.svg", "scale.svg"):
        svg = (DOCS / "img" / name).read_text(encoding="utf-8")
        assert "<svg" in svg and "</svg>" in svg, name
        assert f"(img/{name})" in text, name
