"""``aiob24flow demo``: the README's run command.

Starts an emulated portal in-process (with injected faults), drives it through the real
client over a real socket, and prints what the client reported next to what the portal
recorded, so the two can be compared.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Awaitable
from typing import Any

from ..._argtypes import count
from ..._client import FlowClient
from ..._limiter import RateLimit
from ..._redact import redact
from ..._report import BulkReport
from ...emulator import EmulatorServer, Faults, Portal, PortalConfig, PortalState
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


#: The demo's pace: the shape of a real portal's bucket (50 requests, draining 2/s) made
#: small and fast, so that a run of a few hundred flows needs several times the burst and
#: the limiter's pacing shows within seconds. The emulated portal's bucket is the same.
PACE = RateLimit(burst=8, per_second=8)

_FAULTS = {
    "error_before": "HTTP 500 before running",
    "error_after": "HTTP 500 after running",
    "drop_after": "dropped after running",
}


def _doubles(before: collections.Counter[int], after: collections.Counter[int], ids: range) -> int:
    return sum(1 for i in ids if after[i] - before[i] > 1)


def _histogram(
    before: collections.Counter[int], after: collections.Counter[int], ids: range
) -> str:
    counts = collections.Counter(after[i] - before[i] for i in ids)
    return ", ".join(f"{n} toggle{'s' if n != 1 else ''}: {counts[n]}" for n in sorted(counts))


class _Steps:
    """The demo's three calls; each prints what the client reported and what the portal
    recorded, and counts flows one call toggled twice."""

    def __init__(self, client: FlowClient, state: PortalState) -> None:
        self.client = client
        self.state = state
        self.doubles = 0

    async def run(self, title: str, ids: range, call: Awaitable[BulkReport[Any]]) -> str:
        """Run ``call`` on ``ids``; print the summary; return the portal's toggle counts."""
        print(f"\n{title}")
        before = collections.Counter(self.state.activations)
        requests, started = self.client.stats().requests, time.monotonic()
        self.report = await call
        self.doubles += _doubles(before, self.state.activations, ids)
        print("\n".join(summary_lines(self.report)))
        took = time.monotonic() - started
        print(f"  {self.client.stats().requests - requests} requests in {took:.1f}s")
        self.before = before
        return _histogram(before, self.state.activations, ids)

    async def all(self, flows: int) -> None:
        client, state, ids = self.client, self.state, range(1, flows + 1)
        title = (
            f"1) set_active(all {flows}, False): read, toggle what differs, "
            "re-read after lost answers"
        )
        counts = await self.run(title, ids, client.set_active(ids, False))
        print(f"  portal: active now {sum(state.active_states().values())}; per flow {counts}")
        half = range(1, flows // 2 + 1)
        title = (
            f"2) activate_many(flows 1-{len(half)}, verify=True): "
            "each toggled exactly once, nothing left unknown"
        )
        counts = await self.run(title, half, client.activate_many(half, verify=True))
        print(f"  portal: per flow {counts}")
        title = (
            f"3) activate_many(flows 1-{len(half)}) without verify: "
            "lost answers are reported as unknown, never re-sent"
        )
        counts = await self.run(title, half, client.activate_many(half))
        unknown = self.report.unknown
        toggled = sum(1 for i in unknown if state.activations[i] > self.before[i])
        print(
            f"  portal: per flow {counts}; of the unknown, {toggled} did toggle and "
            f"{len(unknown) - toggled} did not"
        )


def _fired(state: PortalState) -> str:
    fired = state.faults_fired
    parts = [f"{count} {_FAULTS.get(name, name)}" for name, count in fired.items() if count]
    return f"{sum(fired.values())}" + (f" ({', '.join(parts)})" if parts else "")


async def run_demo(flows: int = 600, faults: bool = True, seed: int = 2026) -> int:
    fault_plan = (
        Faults(seed=seed, error_before=0.08, error_after=0.06, drop_after=0.06)
        if faults
        else Faults()
    )
    config = PortalConfig(
        flows=flows,
        active_ratio=0.5,
        seed=seed,
        burst=PACE.burst,
        leak=PACE.per_second,
        faults=fault_plan,
    )
    started = time.monotonic()
    async with EmulatorServer(Portal(config)) as server:
        state = server.state
        print(f"aiob24flow demo: emulated portal at {redact(server.webhook_url())}")
        print(f"  {flows} flows, {sum(state.active_states().values())} active")
        print(
            f"  rate limit: burst {PACE.burst:g} + {PACE.per_second:g}/s, in the portal and "
            "in the client (a real portal's is 50 + 2/s)"
        )
        if faults:
            print(
                "  injected faults per request: 8% HTTP 500 before running, "
                "6% HTTP 500 after running, 6% connection dropped after running"
            )
        async with FlowClient.from_webhook(server.webhook_url(), rate_limit=PACE) as client:
            steps = _Steps(client, state)
            await steps.all(flows)
            stats = client.stats()
        print(
            f"\ndone in {time.monotonic() - started:.1f}s: {stats.requests} requests "
            f"carrying {stats.commands} commands, {stats.retries} retries"
        )
        print(
            f"  pacing: {stats.requests} requests, {PACE.burst:g} at once at most: the client's "
            f"limiter held the rest back ({stats.limiter_wait_seconds:.1f}s of waits in all); "
            f"the portal refused {state.refused_503} for its rate limit"
        )
        print(f"  faults that fired: {_fired(state)}")
        print(f"flows toggled twice by one call (a blind re-send would do that): {steps.doubles}")
    return 0
