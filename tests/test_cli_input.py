"""What the console script says about its input: ids files, ranges, repeated ids and
webhook URLs that are not quite webhooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CLI_SCRIPT, run_cli, serve

if not CLI_SCRIPT.exists():  # pragma: no cover - installed elsewhere
    pytest.skip("the aiob24flow console script is not installed", allow_module_level=True)

run = run_cli

FAST = ["--plan", "unlimited"]
SHAPE = "https://PORTAL/rest/USER_ID/WEBHOOK_CODE/"


async def test_a_bad_id_in_a_file_names_the_file_and_the_line(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n7x\n")
    async with serve(flows=10) as server:
        env = {"B24_WEBHOOK_URL": server.webhook_url()}
        code, out, err = await run("get", "--ids-file", str(ids), env=env)
        assert (code, out) == (2, "")
        assert err.startswith(f"aiob24flow: error: {ids}, line 3: bad flow id '7x'")
        code, _, err = await run("get", "-", env=env, stdin="1\n\n# comment\n2, 3-x\n")
        assert code == 2 and "standard input, line 4: bad flow id range '3-x'" in err
        assert server.state.requests == 0


async def test_a_csv_without_an_id_column_says_so_and_lists_its_columns(tmp_path: Path) -> None:
    csv = tmp_path / "flows.csv"
    csv.write_text('"Name","Owner"\n"a",4\n')
    code, out, err = await run(
        "get", "--ids-file", str(csv), "--webhook", "https://p.example/rest/1/x/"
    )
    assert (code, out) == (2, "")
    assert f"{csv}: the CSV header has no 'id' column (columns: Name, Owner)" in err
    assert len(err.splitlines()) == 1


async def test_a_range_over_the_limit_states_the_limit() -> None:
    code, out, err = await run("get", "1-100000000", "--webhook", "https://p.example/rest/1/x/")
    assert (code, out) == (2, "")
    assert "'1-100000000' names 100000000 ids; one range may name at most 1000000" in err


async def test_repeated_ids_are_dropped_and_counted_on_stderr() -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url()
        code, _, err = await run("activate", "1", "1", "2-4", "3", "--webhook", url, *FAST)
        assert code == 0
        assert err == "aiob24flow: note: 2 repeated flow ids dropped (each flow is sent once)\n"
        assert dict(server.state.activations) == {1: 1, 2: 1, 3: 1, 4: 1}
        code, _, err = await run("activate", "5", "5", "--webhook", url, *FAST, "-q")
        assert (code, err) == (0, "")  # --quiet keeps notes off


@pytest.mark.parametrize(
    "url",
    [
        "https://p.example/rest/1/",  # no code
        "https://p.example/SECRETCODE/",  # no /rest/
        "https://p.example/rest/SECRETCODE/",  # no user id
        "https://p.example/rest/1/SECRETCODE/tasks.flow.Flow.activate/more/",
    ],
)
async def test_a_webhook_that_is_not_one_names_the_option_and_the_shape(url: str) -> None:
    code, out, err = await run("activate", "1", "--webhook", url)
    assert (code, out) == (2, "")
    assert err == f"aiob24flow: error: --webhook is not a webhook URL: expected {SHAPE}" + (
        " (the portal's address, /rest/, your user id, the webhook code)\n"
    )
    code, _, err = await run("activate", "1", env={"B24_WEBHOOK_URL": url})
    assert code == 2 and "$B24_WEBHOOK_URL is not a webhook URL" in err
    assert "SECRETCODE" not in err


@pytest.mark.parametrize("method", ["tasks.flow.Flow.activate.json", "tasks.flow.Flow.activate"])
async def test_a_webhook_copied_with_a_method_is_trimmed_and_said_once(method: str) -> None:
    async with serve(flows=10) as server:
        url = server.webhook_url() + method
        code, out, err = await run("activate", "1", "--webhook", url, *FAST)
        assert code == 0, err
        assert server.state.activations[1] == 1
    base = url[: url.index("/rest/")] + "/rest/1/***/"
    assert err == f"aiob24flow: note: --webhook ended in the method name {method!r}: using {base}\n"
    assert "emulator-webhook-code-1" not in out + err
