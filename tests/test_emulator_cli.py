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


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_a_non_loopback_host_needs_allow_remote(launcher: str, host: str) -> None:
    done = run_emulator(launcher, "--host", host, "--port", "0")
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # refused before listening: no address, no webhook printed
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("aiob24flow emulator: error: --host")
    assert "--allow-remote" in done.stderr and "loopback" in done.stderr


def test_loopback_hosts() -> None:
    from aiob24flow.emulator.__main__ import is_loopback

    for host in ("127.0.0.1", "127.0.1.7", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.1", "192.0.2.1", "example.com", "localhost."):
        assert not is_loopback(host), host


def test_allow_remote_serves_random_webhook_codes_printed_once(tmp_path: Path) -> None:
    import json
    import re
    import time
    import urllib.error
    import urllib.request

    ready = tmp_path / "port"
    proc = subprocess.Popen(
        [*LAUNCHERS["module"], "--host", "0.0.0.0", "--allow-remote", "--port", "0",
         "--flows", "3", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        port = ready.read_text()
        # The startup lines are flushed before the ready file is written.
        head = "".join(proc.stdout.readline() for _ in range(3))
        codes = dict(re.findall(rf"http://0\.0\.0\.0:{port}/rest/(\d)/([^/\s]+)/", head))
        assert sorted(codes) == ["1", "2"], head
        assert all(re.fullmatch(r"[0-9a-f]{32}", code) for code in codes.values()), codes
        assert codes["1"] != codes["2"]

        def activate(user: str, code: str) -> int:
            # Only loopback traffic: a 0.0.0.0 listener includes 127.0.0.1.
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/rest/{user}/{code}/tasks.flow.Flow.activate",
                data=json.dumps({"flowId": 1}).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as refused:
                return refused.code

        assert activate("1", "emulator-webhook-code-1") == 401  # the public test code is void
        assert activate("1", codes["1"]) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/stats") as answer:
            assert json.loads(answer.read())["activations"] == {"1": 1}
    finally:
        proc.terminate()
        rest, err = proc.communicate(timeout=10)
    out = head + rest
    for code in codes.values():
        assert out.count(code) == 1 and code not in err  # printed once, on stdout
    assert "emulator-webhook-code" not in out + err
