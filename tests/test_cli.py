"""The real ``aiob24flow`` console script, run as a subprocess against the emulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from aiob24flow.cli import id_ranges, parse_ids
from tests.conftest import CLI_SCRIPT, run_cli, serve, write_token_file

SCRIPT = CLI_SCRIPT
if not SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)


run = run_cli

FAST = ["--plan", "unlimited"]


async def test_activate_by_range_and_list() -> None:
    async with serve(flows=100) as server:
        code, out, err = await run(
            "activate", "1-10", "20,21", "--webhook", server.webhook_url(), *FAST
        )
        assert code == 0, err
        assert re.search(r"succeeded +12\n", out)
        assert server.state.activations.total() == 12 and server.state.activations[21] == 1
        assert server.state.webhooks[1] not in out + err


async def test_webhook_from_environment_and_ids_from_stdin() -> None:
    async with serve(flows=100) as server:
        code, out, _ = await run(
            "pin", "-", *FAST, env={"B24_WEBHOOK_URL": server.webhook_url()}, stdin="3 4\n5\n"
        )
        assert code == 0 and re.search(r"succeeded +3\n", out)
        assert server.state.pin_calls == {3: 1, 4: 1, 5: 1}


async def test_set_active_dry_run_sends_no_toggle() -> None:
    async with serve(flows=60, active_ratio=0.5, seed=9) as server:
        before = server.state.active_states()
        code, out, _ = await run(
            "set-active",
            "--off",
            "--dry-run",
            "1-60",
            "--json",
            "--webhook",
            server.webhook_url(),
            *FAST,
        )
        assert code == 0
        report = json.loads(out)
        assert sorted(report["changed"]) == sorted(i for i, a in before.items() if a)
        assert server.state.activations.total() == 0
        code, out, _ = await run(
            "set-active", "--off", "--dry-run", "1-60", "--webhook", server.webhook_url(), *FAST
        )
        assert "would change" in out and server.state.activations.total() == 0
        would = [i for i, active in before.items() if active]
        assert f"would deactivate: {id_ranges(would, limit=10**9)}" in out


async def test_set_active_json_report_and_exit_code_for_failures() -> None:
    async with serve(flows=60, missing=frozenset({7}), active_ratio=0.5, seed=9) as server:
        code, out, _ = await run(
            "set-active", "--off", "1-60", "--json", "--webhook", server.webhook_url(), *FAST
        )
        assert code == 1  # flow 7 does not exist
        report = json.loads(out)
        assert report["summary"]["failed"] == 1 and report["failed"]["7"]["code"] == "0"
        assert report["summary"]["succeeded"] == 59 and report["stats"]["requests"] >= 2
        assert all(not f.active for f in server.state.flows.values())


async def test_set_pinned_and_get() -> None:
    async with serve(flows=10) as server:
        server.state.pins[(2, 1)] = True
        code, _, _ = await run(
            "set-pinned", "--on", "1-4", "--webhook", server.webhook_url(), *FAST
        )
        assert code == 0
        assert all(server.state.pins[(i, 1)] for i in range(1, 5))
        code, out, _ = await run("get", "3", "--webhook", server.webhook_url(), *FAST)
        assert code == 0 and "flow 3: active=True name='Flow 3'" in out
        code, out, _ = await run(
            "get", "3", "--fields", "ownerId, active", "--webhook", server.webhook_url(), *FAST
        )
        assert code == 0 and "flow 3: ownerId=1 active=True\n" in out
        code, out, _ = await run(
            "get", "3", "4", "--json", "--fields", "active", "--webhook", server.webhook_url()
        )
        assert code == 0
        assert json.loads(out)["succeeded"] == {"3": {"active": True}, "4": {"active": True}}
        code, out, _ = await run("get", "3", "--json", "--webhook", server.webhook_url())
        assert code == 0 and json.loads(out)["succeeded"]["3"]["team"] == [["user", "1"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["activate", "abc"], "bad flow id 'abc'"),
        (["activate", "5-2"], "bad flow id range"),
        (["activate", "0"], "bad flow id '0'"),
        (["activate"], "no flow ids"),
        (["set-pinned", "--on", "--dry-run", "1"], "unrecognized arguments: --dry-run"),
        (["get", "1", "--fields", "active,,name"], "empty field name"),
        (["activate", "1", "--fields", "active"], "unrecognized arguments: --fields"),
        (["activate", "1", "--webhook", "http://portal.example.com/rest/1/SECRETCODE/"], "http://"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    async with serve(flows=10) as server:
        env = {"B24_WEBHOOK_URL": server.webhook_url()}
        code, out, err = await run(*args, env=env)
        assert code == 2 and out == ""
        assert message in err and len(err.strip().splitlines()) == 1
        assert "SECRETCODE" not in err
        assert server.state.requests == 0


async def test_no_credentials_and_argparse_errors() -> None:
    code, _, err = await run("activate", "1", env={})
    assert code == 2 and "no credentials" in err
    code, _, err = await run("set-active", "1", env={})
    assert code == 2  # --on/--off required


async def test_oauth_file_is_rewritten_after_refresh(tmp_path: Path) -> None:
    async with serve(flows=10) as server:
        body = server.state.issue_tokens()
        for entry in server.state.access_tokens.values():
            entry.expires_at = 0
        path = tmp_path / "tokens.json"
        write_token_file(server, path, {k: body[k] for k in ("access_token", "refresh_token")})
        code, out, err = await run("activate", "1-3", "--oauth", str(path), *FAST, "-v")
        assert code == 0, err
        saved = json.loads(path.read_text())
        assert saved["refresh_token"] != body["refresh_token"]
        assert saved["refresh_token"] in server.state.refresh_tokens
        assert saved["client_secret"] == server.portal.config.client_secret
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        for secret in (
            saved["access_token"],
            saved["refresh_token"],
            body["access_token"],
            server.portal.config.client_secret,
        ):
            assert secret not in out + err
        assert "access token refreshed" in err
        assert server.state.activations.total() == 3


async def test_ctrl_c_stops_new_batches_and_reports_each_flow() -> None:
    async with serve(flows=1000) as server:
        started = time.monotonic()
        code, out, err = await run(
            "activate",
            "1-1000",
            "--burst",
            "2",
            "--per-second",
            "2",
            "--concurrency",
            "1",
            "--webhook",
            server.webhook_url(),
            interrupt_when=lambda: server.state.activations.total() >= 100,
        )
        assert time.monotonic() - started < 30
        assert code == 130
        assert "interrupted" in err
        sent = server.state.activations.total()
        assert 100 <= sent <= 150 and sent % 50 == 0  # at most the batch on the wire
        assert re.search(rf"succeeded +{sent}\n", out)
        assert re.search(rf"failed +{1000 - sent}\n", out)
        assert "Stopped: stopped before sending" in out


async def test_demo_and_emulator_help() -> None:
    code, out, _ = await run("demo", "--flows", "120")
    assert code == 0
    assert "toggled twice by one call (a blind re-send would do that): 0" in out
    assert "emulator-webhook-code" not in out
    code, out, _ = await run("emulator", "--help")
    assert code == 0 and "--flows" in out


def test_parse_ids_and_ranges(tmp_path: Path) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("7, 8\n9\n")
    assert parse_ids(["1-3", "5,3"], [str(f)]) == [1, 2, 3, 5, 7, 8, 9]
    assert id_ranges([5, 1, 2, 3, 9]) == "1-3 5 9"
    assert id_ranges(list(range(1, 1000, 2)), limit=20).endswith("...")


def test_module_entry_point() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "aiob24flow", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "set-active" in result.stdout


def test_progress_bar_follows_progress() -> None:
    from aiob24flow import Progress
    from aiob24flow.cli import ProgressBar

    with ProgressBar(True, 100, "activate") as update:
        assert update is not None
        update(Progress(total=100, done=50, succeeded=50, failed=0, unknown=0))
    with ProgressBar(False, 100, "activate") as update:
        assert update is None


async def test_progress_bar_on_a_terminal_keeps_stdout_clean() -> None:
    import pty

    async with serve(flows=300, burst=50, leak=None) as server:
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            "activate",
            "1-300",
            "--webhook",
            server.webhook_url(),
            "--burst",
            "1",
            "--per-second",
            "8",
            "--concurrency",
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        terminal = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal += chunk
        os.close(master)
    assert proc.returncode == 0
    assert b"activate" in terminal and b"\x1b[" in terminal  # rich drew on the terminal
    assert "\x1b[" not in out.decode() and re.search(r"succeeded +300\n", out.decode())
