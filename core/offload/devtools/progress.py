"""Progress on stderr, through rich: live on a terminal, silent in a log or a pipe.

A benchmark or the demo says what it is doing with :func:`status` (one
transient line) or a :class:`ProgressBar`; both draw only when stderr is a
terminal, so a log file gets the results and no carriage-return frames.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn

_console: Console | None = None


def console() -> Console:
    """The stderr console every progress display shares (made on first use)."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


class StatusLine:
    """One transient line saying what runs now (nothing at all when stderr is not a terminal)."""

    def __init__(self, target: Console | None = None) -> None:
        self._console = target
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def update(self, text: str) -> None:
        """Show ``text`` instead of the previous line."""
        target = self._console or console()
        if not target.is_terminal:
            return
        if self._progress is None:
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), console=target, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(text, total=None)
        else:
            assert self._task is not None
            self._progress.update(self._task, description=text)

    def done(self) -> None:
        """Remove the line."""
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._task = None, None


_STATUS = StatusLine()


def status(text: str) -> None:
    """Say what runs now on the shared status line."""
    _STATUS.update(text)


def status_done() -> None:
    """Clear the shared status line."""
    _STATUS.done()


class ProgressBar:
    """A bar over ``total`` steps, labelled with the step's name (nothing when stderr is not a terminal)."""

    def __init__(self, total: int, target: Console | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        target = target or console()
        self._progress: Progress | None = None
        if target.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), console=target
            )
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total)

    def step(self, label: str) -> None:
        """One step done, of the part called ``label``."""
        self.done += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=label)

    def finish(self) -> None:
        """Leave the finished bar on screen and stop drawing."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
