"""``python -m aiob24flow.emulator --port 8080 --flows 1000``: serve an emulated portal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import secrets
import sys
from collections.abc import Awaitable, Callable

from .._argtypes import OneLineParser, count, fraction, non_negative, port, positive
from . import EmulatorFarm, EmulatorServer, Faults, Portal, PortalConfig


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="aiob24flow emulator",
        description="Serve an emulated Bitrix24 portal on loopback.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (loopback; another address needs --allow-remote)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback (0.0.0.0, a LAN address); the webhook "
        "codes are then random, printed once at start",
    )
    p.add_argument("--port", type=port, default=8080, help="TCP port (0: any free one)")
    p.add_argument("--flows", type=count(0), default=1000, help="flows with ids 1..N")
    p.add_argument("--burst", type=positive, default=50.0, help="rate-limit bucket size")
    p.add_argument(
        "--leak", type=non_negative, default=2.0, help="requests per second; 0 = no limit"
    )
    p.add_argument(
        "--latency", type=non_negative, default=0.0, help="seconds added to each request"
    )
    p.add_argument(
        "--active-ratio", type=fraction, default=1.0, help="share of flows active at start"
    )
    p.add_argument(
        "--token-lifetime", type=positive, default=3600.0, help="access-token life, seconds"
    )
    p.add_argument("--seed", type=count(0), default=0, help="seed for states and faults")
    p.add_argument("--error-before", type=fraction, default=0.0, help="share answered 500, not run")
    p.add_argument("--error-after", type=fraction, default=0.0, help="share run, then answered 500")
    p.add_argument("--drop-after", type=fraction, default=0.0, help="share run, then disconnected")
    p.add_argument(
        "--limit-503", type=fraction, default=0.0, help="share refused with 503, not run"
    )
    p.add_argument("--hang-after", type=fraction, default=0.0, help="share run, then answered late")
    p.add_argument("--hang-seconds", type=non_negative, default=5.0, help="delay for --hang-after")
    p.add_argument(
        "--drop-then-run",
        type=fraction,
        default=0.0,
        help="share of requests dropped at once and executed --run-after seconds later",
    )
    p.add_argument("--run-after", type=non_negative, default=2.0, help="delay for --drop-then-run")
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throwaway CA (pip install 'aiob24flow[tls]'); prints the "
        "CA file to trust and a plain-HTTP port that refuses webhooks like a portal",
    )
    p.add_argument(
        "--plain-port", type=port, default=0, help="with --tls: the plain-HTTP port (0: any)"
    )
    p.add_argument(
        "--portals",
        type=count(1, 250),
        default=1,
        help="serve N portals on one port, one per loopback address 127.0.1.1 .. 127.0.1.N "
        "(a request is routed by the address it arrived on)",
    )
    p.add_argument("--ready-file", help="write the port here once listening (for scripts)")
    return p


def config_from_args(args: argparse.Namespace) -> PortalConfig:
    return PortalConfig(
        flows=args.flows,
        burst=args.burst,
        leak=args.leak or None,
        latency=args.latency,
        active_ratio=args.active_ratio,
        token_lifetime=args.token_lifetime,
        seed=args.seed,
        faults=Faults(
            seed=args.seed,
            error_before=args.error_before,
            error_after=args.error_after,
            drop_after=args.drop_after,
            limit_503=args.limit_503,
            hang_after=args.hang_after,
            hang_seconds=args.hang_seconds,
            drop_then_run=args.drop_then_run,
            run_after=args.run_after,
        ),
    )


async def serve_farm(args: argparse.Namespace) -> None:
    portals = {f"127.0.1.{k}": Portal(config_from_args(args)) for k in range(1, args.portals + 1)}
    farm = EmulatorFarm(portals, args.port)
    try:
        await farm.start()
    except OSError as exc:
        raise SystemExit(
            f"aiob24flow emulator: error: cannot listen: {exc.strerror or exc}"
        ) from None
    print(f"{args.portals} emulated portals on 127.0.1.1-{args.portals}:{farm.port}", flush=True)
    await _serve_until_stopped(args, farm.port, farm.stop)


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds loopback only: a loopback IP literal or ``localhost``.

    Any other name may resolve to anything, and "" or "::" bind every interface.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def random_webhooks(portal: Portal) -> None:
    """Replace the fixed test webhook codes with random ones (for a non-loopback bind)."""
    for user_id in portal.state.webhooks:
        portal.state.webhooks[user_id] = secrets.token_hex(16)


async def serve(args: argparse.Namespace) -> None:
    if args.portals > 1:
        await serve_farm(args)
        return
    portal = Portal(config_from_args(args))
    if not is_loopback(args.host):
        # The fixed codes are public (README, tests): never serve them beyond this machine.
        random_webhooks(portal)
    server = EmulatorServer(
        portal,
        args.host,
        args.port,
        tls=args.tls,
        plain_port=args.plain_port,
    )
    try:
        await server.start()
    except OSError as exc:
        raise SystemExit(
            f"aiob24flow emulator: error: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}"
        ) from None
    print(f"emulated portal on {server.base_url} ({args.flows} flows)", flush=True)
    if args.tls:
        print(f"  CA certificate to trust: {server.ca_path}", flush=True)
        print(f"  plain HTTP (webhooks refused: Https required): {server.plain_url}", flush=True)
    # The emulator's credentials (fixed test codes on loopback, random ones otherwise),
    # printed once so a person can connect.
    print(f"  webhook (admin): {server.webhook_url(1)}", flush=True)
    print(f"  webhook (user 2, not admin): {server.webhook_url(2)}", flush=True)
    await _serve_until_stopped(args, server.port, server.stop)


async def _serve_until_stopped(
    args: argparse.Namespace, port: int, stop: Callable[[], Awaitable[None]]
) -> None:
    """Tell scripts the port (``--ready-file``, written atomically), then serve."""
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, args.ready_file)
    try:
        await asyncio.Event().wait()
    finally:
        await stop()


def _check_tls_extra(parser: argparse.ArgumentParser) -> None:
    """``--tls`` needs the ``tls`` extra: say so on one line (exit 2) before starting.

    Exit 2, as for any refused command line: nothing was started, and what is missing is
    named; 1 stays for an emulator that failed while starting (a port in use).
    """
    try:
        import trustme  # noqa: F401
    except ImportError:
        print(
            f"{parser.prog}: error: --tls needs trustme: pip install 'aiob24flow[tls]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(
            f"--host {args.host!r} is not a loopback address: the emulator would serve its "
            "webhooks to the network; add --allow-remote to allow it (webhook codes are then "
            "random)"
        )
    if args.tls:
        _check_tls_extra(parser)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
