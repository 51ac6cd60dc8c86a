"""Train: configure a run, start, pause, resume or stop it, and watch it learn.

The run itself is the engine's ``TrainingJob`` in its own thread, writing to
the store. This screen only reads: one follow thread, four times a second,
asks for the job's progress and for the store's metrics and samples newer
than those already shown, and posts them only when something changed; the
chart grows by those rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from engine.errors import SettingsError, WorkbenchError
from tui.screens.base import WorkbenchScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.formatting import human_bytes, human_count, human_duration, loss_text
from tui.widgets.loss_chart import LossChart

if TYPE_CHECKING:
    from engine.store import Run
    from engine.training import TrainingJob, TrainingProgress

POLL_INTERVAL = 0.25
SAMPLES_SHOWN = 3
# The form shows the settings most runs change; these fold under headings
# (Enter on a heading opens it).
FORM_SECTIONS = (
    ("Schedule and optimizer", ("epochs", "max_time", "grad_accum", "min_learning_rate", "warmup_steps",
                                "weight_decay", "beta1", "beta2", "grad_clip")),
    ("Evaluation, samples, checkpoints", ("eval_every", "eval_batches", "sample_every", "sample_prompt",
                                          "sample_length", "checkpoint_every", "checkpoints_kept")),
    ("Device and precision", ("device", "precision", "gradient_checkpointing", "seed")),
    ("LoRA", ("lora", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets")),
    ("Data and tokenizer", ("dataset_field", "vocab_size")),
)


class TrainScreen(WorkbenchScreen):
    """The training form, the controls, and the live run."""

    MODE = "train"
    TITLE = "Train"
    HELP = ("Every training setting is in the form on the left, checked as you type; the less common "
            "ones fold under headings (Tab to a heading, Enter opens it). Ctrl+R starts a "
            "run on the chosen model and dataset (set them here or on the Models and Datasets "
            "screens); Ctrl+T pauses and resumes; Ctrl+S stops cleanly, saving a checkpoint. The "
            "chart shows train and validation loss as they arrive, with the learning rate, tokens/s, "
            "progress and ETA above it and the latest samples below. Resuming a run from the Runs "
            "screen fills the form with its settings; Ctrl+N starts over with a new run.")
    # Nothing is focused for the user on a return here (the cursor stays where
    # they left it, or nowhere after Escape): focusing the form would restyle
    # all its widgets on every switch to this screen (a tenth of a second when
    # every field was in sight).
    AUTO_FOCUS = ""

    BINDINGS = [
        Binding("ctrl+r", "start", "Start", id="train.start", tooltip="Start a run with this configuration"),
        Binding("ctrl+t", "pause", "Pause", id="train.pause", tooltip="Pause the run (it keeps its place)"),
        Binding("ctrl+t", "resume", "Resume", id="train.resume", tooltip="Resume the paused run"),
        Binding("ctrl+s", "stop", "Stop", id="train.stop", tooltip="Stop the run, saving a checkpoint"),
        Binding("ctrl+n", "new_run", "New", id="train.new", tooltip="Reset the form for a new run"),
        Binding("ctrl+g", "open_run", "Detail", id="train.detail", tooltip="Open this run's detail"),
    ]

    run_id: reactive[str | None] = reactive(None)
    status: reactive[str] = reactive("")

    class Started(Message, bubble=False):
        def __init__(self, job: "TrainingJob", run_id: str) -> None:
            super().__init__()
            self.job, self.run_id = job, run_id

    class Polled(Message, bubble=False):
        """What changed since the last poll: new metrics and samples, the run row, live progress."""

        def __init__(self, run_id: str, metrics: list[dict], samples: list[dict], run: "Run",
                     progress: "TrainingProgress | None") -> None:
            super().__init__()
            self.run_id, self.metrics, self.samples, self.run, self.progress = (
                run_id, metrics, samples, run, progress)

    def __init__(self) -> None:
        super().__init__()
        self._resume_run: str | None = None
        self._samples: list[dict] = []
        self._lr: float | None = None
        self._status_shown = Text()
        self._status_rows = 0
        self._controls: tuple[str, str | None] | None = None
        """(run status, job status) the footer's keys were last checked for."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="train-body"):
            with Vertical(id="train-left"):
                yield Label("Configuration", classes="section")
                yield Static("", id="resume-banner")
                yield Vertical(Static("loading torch…", classes="placeholder"), id="config-box")
            with Vertical(id="train-right"):
                yield Static("No run yet: check the form and press Ctrl+R.", id="run-status")
                yield ProgressBar(id="train-progress", show_eta=False)
                yield LossChart(id="train-chart", empty_message="loss appears here as the run logs steps")
                yield Label("Samples", classes="section")
                yield VerticalScroll(Static("", id="samples"), id="samples-box")

    def on_mount(self) -> None:
        self.query_one("#resume-banner").display = False
        self.query_one("#train-progress").display = False
        self.watch(self.workbench, "engine_loaded", self._engine_loaded)
        self.watch(self.workbench, "model", lambda model: self._follow_selection("model", model), init=False)
        self.watch(self.workbench, "dataset", lambda name: self._follow_selection("dataset", name), init=False)

    def _engine_loaded(self, loaded: bool) -> None:
        if not loaded or self.query("#config-box ConfigForm"):
            return
        from engine.training import TrainingConfig

        box = self.query_one("#config-box")
        box.remove_children()
        form = ConfigForm(TrainingConfig, {"model": self.workbench.model, "dataset": self.workbench.dataset},
                          sections=FORM_SECTIONS, id="config")
        box.mount(form)
        form.call_after_refresh(form.focus_first)
        self._take_pending_resume()

    def _follow_selection(self, field: str, value: str) -> None:
        if self._resume_run is None and self.query("#config"):
            self.query_one("#config", ConfigForm).set_value(field, value)

    def on_screen_resume(self) -> None:
        self._take_pending_resume()

    # -- resuming a run chosen on the Runs screen -------------------------------

    def _take_pending_resume(self) -> None:
        pending = self.workbench.pending_resume
        if pending is None or not self.query("#config"):
            return
        self.workbench.pending_resume = None
        run_id, name, config = pending
        self._resume_run = run_id
        self.watch_run(run_id)
        self.query_one("#config", ConfigForm).set_values(config)
        banner = self.query_one("#resume-banner", Static)
        banner.update(f"Resuming {name} ({run_id}). Raise max steps if it had finished; "
                      "Ctrl+R continues it, Ctrl+N starts a new run instead.")
        banner.display = True

    def action_new_run(self) -> None:
        if not self.query("#config"):
            return
        from engine.training import TrainingConfig

        self._resume_run = None
        self.query_one("#resume-banner").display = False
        defaults = TrainingConfig(model=self.workbench.model, dataset=self.workbench.dataset).as_dict()
        self.query_one("#config", ConfigForm).set_values(defaults)

    # -- controls ---------------------------------------------------------------

    def action_start(self) -> None:
        if self.workbench.training_in_progress():
            self.notify("A run is already in progress; stop it first.", severity="warning")
            return
        if not self.query("#config"):
            self.notify("torch is still loading; try again in a moment.", severity="warning")
            return
        config = self.query_one("#config", ConfigForm).settings()
        if config is None:
            self.notify("Fix the settings marked in red first.", severity="error")
            self.query_one("#config", ConfigForm).focus_first_error()
            return
        self.query_one("#run-status", Static).update("starting: preparing the model and the data…")
        self.query_one("#train-progress").display = True
        self.query_one("#train-progress", ProgressBar).update(total=None, progress=0)
        self._start(config, self._resume_run)

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _start(self, config: Any, resume_run: str | None) -> None:
        from engine.training import TrainingJob

        job = TrainingJob(config, store=self.workbench.store, resume_run=resume_run)
        run_id = job.start()
        self.post_message(self.Started(job, run_id))

    @on(Started)
    def _started(self, message: Started) -> None:
        self.workbench.training = message.job
        self._resume_run = None
        self.query_one("#resume-banner").display = False
        self.watch_run(message.run_id)

    def watch_run(self, run_id: str) -> None:
        """Show ``run_id`` from its first step: chart, progress and samples, then follow it."""
        self._samples = []
        self._lr = None
        self._status_rows = 0
        self.query_one("#train-chart", LossChart).clear()
        self.query_one("#samples", Static).update("")
        self.query_one("#train-progress").display = True
        self.run_id = run_id
        self.follow(self._reader(run_id), POLL_INTERVAL)

    def action_pause(self) -> None:
        if self.workbench.training is not None:
            self.workbench.training.pause()
            self.refresh_bindings()

    def action_resume(self) -> None:
        if self.workbench.training is not None:
            self.workbench.training.resume()
            self.refresh_bindings()

    def action_stop(self) -> None:
        job = self.workbench.training
        if job is not None and self.workbench.training_in_progress():
            job.stop()
            self.query_one("#run-status", Static).update("stopping: saving a checkpoint…")

    def action_open_run(self) -> None:
        if self.run_id is not None:
            from tui.screens.run_detail import RunDetailScreen

            self.app.push_screen(RunDetailScreen(self.run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out controls that do nothing in the current state."""
        running = self.workbench.training_in_progress()
        if action in ("pause", "resume"):
            # One key, two actions: the footer shows the one that fits the run's state.
            paused = running and self.workbench.training.progress.status == "paused"
            return running and paused == (action == "resume")
        if action == "stop":
            return running or None
        if action in ("start", "new_run"):
            return (not running) or None
        if action == "open_run":
            return self.run_id is not None or None
        return True

    # -- watching the run -------------------------------------------------------

    def _reader(self, run_id: str) -> Callable[[], "TrainScreen.Polled | None"]:
        """What the follow thread calls: the run's new metrics and samples, its row, the job's progress.

        The cursors live in this closure, so only the follow thread touches them.
        """
        store = self.workbench.store
        after_metric, after_sample, last_state = -1, -1, None

        def read() -> TrainScreen.Polled | None:
            nonlocal after_metric, after_sample, last_state
            metrics = store.metrics(run_id, after_step=after_metric)
            samples = store.samples(run_id, after_step=after_sample)
            run = store.get_run(run_id)
            job = self.workbench.training
            progress = job.progress if job is not None and job.run_id == run_id else None  # frozen, replaced whole
            if not metrics and not samples and (run, progress) == last_state:
                return None
            last_state = (run, progress)
            after_metric = metrics[-1]["step"] if metrics else after_metric
            after_sample = samples[-1]["step"] if samples else after_sample
            return self.Polled(run_id, metrics, samples, run, progress)

        return read

    @on(Polled)
    def _show_poll(self, message: Polled) -> None:
        if message.run_id != self.run_id:
            return
        run, progress = message.run, message.progress
        self.query_one("#train-chart", LossChart).add_metrics(run.id, message.metrics, label=run.name)
        if message.metrics and message.metrics[-1].get("lr") is not None:
            self._lr = message.metrics[-1]["lr"]
        if message.samples:
            self._samples = (self._samples + message.samples)[-SAMPLES_SHOWN:]
            self._show_samples()
        self._show_status(run, progress, message.metrics[-1] if message.metrics else None)
        # Redraw only what changed: a poll comes 4 times a second, and every
        # repaint takes the GIL from the training thread.
        controls = (run.status, progress.status if progress is not None else None)
        if controls != self._controls:
            self._controls = controls
            self.status = run.status
            self.refresh_bindings()

    def _show_status(self, run: "Run", progress: "TrainingProgress | None", latest: dict | None) -> None:
        """Where the run is (status, step, ETA), how it is doing (loss, lr, speed, GPU), then any message."""
        live = progress is not None
        max_steps = progress.max_steps if live else run.config.get("max_steps", 0)
        step = progress.step if live else run.steps
        line = Text()
        line.append(f"{run.name} · ", style="bold")
        line.append(run.status, style="bold red" if run.status == "failed" else "bold")
        line.append(f" · step {step}/{max_steps}")
        if live and run.status == "running" and progress.eta_seconds is not None:
            line.append(f" · ETA {human_duration(progress.eta_seconds)}")
        train_loss = progress.train_loss if live else (latest or {}).get("train_loss")
        val_loss = progress.val_loss if live else run.best_val_loss
        line.append(f"\nloss {loss_text(train_loss)} · val {loss_text(val_loss)}")
        if self._lr is not None:
            line.append(f" · lr {self._lr:.2e}")
        rate = progress.tokens_per_sec if live else (latest or {}).get("tokens_per_sec")
        if rate:
            line.append(f" · {human_count(int(rate))} tok/s")
        if live and progress.gpu_memory_bytes is not None:
            line.append(f" · GPU {human_bytes(progress.gpu_memory_bytes)} peak")
        if run.error:
            line.append(f"\n{run.error}", style="red")
        elif live and progress.message and run.status not in ("running", "paused"):
            line.append(f"\n{progress.message}", style="dim")
        if line != self._status_shown:
            self._status_shown = line
            status = self.query_one("#run-status", Static)
            # A relayout only when the text needs more rows than it has: most
            # updates (4 a second) change a number in place, and a relayout of
            # the screen takes the GIL from the training thread. (A line that
            # wraps as its numbers grow and shrink would otherwise relayout
            # every time; a spare row until the next relayout costs nothing.)
            rows = len(line.wrap(self.app.console, max(status.content_size.width, 1)))
            status.update(line, layout=rows > self._status_rows)
            self._status_rows = max(rows, self._status_rows)
        bar = self.query_one("#train-progress", ProgressBar)
        if (bar.total, bar.progress) != (max(max_steps, 1), step):
            bar.update(total=max(max_steps, 1), progress=step)

    def _show_samples(self) -> None:
        text = Text()
        for sample in reversed(self._samples):
            text.append(f"step {sample['step']}: ", style="bold")
            text.append(sample["prompt"], style="dim")
            text.append(" ".join(sample["text"].split()) + "\n")
        self.query_one("#samples", Static).update(text)

    @on(Worker.StateChanged)
    def _show_error_in_place(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or not isinstance(event.worker.error, WorkbenchError):
            return
        if event.worker.group == "start":
            error = event.worker.error
            self.query_one("#run-status", Static).update(Text(str(error), style="bold red"))
            self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)
            if isinstance(error, SettingsError):
                self.query_one("#config", ConfigForm).show_refused(error.field, error.reason)
            event.stop()
