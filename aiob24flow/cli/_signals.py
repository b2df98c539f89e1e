"""Ctrl-C during a bulk job: the first stops sending, the second stops waiting."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from types import FrameType

from .._job import Stop

__all__ = ["CtrlC"]


class CtrlC:
    """While entered, SIGINT sets ``stop`` (no new batch leaves; those on the wire
    finish) and says so on stderr; a second SIGINT abandons the answers on the wire (the
    job returns at once and its report says those flows are unknown); a third cancels
    ``task``.

    ``interrupted`` tells afterwards whether it happened.
    """

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.stop = Stop()
        self.interrupted = False
        self._presses = 0
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._restore: Callable[[], object] | None = None

    def _on_sigint(self) -> None:
        self._presses += 1
        if self._presses == 2:  # stop waiting for what is on the wire; still report
            self.stop.abandon()
            print(
                "interrupted again: not waiting for the answers in flight (those flows "
                "are reported unknown)",
                file=sys.stderr,
            )
            return
        if self._presses > 2:
            if self._task is not None:
                self._task.cancel()
            return
        self.interrupted = True
        self.stop.set()
        print(
            "\ninterrupted: sending no new batch; waiting for those in flight "
            "(Ctrl-C again to stop at once)...",
            file=sys.stderr,
        )

    def __enter__(self) -> CtrlC:
        try:
            self._loop.add_signal_handler(signal.SIGINT, self._on_sigint)
            self._restore = lambda: self._loop.remove_signal_handler(signal.SIGINT)
        except NotImplementedError:
            # Windows' event loops have no add_signal_handler: a plain signal handler,
            # which runs between bytecodes, hands the work to the loop's thread.
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                previous = signal.signal(signal.SIGINT, self._from_signal)
                # None: a handler not set from Python; Python's own is the safe default.
                restored = signal.default_int_handler if previous is None else previous
                self._restore = lambda: signal.signal(signal.SIGINT, restored)
        except RuntimeError:  # not the main thread: no handler
            pass
        return self

    def _from_signal(self, signum: int, frame: FrameType | None) -> None:
        self._loop.call_soon_threadsafe(self._on_sigint)

    def __exit__(self, *exc: object) -> None:
        if self._restore is not None:
            self._restore()
