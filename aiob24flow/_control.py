"""Interrupting calls that wait to be sent, and only those.

A call spends most of its life waiting: for a connection slot, in the operating-budget
pause, in the rate limiter, on a token refresh, between retries. ``aclose()`` and a
job's stop must reach it there, and must not touch a request already on the wire (its
outcome is real and the caller gets it). ``Interrupts`` keeps the set of tasks inside a
waiting section; ``interrupt`` cancels them and the section turns that cancellation into
the error given (``ClientClosed``, ``Stopped``). A cancellation that did not come from
here (the caller cancelled its task) passes through untouched, as asyncio expects.

Sections nest (a journal write inside a wait, a refresh inside a pause), as anyio's cancel
scopes do: a task is waiting while it is inside any section, the innermost section turns
the interrupt into its error, and the outer ones let that error pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

__all__ = ["Interrupts"]


class Interrupts:
    """The tasks of one client that are waiting to send, and why they were interrupted."""

    def __init__(self) -> None:
        self._waiting: dict[asyncio.Task[object], int] = {}  # task -> sections entered
        self._reasons: dict[asyncio.Task[object], BaseException] = {}

    @contextmanager
    def waiting(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            yield
            return
        depth = self._waiting.get(task, 0)
        self._waiting[task] = depth + 1
        try:
            yield
        except asyncio.CancelledError:
            reason = self._reasons.pop(task, None)
            if reason is None:
                raise
            uncancel = getattr(task, "uncancel", None)  # 3.11+: keep the count exact
            if uncancel is not None:
                uncancel()
            raise reason from reason.__cause__
        finally:
            if depth:  # still inside an outer section: still waiting
                self._waiting[task] = depth
            else:
                del self._waiting[task]
                self._void(task)

    def _void(self, task: asyncio.Task[object]) -> None:
        """An interrupt that arrived as the wait ended is void: nothing was withheld."""
        if self._reasons.pop(task, None) is not None:
            cancelling = getattr(task, "cancelling", None)
            if cancelling is not None and cancelling():
                task.uncancel()  # type: ignore[attr-defined,unused-ignore]

    def interrupt(
        self,
        make_reason: Callable[[], BaseException],
        only: Collection[asyncio.Task[object]] | None = None,
    ) -> int:
        """Cancel the waiting tasks (all, or those in ``only``); return how many."""
        count = 0
        for task in list(self._waiting):
            if only is not None and task not in only:
                continue
            if task in self._reasons or task is asyncio.current_task():
                continue
            self._reasons[task] = make_reason()
            task.cancel()
            count += 1
        return count
