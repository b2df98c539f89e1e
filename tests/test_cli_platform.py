"""The console script where the event loop has no signal handlers (Windows' loops) or
the system has no POSIX file locks (Windows): forced here, on Linux, in a wrapper that
takes those away and then runs the real console script."""

from __future__ import annotations

import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aiob24flow import FileTokenStore
from tests.conftest import CLI_SCRIPT, run_cli, serve, write_token_file

if not CLI_SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)

run = run_cli

_RUN_SCRIPT = """
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# As on Windows: the loop's add_signal_handler raises NotImplementedError.
NO_LOOP_SIGNALS = (
    textwrap.dedent("""
    import asyncio, runpy, sys

    def refuse(self, *args):
        raise NotImplementedError

    asyncio.SelectorEventLoop.add_signal_handler = refuse
    asyncio.SelectorEventLoop.remove_signal_handler = refuse
""")
    + _RUN_SCRIPT
)

# As on Windows: no fcntl module.
NO_FCNTL = (
    textwrap.dedent("""
    import runpy, sys

    sys.modules["fcntl"] = None
""")
    + _RUN_SCRIPT
)


async def test_ctrl_c_without_loop_signal_handlers_still_reports_every_flow() -> None:
    async with serve(flows=1000) as server:
        started = time.monotonic()
        code, out, err = await run(
            "activate", "1-1000", "--burst", "2", "--per-second", "2", "--concurrency", "1",
            "--webhook", server.webhook_url(),
            interrupt_when=lambda: server.state.activations.total() >= 100,
            wrap=[sys.executable, "-c", NO_LOOP_SIGNALS],
            env={"AIOB24FLOW_NO_UVLOOP": "1"},
        )  # fmt: skip
        assert time.monotonic() - started < 30
        assert code == 130, err
        assert "interrupted: sending no new batch" in err
        sent = server.state.activations.total()
        assert 100 <= sent <= 150 and sent % 50 == 0  # at most the batch on the wire
        assert re.search(rf"succeeded +{sent}\n", out), out
        assert re.search(rf"failed +{1000 - sent}\n", out)
        assert "Stopped: stopped before sending" in out


async def test_oauth_file_without_posix_locks_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    async with serve(flows=10) as server:
        path = tmp_path / "tokens.json"
        body = server.state.issue_tokens()
        write_token_file(server, path, {k: body[k] for k in ("access_token", "refresh_token")})
        wrap = [sys.executable, "-c", NO_FCNTL]
        code, out, err = await run("activate", "1", "--oauth", str(path), wrap=wrap)
        assert (code, out) == (2, "")
        assert "POSIX file locks" in err and "--oauth-redis URL" in err
        assert len(err.splitlines()) == 1
        assert server.state.requests == 0 and server.state.token_requests == 0


async def test_file_token_store_without_posix_locks_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fcntl", None)
    store = FileTokenStore(tmp_path / "tokens.json")
    with pytest.raises(NotImplementedError, match="RedisTokenStore"):
        async with store.lock():
            pass  # pragma: no cover - never entered
