"""The ``aiob24flow`` command line (also ``python -m aiob24flow``).

Exit codes: 0 everything done, 1 some flows failed or are unknown, 2 usage error,
130 interrupted (Ctrl-C; the report of what happened to every flow is printed first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TextIO, TypeVar

import attrs

from ._argtypes import OneLineParser, count, non_negative, positive
from ._auth import DEFAULT_TOKEN_URL
from ._client import FlowClient
from ._errors import (
    AuthError,
    B24Error,
    MethodNotFound,
    RefreshFailed,
    Unreachable,
    is_systemic,
)
from ._job import Progress
from ._limiter import RateLimit
from ._redact import redact
from ._report import BulkReport
from ._store import FileTokenStore, RedisTokenStore
from ._tokens import OAuthTokens, TokenStore
from ._validate import MAX_FLOW_ID
from ._version import __version__

__all__ = ["main", "parse_ids"]

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A one-line error about the command line; exit code 2."""


# -- flow ids -------------------------------------------------------------------------------


_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"


def _flow_id(text: str, token: str) -> int:
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_FLOW_ID:
        raise UsageError(
            f"bad flow id {token!r} (expected an integer from 1 to 2**63-1, or FROM-TO)"
        )
    return int(text)


def _expand(token: str) -> Iterator[int]:
    token = token.strip()
    if not token:
        return
    if "-" in token[1:]:
        low, _, high = token.partition("-")
        if not (_DIGITS.fullmatch(low) and _DIGITS.fullmatch(high)):
            raise UsageError(f"bad flow id range {token!r} (expected FROM-TO)")
        start, end = _flow_id(low, token), _flow_id(high, token)
        if end < start:
            raise UsageError(f"bad flow id range {token!r}")
        if end - start > 1_000_000:
            raise UsageError(f"flow id range {token!r} is too large")
        yield from range(start, end + 1)
        return
    yield _flow_id(token, token)


def parse_ids(
    tokens: Sequence[str], files: Sequence[str], stdin: TextIO | None = None
) -> list[int]:
    """Flow ids from arguments (``5``, ``100-250``, ``-`` for stdin) and files (``-`` for
    stdin), in order, duplicates dropped.

    Files (and stdin) hold ids separated by white space or commas; blank lines and ``#``
    comments are skipped, and a first line that is not ids is a header. A CSV header with
    several columns picks the column named ``id`` (any case; else the first).
    """
    texts: list[str] = []
    stdin_read = False

    def read_stdin() -> str:
        nonlocal stdin_read
        if stdin_read:
            raise UsageError("standard input can be read only once (- given twice)")
        stdin_read = True
        try:
            return (stdin or sys.stdin).read()
        except UnicodeDecodeError:
            raise UsageError("cannot read standard input: not UTF-8 text") from None

    for token in tokens:
        if token == "-":
            texts.extend(_id_lines(read_stdin(), "standard input"))
        else:
            texts.extend(token.replace(",", " ").split())
    for path in files:
        if path == "-":
            texts.extend(_id_lines(read_stdin(), "standard input"))
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                content = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read {path}: not UTF-8 text") from None
        texts.extend(_id_lines(content, path))
    ids = list(dict.fromkeys(flow_id for text in texts for flow_id in _expand(text)))
    if not ids:
        raise UsageError("no flow ids given (arguments, --ids-file or - for stdin)")
    return ids


def _looks_like_ids(line: str) -> bool:
    first = line.replace(",", " ").split()[0]
    return bool(re.fullmatch(r"[0-9]+(-[0-9]+)?", first))


def _id_lines(content: str, where: str) -> list[str]:
    """The id tokens of a file: comments, blank lines and one header line dropped."""
    tokens: list[str] = []
    column: int | None = None
    seen_content = False
    for number, raw in enumerate(content.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not seen_content:
            seen_content = True
            if not _looks_like_ids(line):  # a header line
                cells = [c.strip().strip('"').lower() for c in line.split(",")]
                if len(cells) > 1:
                    column = cells.index("id") if "id" in cells else 0
                continue
        if column is not None:
            cells = line.split(",")
            if column >= len(cells):
                raise UsageError(f"{where}: line {number} has no column {column + 1}")
            tokens.append(cells[column].strip().strip('"'))
        else:
            tokens.extend(line.replace(",", " ").split())
    return tokens


# -- credentials ----------------------------------------------------------------------------


class TokenFile:
    """OAuth tokens in a JSON file, rewritten atomically after every refresh.

    A symlink is followed: its target is rewritten, the link stays. ``check_writable``
    runs before the first request, so a refresh never spends the refresh token and then
    fails to keep its successor.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.save_error: BaseException | None = None
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read OAuth token file {path}: {_oneline(exc)}") from None
        if not isinstance(data, dict):
            raise UsageError(f"OAuth token file {path} must hold a JSON object")
        self.data: dict[str, Any] = data
        for key in ("endpoint", "access_token", "refresh_token"):
            if not isinstance(self.data.get(key), str):
                raise UsageError(f"OAuth token file {path} lacks {key!r}")

    @property
    def target(self) -> str:
        return os.path.realpath(self.path)

    def check_writable(self) -> None:
        target = self.target
        directory = os.path.dirname(target)
        if not os.access(target, os.W_OK) or not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(
                f"OAuth token file {self.path} cannot be rewritten (its directory "
                f"{directory} must be writable): a refresh would lose the new tokens"
            )

    def tokens(self) -> OAuthTokens:
        try:
            return OAuthTokens.from_json(self.data)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"OAuth token file {self.path}: {_oneline(exc)}") from None


def _oneline(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return redact(" ".join(str(text).split()))


def _rate_limit(args: argparse.Namespace) -> RateLimit:
    presets = {
        "standard": RateLimit.standard,
        "enterprise": RateLimit.enterprise,
        "unlimited": RateLimit.unlimited,
    }
    limit = presets[args.plan]()
    backend = None
    if args.redis:
        from ._redis import RedisLimiter

        backend = _with_redis("--redis", lambda: RedisLimiter(args.redis))
    try:
        return RateLimit(
            burst=args.burst if args.burst is not None else limit.burst,
            per_second=args.per_second if args.per_second is not None else limit.per_second,
            headroom=args.headroom if args.headroom is not None else limit.headroom,
            backend=backend,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


T = TypeVar("T")


def _with_redis(option: str, make: Callable[[], T]) -> T:
    """Build what ``option`` names; a missing package or a bad URL is a usage error."""
    try:
        return make()
    except ImportError:
        raise UsageError(
            f"{option} needs the redis package: pip install 'aiob24flow[redis]'"
        ) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad {option} URL: {_oneline(exc)}") from None


class _CliFileStore(FileTokenStore):
    """The ``--oauth`` file as a shared store; remembers a failed rewrite for the report."""

    def __init__(self, file: TokenFile) -> None:
        super().__init__(file.path)
        self._file = file

    def _dump(self, data: dict[str, Any]) -> None:
        try:
            super()._dump(data)
        except BaseException as exc:
            self._file.save_error = exc
            raise


def _token_store(args: argparse.Namespace, file: TokenFile) -> TokenStore:
    """``--oauth FILE``: the file itself, locked across processes on this machine;
    with ``--oauth-redis URL``: a Redis hash under ``--oauth-key`` (seeded from FILE)."""
    if not args.oauth_redis:
        return _CliFileStore(file)
    return _with_redis("--oauth-redis", lambda: RedisTokenStore(args.oauth_redis, args.oauth_key))


def make_client(args: argparse.Namespace, store: TokenFile | None = None) -> FlowClient:
    common: dict[str, Any] = {
        "rate_limit": _rate_limit(args),
        "concurrency": args.concurrency,
        # The CLI honours HTTPS_PROXY / NO_PROXY like other command-line HTTP tools.
        "trust_env": True,
        "proxy": args.proxy,
    }
    if args.ca_bundle:
        if not os.path.isfile(args.ca_bundle):
            raise UsageError(f"--ca-bundle {args.ca_bundle}: no such file")
        common["ssl"] = args.ca_bundle
    webhook = args.webhook or os.environ.get("B24_WEBHOOK_URL")
    try:
        if args.oauth:
            store = store or TokenFile(args.oauth)
            return FlowClient.from_oauth(
                store.data["endpoint"],
                store.tokens(),
                store=_token_store(args, store),
                client_id=store.data.get("client_id"),
                client_secret=store.data.get("client_secret"),
                token_url=store.data.get("token_url") or DEFAULT_TOKEN_URL,
                **common,
            )
        if args.oauth_redis:
            raise UsageError(
                "--oauth-redis needs --oauth FILE for the endpoint and client credentials"
            )
        if webhook:
            return FlowClient.from_webhook(webhook, **common)
    except (TypeError, ValueError) as exc:
        raise UsageError(redact(str(exc))) from None
    raise UsageError("no credentials: pass --webhook URL, set B24_WEBHOOK_URL, or --oauth FILE")


# -- output ---------------------------------------------------------------------------------


def _error_json(error: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(error).__name__, "description": redact(str(error))}
    if isinstance(error, B24Error):
        out = {
            "type": type(error).__name__,
            "code": error.code,
            "description": redact(error.description),
            "status": error.status,
            "may_have_run": error.may_have_run,
        }
        cause = error.__cause__
        if cause is not None:
            out["cause"] = {"type": type(cause).__name__, "description": _describe(cause)}
    return out


def _describe(error: BaseException) -> str:
    if isinstance(error, B24Error):
        return redact(error.description or error.code)
    return redact(str(error))


def systemic_cause(report: BulkReport[Any]) -> B24Error | None:
    """The error that ended the job for every flow, if one did."""
    for error in report.failed.values():
        for candidate in (error, error.__cause__):
            if isinstance(candidate, B24Error) and is_systemic(candidate):
                return candidate
    return None


def systemic_line(error: B24Error) -> str:
    """One clear line for an error that every flow would meet."""
    root = error.__cause__ if isinstance(error, RefreshFailed) else error
    text = redact(f"{type(root).__name__}: {_describe(root) if root else ''}")
    if isinstance(error, (AuthError,)):
        return f"the portal refused the credentials: {text}"
    if isinstance(error, MethodNotFound):
        return f"the portal does not know the method: {text}"
    if isinstance(error, Unreachable):
        return f"cannot reach the portal: {text}"
    if isinstance(error, RefreshFailed):
        return f"no valid OAuth token (the refresh failed): {text}"
    return f"the job ended: {text}"


JSON_SCHEMA = 1  # bump on any incompatible change of report_json (and say so in CHANGELOG)


def report_json(
    report: BulkReport[Any],
    client: FlowClient | None = None,
    *,
    command: str = "",
    dry_run: bool = False,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The ``--json`` document; README's "JSON output" section describes every field."""
    out: dict[str, Any] = {
        "schema": JSON_SCHEMA,
        "command": command,
        "dry_run": dry_run,
        "interrupted": interrupted,
        "summary": report.summary(),
        "succeeded": {str(k): v for k, v in report.succeeded.items()},
        "changed": list(report.changed),
        "failed": {str(k): _error_json(v) for k, v in report.failed.items()},
        "unknown": {str(k): _error_json(v) for k, v in report.unknown.items()},
    }
    if client is not None:
        out["stats"] = attrs.asdict(client.stats())
    return out


def _reason(error: BaseException) -> str:
    if isinstance(error, B24Error):
        return redact(f"{type(error).__name__}: {error.description or error.code}")
    return redact(f"{type(error).__name__}: {error}")


def id_ranges(ids: Sequence[int], limit: int = 160) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3 7"``, cut at ``limit`` characters."""
    parts: list[str] = []
    ordered = sorted(ids)
    start = prev = ordered[0] if ordered else 0
    for flow_id in [*ordered[1:], None]:
        if flow_id is not None and flow_id == prev + 1:
            prev = flow_id
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if flow_id is not None:
            start = prev = flow_id
    text = " ".join(parts) if ordered else ""
    return text if len(text) <= limit else text[: limit - 4].rsplit(" ", 1)[0] + " ..."


def summary_lines(report: BulkReport[Any], *, changed_label: str = "changed") -> list[str]:
    s = report.summary()
    lines = [f"  {'total':<12} {s['total']:>7}", f"  {'succeeded':<12} {s['succeeded']:>7}"]
    if report.changed or changed_label != "changed":
        lines.append(f"  {changed_label:<12} {s['changed']:>7}")
    for label, part in (("failed", report.failed), ("unknown", report.unknown)):
        lines.append(f"  {label:<12} {len(part):>7}")
        by_reason: dict[str, list[int]] = {}
        for flow_id, error in part.items():
            by_reason.setdefault(_reason(error), []).append(flow_id)
        ranked = sorted(by_reason.items(), key=lambda item: -len(item[1]))
        for reason, flow_ids in ranked[:8]:
            lines.append(f"    {len(flow_ids):>6} x {reason}: {id_ranges(flow_ids)}")
    return lines


class _ProgressBar:
    """A rich progress bar on a terminal; nothing otherwise (or with --quiet)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import Progress as RichProgress
        except ImportError:  # the [cli] extra is not installed: no bar
            return
        # On stderr, so that stdout stays the report alone (it may be redirected).
        self._progress = RichProgress(transient=True, console=Console(stderr=True))
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> Callable[[Progress], None] | None:
        if self._progress is None:
            return None
        self._progress.start()
        return self.update

    def update(self, progress: Progress) -> None:
        self._progress.update(self._task, completed=progress.done)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# -- commands -------------------------------------------------------------------------------


async def _run_bulk(args: argparse.Namespace, out: TextIO) -> int:
    ids = parse_ids(args.ids, args.ids_file)
    store = TokenFile(args.oauth) if args.oauth else None
    if store is not None and not args.oauth_redis:
        store.check_writable()
    client = make_client(args, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted = False
    main_task = asyncio.current_task()

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: stop waiting for what is on the wire
            if main_task is not None:
                main_task.cancel()
            return
        interrupted = True
        stop.set()
        print(
            "\ninterrupted: sending no new batch; waiting for those in flight "
            "(Ctrl-C again to stop at once)...",
            file=sys.stderr,
        )

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    show_bar = not args.quiet and not args.json and sys.stderr.isatty()
    try:
        async with client:
            with _ProgressBar(show_bar, len(ids), args.command) as on_progress:
                report = await _dispatch(client, args, ids, on_progress, stop)
            try:
                _print_report(args, ids, report, client, out, interrupted=interrupted)
                out.flush()
            except BrokenPipeError:
                # The reader went away (``| head``): not an error of the job. Keep Python
                # from complaining again when it flushes stdout at exit.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    if store is not None and store.save_error is not None:
        spent = client.stats().refreshes > 0
        tail = (
            "The old refresh token is spent: authorize the application again."
            if spent
            else "The refresh token was not used: fix the file and run again."
        )
        print(
            f"aiob24flow: error: the OAuth token file {store.path} could not be rewritten "
            f"({_oneline(store.save_error)}); sending stopped. {tail}",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    if interrupted:
        return EXIT_INTERRUPTED
    cause = systemic_cause(report)
    if cause is not None:
        print(f"aiob24flow: {systemic_line(cause)}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


def _print_report(
    args: argparse.Namespace,
    ids: list[int],
    report: BulkReport[Any],
    client: FlowClient,
    out: TextIO,
    *,
    interrupted: bool = False,
) -> None:
    if args.json:
        document = report_json(
            report,
            client,
            command=args.command,
            dry_run=getattr(args, "dry_run", False),
            interrupted=interrupted,
        )
        json.dump(document, out, indent=2)
        out.write("\n")
        return
    if args.quiet and report.ok:
        return
    dry_run = getattr(args, "dry_run", False)
    label = "would change" if dry_run else "changed"
    print(f"{args.command}: {len(ids)} flows", file=out)
    print("\n".join(summary_lines(report, changed_label=label)), file=out)
    if dry_run:
        verb = "activate" if args.state else "deactivate"
        listed = id_ranges(report.changed, limit=10**9) or "nothing"
        print(f"  would {verb}: {listed}", file=out)
    if args.command == "get":
        for flow_id, flow in report.succeeded.items():
            shown = " ".join(f"{name}={value!r}" for name, value in flow.items())
            print(f"  flow {flow_id}: {shown}", file=out)
    elif args.command == "pin" and len(report.succeeded) <= 20:
        for flow_id, pinned in report.succeeded.items():
            print(f"  flow {flow_id}: pinned={pinned}", file=out)


TEXT_FIELDS = ("active", "name")  # what ``get`` prints without --fields or --json


def field_names(text: str) -> list[str]:
    """``--fields active,name``: non-empty names (``get_many`` drops repeats)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty field name in {text!r}")
    return names


def get_fields(args: argparse.Namespace) -> Sequence[str] | None:
    """The fields ``get`` keeps: as asked; else what the text report prints; whole flows
    for --json."""
    if args.fields is not None:
        fields: list[str] = args.fields
        return fields
    return None if args.json else TEXT_FIELDS


async def _dispatch(
    client: FlowClient,
    args: argparse.Namespace,
    ids: list[int],
    on_progress: Callable[[Progress], None] | None,
    stop: asyncio.Event,
) -> BulkReport[Any]:
    if args.command == "activate":
        return await client.activate_many(
            ids, verify=args.verify, on_progress=on_progress, stop=stop
        )
    if args.command == "pin":
        return await client.pin_many(ids, on_progress=on_progress, stop=stop)
    if args.command == "set-active":
        return await client.set_active(
            ids, args.state, dry_run=args.dry_run, on_progress=on_progress, stop=stop
        )
    if args.command == "set-pinned":
        return await client.set_pinned(ids, args.state, on_progress=on_progress, stop=stop)
    if args.command == "get":
        return await client.get_many(
            ids, fields=get_fields(args), on_progress=on_progress, stop=stop
        )
    raise UsageError(f"unknown command {args.command}")  # pragma: no cover


def build_parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    auth = common.add_argument_group("credentials")
    auth.add_argument(
        "--webhook", metavar="URL", help="inbound webhook URL (default: $B24_WEBHOOK_URL)"
    )
    auth.add_argument(
        "--oauth",
        metavar="FILE",
        help="JSON file with endpoint, client_id, client_secret, access_token, "
        "refresh_token; rewritten atomically after each refresh, locked so that "
        "processes sharing it refresh once",
    )
    auth.add_argument(
        "--oauth-redis",
        metavar="URL",
        help="keep the tokens in Redis instead (shared by workers on many hosts); "
        "--oauth FILE still gives the endpoint and client credentials",
    )
    auth.add_argument(
        "--oauth-key",
        metavar="KEY",
        default="aiob24flow:tokens",
        help="the Redis hash for --oauth-redis (one per portal, e.g. its member_id)",
    )
    net = common.add_argument_group("network")
    net.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="trust the CA certificates in this PEM file (default: the system's)",
    )
    net.add_argument(
        "--proxy",
        metavar="URL",
        help="send every request through this http:// proxy "
        "(default: $HTTPS_PROXY / $NO_PROXY when set)",
    )
    pace = common.add_argument_group("pace")
    pace.add_argument(
        "--plan",
        choices=["standard", "enterprise", "unlimited"],
        default="standard",
        help="rate-limit preset (default: standard, 50 + 2/s)",
    )
    pace.add_argument("--burst", type=positive, help="override the preset's burst")
    pace.add_argument("--per-second", type=positive, help="override the preset's leak rate")
    pace.add_argument(
        "--headroom",
        type=non_negative,
        metavar="SLOTS",
        help="request slots kept free below the burst, to absorb arrival jitter "
        "(default: 50 ms worth, at least 0.5)",
    )
    pace.add_argument(
        "--redis",
        metavar="URL",
        help="share the rate limit with other processes through Redis "
        "(pip install 'aiob24flow[redis]')",
    )
    pace.add_argument(
        "--concurrency",
        type=count(1, 10_000),
        default=50,
        help="batch requests in flight at most (default 50)",
    )
    out = common.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print a machine-readable report")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    out.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0,
        help="log requests (-v INFO, -vv DEBUG), secrets redacted",
    )
    ids = OneLineParser(add_help=False)
    ids.add_argument(
        "ids", nargs="*", metavar="ID", help="flow ids: 517, ranges 100-250, or - to read stdin"
    )
    ids.add_argument(
        "--ids-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read flow ids from a file, - for stdin (white space or commas; blank "
        "lines, # comments and one header line are skipped)",
    )

    parser = OneLineParser(
        prog="aiob24flow",
        description="Toggle Bitrix24 flows (tasks.flow.Flow.activate / pin) exactly once.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND --help)"
    )
    p = sub.add_parser("activate", parents=[common, ids], help="toggle each flow's active state")
    p.add_argument(
        "--verify",
        action="store_true",
        help="read states before and after lost answers so nothing stays unknown",
    )
    sub.add_parser("pin", parents=[common, ids], help="toggle each flow's pin for you")
    for name, noun in (("set-active", "active"), ("set-pinned", "pinned")):
        p = sub.add_parser(name, parents=[common, ids], help=f"make flows {noun} or not")
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument(
            "--on", dest="state", action="store_const", const=True, help=f"make them {noun}"
        )
        group.add_argument(
            "--off",
            dest="state",
            action="store_const",
            const=False,
            help=f"make them not {noun}",
        )
        if name == "set-active":  # pin state cannot be read: no dry run for pins
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="read states and print what would change; toggle nothing",
            )
    p = sub.add_parser("get", parents=[common, ids], help="read flows (active state, name)")
    p.add_argument(
        "--fields",
        type=field_names,
        metavar="NAMES",
        help="comma-separated flow fields to keep, e.g. active,name (default: "
        "active,name; with --json, whole flows)",
    )
    p = sub.add_parser("demo", help="run a bulk job against a built-in emulated portal")
    p.add_argument(
        "--flows", type=count(1, 1_000_000), default=600, help="flows in the emulated portal"
    )
    p.add_argument("--no-faults", action="store_true", help="no injected faults")
    p.add_argument("--seed", type=count(0), default=2026, help="seed for states and faults")
    sub.add_parser("emulator", help="serve an emulated portal (see --help)", add_help=False)
    return parser


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run``, on uvloop when it is installed (the ``speed`` extra): a third less
    CPU per request in benchmarks/README.md. ``AIOB24FLOW_NO_UVLOOP=1`` turns it off."""
    if not os.environ.get("AIOB24FLOW_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            result: int = uvloop.run(coro)
            return result
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from .emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "verbose", 0):
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
            stream=sys.stderr,
        )
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return asyncio.run(
                run_demo(flows=args.flows, faults=not args.no_faults, seed=args.seed)
            )
        return _run_loop(_run_bulk(args, sys.stdout))
    except UsageError as exc:
        print(f"aiob24flow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except B24Error as exc:
        print(f"aiob24flow: {redact(str(exc))}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        print("aiob24flow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away before the job ended: say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
