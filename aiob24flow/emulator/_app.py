"""The emulated portal's HTTP side: an ``aiohttp.web`` application.

Routes (protocol.md §1): ``/rest/{user}/{code}/{method}`` (webhook), ``/rest/{method}``
(OAuth: ``Authorization: Bearer``, ``auth`` or ``access_token``), ``/oauth/token/`` (the
OAuth server). A request goes: parameters (the whole request is in) -> latency -> leaky
bucket (503) -> injected faults -> method lookup (404) -> auth (401) -> operating limit
(429) -> the method -> injected faults after executing -> ``{"result", "time"}``.

A request runs to its end even when its client hangs up first, as a portal's PHP does
(protocol.md §10, §11): the handler's work is a task of its own that a disconnect does not
cancel (with aiohttp's ``handler_cancellation`` on or off), and an answer nobody is there
to read is dropped quietly (``state.answers_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import time as _time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import attrs
from aiohttp import web

from ._php import (
    is_numeric,
    json_encode,
    parse_str,
    php_key,
    php_string,
    php_truthy,
    to_php_value,
)
from ._state import Faults, PortalConfig, PortalState, User

__all__ = ["ROUTES_KEY", "Portal", "portal_of"]

_NOT_IN_BATCH = frozenset({"batch", "download", "upload"})
_FLOW_ACTIONS = {"activate": "activate", "pin": "pin", "get": "get", "isexists": "isExists"}
# CRestUtil::processBatchElement: /\$(result|next|total|time|error)([^\s]*)/i, where \s is
# PCRE's ASCII whitespace; a path segment is [one or more characters].
_REF = re.compile(r"\$(result|next|total|time|error)([^ \t\n\r\f\v]*)", re.IGNORECASE)
_REF_SEGMENT = re.compile(r"\[([^\]]+)\]")

_log = logging.getLogger("aiob24flow.emulator")

PORTAL_KEY: web.AppKey[Portal] = web.AppKey("portal")
# Many portals on one port: the local address a request arrived on picks the portal.
ROUTES_KEY: web.AppKey[dict[str, Portal]] = web.AppKey("routes")
#: A route's work: the request and the portal it is for, to the answer.
_Handler = Callable[[web.Request, "Portal"], Awaitable[web.StreamResponse]]


def portal_of(request: web.Request) -> Portal:
    routes = request.app.get(ROUTES_KEY)
    if routes and request.transport is not None:
        sockname = request.transport.get_extra_info("sockname")
        if sockname and sockname[0] in routes:
            return routes[sockname[0]]
    return request.app[PORTAL_KEY]


class _Fail(Exception):
    """An error answer: HTTP status and the ``error``/``error_description`` body."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": code, "error_description": description}


def _flow_error(message: str, code: str = "0") -> _Fail:
    return _Fail(400, code, message)


@attrs.define
class _Caller:
    user: User
    entity: str
    scopes: frozenset[str]


def resolve(name: str) -> str | None:
    """The canonical method for ``name``, following the portal's case rules (§1.3)."""
    if name.lower() == "batch":
        return "batch"
    parts = name.split(".")
    if (
        len(parts) == 4
        and parts[0] == "tasks"
        and parts[1].lower() == "flow"
        and parts[2] == "Flow"
        and parts[3].lower() in _FLOW_ACTIONS
    ):
        return f"tasks.flow.Flow.{_FLOW_ACTIONS[parts[3].lower()]}"
    return None


def _requested(name: str) -> tuple[str | None, str, bool]:
    """The method a URL's last segment names, the name as looked up, and whether the
    answer is XML: the ``rest.server`` component's loop (§1.1, §1.3).

    The name is tried lowercased first, then as sent. Each try strips a ``.json``/``.xml``
    suffix compared exactly (``transportSupported``), so ``batch.JSON`` works (its lowercase
    try is ``batch.json``) and ``tasks.flow.Flow.activate.JSON`` is not found (the lowercase
    try fails on ``flow``, and ``JSON`` is no transport). The transport is not reset between
    tries: ``tasks.flow.Flow.activate.XML`` is not found, and says so in XML.
    """
    transport = "json"
    for attempt in (name.lower(), name):
        point = attempt.rfind(".")
        if point > 0 and attempt[point + 1 :] in ("json", "xml"):
            transport = attempt[point + 1 :]
            attempt = attempt[:point]
        method = resolve(attempt)
        if method is not None:
            return method, attempt, transport == "xml"
    return None, attempt, transport == "xml"


def _bind_flow_id(params: dict[Any, Any]) -> int:
    if "flowId" not in params:
        raise _flow_error("Could not find value for parameter {flowId}", "100")
    value = params["flowId"]
    if not is_numeric(value):
        if value is True:
            shown = "1"
        elif isinstance(value, dict):
            shown = "Array"
        elif value is None or value is False:
            shown = ""
        else:
            shown = str(value)
        raise _flow_error(
            f"Invalid value {{{shown}}} to match with parameter {{flowId}}. "
            "Should be value of type int.",
            "100",
        )
    return int(float(value)) if isinstance(value, str) else int(value)


class Portal:
    """One emulated Bitrix24 cloud portal: ``portal.state`` holds what happened."""

    def __init__(
        self,
        config: PortalConfig | None = None,
        *,
        clock: Callable[[], float] = _time.monotonic,
        wall_clock: Callable[[], float] = _time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or PortalConfig()
        #: How the portal waits (latency, hangs); tests may hold it to order events.
        self.sleep = sleep
        self.state = PortalState(self.config, clock=clock, wall_clock=wall_clock)
        #: Refuse webhook calls over plain HTTP, as a portal does (set by EmulatorServer).
        self.https_required = False
        #: Requests being handled, each a task that a client's disconnect does not cancel.
        self.running: set[asyncio.Task[web.StreamResponse]] = set()

    @property
    def faults(self) -> Faults:
        return self.config.faults

    def app(self) -> web.Application:
        app = web.Application()
        app[PORTAL_KEY] = self
        app.router.add_get("/_emulator/stats", _stats)
        app.router.add_route("*", "/oauth/token/", _token_endpoint)
        app.router.add_route("*", "/oauth/token", _token_endpoint)
        # The portal's URL templates allow a trailing "/" (protocol.md §1.1).
        for path in ("/rest/{user}/{code}/{method}", "/rest/{method}"):
            app.router.add_route("*", path, _rest)
            app.router.add_route("*", path + "/", _rest)
        app.on_cleanup.append(_stop_running)
        return app

    async def idle(self) -> None:
        """Wait until every request received so far has run to its end, answered or not
        (a request whose client hung up still runs, protocol.md §10)."""
        while self.running:
            await asyncio.wait(set(self.running))

    def start(self, request: web.Request, handler: _Handler) -> asyncio.Task[web.StreamResponse]:
        """Run one request as a task of the portal's (it outlives a client that hangs up)."""
        task = asyncio.ensure_future(_to_the_end(request, self, handler))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    # -- executing methods --------------------------------------------------------------

    def run(
        self, caller: _Caller, method: str, params: dict[Any, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Run one (non-batch) method: (result, time object) or raise ``_Fail``."""
        state = self.state
        if "task" not in caller.scopes:
            raise _Fail(
                401,
                "insufficient_scope",
                "The request requires higher privileges than provided by the webhook token",
            )
        if state.operating_blocked(caller.entity, method):
            state.refused_429 += 1
            raise _Fail(
                429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."
            )
        started = state.wall_clock()
        result = self._execute(caller.user, method, params)
        state.calls[method] += 1
        time = _time_object(started, state.wall_clock())
        time.update(state.bill(caller.entity, method, started))
        return result, time

    def _execute(self, user: User, method: str, params: dict[Any, Any]) -> Any:
        state = self.state
        action = method.rsplit(".", 1)[1]
        if action == "isExists":
            return {"exists": self._is_exists(params.get("flowData"))}
        flow_id = _bind_flow_id(params)
        if action == "activate":
            if not state.can_update(user, flow_id):
                raise _flow_error("Cannot find flow")
            flow = state.flows.get(flow_id)
            if flow is None:
                raise _flow_error("Flow with this ID does not exist.")
            flow.active = not flow.active
            state.activations[flow_id] += 1
            return True
        if action == "pin":
            if not state.can_read(user, flow_id):
                raise _flow_error("Cannot find flow")
            key = (flow_id, user.id)
            state.pins[key] = not state.pins.get(key, False)
            state.pin_calls[flow_id] += 1
            return state.pins[key]
        # get
        if not state.can_read(user, flow_id):
            raise _flow_error("Cannot find flow")
        flow = state.flows.get(flow_id)
        if flow is None:
            raise _flow_error("Flow with this ID does not exist.")
        return flow.to_array()

    def _is_exists(self, data: Any) -> bool:
        """``isExistsAction(FlowDto $flowData)`` (§2.6): another flow with this name?

        protocol.md gives no text for a missing name; this follows its S1 source. With no
        ``flowData`` the binder's closure finds nothing and the DI container builds an empty
        ``FlowDto``; ``FlowDto::createFromArray`` skips a value its typed property refuses
        (null, an array); either way ``validateName(true)`` finds ``name`` unset and throws
        ``InvalidArgumentException("name: cannot be null")`` -> ``"0"``, HTTP 400. An empty
        name is set, so it passes and exists nowhere. A ``flowData`` that is not an array
        (a plain string) makes ``createFromArray`` throw a TypeError in a path not traced:
        answered like a missing one (a guess).
        """
        fields = data if isinstance(data, dict) else {}
        name = fields.get("name")
        if name is None or isinstance(name, dict):
            raise _flow_error("name: cannot be null")
        own = fields.get("id")
        own_id = int(float(str(own))) if is_numeric(own) else 0  # int $id = 0 otherwise
        wanted = php_string(name)
        return any(
            (flow.name or f"Flow {flow.id}") == wanted and flow.id != own_id
            for flow in self.state.flows.values()
        )

    def run_batch(self, caller: _Caller, params: dict[Any, Any]) -> dict[str, Any]:
        upper = {str(k).upper(): v for k, v in params.items()}
        halt = php_truthy(upper.get("HALT"))
        cmd = upper.get("CMD")
        commands = cmd if isinstance(cmd, dict) else {}
        out: dict[str, dict[Any, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        for index, (key, command) in enumerate(commands.items()):
            if index >= 50:
                out["result_error"][key] = {
                    "error": "ERROR_BATCH_LENGTH_EXCEEDED",
                    "error_description": "Max batch length exceeded",
                }
                if halt:
                    break
                continue
            if not isinstance(command, str):
                continue  # the SDK-style {method, params} object is silently skipped
            # parse_url: the path is the method, the query what follows "?" up to "#" (§3.1).
            path, _, query = command.partition("?")
            path = path.partition("#")[0]
            query = query.partition("#")[0]
            sub_params = _substitute(parse_str(query), out)
            try:
                if path in _NOT_IN_BATCH:  # exact case (§3.2, §10)
                    raise _Fail(
                        200,
                        "ERROR_BATCH_METHOD_NOT_ALLOWED",
                        "Method is not allowed for batch usage",
                    )
                method = resolve(path)
                if method is None or method == "batch":
                    raise _Fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
                if "task" not in caller.scopes:
                    raise _Fail(401, "insufficient_scope", "")
                result, time = self.run(caller, method, sub_params)
            except _Fail as fail:
                out["result_error"][key] = fail.body
                if halt:
                    break
                continue
            out["result"][key] = result
            out["result_time"][key] = time
        return out


def _time_object(start: float, finish: float) -> dict[str, Any]:
    tz = datetime.timezone(datetime.timedelta(hours=3))
    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": finish - start,
        "date_start": datetime.datetime.fromtimestamp(start, tz).isoformat(timespec="seconds"),
        "date_finish": datetime.datetime.fromtimestamp(finish, tz).isoformat(timespec="seconds"),
    }


def _isset(node: Any, key: str | int) -> tuple[bool, Any]:
    """PHP's ``isset($node[$key])`` and the value: a null value is not set, and a string
    is indexed by character (an integer key only)."""
    if isinstance(node, dict):
        value = node.get(key)
        return value is not None, value
    if isinstance(node, str) and isinstance(key, int) and -len(node) <= key < len(node):
        return True, node[key]
    return False, None


def _substitute(params: Any, state: dict[str, dict[Any, Any]]) -> Any:
    """``$result[key][field]`` references to earlier commands of the batch (§3.3, §10),
    as ``CRestUtil::processBatchElement`` (S1 ``rest_util.php``) resolves them.

    The reference runs to the next whitespace (``[^\\s]*``), so ``$result[a][id]0`` is one
    reference to ``[a][id]`` and takes the value whole (§10's example: it binds 3). A value
    that is exactly one reference takes the referenced value as it is (an array, a bool);
    a reference inside longer text (``x$result[a][id]``, ``$result[a][id] 0``) is replaced
    by PHP's string of a number or string and left as text otherwise (§3.3). protocol.md
    §10 words this as "text around the reference is dropped"; §3.3 and the source say so
    only for the text the reference swallows. The walk starts at the batch state named in
    the reference as written: PHP array keys are case-sensitive, so ``$RESULT[a]`` (the
    regex is case-insensitive) finds nothing and stands for null.
    """
    if isinstance(params, dict):
        return {k: _substitute(v, state) for k, v in params.items()}
    if not isinstance(params, str) or "$" not in params:
        return params
    roots = {
        "result": state["result"],
        "next": state["result_next"],
        "total": state["result_total"],
        "time": state["result_time"],
        "error": state["result_error"],
    }
    value: Any = params
    for found in list(_REF.finditer(params)):
        segments = _REF_SEGMENT.findall(found.group(2))
        if not segments:
            continue  # "$result" with no [key]: left as it is
        node: Any = roots.get(found.group(1))  # exact case
        for segment in segments:
            present, child = _isset(node, php_key(segment))
            if not present:
                break  # stop at the deepest node that exists
            node = child
        if found.group(0) == value:
            value = node
        elif isinstance(value, str) and (is_numeric(node) or isinstance(node, str)):
            value = value.replace(found.group(0), php_string(node))
    return value


def _answer(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status,
        body=json_encode(body).encode(),
        content_type="application/json",
        charset="utf-8",
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Headers": "origin, content-type, accept",
            "X-Content-Type-Options": "nosniff",
        },
    )


# CDataXML::xmlspecialchars, in this order ("&" first, so nothing is escaped twice).
_XML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&apos;"))


def _xml(data: Any) -> str:
    """``CRestServer::outputXml``: one element per key, ``<item>`` for an int key, a
    scalar as PHP's string of it (so true is "1", false and null are empty)."""
    pairs = enumerate(data) if isinstance(data, (list, tuple)) else data.items()
    parts = []
    for key, value in pairs:
        tag = "item" if isinstance(key, int) else str(key)  # the key as it is, unchecked
        if isinstance(value, (dict, list, tuple)):
            inner = _xml(value)
        else:
            inner = php_string(value)
            for char, entity in _XML_ESCAPES:
                inner = inner.replace(char, entity)
        parts.append(f"<{tag}>{inner}</{tag}>")
    return "".join(parts)


def _answer_xml(status: int, body: Any) -> web.Response:
    """The ``.xml`` transport (§1.1). protocol.md does not show its form; this follows
    ``CRestServer::output``/``outputXml`` in its S1 source (``rest/classes/general/rest.php``):
    ``outputXml(['response' => $data])`` echoed as it is, with no XML declaration."""
    text = _xml({"response": body})
    return web.Response(
        status=status,
        body=text.encode(),
        content_type="text/xml",
        charset="utf-8",
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Headers": "origin, content-type, accept",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _fail(status: int, code: str, description: str) -> web.Response:
    return _answer(status, {"error": code, "error_description": description})


async def _read_params(request: web.Request) -> dict[Any, Any]:
    params: dict[Any, Any] = parse_str(request.query_string)
    if request.method != "POST":
        return params
    # CRestUtil::getRequestData compares the type exactly: "Application/JSON" is not JSON
    # and goes through parse_str like any other unknown type (§1.2).
    ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip()
    body: dict[Any, Any] = {}
    if ctype.lower() == "multipart/form-data":
        form = await request.post()  # ordinary POST fields (§1.2)
        pairs = [(k, v) for k, v in form.items() if isinstance(v, str)]
        params.update(parse_str(urlencode(pairs)))
        return params
    raw = await request.read()
    if ctype == "application/json":
        try:
            decoded = json.loads(raw) if raw else {}
            body = to_php_value(decoded) if isinstance(decoded, (dict, list)) else {}
        except ValueError:
            body = {}  # S1 swallows the decode error: only the query string remains
    elif raw:
        body = parse_str(raw.decode("utf-8", "replace"))
    params.update(body)  # array_replace: the body wins
    return params


def _authenticate(portal: Portal, request: web.Request, params: dict[Any, Any]) -> _Caller:
    state = portal.state
    user_part = request.match_info.get("user")
    if user_part is not None:
        if portal.https_required and not request.secure:
            # APAuth\Auth: webhooks need HTTPS (protocol.md §1.1; 401 in the source, §6).
            raise _Fail(401, "INVALID_REQUEST", "Https required.")
        code = request.match_info.get("code", "")
        user_id = int(user_part) if user_part.isdigit() else None
        if user_id is None or state.webhooks.get(user_id) != code:
            raise _Fail(401, "INVALID_CREDENTIALS", "Invalid request credentials")
        return _Caller(state.users[user_id], f"apauth:{user_id}", portal.config.webhook_scopes)
    token = None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
    for name in ("auth", "access_token"):
        value = params.pop(name, None)
        if token is None and isinstance(value, str):
            token = value
    if not token:
        raise _Fail(401, "NO_AUTH_FOUND", "Wrong authorization data")
    entry = state.access_tokens.get(token)
    if entry is None:
        # §10: a token the portal does not know (recorded text).
        raise _Fail(401, "invalid_token", "Unable to get application by token")
    if entry.expires_at <= state.wall_clock():
        raise _Fail(401, "expired_token", "The access token provided has expired.")  # §10
    return _Caller(state.users[entry.user_id], f"oauth:{entry.client_id}", entry.scope)


def _shielded(handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A route handler whose work goes on when the client hangs up (PHP's way, §10).

    aiohttp cancels a handler on disconnect when ``handler_cancellation`` is on (its test
    server turns it on); the work is a task of the portal's, awaited through
    ``asyncio.shield``, so the toggle still happens and only the answer is lost.
    """

    async def route(request: web.Request) -> web.StreamResponse:
        task = portal_of(request).start(request, handler)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.add_done_callback(_report_orphan)  # nobody else will see its error
            raise

    return route


async def _to_the_end(
    request: web.Request, portal: Portal, handler: _Handler
) -> web.StreamResponse:
    response = await handler(request, portal)
    if request.transport is None or request.transport.is_closing():
        # The client hung up: the request ran, its answer has nowhere to go. aiohttp's
        # write then fails with a ConnectionError, which it ignores quietly.
        portal.state.answers_lost += 1
    return response


def _report_orphan(task: asyncio.Task[web.StreamResponse]) -> None:
    """Log a failure of work whose handler was cancelled (nobody awaits it any more)."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, ConnectionError):
        _log.error("emulated request failed after its client hung up", exc_info=error)


async def _stop_running(app: web.Application) -> None:
    """On server cleanup, end the requests still running (a portal shutting down)."""
    portals = {app[PORTAL_KEY], *app.get(ROUTES_KEY, {}).values()}
    running = [task for portal in portals for task in portal.running]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def _read_params_or_none(request: web.Request) -> dict[Any, Any] | None:
    """The request's parameters, or None when the client hung up before sending all of
    it (a portal never starts such a request)."""
    try:
        return await _read_params(request)
    except ConnectionError:
        return None


def _gone() -> web.Response:
    """The answer to a request whose client is gone (aiohttp drops it quietly)."""
    return web.Response(status=400)


@_shielded
async def _rest(request: web.Request, portal: Portal) -> web.StreamResponse:
    state = portal.state
    config = portal.config
    state.requests += 1
    # The whole request is in before PHP starts, and a hang-up later does not undo it.
    params = await _read_params_or_none(request)
    if params is None:
        return _gone()
    if config.latency:
        await portal.sleep(config.latency)
    if request.method not in ("GET", "POST"):
        return _fail(405, "ERROR_METHOD_NOT_ALLOWED", "Method Not Allowed")
    if not state.admit():
        return _fail(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    method, name, xml = _requested(request.match_info["method"])
    answer = _answer_xml if xml else _answer
    state.requests_by_method[method or name] += 1
    fault = config.faults.draw(method or name, _command_methods(method, params))
    if fault:
        state.faults_fired[fault] += 1
    if fault == "limit_503":
        return _fail(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    if fault == "error_before":
        return _fail(500, "INTERNAL_SERVER_ERROR", "Internal server error")

    def execute() -> tuple[Any, dict[str, Any]]:
        # The method is looked up before the credentials are checked (§10, rest.php).
        if method is None:
            raise _Fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        caller = _authenticate(portal, request, params)
        if method == "batch":
            started = state.wall_clock()
            result: Any = portal.run_batch(caller, params)
            time = _time_object(started, state.wall_clock())
            time.update(operating_reset_at=int(started) + 600, operating=0)
            return result, time
        return portal.run(caller, method, params)

    if fault == "drop_then_run":
        # The client sees a disconnect now; PHP goes on and executes the request later.
        state.late_pending += 1

        def late() -> None:
            state.late_pending -= 1
            state.late_executed += 1
            with contextlib.suppress(_Fail):
                execute()

        asyncio.get_running_loop().call_later(config.faults.run_after, late)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    try:
        result, time = execute()
    except _Fail as fail:
        return answer(fail.status, fail.body)
    if fault == "error_after":
        return _fail(500, "INTERNAL_SERVER_ERROR", "Internal server error")
    if fault == "drop_after":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # no answer at all: the client sees a disconnect
    if fault == "hang_after":
        await portal.sleep(config.faults.hang_seconds)
    return answer(200, {"result": result, "time": time})


def _command_methods(method: str | None, params: dict[Any, Any]) -> frozenset[str]:
    """The canonical methods of a batch's commands (for fault filters)."""
    if method != "batch":
        return frozenset()
    cmd = next((v for k, v in params.items() if str(k).upper() == "CMD"), None)
    if not isinstance(cmd, dict):
        return frozenset()
    found = set()
    for command in cmd.values():
        if isinstance(command, str):
            resolved = resolve(command.partition("?")[0])
            if resolved is not None:
                found.add(resolved)
    return frozenset(found)


async def _stats(request: web.Request) -> web.StreamResponse:
    """What the portal recorded, for benchmarks driving an emulator in another process."""
    state = portal_of(request).state
    body = {
        "requests": state.requests,
        "requests_by_method": dict(state.requests_by_method),
        "calls": dict(state.calls),
        "refused_503": state.refused_503,
        "refused_429": state.refused_429,
        "faults_fired": dict(state.faults_fired),
        "activations": {str(k): v for k, v in state.activations.items()},
        "pin_calls": {str(k): v for k, v in state.pin_calls.items()},
        "late_executed": state.late_executed,
        "answers_lost": state.answers_lost,
        "refreshes": state.refreshes,
        "rejected_refreshes": state.rejected_refreshes,
    }
    return web.json_response(body)


@_shielded
async def _token_endpoint(request: web.Request, portal: Portal) -> web.StreamResponse:
    state = portal.state
    state.token_requests += 1
    params = await _read_params_or_none(request)
    if params is None:
        return _gone()
    fault = portal.config.faults.token_faults.pop(0) if portal.config.faults.token_faults else None
    if fault == "unavailable":
        return _fail(503, "temporarily_unavailable", "The server is temporarily unavailable")
    if fault == "hang":
        await portal.sleep(portal.config.faults.hang_seconds)
        return _fail(503, "temporarily_unavailable", "The server is temporarily unavailable")
    if fault == "invalid_grant":
        state.rejected_refreshes += 1
        return _answer(400, {"error": "invalid_grant"})
    grant_type = params.get("grant_type")
    if not isinstance(grant_type, str) or not php_truthy(grant_type):
        # Not in protocol.md. Bitrix's OAuth server module (Bitrix\OAuth\Base::
        # getClientParameters, the source of the recorded 'No "refresh_token" parameter
        # found') checks this first, with the text below; RFC 6749 §5.2 also makes a missing
        # parameter invalid_request.
        return _fail(400, "invalid_request", "Invalid grant_type parameter or parameter missing")
    if grant_type != "refresh_token":
        # Not recorded: a guess in the shape of the module's unsupported_grant_type.
        return _answer(400, {"error": "unsupported_grant_type"})
    if not params.get("refresh_token"):
        return _fail(400, "invalid_request", 'No "refresh_token" parameter found')  # §10
    status, body = state.refresh(
        str(params.get("client_id", "")),
        str(params.get("client_secret", "")),
        str(params.get("refresh_token", "")),
    )
    if "client_endpoint" in body:
        body["client_endpoint"] = f"{request.scheme}://{request.host}/rest/"
    if fault == "error_after":
        return _fail(500, "server_error", "Internal server error")
    if fault == "no_refresh_token" and status == 200:
        body = {k: v for k, v in body.items() if k != "refresh_token"}
    if fault == "echo":
        # A server that echoes the grant in its error text (secrets must not leak).
        token = str(params.get("refresh_token", ""))
        return _fail(400, "invalid_grant", f"Refresh token {token} is invalid")
    return _answer(status, body)
