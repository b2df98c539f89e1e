"""What the console script prints: a demo that shows pacing and the faults that fired."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import CLI_SCRIPT, run_cli

if not CLI_SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)

run = run_cli


async def test_demo_paces_more_requests_than_the_burst_and_counts_the_faults() -> None:
    started = time.monotonic()
    code, out, err = await run("demo")
    assert code == 0, err
    assert time.monotonic() - started < 15
    pacing = re.search(r"pacing: (\d+) requests, (\d+) at once at most", out)
    assert pacing is not None, out
    assert int(pacing[1]) > 2 * int(pacing[2])  # the limiter spread them out
    assert "rate limit: burst 8 + 8/s, in the portal and in the client" in out
    fired = re.search(r"faults that fired: (\d+) \((.*)\)\n", out)
    assert fired is not None, out
    parts = [int(part.split()[0]) for part in fired[2].split(", ")]
    assert int(fired[1]) == sum(parts) > 0
    assert "toggled twice by one call (a blind re-send would do that): 0" in out
    code, out, _ = await run("demo", "--flows", "40", "--no-faults")
    assert code == 0 and "faults that fired: 0\n" in out
