"""Train: configure a run, start or queue it, pause, continue or stop it, and watch it learn.

The run is a process of its own (``engine.run_process``): Ctrl+R launches it
and it goes on when the app closes or the terminal is lost. This screen only
follows it through the store: one follow thread, four times a second, reads
the run's row (status and live progress record) and its metrics and samples
newer than those already shown, and posts them only when something changed;
the chart grows by those rows. Pause, continue and stop are requests written
to the store, which the run's process answers. Opened again, the screen
follows the latest run, from its first step. A run of a sweep is followed
with the whole sweep: when it ends, the screen moves on to the sweep's run
going next (``engine.sweeps.run_to_follow``) and says where it is in it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from engine.errors import SettingsError, WorkbenchError
from engine.store import FINISHED_STATUSES as FINISHED
from engine.store import can_control, control_action
from tui.screens.confirm import ConfirmScreen
from tui.screens.run_actions import RunActionsScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.formatting import human_bytes, human_count, human_duration, loss_text
from tui.widgets.loss_chart import LossChart

if TYPE_CHECKING:
    from engine.run_process import TrainingProgress
    from engine.store import Run
    from engine.sweeps import SweepPlace

POLL_INTERVAL = 0.25
STALE_CHECK_INTERVAL = 2.0  # seconds between checks that the followed run's process is alive
SAMPLES_SHOWN = 3
# The form shows the settings most runs change; these fold under headings
# (Enter on a heading opens it).
FORM_SECTIONS = (
    (
        "Schedule and optimizer",
        (
            "epochs",
            "max_epochs",
            "grad_accum",
            "min_learning_rate",
            "warmup_steps",
            "weight_decay",
            "dropout",
            "beta1",
            "beta2",
            "grad_clip",
        ),
    ),
    (
        "Evaluation, samples, checkpoints",
        (
            "eval_every",
            "eval_batches",
            "sample_every",
            "sample_prompt",
            "sample_length",
            "probes",
            "probe_tokens",
            "checkpoint_every",
            "checkpoints_kept",
        ),
    ),
    ("Device and precision", ("device", "precision", "compile", "auto_batch", "gradient_checkpointing", "seed")),
    ("LoRA", ("lora", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets")),
    ("Data and tokenizer", ("dataset_field", "dataset_split", "split_by", "vocab_size")),
)


class TrainScreen(RunActionsScreen):
    """The training form, the controls, and the live run."""

    MODE = "train"
    TITLE = "Train"
    HELP = (
        "Every training setting is in the form on the left, checked as you type; the less common "
        "ones fold under headings (Tab to a heading, Enter opens it). Ctrl+R starts a "
        "run on the chosen model and dataset (set them here or on the Models and Datasets "
        "screens) as a background process: it goes on if you quit the app or lose the terminal, "
        "and the app shows it again when reopened. Ctrl+L queues the run instead: it starts when "
        "the runs before it end. Ctrl+T pauses and continues; Ctrl+S stops cleanly, saving a "
        "checkpoint (or cancels a queued run). A setting typed as a comma list (learning rate "
        "'1e-3, 3e-4') makes Ctrl+R a sweep: one run per combination of the lists, queued in order, "
        "the count shown under the form; the Runs screen then shows them. The chart shows train and "
        "validation loss as they arrive, with the learning rate, tokens/s, progress and ETA above it "
        "and the latest samples below. Resuming a run from the Runs screen fills the form with its "
        "settings; Ctrl+N starts over with a new run. Probe prompts (under Evaluation) are typed "
        "separated by |, since a prompt may hold commas: the run completes each at every evaluation, "
        "and its detail's Probes tab shows them step by step."
    )
    # Nothing is focused for the user on a return here (the cursor stays where
    # they left it, or nowhere after Escape): focusing the form would restyle
    # all its widgets on every switch to this screen (a tenth of a second when
    # every field was in sight).
    AUTO_FOCUS = ""

    BINDINGS = [
        Binding("ctrl+r", "start", "Start", id="train.start", tooltip="Start a run with this configuration"),
        Binding(
            "ctrl+l",
            "queue",
            "Queue",
            id="train.queue",
            tooltip="Queue a run with this configuration: it starts when the runs before it end",
        ),
        Binding("ctrl+t", "pause", "Pause", id="train.pause", tooltip="Pause the run (it keeps its place)"),
        Binding("ctrl+t", "resume", "Continue", id="train.resume", tooltip="Continue the paused run"),
        Binding(
            "ctrl+s",
            "stop",
            "Stop",
            id="train.stop",
            tooltip="Stop the run, saving a checkpoint (a queued run is cancelled)",
        ),
        Binding("ctrl+n", "new_run", "New", id="train.new", tooltip="Reset the form for a new run"),
        Binding("ctrl+g", "open_run", "Detail", id="train.detail", tooltip="Open this run's detail"),
    ]

    run_id: reactive[str | None] = reactive(None)
    status: reactive[str] = reactive("")

    class Started(Message, bubble=False):
        """A run was launched or queued (``run``), or found in the store to show (the latest run)."""

        def __init__(self, run: "Run", *, submitted: bool) -> None:
            super().__init__()
            self.run, self.submitted = run, submitted

    class Polled(Message, bubble=False):
        """What changed since the last poll: new metrics and samples, the run row, live progress, and for a run
        of a sweep its place in it and, once it has ended, the sweep's run to follow next (None: none)."""

        def __init__(
            self,
            run_id: str,
            metrics: list[dict],
            samples: list[dict],
            run: "Run",
            progress: "TrainingProgress | None",
            place: "SweepPlace | None",
            next_run: "Run | None",
        ) -> None:
            super().__init__()
            self.run_id, self.metrics, self.samples, self.run, self.progress = (run_id, metrics, samples, run, progress)
            self.place, self.next_run = place, next_run

    def __init__(self) -> None:
        super().__init__()
        self._resume_run: str | None = None
        self._samples: list[dict] = []
        self._lr: float | None = None
        self._status_shown = Text()
        self._status_rows = 0
        self._run: Run | None = None
        """The followed run as last read from the store."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="train-body"):
            with Vertical(id="train-left"):
                yield Label("Configuration", classes="section")
                yield Static("", id="resume-banner")
                yield Vertical(Static("loading torch…", classes="placeholder"), id="config-box")
                yield Static("", id="sweep-count")
            with Vertical(id="train-right"):
                yield Static("No run yet: check the form and press Ctrl+R.", id="run-status")
                yield ProgressBar(id="train-progress", show_eta=False)
                yield LossChart(id="train-chart", empty_message="loss appears here as the run logs steps")
                yield Label("Samples", classes="section")
                yield VerticalScroll(Static("", id="samples"), id="samples-box")

    def on_mount(self) -> None:
        self.query_one("#resume-banner").display = False
        self.query_one("#sweep-count").display = False
        self.query_one("#train-progress").display = False
        self.watch(self.workbench, "engine_loaded", self._engine_loaded)
        self._show_latest_run()  # from the store alone: no need to wait for torch
        self.watch(self.workbench, "model", lambda model: self._follow_selection("model", model), init=False)
        self.watch(self.workbench, "dataset", lambda name: self._follow_selection("dataset", name), init=False)
        self.watch(
            self.workbench, "dataset_split", lambda split: self._follow_selection("dataset_split", split), init=False
        )
        self.watch(self.workbench, "vocab_size", lambda size: self._follow_selection("vocab_size", size), init=False)

    def _engine_loaded(self, loaded: bool) -> None:
        if not loaded or self.query("#config-box ConfigForm"):
            return
        from engine.sweeps import values_in_text
        from engine.training_config import TrainingConfig

        box = self.query_one("#config-box")
        box.remove_children()
        form = ConfigForm(
            TrainingConfig,
            self._chosen(),
            sections=FORM_SECTIONS,
            value_lists=values_in_text,  # a setting typed as a comma list makes the start a sweep
            placeholders={"probes": "one | another | …"},  # prompts hold commas: | separates them
            id="config",
        )
        box.mount(form)
        form.call_after_refresh(form.focus_first)
        self._take_pending_resume()

    @work(thread=True, exclusive=True, group="latest", exit_on_error=False)
    def _show_latest_run(self) -> None:
        """Follow the run going now (or the latest one) from the store: a reopened app shows it again."""
        runs = self.workbench.store.list_runs()
        if not runs:
            return
        from engine.store import ACTIVE_STATUSES

        going = [run for run in runs if run.status in ACTIVE_STATUSES]
        self.post_message(self.Started((going or runs)[0], submitted=False))

    def _chosen(self) -> dict[str, Any]:
        """What the other screens chose for a new run: model, dataset (and split), the tokenizer lab's vocabulary."""
        chosen = {
            "model": self.workbench.model,
            "dataset": self.workbench.dataset,
            "dataset_split": self.workbench.dataset_split,
            "vocab_size": self.workbench.vocab_size,
        }
        return {name: value for name, value in chosen.items() if value is not None}

    def _follow_selection(self, field: str, value: str | int | None) -> None:
        if self._resume_run is None and self.query("#config"):
            self.query_one("#config", ConfigForm).set_value(field, value)

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Textual calls WorkbenchScreen's handler too (it dispatches to each class's on_ method), so no super().
        self._take_pending_resume()

    # -- resuming a run chosen on the Runs screen -------------------------------

    def _take_pending_resume(self) -> None:
        pending = self.workbench.pending_resume
        if pending is None or not self.query("#config"):
            return
        self.workbench.pending_resume = None
        run_id, name, config = pending
        self._resume_run = run_id
        self.watch_run(run_id, through_sweep=False)  # the run chosen stays in sight, though its sweep goes on
        self.query_one("#config", ConfigForm).set_values(config)
        banner = self.query_one("#resume-banner", Static)
        banner.update(
            f"Resuming {name} ({run_id}). Raise max steps if it had finished; "
            "Ctrl+R continues it, Ctrl+N starts a new run instead."
        )
        banner.display = True

    def action_new_run(self) -> None:
        if not self.query("#config"):
            return
        from engine.training_config import TrainingConfig

        self._resume_run = None
        self.query_one("#resume-banner").display = False
        defaults = TrainingConfig(**self._chosen()).as_dict()
        self.query_one("#config", ConfigForm).set_values(defaults)

    # -- controls ---------------------------------------------------------------

    def action_start(self) -> None:
        self._submit(queue=False)

    def action_queue(self) -> None:
        self._submit(queue=True)

    def _submit(self, *, queue: bool) -> None:
        from engine.store import ACTIVE_STATUSES

        if self.query("#config") and self.query_one("#config", ConfigForm).varied:
            self._submit_sweep()
            return
        if not queue and self._run is not None and self._run.status in ACTIVE_STATUSES:
            self.notify(
                f"Run {self._run.name} is {self._run.status}; stop it first, or queue this run with Ctrl+L.",
                severity="warning",
            )
            return
        if not self.query("#config"):
            self.notify("torch is still loading; try again in a moment.", severity="warning")
            return
        config = self.query_one("#config", ConfigForm).settings()
        if config is None:
            self.notify("Fix the settings marked in red first.", severity="error")
            self.query_one("#config", ConfigForm).focus_first_error()
            return
        if not queue:
            self.query_one("#run-status", Static).update("starting: launching the run's process…")
            self.query_one("#train-progress").display = True
            self.query_one("#train-progress", ProgressBar).update(total=None, progress=0)
        self._start(config, self._resume_run, queue)

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _start(self, config: Any, resume_run: str | None, queue: bool) -> None:
        """Plan a new run from the fields changed (a time budget alone plans it on time), then launch or queue it."""
        from engine.planning import given_settings, plan_run
        from engine.run_process import submit_run

        if resume_run is None:
            plan = plan_run(given_settings(config.as_dict()))
            config = plan.config
            self.app.call_from_thread(self._show_plan, plan)
        run = submit_run(config, self.workbench.store, resume_run=resume_run, queue=queue)
        self.post_message(self.Started(run, submitted=True))

    # -- a sweep: a setting typed as a comma list ---------------------------------

    @on(ConfigForm.Checked)
    def _show_sweep_count(self) -> None:
        """Under the form, how many runs a start makes when a setting holds a list: "4 runs: lr × batch"."""
        from engine.sweeps import MAX_RUNS, describe_grid, run_count

        varied = self.query_one("#config", ConfigForm).varied
        line = self.query_one("#sweep-count", Static)
        if line.display != bool(varied):
            line.display = bool(varied)
            self.refresh_bindings()  # a sweep is queued, so Ctrl+R offers it while a run is going too
        if varied:
            asks = f" (over {MAX_RUNS}: it asks first)" if run_count(varied) > MAX_RUNS else ""
            line.update(f"{describe_grid(varied)} · Ctrl+R queues them in order{asks}")

    def _submit_sweep(self) -> None:
        """Start the form's grid as a sweep, its runs queued in order; a very large grid is confirmed first."""
        from engine.sweeps import MAX_RUNS, run_count

        form = self.query_one("#config", ConfigForm)
        config = form.settings()
        if config is None:
            self.notify("Fix the settings marked in red first.", severity="error")
            form.focus_first_error()
            return
        if self._resume_run is not None:
            self.notify("A resumed run takes one value per setting; Ctrl+N starts a new form for a sweep.")
            return
        varied = dict(form.varied)
        count = run_count(varied)
        if count <= MAX_RUNS:
            self._start_sweep(config, varied, allow_large=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_sweep(config, varied, allow_large=True)

        self.app.push_screen(
            ConfirmScreen("A large sweep", f"This grid makes {count} runs. Queue them all?", yes="Queue them"),
            answered,
        )

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _start_sweep(self, config: Any, varied: dict[str, list[Any]], *, allow_large: bool) -> None:
        """Plan and check every run of the grid, then record the sweep and queue its runs (engine.sweeps)."""
        from engine.planning import given_settings
        from engine.sweeps import plan_sweep, start_sweep

        given = {name: value for name, value in given_settings(config.as_dict()).items() if name not in varied}
        plan = plan_sweep(given, varied, allow_large=allow_large)
        sweep, runs = start_sweep(plan, self.workbench.store)
        self.app.call_from_thread(self._sweep_started, sweep, runs, plan.description())

    def _sweep_started(self, sweep: dict, runs: list["Run"], description: str) -> None:
        """Follow the sweep here from its first run, and show all of them on the Runs screen."""
        self._resume_run = None
        self.watch_run(runs[0].id)
        self.notify(f"Sweep {sweep['id']}: {description}, queued in order; they start one at a time.", timeout=8)
        self.app.switch_mode("runs")

    def _show_plan(self, plan: Any) -> None:
        """Put what the plan picked into the form, so it shows the settings the run trains with, and say why."""
        self.query_one("#config", ConfigForm).set_values(plan.config.as_dict())
        self.notify(plan.explanation(), title="Plan", timeout=12)

    @on(Started)
    def _started(self, message: Started) -> None:
        run = message.run
        if message.submitted:
            self._resume_run = None
            self.query_one("#resume-banner").display = False
        elif self.run_id is not None:
            return  # the user started or chose a run meanwhile
        if run.status == "queued":
            self.notify(
                f"Queued run {run.name} ({run.id}); it starts when the runs before it end. Runs (5) shows the queue."
            )
            if self._run is not None and self._run.status not in FINISHED:
                return  # keep following the run going now
        self.watch_run(run.id)

    def watch_run(self, run_id: str, *, through_sweep: bool = True) -> None:
        """Show ``run_id`` from its first step: chart, progress and samples, then follow it.

        A run of a sweep, once it has ended, hands over to the sweep's run going
        next, unless ``through_sweep`` is False.
        """
        self._samples = []
        self._lr = None
        self._status_rows = 0
        self.query_one("#train-chart", LossChart).clear()
        self.query_one("#samples", Static).update("")
        self.query_one("#train-progress").display = True
        self.run_id = run_id
        self.follow(self._reader(run_id, through_sweep), POLL_INTERVAL)

    def action_pause(self) -> None:
        if self._run is not None:
            self.control(self._run, "pause")

    def action_resume(self) -> None:
        if self._run is not None:
            self.control(self._run, "continue")

    def action_stop(self) -> None:
        if self._run is not None:
            self.control(self._run, "stop")

    def action_open_run(self) -> None:
        if self.run_id is not None:
            from tui.screens.run_detail import RunDetailScreen

            self.app.push_screen(RunDetailScreen(self.run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out controls that do nothing in the followed run's state."""
        status = self._run.status if self._run is not None else None
        going = status is not None and status not in FINISHED
        if action in ("pause", "resume", "stop"):
            possible = status is not None and can_control(status, control_action(action.replace("resume", "continue")))
            # Pause and resume share a key: the footer shows the one that fits; stop stays in sight, greyed.
            return possible or (None if action == "stop" else False)
        if action == "start" and self.query("#config") and self.query_one("#config", ConfigForm).varied:
            return True  # a sweep's runs are queued behind any run going
        if action in ("start", "new_run"):
            return (not going) or None
        if action == "open_run":
            return self.run_id is not None or None
        return True

    # -- watching the run -------------------------------------------------------

    def _reader(self, run_id: str, through_sweep: bool) -> Callable[[], "TrainScreen.Polled | None"]:
        """What the follow thread calls: the run's new metrics and samples, its row and progress record,
        and for a run of a sweep its place in it and (ended, ``through_sweep``) the sweep's run to follow next.

        The cursors live in this closure, so only the follow thread touches them.
        """
        from engine.run_process import progress_of
        from engine.sweeps import place_in_sweep, run_to_follow, sweep_runs

        store = self.workbench.store
        after_metric, after_sample, last_state = -1, -1, None
        last_check = 0.0

        def read() -> TrainScreen.Polled | None:
            nonlocal after_metric, after_sample, last_state, last_check
            if time.monotonic() - last_check > STALE_CHECK_INTERVAL:  # a run whose process died says so
                store.mark_interrupted_runs()
                last_check = time.monotonic()
            metrics = store.metrics(run_id, after_step=after_metric)
            samples = store.samples(run_id, after_step=after_sample)
            run = store.get_run(run_id)
            progress = progress_of(run)
            # The heartbeat's time changes twice a second; what is shown changes less often.
            state = dataclasses.replace(run, heartbeat_at=None)
            if not metrics and not samples and state == last_state:
                return None
            last_state = state
            after_metric = metrics[-1]["step"] if metrics else after_metric
            after_sample = samples[-1]["step"] if samples else after_sample
            sweep = sweep_runs(store, run.sweep_id) if run.sweep_id is not None else []
            next_run = run_to_follow(sweep) if through_sweep and run.status in FINISHED else None
            return self.Polled(run_id, metrics, samples, run, progress, place_in_sweep(run, sweep), next_run)

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
        self._show_status(run, progress, message.metrics[-1] if message.metrics else None, message.place)
        self._run = run
        if run.status != self.status:
            self.status = run.status
            self.refresh_bindings()
        if message.next_run is not None:
            self.notify(f"Run {run.name} {run.status}; the sweep goes on with {message.next_run.name}.")
            self.watch_run(message.next_run.id)

    def _show_status(
        self, run: "Run", progress: "TrainingProgress | None", latest: dict | None, place: "SweepPlace | None"
    ) -> None:
        """Where the run is (its place in a sweep, status, step, ETA), how it does (loss, lr, speed, GPU), a message."""
        if progress is None:  # before its process's first heartbeat (queued, starting): the run's row says
            earlier = latest or {}
            max_steps, step, estimated = run.config.get("max_steps") or 0, run.steps, False
            train_loss, val_loss, rate = earlier.get("train_loss"), run.best_val_loss, earlier.get("tokens_per_sec")
        else:
            max_steps, step, estimated = progress.max_steps, progress.step, progress.steps_estimated
            train_loss, val_loss, rate = progress.train_loss, progress.val_loss, progress.tokens_per_sec
        line = Text()
        if place is not None:
            line.append(f"{place} · ", style="dim")
        line.append(f"{run.name} · ", style="bold")
        line.append(run.status, style="bold red" if run.status == "failed" else "bold")
        # A run planned on time shows the steps its budget will reach at its pace so far.
        line.append(f" · step {step}/{'≈' if estimated else ''}{max_steps or '?'}")
        if progress is not None and run.status == "running" and progress.eta_seconds is not None:
            line.append(f" · ETA {human_duration(progress.eta_seconds)}")
        if run.status == "queued":
            line.append(" · starts when the runs before it end")
        elif progress is not None and run.status in ("starting", "running") and progress.phase not in ("", "training"):
            line.append(f" · {progress.phase}", style="italic")
        line.append(f"\nloss {loss_text(train_loss)} · val {loss_text(val_loss)}")
        if self._lr is not None:
            line.append(f" · lr {self._lr:.2e}")
        if rate:
            line.append(f" · {human_count(int(rate))} tok/s")
        if progress is not None and progress.gpu_memory_bytes is not None:
            line.append(f" · GPU {human_bytes(progress.gpu_memory_bytes)} peak")
        if progress is not None and progress.mfu is not None:
            line.append(f" · MFU {progress.mfu:.0%}")
        if run.error:
            line.append(f"\n{run.error}", style="red")
        elif progress is not None and progress.message and run.status not in ("running", "paused"):
            line.append(f"\n{progress.message}", style="dim")
        if line != self._status_shown:
            self._status_shown = line
            status = self.query_one("#run-status", Static)
            # A relayout only when the text needs more rows than it has: most
            # updates (4 a second) change a number in place, and laying out the
            # whole screen each time would be wasted work. (A line that wraps as
            # its numbers grow and shrink would otherwise relayout every time; a
            # spare row until the next relayout costs nothing.)
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
