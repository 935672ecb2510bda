"""The demo's and the benchmarks' tables: drawn by rich, plain text wherever they are printed."""

from __future__ import annotations

from offload.devtools.tables import add_rows, as_text, goals_table, table


def test_a_table_is_plain_aligned_text_without_terminal_codes() -> None:
    drawn = add_rows(table("server", "requests", "p50 ms"), [("edge1", 1200, "0.31"), ("local", None, "12.50")])
    text = as_text("title [not markup]", drawn)
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "title [not markup]"
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ("edge1", "local")}
    # Figures are right-aligned: their last characters share a column.
    assert rows["edge1"].index("0.31") + 4 == rows["local"].index("12.50") + 5
    assert rows["local"].split()[1] == "-"  # None is a dash
    assert all(line == line.rstrip() for line in lines)


def test_goals_print_their_verdict_literally_and_never_cut_a_long_figure() -> None:
    figure = "p50 " + "9" * 250  # longer than the render width: wraps instead of losing characters
    text = as_text(
        goals_table(
            [
                {"goal": "fast", "figure": figure, "met": False},
                {"goal": "nginx compared", "figure": "not measured", "met": False, "measured": False},
                {"goal": "no failures", "figure": "0 failed", "met": True},
            ]
        )
    )
    assert "[MISSED]" in text and "[n/a]" in text and "[met]" in text
    assert "".join(text.split()).count("9") == 250
