"""The console script under control: Ctrl-C on a terminal, token files that cannot be
rewritten, and usage errors that are one line and exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI_SCRIPT, run_cli, serve, write_token_file

SCRIPT = CLI_SCRIPT
if not SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)


def _mount_namespaces() -> bool:
    """Can this machine give a child its own mounts (unshare, as root)?"""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null"], check=False
    )
    return probe.returncode == 0


NAMESPACES = _mount_namespaces()


run = run_cli


def token_file(server: Any, path: Path, *, expired: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = server.state.issue_tokens()
    if expired:
        for entry in server.state.access_tokens.values():
            entry.expires_at = 0
    write_token_file(server, path, {k: body[k] for k in ("access_token", "refresh_token")})
    return body


async def test_ctrl_c_on_a_terminal_sends_no_new_batch_and_exits_130() -> None:
    import fcntl
    import pty
    import termios

    async with serve(flows=1000, burst=2, leak=2.0) as server:
        master, slave = pty.openpty()

        def controlling_terminal() -> None:  # runs in the child, after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(
            [
                str(SCRIPT),
                "activate",
                "1-1000",
                "--webhook",
                server.webhook_url(),
                "--burst",
                "2",
                "--per-second",
                "2",
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        deadline = time.monotonic() + 30
        while server.state.activations.total() < 150 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        os.write(master, b"\x03")  # Ctrl-C, typed: the terminal signals the job
        at_interrupt = server.state.requests
        terminal = b""
        while proc.poll() is None or not terminal.endswith(b"\n"):
            try:
                chunk = await asyncio.to_thread(os.read, master, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal += chunk
            if proc.poll() is not None and len(chunk) < 65536:
                break
        code = await asyncio.to_thread(proc.wait, 30)
        os.close(master)
        await asyncio.sleep(0.6)  # a batch sent behind our back would arrive by now
    text = terminal.decode(errors="replace").replace("\r\n", "\n")
    assert code == 130, text
    sent = server.state.requests
    assert sent <= at_interrupt + 1  # at most the batch that was on the wire
    done = server.state.activations.total()
    assert "interrupted" in text
    assert re.search(rf"succeeded +{done}\n", text), text
    assert re.search(rf"failed +{1000 - done}\n", text), text
    assert "Stopped: stopped before sending" in text


async def test_oauth_file_through_a_symlink_rewrites_the_target(tmp_path: Path) -> None:
    async with serve(flows=10) as server:
        real = tmp_path / "secrets" / "tokens.json"
        real.parent.mkdir()
        body = token_file(server, real)
        link = tmp_path / "tokens.json"
        link.symlink_to(real)
        code, _, err = await run("activate", "1-3", "--oauth", str(link), "--plan", "unlimited")
        assert code == 0, err
        assert link.is_symlink()  # the link stays a link...
        saved = json.loads(real.read_text())  # ...and its target holds the new pair
        assert saved["refresh_token"] != body["refresh_token"]
        assert saved["refresh_token"] in server.state.refresh_tokens


@pytest.mark.skipif(not NAMESPACES, reason="needs root and mount namespaces (unshare -m)")
async def test_oauth_file_that_cannot_be_rewritten_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    async with serve(flows=10) as server:
        directory = tmp_path / "ro"
        directory.mkdir()
        path = directory / "tokens.json"
        body = token_file(server, path)
        # A read-only bind mount: even root cannot write there.
        wrap = [
            "unshare",
            "-m",
            "sh",
            "-c",
            f'mount --bind "{directory}" "{directory}" && '
            f'mount -o remount,bind,ro "{directory}" && exec "$@"',
            "sh",
        ]
        code, _, err = await run("activate", "1-3", "--oauth", str(path), wrap=wrap)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "cannot be rewritten" in err
        assert server.state.requests == 0 and server.state.token_requests == 0
        assert json.loads(path.read_text())["refresh_token"] == body["refresh_token"]


@pytest.mark.skipif(not NAMESPACES, reason="needs root and mount namespaces (unshare -m)")
async def test_refreshed_tokens_that_cannot_be_saved_stop_the_job(tmp_path: Path) -> None:
    async with serve(flows=300) as server:
        source = tmp_path / "tokens.json"
        token_file(server, source)
        full = tmp_path / "full"
        full.mkdir()
        # A tiny file system, full once the token file is in it: the rewrite fails.
        wrap = [
            "unshare",
            "-m",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=8k tmpfs "{full}" && cp "{source}" "{full}/tokens.json" '
            f'&& head -c 4096 /dev/zero > "{full}/fill" && exec "$@"',
            "sh",
        ]
        code, out, err = await run(
            "activate", "1-300", "--oauth", str(full / "tokens.json"), "--plan", "unlimited",
            wrap=wrap,
        )  # fmt: skip
        assert code == 1, err
        # The spending record could not be written first, so the refresh token was never
        # sent: nothing is lost, and the message says so.
        assert "could not be rewritten" in err and "was not used" in err
        assert server.state.refreshes == 0 and server.state.token_requests == 0
        # Only the first round went out (each answered 401 expired_token); nothing was
        # sent on the unsaved tokens.
        assert server.state.requests <= 6 and server.state.activations.total() == 0
        assert re.search(r"failed +300\n", out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["activate", "²"], "bad flow id"),
        (["activate", "٣"], "bad flow id"),
        (["activate", "1-²"], "bad flow id range"),
        (["activate", "9223372036854775808"], "bad flow id"),
        (["activate", "--ids-file", "{badutf8}"], "not UTF-8"),
        (["activate", "1", "--oauth", "{notobject}"], "JSON object"),
        (["activate", "1", "--oauth", "{missing}"], "cannot read OAuth token file"),
        (["activate", "1", "--webhook", "{webhook}", "--redis", "nota://url"], "--redis"),
        (["activate", "1", "--webhook", "https://p.example/rest/1/x/", "--burst", "0"], "burst"),
        (["activate", "1", "--webhook", "https://p.example:99999/rest/1/x/"], "port"),
        (["activate", "1", "--webhook", "https://[bad/rest/1/X/"], "--webhook is not a URL"),
        (["activate", "1", "--concurrency", "0"], "concurrency"),
        (["emulator", "--port", "99999"], "--port"),
        (["emulator", "--flows", "x"], "--flows"),
        (["demo", "--flows", "-5"], "--flows"),
        (["activate", "1", "--no-such-option"], "unrecognized"),
    ],
)
async def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    bad = tmp_path / "ids.bin"
    bad.write_bytes(b"1 2 \xff\xfe 3")
    notobject = tmp_path / "list.json"
    notobject.write_text("[1, 2]")
    values = {
        "{badutf8}": str(bad),
        "{notobject}": str(notobject),
        "{missing}": str(tmp_path / "nope.json"),
        "{webhook}": "https://p.example/rest/1/code/",
    }
    code, out, err = await run(*(values.get(a, a) for a in args))
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


@pytest.mark.skipif(not NAMESPACES, reason="needs root and mount namespaces (unshare -m)")
async def test_a_token_file_that_turns_read_only_mid_job_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    """The token file's directory turns read-only while the job runs, then the token
    expires: the refresh cannot take the file's lock. A typed error (no raw
    ``PermissionError``), the flows not sent ``failed``, one line saying the file could not
    be locked and that no refresh token was spent, exit 1."""
    async with serve(flows=600, burst=2, leak=4.0) as server:
        directory = tmp_path / "tokens"
        directory.mkdir()
        path = directory / "tokens.json"
        token_file(server, path, expired=False)
        proc = await asyncio.create_subprocess_exec(
            "unshare", "-m", "sh", "-c", f'mount --bind "{directory}" "{directory}" && exec "$@"',
            "sh", str(CLI_SCRIPT), "activate", "1-600", "--oauth", str(path),
            "--burst", "2", "--per-second", "4",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while server.state.requests < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.state.requests >= 2 and proc.returncode is None
        remount = subprocess.run(
            ["nsenter", "-t", str(proc.pid), "-m", "mount", "-o", "remount,bind,ro",
             str(directory)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert remount.returncode == 0, remount.stderr
        for entry in server.state.access_tokens.values():
            entry.expires_at = 0  # the next request meets expired_token
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
        out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "PermissionError" not in err.split(":", 1)[0]  # not a raw exception's name first
    assert "could not be locked" in err and "no refresh token was spent" in err
    assert server.state.token_requests == 0  # the refresh token was never sent
    toggled = server.state.activations
    assert all(toggled[i] <= 1 for i in range(1, 601))
    assert re.search(rf"failed +{600 - toggled.total()}", out), out
