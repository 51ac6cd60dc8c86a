"""Runs side by side: the settings that differ, the results with the best marked, and their curves overlaid.

Opened from Runs with the marked runs, or a sweep's. The engine's
``Comparison`` is the table (the CLI's ``lmwb runs compare`` prints the
same); it is read again while any of the runs trains, with each run's new
metrics, so a sweep can be watched filling in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from engine.comparison import LABEL_COLUMNS, compare
from tui.screens.base import WorkbenchScreen
from tui.widgets.formatting import two_lines
from tui.widgets.loss_chart import X_AXES, LossChart

if TYPE_CHECKING:
    from engine.comparison import Cell, Comparison

POLL_INTERVAL = 1.0
# A best value's marker, read without colour too.
BEST_MARK = "*"


# A run's name is its row's label (a sweep's repeats its settings): kept this narrow to leave room for the rest.
NAME_WIDTH = 12


def cell_text(cell: "Cell") -> Text:
    """A comparison cell in the table: a best value bold, green and starred."""
    return Text(f"{cell.text} {BEST_MARK}", style="bold green") if cell.best else Text(cell.text)


class CompareScreen(WorkbenchScreen):
    """The comparison of a few runs, live; Escape goes back to Runs."""

    MODE = "runs"
    TITLE = "Compare runs"
    HELP = (
        "The runs side by side: a row per run, as columns only the settings that differ between them, "
        "then best val loss, val bits/byte (at the best val loss), tokens/s (the median), steps, wall time "
        "(training time, pauses left out) and status. The best of each result is bold and starred (*). "
        "A table wider than the screen scrolls sideways with ←/→, the runs' ids and names staying in place. "
        "The settings every run shares are listed under the table. The chart overlays the runs' curves; "
        "a draws them against step, tokens or wall time. e writes the comparison as CSV and Markdown "
        "in the current directory. Escape goes back."
    )

    BINDINGS = [
        Binding("escape", "back", "Back", id="compare.back", tooltip="Back to the runs"),
        Binding("a", "x_axis", "X axis", id="compare.x_axis", tooltip="Plot against step, tokens or wall time"),
        Binding("e", "export", "Export", id="compare.export", tooltip="Write the comparison as CSV and Markdown here"),
    ]

    class Compared(Message, bubble=False):
        """The comparison as it stands, and each run's metrics rows that are new since the last one."""

        def __init__(self, comparison: "Comparison", metrics: dict[str, list[dict]]) -> None:
            super().__init__()
            self.comparison, self.metrics = comparison, metrics

    def __init__(self, run_ids: list[str], export_name: str) -> None:
        """``export_name`` names the exported files: ``sweep-<id>``, or the runs' ids."""
        super().__init__()
        self.run_ids = run_ids
        self.export_name = export_name
        self.comparison: Comparison | None = None
        self._header: list[str] = []

    def compose_body(self) -> ComposeResult:
        yield Static(f"Comparing {len(self.run_ids)} runs…", id="compare-title")
        # A table wider than the terminal scrolls sideways (←/→) under the run's id and name, which stay.
        yield DataTable(
            id="compare-table",
            cursor_type="row",
            zebra_stripes=True,
            header_height=2,
            fixed_columns=len(LABEL_COLUMNS),
        )
        yield Static("", id="compare-same")
        yield LossChart(id="compare-chart", empty_message="the runs' losses, overlaid")

    def on_mount(self) -> None:
        self.query_one("#compare-table").focus()
        self.follow(self._reader(), POLL_INTERVAL)

    def _reader(self) -> Callable[[], "CompareScreen.Compared | None"]:
        """What the follow thread calls: the comparison again, when a run or its metrics changed."""
        store = self.workbench.store
        rows: dict[str, list[dict]] = {}
        last_runs = None

        def read() -> CompareScreen.Compared | None:
            nonlocal last_runs
            runs = [store.get_run(run_id) for run_id in self.run_ids]
            new = {
                run.id: store.metrics(run.id, after_step=rows[run.id][-1]["step"] if rows.get(run.id) else -1)
                for run in runs
            }
            if runs == last_runs and not any(new.values()):
                return None
            last_runs = runs
            for run_id, added in new.items():
                rows.setdefault(run_id, []).extend(added)
            return self.Compared(compare(runs, rows), new)

        return read

    @on(Compared)
    def _show(self, message: Compared) -> None:
        self.comparison = message.comparison
        chart = self.query_one("#compare-chart", LossChart)
        for run in message.comparison.runs:
            chart.add_metrics(run.id, message.metrics.get(run.id, []), label=run.name)
        self._show_table(message.comparison)
        self._show_title()
        self.query_one("#compare-same", Static).update(
            Text(f"Same in every run: {message.comparison.same_text()}", style="dim")
        )

    def _show_title(self) -> None:
        """How many runs, how the best is marked, what the curves are drawn against, then what differs (the longest,
        so a narrow terminal wraps or cuts it, not the keys)."""
        if self.comparison is None:
            return
        x_axis = X_AXES[self.query_one("#compare-chart", LossChart).x_axis]
        self.query_one("#compare-title", Static).update(
            Text.assemble(
                (f"{len(self.comparison.runs)} runs", "bold"),
                " · ",
                (f"{BEST_MARK} best", "bold green"),
                f" · a x axis: {x_axis} · differing: {', '.join(self.comparison.differing) or 'no setting'}",
            )
        )

    def _show_table(self, comparison: "Comparison") -> None:
        table = self.query_one("#compare-table", DataTable)
        header = comparison.header()
        if header != self._header:
            table.clear(columns=True)
            for title in header:
                table.add_column(two_lines(title), key=title, width=NAME_WIDTH if title == "name" else None)
            self._header = header
        cursor = table.cursor_row
        table.clear()
        for run, cells in zip(comparison.runs, comparison.cells(), strict=True):
            table.add_row(*(cell_text(cell) for cell in cells), key=run.id)
        if cursor is not None and cursor < table.row_count:
            table.move_cursor(row=cursor, animate=False)

    # -- actions ----------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_x_axis(self) -> None:
        self.query_one("#compare-chart", LossChart).next_x_axis()
        self._show_title()

    def action_export(self) -> None:
        if self.comparison is None:
            self.notify("The comparison is still being read; try again in a moment.", severity="warning")
            return
        self._export(self.comparison)

    @work(thread=True, group="compare-export", exit_on_error=False)
    def _export(self, comparison: "Comparison") -> None:
        """Write the comparison as CSV and Markdown into the current directory (as Runs' e writes a run)."""
        written = []
        for suffix, text in (("csv", comparison.to_csv()), ("md", comparison.to_markdown())):
            path = Path.cwd() / f"lmwb-comparison-{self.export_name}.{suffix}"
            try:
                path.write_text(text, encoding="utf-8")
            except OSError as error:
                message = f"Cannot write {path}: {error.strerror}. Start lmwb from a writable directory."
                self.app.call_from_thread(self.notify, message, severity="error")
                return
            written.append(path.name)
        self.app.call_from_thread(self.notify, f"Exported the comparison: {', '.join(written)} in {Path.cwd()}")
