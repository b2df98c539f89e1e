"""Bitrix24 ``batch``: encoding commands the way PHP parses them, and reading the answer.

Each command travels as ``"method?query"`` where ``query`` is parsed by PHP ``parse_str``:
nested values use bracket syntax (``flowData[name]=x``). Encoding follows PHP
``http_build_query``: ``True``/``False`` become ``1``/``0``, ``None`` and empty
containers are left out (PHP drops them too).

The answer's five ``result_*`` members may each be a JSON object, a JSON list (keys
``0..n-1``) or ``[]`` (an empty PHP array); ``BatchResult`` reads all of them as maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union
from urllib.parse import quote_plus

import attrs

from . import _json
from ._errors import B24Error, ServerError, error_from_envelope
from ._validate import check_method

__all__ = [
    "MAX_COMMANDS",
    "BatchResult",
    "BulkAnswer",
    "Command",
    "Commands",
    "encode_command",
    "loads_bulk_answer",
    "normalize_commands",
    "parse_batch",
    "parse_bulk",
    "php_query",
]

MAX_COMMANDS = 50

Command = tuple[str, Mapping[str, Any] | None]
Commands = Union[Mapping[str, Command], Sequence[Command]]  # noqa: UP007 (runtime alias, 3.10)


def php_query(params: Mapping[str, Any]) -> str:
    """Encode ``params`` like PHP ``http_build_query`` (so ``parse_str`` reads them back)."""
    pairs: list[str] = []

    def walk(name: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool):
            pairs.append(f"{quote_plus(name)}={'1' if value else '0'}")
        elif isinstance(value, (int, float, str)):
            pairs.append(f"{quote_plus(name)}={quote_plus(str(value))}")
        elif isinstance(value, Mapping):
            for sub, item in value.items():
                walk(f"{name}[{sub}]", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{name}[{index}]", item)
        else:
            raise TypeError(f"params[{name!r}] has unsupported type {type(value).__name__}")

    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"params keys must be str, got {key!r}")
        walk(key, value)
    return "&".join(pairs)


def encode_command(method: str, params: Mapping[str, Any] | None) -> str:
    query = php_query(params) if params else ""
    return f"{method}?{query}" if query else method


def normalize_commands(commands: Commands) -> tuple[list[str], list[str], list[str]]:
    """Validate ``commands``; return (wire keys, methods, encoded cmd strings).

    Raises before anything is sent: ``TypeError`` for wrong types, ``ValueError`` for an
    empty batch, more than 50 commands, or a bad key or method.
    """
    if isinstance(commands, Mapping):
        items: list[tuple[str, Any]] = []
        for key, command in commands.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"commands: keys must be non-empty str, got {key!r}")
            items.append((key, command))
    elif isinstance(commands, Sequence) and not isinstance(commands, (str, bytes)):
        items = [(str(index), command) for index, command in enumerate(commands)]
    else:
        raise TypeError(
            f"commands must be a mapping or a sequence of (method, params), "
            f"got {type(commands).__name__}"
        )
    if not items:
        raise ValueError("commands: a batch needs at least one command")
    if len(items) > MAX_COMMANDS:
        raise ValueError(f"commands: at most {MAX_COMMANDS} per batch, got {len(items)}")
    keys, methods, cmds = [], [], []
    for key, command in items:
        where = f"commands[{key!r}]"
        if not isinstance(command, (tuple, list)) or len(command) != 2:
            raise TypeError(f"{where} must be a (method, params) pair, got {command!r}")
        method = check_method(command[0], f"{where}: method")
        params = command[1]
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"{where}: params must be a mapping or None")
        keys.append(key)
        methods.append(method)
        cmds.append(encode_command(method, params))
    return keys, methods, cmds


def as_map(value: Any) -> dict[str, Any]:
    """A ``result_*`` member as a map: ``[]`` → {}, a list → {"0": .., "1": ..}."""
    if isinstance(value, dict):
        return value  # decoded JSON: the keys are str already
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


@attrs.frozen
class BatchResult:
    """The per-command outcome of one ``batch`` request.

    ``results`` maps command keys to their results, ``errors`` to their ``B24Error``
    (with ``.key`` set). ``not_run`` lists keys absent from both: with ``halt`` on, the
    commands after the first error. ``times`` holds each command's ``time`` object when the
    portal sent one. Keys are the caller's: str keys for a mapping, int indexes for a list.
    """

    results: dict[Any, Any]
    errors: dict[Any, B24Error]
    not_run: tuple[Any, ...] = ()
    times: dict[Any, dict[str, Any]] = attrs.field(factory=dict, repr=False)
    totals: dict[Any, Any] = attrs.field(factory=dict, repr=False)
    nexts: dict[Any, Any] = attrs.field(factory=dict, repr=False)
    time: dict[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when every command succeeded."""
        return not self.errors and not self.not_run

    def __getitem__(self, key: Any) -> Any:
        """The result of ``key``, or raise its error."""
        if key in self.errors:
            raise self.errors[key]
        return self.results[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


def parse_batch(
    result: Any,
    top_time: Mapping[str, Any],
    wire_keys: Sequence[str],
    methods: Sequence[str],
    user_keys: Sequence[Any],
) -> BatchResult:
    """Fold a batch answer's ``result`` member into a ``BatchResult``."""
    body = result if isinstance(result, dict) else {}
    results = as_map(body.get("result"))
    errors = as_map(body.get("result_error"))
    times = as_map(body.get("result_time"))
    totals = as_map(body.get("result_total"))
    nexts = as_map(body.get("result_next"))
    out_results: dict[Any, Any] = {}
    out_errors: dict[Any, B24Error] = {}
    out_times: dict[Any, dict[str, Any]] = {}
    out_totals: dict[Any, Any] = {}
    out_nexts: dict[Any, Any] = {}
    not_run: list[Any] = []
    for wire, method, user in zip(wire_keys, methods, user_keys, strict=True):
        if wire in errors and wire in results:
            # The portal says both: it may have run. Never report that as "not applied".
            out_errors[user] = ServerError(
                "command is in both result and result_error", method=method, key=str(user)
            )
        elif wire in errors:
            out_errors[user] = error_from_envelope(
                errors[wire], status=None, method=method, key=str(user)
            )
        elif wire in results:
            out_results[user] = results[wire]
            if isinstance(times.get(wire), dict):
                out_times[user] = times[wire]
            if wire in totals:
                out_totals[user] = totals[wire]
            if wire in nexts:
                out_nexts[user] = nexts[wire]
        else:
            not_run.append(user)
    return BatchResult(
        out_results,
        out_errors,
        tuple(not_run),
        out_times,
        out_totals,
        out_nexts,
        dict(top_time),
    )


@attrs.frozen
class BulkAnswer:
    """A bulk batch's answer, read only as far as a job needs it (keys are wire keys).

    ``results`` and ``errors`` are the raw members (an error is built only for a key that
    failed); per-command ``time`` objects are not copied: the last one is enough for the
    operating budget.
    """

    results: dict[str, Any]
    errors: dict[str, Any]
    method: str
    last_time: dict[str, Any] | None

    def error(self, key: str) -> B24Error | None:
        raw = self.errors.get(key)
        if raw is None:
            return None
        if key in self.results:  # in both maps: it may have run
            return ServerError(
                "command is in both result and result_error", method=self.method, key=key
            )
        return error_from_envelope(raw, status=None, method=self.method, key=key)


def parse_bulk(result: Any, method: str) -> BulkAnswer:
    body = result if isinstance(result, dict) else {}
    times = body.get("result_time")
    last: Any = None
    if isinstance(times, dict) and times:
        last = next(reversed(times.values()))
    elif isinstance(times, list) and times:
        last = times[-1]
    return BulkAnswer(
        as_map(body.get("result")),
        as_map(body.get("result_error")),
        method,
        last if isinstance(last, dict) else None,
    )


# A bulk batch answer is mostly per-command ``time`` objects (about 12 KB of floats and
# dates for 50 commands) of which a job reads only the last. The portal sends them as
# the last member of ``result``, followed by the top-level ``time``:
#   {"result":{"result":{..},"result_error":..,"result_time":{"k":{..},..,"k":{..}}},"time":{..}}
# ``loads_bulk_answer`` decodes the parts around them and the last one only, and falls
# back to decoding everything whenever the answer has any other shape.
_RESULT_TIME = b',"result_time":{"'
_TOP_TIME = b',"time":{'
# Everything but the characters that give JSON its nesting (strings hold no backslash
# here, so every quote opens or closes a string).
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'{}[]"')


def loads_bulk_answer(body: bytes) -> Any:
    """Decode a bulk batch answer; ``result_time`` keeps only its last entry."""
    lean = _lean_answer(body)
    return lean if lean is not None else _json.loads(body)


def _flat_entries_then_close(times: bytes) -> bool:
    """``times`` is ``,"result_time":{"k":{..},..}}``: an object of flat objects that all
    have the same keys and string positions, then the close of ``result``."""
    if b"\\" in times:
        return False
    shape = times.translate(None, _NOT_STRUCTURE)  # e.g. ""{""{""""..}""{""""..}}}
    one = shape[3 : shape.find(b"}") + 1]  # the first entry's shape: ""{""..""}
    if len(one) < 4 or one.count(b"{") != 1 or not one.startswith(b'""{'):
        return False
    count, rest = divmod(len(shape) - 5, len(one))
    return not rest and shape == b'""{' + one * count + b"}}"


def _lean_answer(body: bytes) -> dict[str, Any] | None:
    cut = body.find(_RESULT_TIME)
    top = body.rfind(_TOP_TIME)
    if cut < 0 or top < cut:
        return None
    times = body[cut:top]
    if not _flat_entries_then_close(times):
        return None
    try:
        # Each part is valid JSON only if the cut fell where the shape says: inside the
        # top-level "result" object (head) and at the top level (tail).
        head = _json.loads(body[:cut] + b"}}")
        tail = _json.loads(b"{" + body[top + 1 :])
        last = _json.loads(times[times.rfind(b"{") : -2])
    except ValueError:
        return None
    if not (isinstance(head, dict) and isinstance(tail, dict) and isinstance(last, dict)):
        return None
    result = head.get("result")
    if not head or next(reversed(head)) != "result" or not isinstance(result, dict):
        return None
    result["result_time"] = {"last": last}
    head.update(tail)
    return head
