from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiob24flow.emulator import EmulatorServer, Faults, Portal, PortalConfig

UNLIMITED = {"leak": None}


@asynccontextmanager
async def serve(**config: Any) -> AsyncIterator[EmulatorServer]:
    config.setdefault("leak", None)
    async with EmulatorServer(Portal(PortalConfig(**config))) as server:
        yield server


@pytest.fixture
def emulator() -> Callable[..., Any]:
    """``async with emulator(flows=10, faults=Faults(...)) as server:``"""
    return serve


class FakeClock:
    """A clock and sleep pair: sleeping advances nothing by itself, it records."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


async def no_sleep(seconds: float) -> None:
    """For tests: retries and limiter waits take no real time."""


__all__ = ["FakeClock", "Faults", "no_sleep", "serve"]
