"""The charts of docs/benchmarks.md, as SVG files in docs/img/.

    python -m pip install -r benchmarks/requirements.txt   # matplotlib (and fast_bitrix24)
    python benchmarks/charts.py            # both charts (the pacing run takes ~30 s)
    python benchmarks/charts.py --scale    # only the scale chart (no run)

- ``pacing.svg``: a job of 5,000 toggles (100 batch requests) on the standard plan (burst
  50, 2/s) against the emulated portal, run here in-process; every answer the portal sends
  is recorded as it leaves (200: admitted, 503: refused), for aiob24flow and, when it is
  installed, fast_bitrix24 told the same burst and rate. Without fast_bitrix24 the chart
  shows aiob24flow against the portal's bucket alone, and says so.
- ``scale.svg``: CPU and peak memory per flow at 10k, 100k and 1M flows, read from the
  ``bench_scale.py`` results recorded in benchmarks/README.md (nothing is re-run: the 1M
  rows take most of an hour).

The SVGs are deterministic for the same data (no dates, a fixed hash salt).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMG = ROOT / "docs" / "img"
README = HERE / "README.md"

N, BURST, RATE = 5000, 50, 2.0  # the pacing job: the standard plan
WEBHOOK_CODE = "emulator-webhook-code-1"

# -- the scale figures, from benchmarks/README.md ----------------------------------------

SCALE_ROW = re.compile(
    r"^(?P<label>\S+)\s+N=\s*(?P<n>\d+)\s+cpu/flow=\s*(?P<cpu>[\d.]+)us.*?"
    r"peak/flow=\s*(?P<peak>\d+)B",
    re.M,
)
SCALE_SERIES = ("activate_many", "set_active", "get_many", "get_many(fields)", "fast_bitrix24")


def scale_figures(text: str) -> dict[str, dict[int, tuple[float, int]]]:
    """label -> {N: (cpu us per flow, peak bytes per flow)}, from the ``bench_scale.py``
    section of benchmarks/README.md."""
    start = text.index("### `bench_scale.py`")
    end = text.index("### ", start + 4)
    figures: dict[str, dict[int, tuple[float, int]]] = {}
    for m in SCALE_ROW.finditer(text[start:end]):
        figures.setdefault(m["label"], {})[int(m["n"])] = (float(m["cpu"]), int(m["peak"]))
    return figures


# -- the pacing run -----------------------------------------------------------------------


async def record_job(client_name: str) -> list[tuple[float, int]]:
    """(seconds since the job started, HTTP status) of every answer the portal sent."""
    from aiohttp import web

    from aiob24flow.emulator import Portal, PortalConfig

    portal = Portal(PortalConfig(flows=N, burst=BURST, leak=RATE))
    app = portal.app()
    answers: list[tuple[float, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        if "/rest/" in request.path:
            answers.append((time.monotonic(), response.status))

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
    t0 = time.monotonic()
    try:
        if client_name == "aiob24flow":
            await run_aiob24flow(url)
        else:
            await run_fast_bitrix24(url)
    finally:
        await runner.cleanup()
    return [(t - t0, status) for t, status in answers]


async def run_aiob24flow(url: str) -> None:
    import aiob24flow as b24

    limit = b24.RateLimit(burst=BURST, per_second=RATE)
    async with b24.FlowClient.from_webhook(url, rate_limit=limit) as client:
        report = await client.activate_many(range(1, N + 1))
    print(f"aiob24flow: {report!r}", file=sys.stderr)


async def run_fast_bitrix24(url: str) -> None:
    import logging

    from fast_bitrix24 import BitrixAsync

    logging.getLogger("fast_bitrix24").setLevel(logging.CRITICAL)  # its retries' tracebacks

    client = BitrixAsync(url, verbose=False, respect_velocity_policy=True,
                         request_pool_size=BURST, requests_per_second=RATE)  # fmt: skip
    items = [{"flowId": i} for i in range(1, N + 1)]
    try:
        await client.call("tasks.flow.Flow.activate", items)
        print("fast_bitrix24: finished", file=sys.stderr)
    except Exception as exc:  # what it raises when it gives up
        print(f"fast_bitrix24: {type(exc).__name__}: {str(exc)[:80]}", file=sys.stderr)


def fast_bitrix24_available() -> bool:
    try:
        import fast_bitrix24  # noqa: F401
    except ImportError:
        return False
    return True


def per_second(answers: list[tuple[float, int]], status: int, seconds: int) -> list[int]:
    counts = [0] * seconds
    for t, s in answers:
        if s == status and int(t) < seconds:
            counts[int(t)] += 1
    return counts


# -- drawing --------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        sys.exit("charts.py needs matplotlib: pip install -r benchmarks/requirements.txt")
    matplotlib.use("svg")
    matplotlib.rcParams.update({"svg.hashsalt": "aiob24flow", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False})  # fmt: skip
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


def draw_pacing(runs: dict[str, list[tuple[float, int]]]) -> None:
    plt = _pyplot()
    minimum = (math.ceil(N / 50) - BURST) / RATE
    seconds = int(minimum) + 3
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
    xs = list(range(seconds))
    colours = {"aiob24flow": "tab:blue", "fast_bitrix24": "tab:orange"}
    width = 0.4 if len(runs) > 1 else 0.8
    for k, (name, answers) in enumerate(runs.items()):
        offset = (k - (len(runs) - 1) / 2) * width
        admitted = per_second(answers, 200, seconds)
        top.bar([x + offset for x in xs], admitted, width, color=colours[name],
                label=f"{name}: admitted (200)")  # fmt: skip
        refused = per_second(answers, 503, seconds)
        if any(refused):
            top.bar([x + offset for x in xs], refused, width, bottom=admitted, color="tab:red",
                    label=f"{name}: refused (503)")  # fmt: skip
        times = sorted(t for t, s in answers if s == 200)
        bottom.step([0.0, *times, float(seconds)], [*range(len(times) + 1), len(times)],
                    where="post", color=colours[name],
                    label=f"{name}: requests admitted")  # fmt: skip
        if len(times) < N // 50:
            never = N - 50 * len(times)
            bottom.annotate(f"{name} gave up: {never:,} flows never toggled",
                            (seconds * 0.3, len(times)), xytext=(0, -16),
                            textcoords="offset points", color=colours[name])  # fmt: skip
    bucket_x = [0.0, minimum + 2]
    bucket_y = [BURST, BURST + RATE * (minimum + 2)]
    bottom.plot(bucket_x, bucket_y, "--", color="grey",
                label=f"the portal's bucket: {BURST} at once, then {RATE:g}/s")  # fmt: skip
    top.set_yscale("log")
    top.set_ylim(0.8, 120)
    top.set_yticks([1, 2, 5, 10, 20, 50, 100], ["1", "2", "5", "10", "20", "50", "100"])
    top.minorticks_off()
    top.set_ylabel("requests per second")
    top.set_title(f"{N:,} toggles ({N // 50} batch requests) on the standard plan")
    top.legend(loc="upper right", frameon=False)
    bottom.set_ylabel("requests admitted, in all")
    bottom.set_xlabel("seconds since the job started")
    bottom.set_ylim(0, N // 50 + 10)
    bottom.legend(loc="upper left", frameon=False)
    if "fast_bitrix24" not in runs:
        fig.text(0.01, 0.005, "fast_bitrix24 was not installed: aiob24flow alone, against "
                 "the bucket", fontsize=8)  # fmt: skip
    _save(fig, "pacing.svg")


def draw_scale(figures: dict[str, dict[int, tuple[float, int]]]) -> None:
    plt = _pyplot()
    fig, (cpu, mem) = plt.subplots(1, 2, figsize=(8.5, 3.6))
    for label in SCALE_SERIES:
        rows = sorted(figures[label].items())
        ns = [n for n, _ in rows]
        style = "--" if label == "fast_bitrix24" else "-"
        cpu.plot(ns, [c for _, (c, _) in rows], style, marker="o", label=label)
        mem.plot(ns, [p for _, (_, p) in rows], style, marker="o", label=label)
    for ax in (cpu, mem):
        ax.set_xscale("log")
        ax.set_xticks([10_000, 100_000, 1_000_000], ["10k", "100k", "1M"])
        ax.minorticks_off()
        ax.set_xlabel("flows in the job")
    cpu.set_ylabel("client CPU per flow (µs)")
    cpu.set_ylim(bottom=0)
    mem.set_yscale("log")
    ticks = [100, 200, 500, 1000, 2000, 5000]
    mem.set_yticks(ticks, [f"{t:,} B" for t in ticks])
    mem.minorticks_off()
    mem.set_ylabel("peak memory per flow")
    fig.suptitle("Cost per flow (bench_scale.py, benchmarks/README.md)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    handles, labels = cpu.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    _save(fig, "scale.svg")


def main() -> int:
    parser = argparse.ArgumentParser(description="Draw docs/img/pacing.svg and scale.svg.")
    parser.add_argument("--scale", action="store_true", help="only the scale chart (no run)")
    args = parser.parse_args()
    draw_scale(scale_figures(README.read_text(encoding="utf-8")))
    if not args.scale:
        runs = {"aiob24flow": asyncio.run(record_job("aiob24flow"))}
        if fast_bitrix24_available():
            runs["fast_bitrix24"] = asyncio.run(record_job("fast_bitrix24"))
        else:
            print("fast_bitrix24 is not installed: charting aiob24flow alone", file=sys.stderr)
        draw_pacing(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
