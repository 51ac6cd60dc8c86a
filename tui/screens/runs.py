"""Runs: every run in the store, live, with its curve; overlay several, or compare them side by side.

The list is read again a few times a second by a worker, so runs started by
``lmwb train`` in another terminal appear and move here as they go, and any
of them can be paused, continued or stopped from here (a request through the
store, which the run's process answers). Only
changed cells are redrawn. The chart below shows the marked runs overlaid, or
the highlighted run when none is marked; its metrics are fetched
incrementally (``after_step``) like the Train screen's. The marked runs, or a
sweep's, open side by side in the comparison screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from engine.comparison import MIN_COMPARED
from engine.store import RUN_ORDERINGS, can_control, can_resume, control_action
from tui.screens.compare import CompareScreen
from tui.screens.run_actions import RunActionsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.sweep_picker import SweepPickerScreen
from tui.widgets.formatting import loss_text, model_label
from tui.widgets.loss_chart import X_AXES, LossChart

if TYPE_CHECKING:
    from engine.store import Run

POLL_INTERVAL = 0.4
COLUMNS = (
    ("mark", ""),
    ("status", "status"),
    ("name", "name"),
    ("model", "model"),
    ("dataset", "dataset"),
    ("steps", "steps"),
    ("best_val_loss", "best val"),
    ("created_at", "created"),
)
# s cycles the sort through the store's orderings, each labelled as its column.
SORTS = tuple((key, dict(COLUMNS)[key]) for key in RUN_ORDERINGS)
STATUS_STYLES = {
    "queued": "cyan",
    "starting": "green",
    "running": "bold green",
    "paused": "bold yellow",
    "completed": "",
    "stopped": "yellow",
    "failed": "bold red",
    "interrupted": "red",
    "cancelled": "dim",
}


def run_cells(run: "Run", marked: bool) -> list[Text | str]:
    """The table cells of one run, in COLUMNS order."""
    return [
        Text("●", style="bold") if marked else "",
        Text(run.status, style=STATUS_STYLES.get(run.status, "")),
        run.name,
        model_label(run.model, run.lora, run.world_size),
        run.dataset,
        f"{run.steps:,}",
        loss_text(run.best_val_loss),
        run.created_at[:16].replace("T", " "),
    ]


class RunsScreen(RunActionsScreen):
    """The runs table, its filters, and the curves of the marked runs."""

    MODE = "runs"
    TITLE = "Runs"
    HELP = (
        "Every run in the store, including those started by `lmwb train` elsewhere, updated live. "
        "Type in the filter to search; f cycles the status shown, s the sort column, S the order. "
        "Space marks runs: the chart overlays the marked runs (or shows the highlighted one), against "
        "step, tokens or wall time (a). c compares the marked runs side by side: only the settings that "
        "differ, then the results, the best marked; w picks a sweep and compares its runs. "
        "Enter opens a run's detail; Ctrl+T pauses or continues it and Ctrl+S stops it (with a "
        "checkpoint; a queued run is cancelled), wherever it was started; g generates with its latest "
        "checkpoint, r resumes it, e exports it, x deletes it (after asking)."
    )

    BINDINGS = [
        Binding("enter", "open", "Open", id="runs.open", tooltip="Open the run's detail"),
        Binding("space", "mark", "Mark", id="runs.mark", tooltip="Mark or unmark the run to overlay its curve"),
        Binding(
            "c",
            "compare",
            "Compare",
            id="runs.compare",
            tooltip="Compare the marked runs: the settings that differ, the results, the curves",
        ),
        Binding(
            "w",
            "pick_sweep",
            "Sweep",
            show=False,
            id="runs.sweep",
            tooltip="Pick a sweep: mark its runs and compare them",
        ),
        Binding(
            "a", "x_axis", "X axis", show=False, id="runs.x_axis", tooltip="Plot against step, tokens or wall time"
        ),
        Binding(  # the filter field's own placeholder names the key
            "slash", "filter", "Filter", show=False, id="runs.filter", tooltip="Search runs by name, model or dataset"
        ),
        Binding("f", "cycle_status", "Status", show=False, id="runs.status", tooltip="Show only runs with one status"),
        Binding("s", "cycle_sort", "Sort", show=False, id="runs.sort", tooltip="Sort by the next column"),
        Binding("S", "reverse_sort", "Order", show=False, id="runs.order", tooltip="Reverse the sort order"),
        Binding("ctrl+t", "pause", "Pause", id="runs.pause", tooltip="Pause the run (it keeps its place)"),
        Binding("ctrl+t", "continue", "Continue", id="runs.continue", tooltip="Continue the paused run"),
        Binding(
            "ctrl+s",
            "stop",
            "Stop",
            id="runs.stop",
            tooltip="Stop the run, saving a checkpoint (a queued run is cancelled)",
        ),
        Binding("g", "generate", "Generate", id="runs.generate", tooltip="Generate with the run's latest checkpoint"),
        Binding("r", "resume", "Resume", id="runs.resume", tooltip="Resume the run on the Train screen"),
        # Export and delete stay out of the footer (an 80-column one ends before Quit otherwise): the help
        # screen lists them, and a run's detail screen shows them in its own footer.
        Binding("e", "export", "Export", show=False, id="runs.export", tooltip="Write the run as JSON and CSV here"),
        Binding("x,delete", "delete", "Delete", show=False, id="runs.delete", tooltip="Delete the run (asks first)"),
        Binding("escape", "focus_table", "Table", show=False, id="runs.table"),
    ]

    class Polled(Message, bubble=False):
        """The runs to show, and new metrics per charted run since the cursors the poll started from."""

        def __init__(self, runs: list["Run"], metrics: dict[str, tuple[int, list[dict]]]) -> None:
            super().__init__()
            self.runs, self.metrics = runs, metrics

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, "Run"] = {}
        self.marked: set[str] = set()
        self._order: list[str] = []
        self._status_filter: str | None = None
        self._sort = 0
        self._descending = True
        self._cursors: dict[str, int] = {}
        """Per charted run: the last step the chart holds (-1: none yet)."""
        self._request: tuple = (None, None, "created_at", True, ())
        self._last_read: list["Run"] | None = None
        """Only the follow thread touches this: the runs it last posted."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="runs-bar"):
            yield Input(placeholder="/ filter by name, model, dataset…", id="runs-filter", compact=True)
            yield Static("", id="runs-mode")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield LossChart(id="runs-chart", empty_message="the highlighted run's loss, or the marked runs overlaid")

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self._show_mode()
        self._ask()
        self.follow(self._read, POLL_INTERVAL)

    # -- polling ----------------------------------------------------------------

    def _ask(self, *, wake: bool = True) -> None:
        """Tell the follow thread what to read (filters, sort, charted runs); wake it to read now."""
        order_by, _ = SORTS[self._sort]
        search = self.query_one("#runs-filter", Input).value.strip() or None
        # One immutable tuple, replaced whole: the follow thread reads it without a lock.
        self._request = (self._status_filter, search, order_by, self._descending, tuple(self._cursors.items()))
        if wake:
            self.poll_now()

    def _read(self) -> Polled | None:
        """In the follow thread: the runs as asked, and new metrics of the charted runs, if anything changed."""
        status, search, order_by, descending, cursors = self._request
        store = self.workbench.store
        runs = store.list_runs(status=status, search=search, order_by=order_by, descending=descending)
        metrics = {run_id: (after, store.metrics(run_id, after_step=after)) for run_id, after in cursors}
        if runs == self._last_read and not any(rows for _, rows in metrics.values()):
            return None
        self._last_read = runs
        return self.Polled(runs, metrics)

    @on(Polled)
    def _show_poll(self, message: Polled) -> None:
        charted = set(self._cursors)
        self._show_runs(message.runs)
        chart = self.query_one("#runs-chart", LossChart)
        for run_id, (after, rows) in message.metrics.items():
            if self._cursors.get(run_id) != after:
                continue  # the chart changed since this poll began; the next poll brings it
            run = self.runs.get(run_id)
            chart.add_metrics(run_id, rows, label=run.name if run else run_id)
            if rows:
                self._cursors[run_id] = rows[-1]["step"]
        # Newly charted runs (a new highlight) need their curves now; new rows can wait a tick.
        self._ask(wake=set(self._cursors) != charted)

    def _show_runs(self, runs: list["Run"]) -> None:
        table = self.query_one("#runs-table", DataTable)
        order = [run.id for run in runs]
        previous = self.runs
        self.runs = {run.id: run for run in runs}
        if order != self._order:
            highlighted = self.highlighted_id()
            table.clear()
            for run in runs:
                table.add_row(*run_cells(run, run.id in self.marked), key=run.id)
            self._order = order
            if highlighted in self.runs:
                table.move_cursor(row=order.index(highlighted), animate=False)
        else:
            # Only the cells that changed: the list is read 2-3 times a second.
            for run in runs:
                before = previous.get(run.id)
                if before is None or before == run:
                    continue
                old_cells = run_cells(before, run.id in self.marked)
                for (key, _), old, cell in zip(COLUMNS, old_cells, run_cells(run, run.id in self.marked), strict=True):
                    if old != cell:
                        table.update_cell(run.id, key, cell)
        self.marked &= set(self.runs)
        self._chart_runs()
        highlighted = self.highlighted_id()
        before = previous.get(highlighted) if highlighted is not None else None
        if highlighted is not None and (before is None or before.status != self.runs[highlighted].status):
            self.refresh_bindings()  # pause, continue and stop follow the highlighted run's status

    def highlighted_id(self) -> str | None:
        """The id of the run under the table's cursor."""
        table = self.query_one("#runs-table", DataTable)
        if not self._order or table.cursor_row is None or table.cursor_row >= len(self._order):
            return None
        return self._order[table.cursor_row]

    def highlighted_run(self) -> "Run | None":
        run_id = self.highlighted_id()
        return self.runs.get(run_id) if run_id else None

    def _chart_runs(self) -> None:
        """Chart the marked runs, or the highlighted one; fetch curves for newly charted runs."""
        highlighted = self.highlighted_id()
        wanted = set(self.marked) or ({highlighted} if highlighted is not None else set())
        for run_id in wanted - set(self._cursors):
            self._cursors[run_id] = -1
        for run_id in set(self._cursors) - wanted:
            del self._cursors[run_id]
        self.query_one("#runs-chart", LossChart).keep_only(wanted)

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        self.refresh_bindings()
        if not self.marked:
            self._chart_runs()
            self._ask()

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self) -> None:
        self.action_open()

    # -- filters and sorting ----------------------------------------------------

    def _show_mode(self) -> None:
        _, sort_label = SORTS[self._sort]
        x_axis = X_AXES[self.query_one("#runs-chart", LossChart).x_axis]
        self.query_one("#runs-mode", Static).update(
            f"f status: {self._status_filter or 'all'} · s sort: {sort_label} {'↓' if self._descending else '↑'}"
            f" · a x: {x_axis} · marked {len(self.marked)}"
        )

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self) -> None:
        self._ask()

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self) -> None:
        self.action_focus_table()

    def action_filter(self) -> None:
        self.query_one("#runs-filter").focus()

    def action_focus_table(self) -> None:
        self.query_one("#runs-table").focus()

    def action_cycle_status(self) -> None:
        from engine.store import RUN_STATUSES

        cycle = (None, *RUN_STATUSES)
        self._status_filter = cycle[(cycle.index(self._status_filter) + 1) % len(cycle)]
        self._show_mode()
        self._ask()

    def action_cycle_sort(self) -> None:
        self._sort = (self._sort + 1) % len(SORTS)
        self._descending = RUN_ORDERINGS[SORTS[self._sort][0]]  # the direction a person expects first
        self._show_mode()
        self._ask()

    def action_reverse_sort(self) -> None:
        self._descending = not self._descending
        self._show_mode()
        self._ask()

    # -- marking and acting on runs ---------------------------------------------

    def action_mark(self) -> None:
        run_id = self.highlighted_id()
        if run_id is not None:
            self._set_marks(self.marked ^ {run_id})

    def _set_marks(self, run_ids: set[str]) -> None:
        """Mark exactly these runs (those listed), and chart them."""
        table = self.query_one("#runs-table", DataTable)
        marked = run_ids & set(self.runs)
        for run_id in self.marked ^ marked:
            table.update_cell(run_id, "mark", Text("●", style="bold") if run_id in marked else "")
        self.marked = marked
        self._show_mode()
        self._chart_runs()
        self._ask()

    def action_x_axis(self) -> None:
        self.query_one("#runs-chart", LossChart).next_x_axis()
        self._show_mode()

    def action_compare(self) -> None:
        if len(self.marked) < MIN_COMPARED:
            self.notify(
                f"Mark {MIN_COMPARED} runs or more with Space to compare them ({len(self.marked)} marked), "
                "or pick a sweep with w.",
                severity="warning",
            )
            return
        run_ids = [run_id for run_id in self._order if run_id in self.marked]
        self.app.push_screen(CompareScreen(run_ids, export_name="-".join(run_ids)))

    def action_pick_sweep(self) -> None:
        def picked(sweep_id: str | None) -> None:
            if sweep_id is not None:
                self._compare_sweep(sweep_id)

        self.app.push_screen(SweepPickerScreen(), picked)

    @work(thread=True, group="run-action", exit_on_error=False)
    def _compare_sweep(self, sweep_id: str) -> None:
        """Mark the sweep's runs and compare them (all of them, shown in the list or not)."""
        runs = self.workbench.store.list_runs(sweep_id=sweep_id, order_by="created_at", descending=False)
        self.app.call_from_thread(self._show_sweep, sweep_id, [run.id for run in runs])

    def _show_sweep(self, sweep_id: str, run_ids: list[str]) -> None:
        self._set_marks(set(run_ids))
        if len(run_ids) < MIN_COMPARED:
            self.notify(f"Sweep {sweep_id} has {len(run_ids)} run(s): nothing to compare yet.", severity="warning")
            return
        self.app.push_screen(CompareScreen(run_ids, export_name=f"sweep-{sweep_id}"))

    def action_open(self) -> None:
        run = self.highlighted_run()
        if run is not None:
            self.app.push_screen(RunDetailScreen(run.id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer pause, continue and stop only for a run that can do them, and resume for one that has ended."""
        if action not in ("pause", "continue", "stop", "resume"):
            return True
        run = self.highlighted_run()
        if run is None:
            return False
        if action == "resume":
            return can_resume(run.status)
        return can_control(run.status, control_action(action))

    def action_pause(self) -> None:
        self._control_highlighted("pause")

    def action_continue(self) -> None:
        self._control_highlighted("continue")

    def action_stop(self) -> None:
        self._control_highlighted("stop")

    def _control_highlighted(self, action: str) -> None:
        run = self.highlighted_run()
        if run is not None:
            self.control(run, action)

    def action_generate(self) -> None:
        run = self.highlighted_run()
        if run is not None:
            self.generate_with(run)

    def action_resume(self) -> None:
        run = self.highlighted_run()
        if run is not None:
            self.resume_run(run)

    def action_export(self) -> None:
        run = self.highlighted_run()
        if run is not None:
            self.export_run(run)

    def action_delete(self) -> None:
        run = self.highlighted_run()
        if run is not None:
            self.delete_run(run)

    def after_delete(self, run_id: str) -> None:
        self.marked.discard(run_id)
        self._ask()
