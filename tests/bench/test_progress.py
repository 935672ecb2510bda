"""Progress draws on a terminal and stays silent in a log."""

from __future__ import annotations

import io

from rich.console import Console

from offload.devtools.progress import ProgressBar, StatusLine


def consoles() -> tuple[Console, io.StringIO, Console, io.StringIO]:
    log, screen = io.StringIO(), io.StringIO()
    return Console(file=log, force_terminal=False), log, Console(file=screen, force_terminal=True, width=80), screen


def test_a_log_gets_nothing_and_a_terminal_gets_the_bar_and_the_status() -> None:
    quiet, log, loud, screen = consoles()
    for target in (quiet, loud):
        bar = ProgressBar(4, target)
        for label in ("original", "original", "policies", "faults"):
            bar.step(label)
        bar.finish()
        line = StatusLine(target)
        line.update("round 1/3: nginx 16 connections ...")
        line.update("round 2/3: nginx 16 connections ...")
        line.done()
    assert log.getvalue() == ""
    drawn = screen.getvalue()
    assert "faults" in drawn and "100%" in drawn
    assert bar.done == 4
