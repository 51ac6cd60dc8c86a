"""What `lmwb` commands print, for every command group.

JSON for scripts; for people, Rich tables and key-value lists whose cells never
read user text as markup, laid out wide in a pipe; a spinner on stderr; and the
side-by-side comparison of runs, which `lmwb runs compare` and `lmwb sweeps
show` both print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from tui.widgets.formatting import two_lines

# Tables sent to a pipe or file are laid out this wide (Rich's default there is
# 80 columns, which folds ids and dates).
PIPE_WIDTH = 160


def print_json(value: Any) -> None:
    """Pretty JSON on stdout, for scripts (``jq`` and friends)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def stdout_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def table_cell(value: Any, digits: int = 4) -> Text:
    """A table cell: user text is never read as Rich markup; numbers are formatted, None is a dash."""
    if value is None:
        return Text("–", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.{digits}f}")
    if isinstance(value, int):
        return Text(f"{value:,}")
    return Text(str(value))


def new_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(table_cell(value) for value in row))
    return table


def key_value_panel(title: str, pairs: Sequence[tuple[str, Any]]) -> Group:
    """A titled list of ``name  value`` lines, for one thing's details."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(key, table_cell(value))
    return Group(Text(title, style="bold underline"), table)


def shortened(text: str, width: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def local_time(iso: str | None) -> str | None:
    """A store timestamp (ISO-8601 UTC) as this machine's local time, to the minute."""
    if iso is None:
        return None
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


@contextlib.contextmanager
def status_spinner(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr for people (nothing when stderr is a pipe); yields a function to update it."""
    console = stderr_console()
    if not console.is_terminal:
        yield lambda text: None
        return
    with console.status(message) as status:
        yield lambda text: status.update(text)


def plain_dict(value: Any) -> dict[str, Any]:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return dataclasses.asdict(value)


# ---------------------------------------------------------------------------
# The comparison of runs (lmwb runs compare, lmwb sweeps show).

# A best value's marker, read without colour too.
BEST_MARK = "*"
# Names cut shorter than this say nothing: a table of a row per run that leaves them less is turned around.
MIN_NAME_WIDTH = 8


def print_comparison(comparison: Any) -> None:
    """The comparison's table (best values bold green and starred), then the settings every run shares."""
    console = stdout_console()
    rows = [
        [Text(f"{cell.text} {BEST_MARK}", style="bold green") if cell.best else Text(cell.text) for cell in cells]
        for cells in comparison.cells()
    ]
    console.print(
        _runs_as_rows(comparison.header(), rows, console.width) or _runs_as_columns(comparison.header(), rows)
    )
    console.print(
        f"{BEST_MARK} best: lowest val loss, bits/byte and wall time (training time, pauses left out); "
        "highest tokens/s (median)."
    )
    same = f"Same in all {len(comparison.runs)} runs: {comparison.same_text()}"
    room = 2 * console.width  # two lines
    if len(same) > room:
        same = shortened(same, room - len(MORE_SAME)) + MORE_SAME
    console.print(Text(same, style="dim"))


def _runs_as_rows(header: list[str], rows: list[list[Text]], width: int) -> Table | None:
    """A row per run, if it fits ``width``: every column as wide as its widest value or title line (titles
    over two lines), and the run names (a sweep's repeat its settings) cut to what is left. None: too narrow."""
    titles = [two_lines(title) for title in header]
    widths = [
        max(len(line) for line in [*title.splitlines(), *(row[index].plain for row in rows)])
        for index, title in enumerate(titles)
    ]
    # Each column has a space after it, and a divider between it and the next.
    room_for_names = width - (sum(widths) - widths[1]) - (2 * len(widths) - 1)
    if room_for_names < MIN_NAME_WIDTH:
        return None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for index, (title, column_width) in enumerate(zip(titles, widths, strict=True)):
        if index == 1:
            table.add_column(title, no_wrap=True, overflow="ellipsis", width=min(column_width, room_for_names))
        else:
            table.add_column(title, no_wrap=True, width=column_width)
    for row in rows:
        table.add_row(*row)
    return table


def _runs_as_columns(header: list[str], rows: list[list[Text]]) -> Table:
    """A column per run, headed by its id, for a terminal too narrow for a row per run: the names are cut
    to the width of their column's values."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("", no_wrap=True)
    for row in rows:
        values = [cell.plain for index, cell in enumerate(row) if index != 1]
        table.add_column(row[0].plain, no_wrap=True, overflow="ellipsis", width=max(map(len, values)))
    for index, title in enumerate(header[1:], start=1):
        table.add_row(Text(title, style="bold"), *(row[index] for row in rows))
    return table


MORE_SAME = " (--json lists them all)"
