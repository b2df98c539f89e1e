"""The emulated portal's data: flows, users, pins, tokens, buckets and counters.

Everything a test wants to assert on lives here: ``activations[flow_id]`` is how many
times a flow really toggled, ``pin_calls`` how many times a pin really ran, and so on.
"""

from __future__ import annotations

import collections
import math
import random
import secrets
import time as _time
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Faults", "Flow", "PortalConfig", "PortalState", "User"]


@attrs.define
class Faults:
    """Seeded fault injection, drawn once per REST request (batch = one request).

    ``error_before``: HTTP 500 INTERNAL_SERVER_ERROR, nothing executed;
    ``error_after``: executed, then HTTP 500;
    ``drop_after``: executed, then the connection is closed with no answer;
    ``hang_after``: executed, then the answer waits ``hang_seconds`` (read timeouts);
    ``limit_503``: HTTP 503 QUERY_LIMIT_EXCEEDED, nothing executed;
    ``drop_then_run``: the connection is closed with no answer at once, and the request
    executes ``run_after`` seconds later, as PHP finishes a request whose client went
    away (protocol.md §10).
    ``methods`` limits faults to these REST methods (canonical names, ``batch`` included;
    a batch also matches the methods of its commands); None means every method.
    ``token_faults`` is a queue for the OAuth endpoint, one entry
    per refresh request: ``"unavailable"`` (503 temporarily_unavailable, not consumed),
    ``"hang"`` (waits ``hang_seconds``, not consumed), ``"invalid_grant"``, ``"error_after"``
    (rotated, then HTTP 500), ``"no_refresh_token"`` (rotated, then a 200 answer without
    ``refresh_token``), ``"echo"`` (rotated, then a 400 whose text repeats the token).
    """

    seed: int = 0
    error_before: float = 0.0
    error_after: float = 0.0
    drop_after: float = 0.0
    hang_after: float = 0.0
    hang_seconds: float = 5.0
    limit_503: float = 0.0
    drop_then_run: float = 0.0
    run_after: float = 2.0
    methods: frozenset[str] | None = None
    token_faults: list[str] = attrs.field(factory=list)
    _rng: random.Random = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self, method: str, commands: frozenset[str] = frozenset()) -> str | None:
        if (
            self.methods is not None
            and method not in self.methods
            and not (commands & self.methods)
        ):
            return None
        r = self._rng.random()
        for name in (
            "limit_503",
            "error_before",
            "error_after",
            "drop_after",
            "hang_after",
            "drop_then_run",
        ):
            p = float(getattr(self, name))
            if r < p:
                return name
            r -= p
        return None


@attrs.define
class User:
    id: int
    admin: bool = False
    extranet: bool = False


@attrs.define
class Flow:
    id: int
    active: bool = True
    owner_id: int = 1
    creator_id: int = 1
    for_all: bool = True
    members: set[int] = attrs.field(factory=set)
    name: str = ""

    def to_array(self) -> dict[str, Any]:
        """``Flow::toArray()``: the ``tasks.flow.Flow.get`` result."""
        return {
            "id": self.id,
            "creatorId": self.creator_id,
            "ownerId": self.owner_id,
            "groupId": 0,
            "templateId": 0,
            "efficiency": 100,
            "active": self.active,
            "plannedCompletionTime": 7200,
            "activity": "2026-01-01T12:00:00+00:00",
            "name": self.name or f"Flow {self.id}",
            "description": "",
            "distributionType": "queue",
            "responsibleList": [["user", str(self.owner_id)]],
            "demo": False,
            "responsibleCanChangeDeadline": False,
            "matchWorkTime": True,
            "matchSchedule": False,
            "taskControl": False,
            "notifyAtHalfTime": False,
            "notifyOnQueueOverflow": None,
            "notifyOnTasksInProgressOverflow": None,
            "notifyWhenEfficiencyDecreases": None,
            "taskCreators": [["meta-user", "all-users"]] if self.for_all else [],
            "team": [["user", str(self.owner_id)]],
            "trialFeatureEnabled": False,
        }


@attrs.define
class PortalConfig:
    """How the emulated portal behaves.

    ``flows`` flows with ids 1..flows exist (except ``missing``); ``active_ratio`` of them
    start active (seeded). ``burst``/``leak`` shape the leaky bucket (``leak=None``: no
    limit). ``latency`` seconds pass before each request is handled. ``call_cost``
    gives simulated execution seconds per call of a method, feeding the operating limit
    (``operating_limit`` seconds per 600 s window). ``token_lifetime`` is the access-token
    life in seconds. The webhooks: user 1 (admin) and user 2 (not admin).
    """

    flows: int = 1000
    missing: frozenset[int] = frozenset()
    active_ratio: float = 1.0
    seed: int = 0
    burst: float = 50.0
    leak: float | None = 2.0
    latency: float = 0.0
    operating_limit: float = 480.0
    call_cost: dict[str, float] = attrs.field(factory=dict)
    token_lifetime: float = 3600.0
    faults: Faults = attrs.field(factory=Faults)
    webhook_scopes: frozenset[str] = frozenset({"task"})
    client_id: str = "local.emulator.app"
    client_secret: str = "emulator-client-secret"


@attrs.define
class _Token:
    user_id: int
    client_id: str
    expires_at: float
    scope: frozenset[str]


class PortalState:
    def __init__(
        self,
        config: PortalConfig,
        *,
        clock: Callable[[], float] = _time.monotonic,
        wall_clock: Callable[[], float] = _time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        rng = random.Random(config.seed)
        self.flows: dict[int, Flow] = {}
        for flow_id in range(1, config.flows + 1):
            active = rng.random() < config.active_ratio
            if flow_id not in config.missing:
                self.flows[flow_id] = Flow(flow_id, active=active)
        self.users = {1: User(1, admin=True), 2: User(2)}
        self.webhooks = {1: "emulator-webhook-code-1", 2: "emulator-webhook-code-2"}
        self.pins: dict[tuple[int, int], bool] = {}
        # What really happened, for tests.
        self.requests = 0
        self.requests_by_method: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.activations: collections.Counter[int] = collections.Counter()
        self.pin_calls: collections.Counter[int] = collections.Counter()
        self.refused_503 = 0
        self.refused_429 = 0
        self.faults_fired: collections.Counter[str] = collections.Counter()
        self.late_pending = 0  # dropped requests that will still execute
        self.late_executed = 0
        self.answers_lost = 0  # requests that ran while their client had hung up
        # The leaky bucket.
        self._level = 0.0
        self._level_at = clock()
        # OAuth.
        self.access_tokens: dict[str, _Token] = {}
        self.refresh_tokens: dict[str, tuple[int, str, str, frozenset[str]]] = {}
        self.spent_refresh_tokens: set[str] = set()
        self.refreshes = 0
        self.rejected_refreshes = 0
        self.token_requests = 0
        # Operating time: (entity, method) -> [(wall time, seconds)].
        self.operating: dict[tuple[str, str], list[tuple[float, float]]] = {}

    # -- the leaky bucket ---------------------------------------------------------------

    def admit(self) -> bool:
        """Add one request to the bucket, or refuse it (a refused one adds nothing)."""
        leak = self.config.leak
        if leak is None:
            return True
        now = self.clock()
        self._level = max(0.0, self._level - (now - self._level_at) * leak)
        self._level_at = now
        if self._level + 1.0 > self.config.burst + 1e-9:
            self.refused_503 += 1
            return False
        self._level += 1.0
        return True

    def bucket_level(self) -> float:
        leak = self.config.leak or 0.0
        return max(0.0, self._level - (self.clock() - self._level_at) * leak)

    # -- flows --------------------------------------------------------------------------

    def can_update(self, user: User, flow_id: int) -> bool:
        if user.admin:
            return True
        flow = self.flows.get(flow_id)
        return flow is not None and user.id in (flow.owner_id, flow.creator_id)

    def can_read(self, user: User, flow_id: int) -> bool:
        if user.admin:
            return True
        flow = self.flows.get(flow_id)
        if flow is None:
            return False
        return (flow.for_all and not user.extranet) or user.id in flow.members

    def active_states(self) -> dict[int, bool]:
        return {flow_id: flow.active for flow_id, flow in self.flows.items()}

    # -- OAuth --------------------------------------------------------------------------

    def issue_tokens(self, user_id: int = 1, scope: str = "task") -> dict[str, Any]:
        """Install the app for ``user_id``: a fresh token pair, as the token endpoint
        answers it."""
        return self._new_pair(user_id, self.config.client_id, frozenset(scope.split(",")))

    def _new_pair(self, user_id: int, client_id: str, scope: frozenset[str]) -> dict[str, Any]:
        access = secrets.token_hex(16)
        refresh = secrets.token_hex(16)
        now = self.wall_clock()
        lifetime = self.config.token_lifetime
        self.access_tokens[access] = _Token(user_id, client_id, now + lifetime, scope)
        self.refresh_tokens[refresh] = (user_id, client_id, access, scope)
        # Key order and types as recorded from live token answers (protocol.md §10).
        return {
            "access_token": access,
            "expires": int(now + lifetime),
            # An integer, as portals send it; a fractional test lifetime rounds up, so a
            # client learns of the expiry from the portal rather than refreshing early.
            "expires_in": math.ceil(lifetime),
            "scope": ",".join(sorted(scope)),
            "domain": "oauth.bitrix.info",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "status": "L",
            "client_endpoint": "",  # set by the token endpoint from the portal's address
            "member_id": "emulator-member-id",
            "user_id": user_id,
            "refresh_token": refresh,
        }

    def refresh(
        self, client_id: str, client_secret: str, refresh_token: str
    ) -> tuple[int, dict[str, Any]]:
        """The token endpoint: rotate a refresh token (single use)."""
        # Recorded shapes (protocol.md §10): a wrong client_id is a 200 with an error, a
        # wrong secret and a spent or unknown token are 400s without a description.
        if client_id != self.config.client_id:
            return 200, {"error": "wrong_client"}
        if client_secret != self.config.client_secret:
            return 400, {"error": "invalid_client"}
        entry = self.refresh_tokens.pop(refresh_token, None)
        if entry is None:
            self.rejected_refreshes += 1
            return 400, {"error": "invalid_grant"}
        user_id, app, old_access, scope = entry
        self.spent_refresh_tokens.add(refresh_token)
        self.access_tokens.pop(old_access, None)  # the chain must not branch
        self.refreshes += 1
        return 200, self._new_pair(user_id, app, scope)

    # -- operating time -----------------------------------------------------------------

    def operating_blocked(self, entity: str, method: str) -> bool:
        return self._operating_sum(entity, method) > self.config.operating_limit

    def _operating_sum(self, entity: str, method: str) -> float:
        now = self.wall_clock()
        spans = self.operating.get((entity, method))
        if not spans:
            return 0.0
        spans[:] = [s for s in spans if s[0] + 600 > now]
        return sum(cost for _, cost in spans)

    def bill(self, entity: str, method: str, started: float) -> dict[str, Any]:
        """Record a call's execution time; return the ``operating`` keys for ``time``."""
        cost = self.config.call_cost.get(method, 0.0)
        if cost > 0.1:  # minimalFixTime
            self.operating.setdefault((entity, method), []).append((started, cost))
        spans = self.operating.get((entity, method))
        total = self._operating_sum(entity, method)
        # operating_reset_at: when the oldest minute of the window expires; with nothing
        # billed yet, this call's start + 600 (protocol.md §4.2, §10).
        first = min(s[0] for s in spans) if spans else started
        return {
            "operating_reset_at": int(first) + 600,
            "operating": round(total, 6) if total else 0,
        }
