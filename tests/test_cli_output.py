"""What the console script prints: toggles that say so, summaries that read plainly,
answers that --quiet keeps, and a demo that shows pacing and the faults that fired."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import CLI_SCRIPT, run_cli, serve

if not CLI_SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)

run = run_cli

FAST = ["--plan", "unlimited"]


def words(text: str) -> str:
    """Help text as one line (argparse wraps it to the terminal's width)."""
    return " ".join(text.split())


async def test_activate_on_an_active_flow_switches_it_off_and_says_it_toggles() -> None:
    async with serve(flows=3, active_ratio=1.0) as server:
        code, out, err = await run("activate", "1", "--webhook", server.webhook_url(), *FAST)
        assert code == 0, err
        assert not server.state.flows[1].active  # a toggle: the active flow is off now
    assert re.search(r"succeeded +1\n", out)
    assert out.startswith("activate (toggle): 1 flow\n")
    assert "toggled: active -> inactive, inactive -> active" in out
    assert "to set a state instead: aiob24flow set-active --on/--off" in out
    code, out, _ = await run("activate", "--help")
    assert code == 0
    assert "a flow that is active becomes inactive" in words(out)
    assert "use: aiob24flow set-active --on/--off" in words(out)
    code, out, _ = await run("--help")
    assert "activate toggle each flow: active becomes inactive" in words(out)
    assert "pin toggle each flow: pinned becomes unpinned" in words(out)
    assert "(to set a state: set-pinned --on/--off)" in words(out)


async def test_a_toggle_that_toggled_nothing_does_not_say_it_toggled() -> None:
    async with serve(flows=3) as server:
        code, out, _ = await run("activate", "2000", "--webhook", server.webhook_url(), *FAST)
        assert code == 1
        assert server.state.activations.total() == 0
    assert re.search(r"failed +1\n", out), out
    assert "toggled:" not in out


async def test_pin_says_it_toggles_and_points_to_set_pinned() -> None:
    async with serve(flows=3) as server:
        server.state.pins[(2, 1)] = True
        code, out, err = await run("pin", "2", "--webhook", server.webhook_url(), *FAST)
        assert code == 0, err
        assert server.state.pins[(2, 1)] is False
    assert out.startswith("pin (toggle): 1 flow\n")
    assert "toggled: pinned -> unpinned, unpinned -> pinned" in out
    assert "aiob24flow set-pinned --on/--off" in out and "flow 2: pinned=False" in out


async def test_summary_labels_ids_agrees_in_number_and_says_time_and_requests() -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url()
        code, out, _ = await run("activate", "1-3", "2000", "--webhook", url, *FAST)
        assert code == 1
        sent = server.state.requests
        assert out.startswith("activate (toggle): 4 flows\n")
        assert "  1 flow (FlowError: Flow with this ID does not exist.): id 2000\n" in out
        assert re.search(rf"\n  elapsed +\d+\.\d s, {sent} requests?\n", out), out
        code, out, _ = await run("activate", "11-13", "--webhook", url, *FAST)
        assert "3 flows (FlowError: Flow with this ID does not exist.): ids 11-13\n" in out
        code, out, _ = await run("get", "1", "--webhook", url, *FAST)
        assert out.startswith("get: 1 flow\n")
        assert re.search(r"\n  elapsed +\d+\.\d s, 1 request\n", out), out


async def test_get_quiet_prints_the_flows_and_nothing_else() -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url()
        code, out, err = await run("get", "1", "-q", "--webhook", url, *FAST)
        assert (code, out, err) == (0, "  flow 1: active=True name='Flow 1'\n", "")
        code, out, err = await run("get", "1", "99", "-q", "--webhook", url, *FAST)
        assert code == 1  # not all read: the summary says why, as without -q
        assert "flow 1: active=True" in out and re.search(r"failed +1\n", out)


async def test_get_notes_a_field_that_no_flow_has() -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url()
        args = ["get", "1", "2", "--fields", "active,nosuchfield,Active", "--webhook", url]
        code, out, err = await run(*args, *FAST)
        assert code == 0  # documented: a note, not an error (flows differ in their fields)
        assert "  flow 1: active=True\n" in out
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("aiob24flow: note: no flow returned")
        assert "'nosuchfield', 'Active'" in lines[0] and "case-sensitive" in lines[0]
        code, out, err = await run("get", "1", "--fields", "nosuchfield", "-q", "--webhook", url)
        assert (code, out, err) == (0, "  flow 1: (none of the fields asked)\n", "")


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
