"""Every ```python block of README.md and docs/ runs here, so no example can rot.

The blocks of one page run in order in one namespace and one event loop (a later block may
use what an earlier one defined); a block may use top-level ``await``, as in
``python -m asyncio``, or run its own ``asyncio.run(main())``. Each page gets a fresh
emulated portal in a thread of its own; before a block runs, the placeholders a reader
replaces are replaced with that portal's addresses:

- ``https://your-portal.bitrix24.com/rest/1/WEBHOOK_CODE/`` (and ``$B24_WEBHOOK_URL``): the
  portal's webhook;
- ``https://your-portal.bitrix24.com/rest/``: its OAuth endpoint;
- ``redis://127.0.0.1:6379/0``: a redis-server started for the page (pages without it do
  not need one);
- ``/etc/ssl/corp-ca.pem``: a CA certificate made for the page.

Nothing leaves the machine: host names other than loopback do not resolve here. A block
may be left out only with a visible reason, on the line before its fence:
``<!-- docs-test: skip REASON -->`` (``test_skipped_blocks`` lists them).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import inspect
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig
from tests.conftest import redis_server

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK = "https://your-portal.bitrix24.com/rest/1/WEBHOOK_CODE/"
ENDPOINT = "https://your-portal.bitrix24.com/rest/"
REDIS = "redis://127.0.0.1:6379/0"
CA_BUNDLE = "/etc/ssl/corp-ca.pem"
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s+(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)$")
PAGE_TIMEOUT = 120.0


@dataclass
class Block:
    page: str
    line: int  # of the first line of code
    code: str
    skip: str | None


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks whose info string is ``python`` (indented ones too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, info = match["indent"], match["info"].strip()
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if info.split(" ")[0] == "python":
            body = [line[len(indent) :] for line in lines[start:end]]
            prev = lines[i - 1] if i else ""
            skip = SKIP.search(prev)
            found.append(
                Block(
                    str(path.relative_to(ROOT)),
                    start + 1,
                    "\n".join(body) + "\n",
                    skip["reason"] if skip else None,
                )
            )
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


PAGES = [p for p in pages() if any(b.skip is None for b in blocks_of(p))]


class ThreadedPortal:
    """An emulated portal serving from a thread of its own (any block style can reach it,
    including one that runs its own ``asyncio.run``)."""

    def __init__(self, config: PortalConfig) -> None:
        self.server = EmulatorServer(Portal(config))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> EmulatorServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def docs_redis() -> contextlib.AbstractContextManager[str]:
    """A redis-server with an append-only file, as the docs tell users to run it (so the
    token store's persistence warning stays out of the examples' output)."""
    return redis_server("--appendonly", "yes", "--dir", os.getcwd())


def make_ca(directory: Path) -> str:
    trustme = pytest.importorskip("trustme")
    path = directory / "corp-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Examples talk to this machine only: any other host name fails to resolve."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "localhost", "::1") and not str(name).startswith("127."):
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: the docs examples stay on loopback")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def run_block(block: Block, code: str, namespace: dict[str, Any], loop: Any) -> None:
    source = "\n" * (block.line - 1) + code  # tracebacks name the page's own line numbers
    compiled = compile(source, block.page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        if compiled.co_flags & inspect.CO_COROUTINE:
            loop.run_until_complete(asyncio.wait_for(eval(compiled, namespace), PAGE_TIMEOUT))
        else:
            exec(compiled, namespace)
    except SystemExit as exc:  # a script's sys.exit(main()): 0 and None are success
        if exc.code not in (0, None):
            raise AssertionError(f"the script exited with {exc.code!r}") from exc


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """An example may configure logging; the suite's logging is put back after it."""
    root, package = logging.getLogger(), logging.getLogger("aiob24flow")
    saved = root.handlers[:], root.level, package.handlers[:], package.level
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    package.handlers[:], package.level = saved[2], saved[3]


@pytest.mark.usefixtures("logging_restored")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = [b for b in blocks_of(page) if b.skip is None]
    monkeypatch.chdir(tmp_path)  # files an example writes (a journal, a token file) land here
    loopback_only(monkeypatch)
    text = "".join(b.code for b in blocks)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(docs_redis()) if REDIS in text else REDIS
        portal = stack.enter_context(ThreadedPortal(PortalConfig(active_ratio=0.5, leak=None)))
        monkeypatch.setenv("B24_WEBHOOK_URL", portal.webhook_url())
        replace = {WEBHOOK: portal.webhook_url(), ENDPOINT: portal.oauth_endpoint, REDIS: redis}
        if CA_BUNDLE in text:
            replace[CA_BUNDLE] = make_ca(tmp_path)
        namespace: dict[str, Any] = {"__name__": "__main__"}
        loop = asyncio.new_event_loop()
        try:
            for block in blocks:
                code = block.code
                for placeholder, value in replace.items():
                    code = code.replace(placeholder, value)
                try:
                    run_block(block, code, namespace, loop)
                except BaseException as exc:
                    raise AssertionError(f"{block.page}:{block.line}: the example failed") from exc
        finally:
            close_loop(loop)
            del namespace
            gc.collect()  # a resource an example leaked warns here, in its own page's test
    capsys.readouterr()


@pytest.mark.parametrize(
    "block",
    [b for b in all_blocks() if b.skip is not None] or [None],
    ids=lambda b: f"{b.page}:{b.line}" if b else "none",
)
def test_skipped_blocks(block: Block | None) -> None:
    if block is not None:
        pytest.skip(f"{block.page}:{block.line}: {block.skip}")


def test_every_page_with_code_has_python_blocks_found() -> None:
    # A fence the collector does not see would be an example that never runs.
    for page in pages():
        text = page.read_text(encoding="utf-8")
        assert text.count("```python") == len(blocks_of(page)), page
