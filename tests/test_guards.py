"""Guards found by a mutation study (issue 23): each test here fails if one of the
library's safety decisions is flipped, and asserts on what the portal recorded.

1. Convergence budgets: ``set_active`` / ``verify=True`` toggle a flow exactly
   ``max_rounds`` (``RetryPolicy.attempts``) times, never once more, and ``set_pinned``
   pins at most ``2 * max_rounds + 1`` times and gives up after ``max_rounds`` lost
   answers; ``unknown`` holds the error of the last send.

No test sleeps for real except where a socket timeout is the thing under test.
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from typing import Any

import pytest

import aiob24flow as b24
from aiob24flow.emulator import EmulatorServer, Faults, Portal, PortalConfig
from tests.conftest import no_sleep

ACTIVATE = "tasks.flow.Flow.activate"
PIN = "tasks.flow.Flow.pin"
PORTAL_LIMIT = b24.Timeout().portal_limit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Recorder:
    """An injected ``sleep=``: records every pause and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def long(self) -> list[float]:
        """The pauses that waited for a lost request to finish at the portal."""
        return [s for s in self.pauses if s > PORTAL_LIMIT / 2]


class Parked:
    """An injected ``sleep=`` that records, then waits until the call is interrupted."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.entered = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.entered.set()
        await asyncio.get_running_loop().create_future()  # only a cancellation ends it


def webhook_client(server: EmulatorServer, **kwargs: Any) -> b24.FlowClient:
    kwargs.setdefault("rate_limit", b24.RateLimit.unlimited())
    kwargs.setdefault("sleep", no_sleep)
    return b24.FlowClient.from_webhook(server.webhook_url(), **kwargs)


# -- 1. convergence budgets -----------------------------------------------------------


class ContestedPortal(Portal):
    """The emulator with someone fighting over some flows (another admin; for pins, the
    same user in another tab).

    Just before each of our toggles of a contested flow executes, they put it in the
    state we want (``want[flow_id]``), so our toggle moves it away again; they use the UI,
    not REST, so ``activations`` / ``pin_calls`` count only our toggles. Such a flow never
    converges: the client's budget is all that bounds its toggles. ``toggled_at`` keeps
    the loop time at which each of our toggles ran.
    """

    def __init__(self, config: PortalConfig, want: dict[int, bool]) -> None:
        super().__init__(config)
        self.want = want
        self.toggled_at: defaultdict[int, list[float]] = defaultdict(list)

    def run(self, caller: Any, method: str, params: dict[Any, Any]) -> tuple[Any, dict[str, Any]]:
        if method not in (ACTIVATE, PIN):
            return super().run(caller, method, params)
        flow_id = int(params["flowId"])
        if flow_id in self.want:
            if method == ACTIVATE:
                self.state.flows[flow_id].active = self.want[flow_id]
            else:
                self.state.pins[(flow_id, caller.user.id)] = self.want[flow_id]
        answer = super().run(caller, method, params)
        self.toggled_at[flow_id].append(asyncio.get_running_loop().time())
        return answer


def assert_last_error(portal: ContestedPortal, flow_id: int, error: b24.B24Error) -> None:
    """``error`` is the lost answer of the flow's last toggle, not of an earlier one."""
    assert isinstance(error, b24.ResponseLost) and error.may_have_run
    times = portal.toggled_at[flow_id]
    assert error.sent_at is not None and error.sent_at <= times[-1]
    if len(times) > 1:
        assert error.sent_at > times[-2]  # it left after the previous toggle had run


def lose_answers(method: str) -> Faults:
    """Every request carrying ``method`` runs, then its connection is cut: no answer."""
    return Faults(drop_after=1.0, methods=frozenset({method}))


@pytest.mark.parametrize("max_rounds", [1, 3])
async def test_set_active_toggles_a_flow_exactly_max_rounds_times(max_rounds: int) -> None:
    # 1-6 are active and should be inactive; 2, 4, 6 are contested; 7, 8 are already off.
    # Every toggle runs and its answer is lost.
    portal = ContestedPortal(
        PortalConfig(flows=8, leak=None, faults=lose_answers(ACTIVATE)),
        want={2: False, 4: False, 6: False},
    )
    for flow_id in (7, 8):
        portal.state.flows[flow_id].active = False
    sleep = Recorder()
    async with EmulatorServer(portal) as server, webhook_client(server, sleep=sleep) as client:
        report = await client.set_active(range(1, 9), False, max_rounds=max_rounds)
    acts = portal.state.activations
    assert {i: acts[i] for i in range(1, 9)} == {
        1: 1, 2: max_rounds, 3: 1, 4: max_rounds, 5: 1, 6: max_rounds, 7: 0, 8: 0
    }  # fmt: skip
    assert report.succeeded == dict.fromkeys([1, 3, 5, 7, 8], False)
    assert report.changed == (1, 3, 5) and not report.failed
    assert list(report.unknown) == [2, 4, 6]
    for flow_id, error in report.unknown.items():
        assert_last_error(portal, flow_id, error)
    assert portal.state.faults_fired["drop_after"] == max_rounds
    # Each lost round waited until its request must have finished before re-sending.
    assert len(sleep.long()) == max_rounds


async def test_verify_toggles_a_flow_at_most_retry_attempts_times() -> None:
    attempts = 3
    config = PortalConfig(
        flows=8, leak=None, active_ratio=0.5, seed=7, faults=lose_answers(ACTIVATE)
    )
    before = Portal(config).state.active_states()  # the same seed: the same flows
    contested = (2, 5, 7)
    portal = ContestedPortal(config, want={i: not before[i] for i in contested})
    assert portal.state.active_states() == before
    sleep = Recorder()
    async with (
        EmulatorServer(portal) as server,
        webhook_client(server, sleep=sleep, retry=b24.RetryPolicy(attempts=attempts)) as client,
    ):
        report = await client.activate_many(range(1, 9), verify=True)
    acts = portal.state.activations
    for flow_id in range(1, 9):
        assert acts[flow_id] == (attempts if flow_id in contested else 1)
    assert list(report.unknown) == list(contested) and not report.failed
    assert report.succeeded == {i: True for i in range(1, 9) if i not in contested}
    for flow_id, error in report.unknown.items():
        assert_last_error(portal, flow_id, error)
    # The toggles that converged did flip their flows.
    for flow_id in report.succeeded:
        assert portal.state.flows[flow_id].active is not before[flow_id]
    assert len(sleep.long()) == attempts


@pytest.mark.parametrize("max_rounds", [1, 2])
async def test_set_pinned_gives_up_after_max_rounds_lost_answers(max_rounds: int) -> None:
    portal = ContestedPortal(PortalConfig(flows=5, leak=None, faults=lose_answers(PIN)), want={})
    portal.state.pins[(3, 1)] = True  # pinned already: its answers are lost all the same
    sleep = Recorder()
    async with EmulatorServer(portal) as server, webhook_client(server, sleep=sleep) as client:
        report = await client.set_pinned(range(1, 6), True, max_rounds=max_rounds)
    assert dict(portal.state.pin_calls) == dict.fromkeys(range(1, 6), max_rounds)
    assert list(report.unknown) == [1, 2, 3, 4, 5] and not report.succeeded
    for flow_id, error in report.unknown.items():
        assert_last_error(portal, flow_id, error)
    # A lost pin is sent again only once the lost one must have finished.
    assert len(sleep.long()) == max_rounds


async def test_set_pinned_pins_a_flow_at_most_twice_max_rounds_plus_one_times() -> None:
    # No answer is lost; 1 and 2 are contested (each of our pins answers "unpinned"),
    # 3 and 4 converge at once, 5 is pinned already (its first pin unpins it).
    max_rounds = 2
    portal = ContestedPortal(PortalConfig(flows=5, leak=None), want={1: True, 2: True})
    portal.state.pins[(5, 1)] = True
    async with EmulatorServer(portal) as server, webhook_client(server) as client:
        report = await client.set_pinned(range(1, 6), True, max_rounds=max_rounds)
    cap = 2 * max_rounds + 1
    assert dict(portal.state.pin_calls) == {1: cap, 2: cap, 3: 1, 4: 1, 5: 2}
    assert report.succeeded == {3: True, 4: True, 5: True} and report.changed == (3, 4)
    # Out of budget: accounted once and never as succeeded; their last answers said
    # "unpinned", and so does the portal. (Today the report files them ``failed`` with
    # ``Stopped`` "stopped before pinning again" while ``on_progress`` counted them
    # ``unknown`` "did not converge": converge_pinned leaves them in ``pending``.)
    assert sorted([*report.failed, *report.unknown]) == [1, 2]
    assert portal.state.pins[(1, 1)] is False and portal.state.pins[(2, 1)] is False
