"""The progress bar of a bulk command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._job import Progress

__all__ = ["ProgressBar"]


class ProgressBar:
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
        # The work done (reads, toggles, read-backs), so the bar moves while set-active
        # reads and its ETA means something; the total grows or shrinks as it is known.
        self._progress.update(
            self._task,
            completed=progress.steps,
            total=max(progress.steps_total, progress.steps, 1),
        )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
