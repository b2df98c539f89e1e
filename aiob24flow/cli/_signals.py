"""Ctrl-C during a bulk job: the first stops sending, the second stops waiting."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

__all__ = ["CtrlC"]


class CtrlC:
    """While entered, SIGINT sets ``stop`` (no new batch leaves; those on the wire
    finish) and says so on stderr; a second SIGINT cancels ``task``.

    ``interrupted`` tells afterwards whether it happened.
    """

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.stop = asyncio.Event()
        self.interrupted = False
        self._task = task
        self._loop = asyncio.get_running_loop()

    def _on_sigint(self) -> None:
        if self.interrupted:  # a second Ctrl-C: stop waiting for what is on the wire
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
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self._loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self._loop.remove_signal_handler(signal.SIGINT)
