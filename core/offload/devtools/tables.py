"""Result tables of the demo and the benchmarks, drawn by rich and returned as plain text.

The benchmarks return their report as a string (printed, saved, compared in
tests), so a table is rendered once into text without colour or terminal
codes: the same lines on a terminal, in a pipe and in a CI log.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Wide enough that no benchmark row wraps; a table is only as wide as its cells need.
RENDER_WIDTH = 200


def table(*headers: str, title: str | None = None, left: int = 1) -> Table:
    """A table with ``headers``: the first ``left`` columns left-aligned (names), the rest right-aligned (figures)."""
    drawn = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for index, header in enumerate(headers):
        drawn.add_column(header, justify="left" if index < left else "right", no_wrap=True)
    return drawn


def add_rows(drawn: Table, rows: Iterable[Sequence[Any]]) -> Table:
    """Add each row, cells as text (``None`` becomes ``-``)."""
    for row in rows:
        # Text, not markup: a figure such as "[met]" must print as it is.
        drawn.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    return drawn


def as_text(*parts: Any) -> str:
    """``parts`` (tables or strings) as plain text, one after another, without trailing spaces."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=RENDER_WIDTH, color_system=None, force_terminal=False, highlight=False)
    for part in parts:
        console.print(Text(part) if isinstance(part, str) else part)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def goals_table(goals: list[dict[str, Any]]) -> Table:
    """The goals of a benchmark: met, MISSED, or n/a when not measured in this run."""
    drawn = Table(title="Goals", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    drawn.add_column("", no_wrap=True)
    # Long goals and figures wrap inside their column, never get cut.
    drawn.add_column("goal", overflow="fold")
    drawn.add_column("figure", overflow="fold")
    for goal in goals:
        verdict = "met" if goal["met"] else "MISSED" if goal.get("measured", True) else "n/a"
        add_rows(drawn, [(f"[{verdict}]", goal["goal"], goal["figure"])])
    return drawn
