"""``aiob24flow demo``: the README's run command.

Starts an emulated portal in-process (with injected faults), drives it through the real
client over a real socket, and prints what the client reported next to what the portal
recorded, so the two can be compared.
"""

from __future__ import annotations

import argparse
import collections
import time

from ..._argtypes import count
from ..._client import FlowClient
from ..._limiter import RateLimit
from ..._redact import redact
from ...emulator import EmulatorServer, Faults, Portal, PortalConfig
from .._report import summary_lines
from .._run import Subparsers, run_loop

__all__ = ["register", "run_demo"]


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run a bulk job against a built-in emulated portal")
    parser.add_argument(
        "--flows", type=count(1, 1_000_000), default=600, help="flows in the emulated portal"
    )
    parser.add_argument("--no-faults", action="store_true", help="no injected faults")
    parser.add_argument("--seed", type=count(0), default=2026, help="seed for states and faults")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    return run_loop(run_demo(flows=args.flows, faults=not args.no_faults, seed=args.seed))


def _doubles(before: collections.Counter[int], after: collections.Counter[int], ids: range) -> int:
    return sum(1 for i in ids if after[i] - before[i] > 1)


def _histogram(
    before: collections.Counter[int], after: collections.Counter[int], ids: range
) -> str:
    counts = collections.Counter(after[i] - before[i] for i in ids)
    return ", ".join(f"{n} toggle{'s' if n != 1 else ''}: {counts[n]}" for n in sorted(counts))


async def run_demo(flows: int = 600, faults: bool = True, seed: int = 2026) -> int:
    fault_plan = (
        Faults(seed=seed, error_before=0.08, error_after=0.06, drop_after=0.06)
        if faults
        else Faults()
    )
    config = PortalConfig(
        flows=flows, active_ratio=0.5, seed=seed, burst=50, leak=2.0, faults=fault_plan
    )
    limit = RateLimit.standard()
    ids = range(1, flows + 1)
    doubles = 0
    started = time.monotonic()
    async with EmulatorServer(Portal(config)) as server:
        state = server.state
        print(f"aiob24flow demo: emulated portal at {redact(server.webhook_url())}")
        print(
            f"  {flows} flows, {sum(state.active_states().values())} active; "
            f"rate limit burst {limit.burst:g} + {limit.per_second:g}/s"
        )
        if faults:
            print(
                "  injected faults per request: 8% HTTP 500 before running, "
                "6% HTTP 500 after running, 6% connection dropped after running"
            )
        async with FlowClient.from_webhook(server.webhook_url(), rate_limit=limit) as client:
            print(
                f"\n1) set_active(all {flows}, False): read, toggle what differs, "
                "re-read after lost answers"
            )
            before = collections.Counter(state.activations)
            report = await client.set_active(ids, False)
            doubles += _doubles(before, state.activations, ids)
            print("\n".join(summary_lines(report)))
            print(
                f"  portal: active now {sum(state.active_states().values())}; "
                f"per flow {_histogram(before, state.activations, ids)}"
            )

            half = range(1, flows // 2 + 1)
            print(
                f"\n2) activate_many(flows 1-{len(half)}, verify=True): "
                "each toggled exactly once, nothing left unknown"
            )
            before = collections.Counter(state.activations)
            report = await client.activate_many(half, verify=True)
            doubles += _doubles(before, state.activations, half)
            print("\n".join(summary_lines(report)))
            print(f"  portal: per flow {_histogram(before, state.activations, half)}")

            print(
                f"\n3) activate_many(flows 1-{len(half)}) without verify: "
                "lost answers are reported as unknown, never re-sent"
            )
            before = collections.Counter(state.activations)
            report = await client.activate_many(half)
            doubles += _doubles(before, state.activations, half)
            print("\n".join(summary_lines(report)))
            toggled = sum(1 for i in report.unknown if state.activations[i] > before[i])
            print(
                f"  portal: per flow {_histogram(before, state.activations, half)}; "
                f"of the unknown, {toggled} did toggle and "
                f"{len(report.unknown) - toggled} did not"
            )
            stats = client.stats()
        print(
            f"\ndone in {time.monotonic() - started:.1f}s: {stats.requests} requests "
            f"carrying {stats.commands} commands, {stats.retries} retries, "
            f"{state.refused_503} refused by the portal's rate limit"
        )
        print(f"flows toggled twice by one call (a blind re-send would do that): {doubles}")
    return 0
