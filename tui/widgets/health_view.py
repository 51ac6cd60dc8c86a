"""The Datasets screen's Check view: the dataset check, run in a worker, shown as it lands.

``check(dataset, model)`` runs ``engine.dataset_health.check_dataset`` in a
thread worker: a progress line while it reads, then the report's sections
(``health_report``) with the length histogram as a plot. The part about the
model follows in the same worker (its tokenizer may have to be trained or
loaded), so the data's own sections show first. A user's mistake is shown in
place, in the progress line; the sections already shown stay.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker
from textual_plotext import PlotextPlot

from tui.widgets.health_report import health_report

if TYPE_CHECKING:
    from engine.dataset_health import HealthReport, LengthBucket
    from engine.datasets import Dataset

PROGRESS_INTERVAL = 0.1  # seconds between progress updates (the check reports every batch)
PHASES = {
    "reading": "reading",
    "near duplicates": "finding near duplicates",
    "tokenizing": "tokenizing",
    "leakage": "looking for validation text in training",
    "leakage by document": "the same, split by document",
}


class LengthChart(PlotextPlot):
    """The document length histogram: a bar per half-decade bucket of characters."""

    def show(self, buckets: list[LengthBucket]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.bar([bucket.label() for bucket in buckets], [bucket.documents for bucket in buckets], color="cyan")
        plt.title("documents by length (characters)")
        self.refresh()


class HealthView(Vertical):
    """A progress line, then the check's sections and its length plot, scrolling together."""

    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")

    class Progressed(Message, bubble=False):
        def __init__(self, text: str, done: int | None, total: int | None) -> None:
            super().__init__()
            self.text, self.done, self.total = text, done, total

    class Checked(Message, bubble=False):
        """A report for the dataset checked; ``final`` once the model's part is in it too."""

        def __init__(self, report: HealthReport, final: bool) -> None:
            super().__init__()
            self.report, self.final = report, final

    def compose(self) -> ComposeResult:
        with Horizontal(id="health-progress-row"):
            yield Static("h checks the chosen dataset", id="health-status")
            yield ProgressBar(id="health-progress", show_eta=False)
        with VerticalScroll(id="health-box"):
            yield Static("", id="health-report")
            yield LengthChart(id="health-lengths")

    def on_mount(self) -> None:
        self.query_one("#health-progress").display = False
        self.query_one("#health-lengths").display = False
        # A report is about one dataset and model: choosing others (on any screen) clears it.
        for chosen in ("dataset", "dataset_split", "model"):
            self.watch(self.app, chosen, lambda value: self.forget(), init=False)

    def check(self, dataset: Dataset, model: str) -> None:
        """Check ``dataset``, then measure it against ``model``; an earlier check still going is abandoned."""
        self.query_one("#health-report", Static).update("")
        self.query_one("#health-lengths").display = False
        self._progressed(self.Progressed(f"checking {dataset.name}…", None, None))
        self.query_one("#health-box").focus()  # ↑/↓ and page keys scroll the report
        self._run(dataset, model)

    def forget(self) -> None:
        """Another dataset was chosen: what is shown is about the last one, so it goes."""
        self.workers.cancel_group(self, "health")
        self.query_one("#health-report", Static).update("")
        self.query_one("#health-lengths").display = False
        self.query_one("#health-progress").display = False
        self.query_one("#health-status", Static).update("h checks the chosen dataset")

    @work(thread=True, exclusive=True, group="health", exit_on_error=False)
    def _run(self, dataset: Dataset, model: str) -> None:
        from engine.dataset_health import check_dataset, checked_model

        worker = get_current_worker()
        last = [0.0]

        def post(message: Message) -> None:
            if not worker.is_cancelled:
                self.post_message(message)

        def progress(phase: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or done >= total:
                last[0] = now
                post(self.Progressed(PHASES.get(phase, phase), done, total))

        post(self.Checked(check_dataset(dataset, progress=progress), final=False))
        post(self.Progressed(f"measuring tokens against {model}…", None, None))
        self.app.wait_for_engine()  # type: ignore[attr-defined]  # WorkbenchApp: torch is imported once, there
        measured = checked_model(model, dataset, progress=lambda text: post(self.Progressed(text, None, None)))
        post(self.Checked(check_dataset(dataset, measured, progress=progress), final=True))

    @on(Progressed)
    def _progressed(self, message: Progressed) -> None:
        self.query_one("#health-status", Static).update(message.text)
        bar = self.query_one("#health-progress", ProgressBar)
        bar.display = True
        bar.update(total=message.total or None, progress=message.done or 0)

    @on(Checked)
    def _checked(self, message: Checked) -> None:
        report = message.report
        self.query_one("#health-report", Static).update(health_report(report, bars=False))
        chart = self.query_one("#health-lengths", LengthChart)
        chart.display = True
        chart.show(report.lengths)
        if message.final:
            self.query_one("#health-progress").display = False
            findings = len(report.findings())
            verdict = "clean" if not findings else f"{findings} finding{'s' if findings != 1 else ''}"
            self.query_one("#health-status", Static).update(f"{report.dataset}: {verdict} · h checks again")

    @on(Worker.StateChanged)
    def _failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "health" or event.state != WorkerState.ERROR:
            return
        from engine.errors import WorkbenchError

        error: Any = event.worker.error
        self.query_one("#health-progress").display = False
        self.query_one("#health-status", Static).update(Text(str(error), style="bold red"))
        if isinstance(error, WorkbenchError):
            event.stop()  # shown in place; the app's handler reports only bugs
