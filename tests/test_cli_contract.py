"""The command line's contract with operators and scripts (issue table, row by row)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import aiob24flow as b24
from aiob24flow.cli import build_parser
from tests.conftest import CLI_SCRIPT, no_sleep, run_cli, serve

SCRIPT = CLI_SCRIPT
if not SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)

FAST = ["--plan", "unlimited"]


run = run_cli


async def test_version() -> None:
    code, out, _ = await run("--version")
    assert code == 0 and out.strip() == f"aiob24flow {b24.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", b24.__version__)


async def test_wrong_webhook_code_fails_fast_with_one_clear_line() -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url().replace("emulator-webhook-code-1", "wrong")
        code, out, err = await run(
            "activate", "1-10000", "--webhook", url, *FAST, "--concurrency", "10"
        )
        assert server.state.requests <= 10
    assert code == 1
    assert re.search(r"failed +10000\n", out)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [lines[0]] and "the portal refused the credentials" in lines[0]
    assert "wrong" not in err  # the code is a secret


async def test_unreachable_host_fails_once_within_the_connect_timeout() -> None:
    class NoSuchHost(aiohttp.abc.AbstractResolver):
        calls = 0

        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            NoSuchHost.calls += 1
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        async def close(self) -> None:
            pass

    connector = aiohttp.TCPConnector(resolver=NoSuchHost())
    async with aiohttp.ClientSession(connector=connector) as session:
        client = b24.FlowClient.from_webhook(
            "https://no-such-portal.example/rest/1/code/",
            rate_limit=b24.RateLimit.unlimited(),
            session=session,
            sleep=no_sleep,
        )
        async with client:
            with pytest.raises(b24.Unreachable):
                await client.activate(1)
            assert NoSuchHost.calls == 1  # not retried
            report = await client.activate_many(range(1, 10_001))
        assert len(report.failed) == 10_000
        assert NoSuchHost.calls <= 1 + client.concurrency


async def test_json_output_is_versioned_and_says_what_ran() -> None:
    async with serve(flows=20, active_ratio=0.5, seed=1) as server:
        url = server.webhook_url()
        code, out, _ = await run("set-active", "--off", "--dry-run", "1-20", "--json",
                                 "--webhook", url, *FAST)  # fmt: skip
        doc = json.loads(out)
        assert code == 0
        assert doc["schema"] == 1 and doc["command"] == "set-active" and doc["dry_run"] is True
        assert doc["interrupted"] is False
        assert set(doc) >= {"summary", "succeeded", "changed", "failed", "unknown", "stats"}
        code, out, _ = await run("activate", "1-3", "99", "--json", "--webhook", url, *FAST)
        doc = json.loads(out)
        assert code == 1 and doc["command"] == "activate" and doc["dry_run"] is False
        assert doc["failed"]["99"]["type"] == "FlowError"
        assert doc["failed"]["99"]["may_have_run"] is False


async def test_ids_from_stdin_file_with_comments_and_a_csv_header(tmp_path: Path) -> None:
    csv = tmp_path / "flows.csv"
    csv.write_text('"NAME","ID"\n"a",4\n\n# skipped\n"b",5  # trailing comment\n')
    plain = tmp_path / "flows.txt"
    plain.write_text("ID\n7\n8, 9\n")
    async with serve(flows=20) as server:
        code, _, err = await run(
            "pin", "--ids-file", "-", "--ids-file", str(csv), "--ids-file", str(plain),
            "--webhook", server.webhook_url(), *FAST, stdin="1 2\n# no\n3\n",
        )  # fmt: skip
        assert code == 0, err
        assert sorted(server.state.pin_calls) == [1, 2, 3, 4, 5, 7, 8, 9]


async def test_redis_option_without_the_redis_package(tmp_path: Path) -> None:
    fake = tmp_path / "redis"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('redis is not installed')\n")
    code, _, err = await run(
        "activate", "1", "--webhook", "https://p.example/rest/1/x/", "--redis",
        "redis://127.0.0.1:1/0", env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert code == 2 and "pip install 'aiob24flow[redis]'" in err
    assert len(err.strip().splitlines()) == 1


async def test_closed_stdout_pipe_is_not_an_error() -> None:
    async with serve(flows=3000) as server:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            f'"{SCRIPT}" activate 1-3000 --json --plan unlimited --webhook '
            f'"{server.webhook_url()}" | head -n 9 >/dev/null; echo "${{PIPESTATUS[0]}}"',
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert server.state.activations.total() == 3000
    assert out.decode().strip() == "0", err.decode()
    assert "Traceback" not in err.decode() and "BrokenPipe" not in err.decode()


def test_every_option_has_help_and_commands_offer_only_what_they_honour() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    for name, sub in subparsers.items():
        if name == "emulator":
            continue
        for action in sub._actions:
            if action.dest in ("help",):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    set_pinned = subparsers["set-pinned"].format_help()  # type: ignore[index]
    assert "--dry-run" not in set_pinned
    assert "--dry-run" in subparsers["set-active"].format_help()  # type: ignore[index]
    for action in parser._actions:
        assert action.help, action.option_strings
