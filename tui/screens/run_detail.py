"""One run in full: its curve, configuration, samples, probe timeline and checkpoints, live while it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static, TabbedContent, TabPane, Tabs

from tui.screens.run_actions import RunActionsScreen
from tui.widgets.formatting import human_count, loss_text, model_label
from tui.widgets.loss_chart import LossChart
from tui.widgets.probe_timeline import ProbeTimeline

if TYPE_CHECKING:
    from engine.store import Run

POLL_INTERVAL = 0.5


class RunDetailScreen(RunActionsScreen):
    """The detail of one run, opened from Runs (or Train); Escape goes back."""

    MODE = "runs"
    TITLE = "Run detail"
    HELP = (
        "One run: its loss curve, its full configuration, the samples it wrote, its probe "
        "timeline and its checkpoints. In the Probes tab, ↑/↓ picks a probe prompt and ←/→ "
        "moves through the evaluated steps: its completion at each, the words it changed since "
        "the step before highlighted. In the Checkpoints tab, g generates with the highlighted "
        "checkpoint (elsewhere, the latest). r resumes the run, e exports it, x deletes it. "
        "Escape goes back."
    )

    BINDINGS = [
        Binding("escape", "back", "Back", id="run.back", tooltip="Back to the runs"),
        # The tab labels show these keys, so the footer need not.
        Binding("c", "show_tab('curve')", "Curve", show=False, id="run.curve", tooltip="The loss curve"),
        Binding("o", "show_tab('config')", "Config", show=False, id="run.config", tooltip="The run's configuration"),
        Binding("a", "show_tab('samples')", "Samples", show=False, id="run.samples", tooltip="Text the run wrote"),
        Binding(
            "p",
            "show_tab('probes')",
            "Probes",
            show=False,
            id="run.probes",
            tooltip="The probe prompts' completions, evaluation by evaluation",
        ),
        Binding(
            "left",
            "probe_step(-1)",
            "Earlier",
            id="run.probe_earlier",
            priority=True,  # over the focused list's scrolling: in the Probes tab they move through the steps
            tooltip="The probe's completion at the evaluated step before",
        ),
        Binding(
            "right",
            "probe_step(1)",
            "Later",
            id="run.probe_later",
            priority=True,  # over the focused list's scrolling: in the Probes tab they move through the steps
            tooltip="The probe's completion at the evaluated step after",
        ),
        Binding(
            "k",
            "show_tab('checkpoints')",
            "Checkpoints",
            show=False,
            id="run.checkpoints",
            tooltip="The run's checkpoints",
        ),
        Binding("g", "generate", "Generate", id="run.generate", tooltip="Generate with a checkpoint of this run"),
        Binding("r", "resume", "Resume", id="run.resume", tooltip="Resume this run on the Train screen"),
        Binding("e", "export", "Export", id="run.export", tooltip="Write the run as JSON and CSV here"),
        Binding("x", "delete", "Delete", id="run.delete", tooltip="Delete this run (asks first)"),
    ]

    class Polled(Message, bubble=False):
        def __init__(
            self,
            run: "Run",
            after: int,
            metrics: list[dict],
            samples: list[dict],
            checkpoints: list[dict],
            probes_after: int,
            probes: list[dict],
        ) -> None:
            super().__init__()
            self.run, self.after, self.metrics, self.samples, self.checkpoints = (
                run,
                after,
                metrics,
                samples,
                checkpoints,
            )
            self.probes_after, self.probes = probes_after, probes

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.run: Run | None = None
        self._after = -1
        self._probes_after = -1  # the last step whose probe completions are shown
        self._checkpoints: list[dict] = []

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="run-summary")
        with TabbedContent(id="run-tabs", initial="curve"):
            with TabPane("c Curve", id="curve"):
                yield LossChart(id="run-chart")
            with TabPane("o Config", id="config"):
                yield VerticalScroll(Static("", id="run-config"))
            with TabPane("a Samples", id="samples"):
                yield VerticalScroll(Static("", id="run-samples"))
            with TabPane("p Probes", id="probes"):
                yield ProbeTimeline(id="run-probes")
            with TabPane("k Checkpoints", id="checkpoints"):
                yield DataTable(id="run-checkpoints", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#run-checkpoints", DataTable)
        for key, label in (("step", "step"), ("val_loss", "val loss"), ("created_at", "saved"), ("path", "path")):
            table.add_column(label, key=key)
        self.follow(self._reader(), POLL_INTERVAL)

    def _reader(self) -> Callable[[], "RunDetailScreen.Polled | None"]:
        """What the follow thread calls: the run and whatever of it changed since the last read."""
        store = self.workbench.store
        last = None

        def read() -> RunDetailScreen.Polled | None:
            nonlocal last
            after, probes_after = self._after, self._probes_after  # the UI's cursors: rows not shown yet
            run = store.get_run(self.run_id)
            metrics = store.metrics(run.id, after_step=after)
            probes = store.probes(run.id, after_step=probes_after)
            state = (run, store.samples(run.id), store.checkpoints(run.id))
            if not metrics and not probes and state == last:
                return None
            last = state
            return self.Polled(run, after, metrics, state[1], state[2], probes_after, probes)

        return read

    @on(Polled)
    def _show(self, message: Polled) -> None:
        if message.probes and message.probes_after == self._probes_after:
            self.query_one("#run-probes", ProbeTimeline).add_probes(message.probes)
            self._probes_after = message.probes[-1]["step"]
        if message.after != self._after:
            return
        self.run = message.run
        self._show_summary(message.run)
        self.query_one("#run-chart", LossChart).add_metrics(message.run.id, message.metrics, label=message.run.name)
        if message.metrics:
            self._after = message.metrics[-1]["step"]
        self._show_config(message.run)
        self._show_samples(message.samples)
        self._show_checkpoints(message.checkpoints)

    def _show_summary(self, run: "Run") -> None:
        summary = Text()
        summary.append(f"{run.name} ", style="bold")
        summary.append(f"{run.id} · {run.status}\n", style="dim")
        summary.append(
            f"{model_label(run.model, run.lora, run.world_size)} on {run.dataset}"
            f" · step {run.steps:,} · {human_count(run.tokens)} tokens"
            f" · best val {loss_text(run.best_val_loss)} · created {run.created_at[:16].replace('T', ' ')}"
        )
        if run.finished_at:
            summary.append(f" · finished {run.finished_at[:16].replace('T', ' ')}")
        if run.error:
            summary.append(f"\n{run.error}", style="bold red")
        self.query_one("#run-summary", Static).update(summary)

    def _show_config(self, run: "Run") -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, value in run.config.items():
            table.add_row(key, repr(value) if isinstance(value, str) else str(value))
        self.query_one("#run-config", Static).update(table)

    def _show_samples(self, samples: list[dict]) -> None:
        text = Text()
        for sample in reversed(samples):
            text.append(f"step {sample['step']}\n", style="bold")
            text.append(sample["prompt"], style="dim")
            text.append(sample["text"] + "\n\n")
        self.query_one("#run-samples", Static).update(text if samples else Text("no samples yet", style="dim"))

    def _show_checkpoints(self, checkpoints: list[dict]) -> None:
        if checkpoints == self._checkpoints:
            return
        self._checkpoints = checkpoints
        table = self.query_one("#run-checkpoints", DataTable)
        table.clear()
        for checkpoint in checkpoints:
            table.add_row(
                str(checkpoint["step"]),
                loss_text(checkpoint.get("val_loss")),
                str(checkpoint.get("created_at", ""))[:16].replace("T", " "),
                str(checkpoint["path"]),
                key=str(checkpoint["step"]),
            )

    # -- actions ----------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#run-tabs", TabbedContent).active = tab
        if tab == "checkpoints":
            self.query_one("#run-checkpoints").focus()
        elif tab == "probes":
            self.query_one("#run-probes", ProbeTimeline).focus_prompts()

    @on(TabbedContent.TabActivated)
    def _tab_shown(self) -> None:
        self.refresh_bindings()  # ←/→ move through the probes only in their tab

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "probe_step":  # in the Probes tab; the tab strip, when focused, keeps its arrows
            tabs = self.query("#run-tabs").results(TabbedContent)
            return any(tab.active == "probes" for tab in tabs) and not isinstance(self.focused, Tabs)
        return True

    def action_probe_step(self, offset: int) -> None:
        self.query_one("#run-probes", ProbeTimeline).move(offset)

    def action_generate(self) -> None:
        if self.run is None:
            return
        if not self._checkpoints:
            self.notify(f"{self.run.name} has no checkpoint yet.", severity="warning")
            return
        step = None
        if self.query_one("#run-tabs", TabbedContent).active == "checkpoints":
            table = self.query_one("#run-checkpoints", DataTable)
            if table.cursor_row is not None and table.cursor_row < len(self._checkpoints):
                step = self._checkpoints[table.cursor_row]["step"]
        self.dismiss()
        self.generate_with(self.run, step)

    def action_resume(self) -> None:
        if self.run is not None:
            run = self.run
            self.dismiss()
            self.resume_run(run)

    def action_export(self) -> None:
        if self.run is not None:
            self.export_run(self.run)

    def action_delete(self) -> None:
        if self.run is not None:
            self.delete_run(self.run)

    def after_delete(self, run_id: str) -> None:
        self.dismiss()
