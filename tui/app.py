"""The workbench app: one Textual app with a screen per task.

The app owns what the screens share: the chosen dataset and model, the models
already loaded, and the run store. Training runs are processes of their own
(``engine.run_process``), which the app starts, follows and controls through
the store, and which outlive it. It paints its first frame before torch and
transformers are imported; a thread worker imports them afterwards and the
nav bar says "loading torch…" until they are ready.

Threads follow one rule: only this (the UI) thread touches widgets. Engine
calls run in thread workers that post messages back; one handler here shows
any error a worker raises, in words, never as a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import traceback
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from engine.errors import WorkbenchError
from tui.screens.datasets import DatasetsScreen
from tui.screens.help import HelpScreen
from tui.screens.quit import QuitScreen

if TYPE_CHECKING:
    from engine.models import LoadedModel, ModelRequest
    from engine.store import Run, RunStore


class ScreenActions(Provider):
    """Command palette entries for everything the current screen and the app can do.

    Built from the active key bindings, so every action with a key is also a
    command, and an action the screen cannot do right now is not offered.
    """

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        commands: dict[str, tuple[str, str, Callable[[], Any]]] = {}
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if not binding.description or not active.enabled or binding.action in commands:
                continue
            help_text = f"{binding.tooltip or binding.description}  (key: {self.app.get_key_display(binding)})"
            callback = partial(self.app.run_action, binding.action, active.node)
            commands[binding.action] = (binding.description, help_text, callback)
        return list(commands.values())

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


def screen_made_on_first_visit(module: str, name: str) -> Callable[[], Screen]:
    """A screen factory that imports the screen's module (if torch's loading has not) and makes the screen.

    Only the first screen is imported before the first frame; the others (and
    what they import: the chart, plotext) load with torch, after it.
    """

    def make() -> Screen:
        screen = getattr(importlib.import_module(module), name)()
        cast("WorkbenchApp", screen.app).read_later_css()
        return screen

    return make


class ModelCache:
    """Models already loaded, by source, so screens share them and nothing loads twice.

    Used from worker threads only. It keeps the few most recent models (A/B
    generation needs two at once) and lets older ones be freed.
    """

    KEEP = 3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: OrderedDict[ModelRequest, LoadedModel] = OrderedDict()

    def get(
        self,
        source: str,
        dataset: str | None,
        dataset_split: str | None,
        store: RunStore,
        progress: Callable[[str], None] | None = None,
    ) -> LoadedModel:
        """The loaded model for ``source`` (a scratch preset's tokenizer is trained on ``dataset``, its split)."""
        from engine.models import ModelRequest

        request = ModelRequest.of(source, dataset, dataset_split=dataset_split)  # equal requests: the same model
        with self._lock:
            if request in self._models:
                self._models.move_to_end(request)
                return self._models[request]
            loaded = request.load(store=store, progress=progress)
            self._models[request] = loaded
            while len(self._models) > self.KEEP:
                self._models.popitem(last=False)
            return loaded


class WorkbenchApp(App):
    """lm-workbench: datasets, models, generation, training and runs in one terminal app."""

    TITLE = "lm-workbench"
    # The screens' CSS lives in tui/screens/, and the app reads it: Textual,
    # reading a screen's own CSS on its first showing, restyles every widget of
    # every screen then. The first screen's and the dialogs' is read at start;
    # the rest (40 ms: too much for the first frame) once torch is in.
    CSS_PATH = ["app.tcss", "screens/datasets.tcss", "screens/help.tcss", "screens/confirm.tcss", "screens/quit.tcss"]
    LATER_CSS = ("models", "generate", "train", "runs", "inspect", "run_detail", "history", "compare", "sweep_picker")
    COMMANDS = App.COMMANDS | {ScreenActions}

    # (mode, key, title) in the order the nav bar shows them.
    SCREEN_ORDER = (
        ("datasets", "1", "Datasets"),
        ("models", "2", "Models"),
        ("generate", "3", "Generate"),
        ("train", "4", "Train"),
        ("runs", "5", "Runs"),
        ("inspect", "6", "Inspect"),
    )
    # The screens after the first: (module, class), imported with torch, made on first visit.
    LATER_SCREENS = {
        "models": ("tui.screens.models", "ModelsScreen"),
        "generate": ("tui.screens.generate", "GenerateScreen"),
        "train": ("tui.screens.train", "TrainScreen"),
        "runs": ("tui.screens.runs", "RunsScreen"),
        "inspect": ("tui.screens.inspect", "InspectScreen"),
    }
    MODES = {
        "datasets": DatasetsScreen,
        **{mode: screen_made_on_first_visit(*where) for mode, where in LATER_SCREENS.items()},
    }
    DEFAULT_MODE = "datasets"

    BINDINGS = [
        *(
            Binding(
                key,
                f"switch_mode('{mode}')",
                title,
                show=False,
                id=f"screen.{mode}",
                tooltip=f"Go to the {title} screen",
            )
            for mode, key, title in SCREEN_ORDER
        ),
        # In a text field a digit is text: F1-F6 switch screens from anywhere,
        # whatever has focus (function keys reach the app over SSH; Alt+digit
        # does not: Textual reads Esc+5 as the Mac's Option+5, "∞").
        *(
            Binding(
                f"f{key}",
                f"switch_mode('{mode}')",
                "Screens",
                show=key == "1",
                priority=True,
                key_display="f1-6" if key == "1" else None,
                id=f"screen.f.{mode}",
                tooltip=f"Go to the {title} screen, even from a text field",
            )
            for mode, key, title in SCREEN_ORDER
        ),
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            id="app.quit",
            priority=True,
            tooltip="Quit (asks first if a training run is in progress)",
        ),
    ]

    engine_status: reactive[str] = reactive("loading torch…")
    """What the nav bar says about the engine: loading, ready, or failed (the Models screen shows the device)."""
    engine_loaded: reactive[bool] = reactive(False)
    dataset: reactive[str] = reactive("fables")
    """The chosen dataset: a bundled or cached name, or a path."""
    dataset_split: reactive[str | None] = reactive(None)
    """The chosen dataset's split, where it has several (a saved DatasetDict, a cached dataset); else None."""
    model: reactive[str] = reactive("scratch:nano")
    """The chosen model source, as ModelSource text."""
    vocab_size: reactive[int | None] = reactive(None)
    """A scratch model's vocabulary chosen on the Datasets screen's tokenizer lab; None: the Train form's own."""

    def __init__(self) -> None:
        super().__init__()
        self.models = ModelCache()
        self.pending_resume: tuple[str, str, dict] | None = None
        """(run id, name, config) of a run the Runs screen asked the Train screen to resume."""
        self._store: RunStore | None = None
        self._store_lock = threading.Lock()
        self._engine_ready = threading.Event()
        self._engine_error: BaseException | None = None
        self._later_css_read = False

    @property
    def store(self) -> RunStore:
        """The run store, opened on first use (from a worker: opening runs migrations)."""
        with self._store_lock:
            if self._store is None:
                from engine.store import RunStore

                self._store = RunStore()
            return self._store

    def on_mount(self) -> None:
        # Importing torch holds the GIL for seconds: start only once the first
        # frame is on the screen, or the frame would wait for torch.
        self.call_after_refresh(self._load_engine)
        self.call_after_refresh(self._check_runs)

    @work(thread=True, group="engine", exit_on_error=False)
    def _load_engine(self) -> None:
        """Import torch and transformers after the first frame."""
        try:
            # Imported here, after the first frame, so that opening the app stays fast.
            import engine.generation
            import engine.training  # noqa: F401 - imported for its cost now, not for a name
            from engine.models import quiet_transformers

            quiet_transformers()
            for module, _ in self.LATER_SCREENS.values():  # so a first visit only builds the screen
                importlib.import_module(module)
        except BaseException as exc:
            self._engine_error = exc
            self.call_from_thread(setattr, self, "engine_status", "torch failed to load")
            raise
        finally:
            self._engine_ready.set()
        self.call_from_thread(self._engine_is_ready)

    def _engine_is_ready(self) -> None:
        self.read_later_css()
        self.engine_status = "torch ready"
        self.engine_loaded = True

    def read_later_css(self) -> None:
        """Read the CSS of the screens after the first, once (with torch, or on a first visit before it)."""
        if self._later_css_read:
            return
        self._later_css_read = True
        for name in self.LATER_CSS:
            self.stylesheet.read(Path(__file__).parent / "screens" / f"{name}.tcss")
        self.stylesheet.reparse()
        self.stylesheet.update(self)

    @work(thread=True, group="store", exit_on_error=False)
    def _check_runs(self) -> None:
        """Runs left 'running' by a process that died are marked 'interrupted'; the queue moves on."""
        from engine.run_process import check_runs

        check_runs(self.store)

    def wait_for_engine(self) -> None:
        """Block a worker thread until torch and the engine modules are imported."""
        self._engine_ready.wait()
        if self._engine_error is not None:
            raise WorkbenchError(
                f"torch and transformers could not be loaded ({self._engine_error}); "
                "check the installation with `make test` or reinstall with `make run`."
            )

    def load_model(self, source: str, progress: Callable[[str], None] | None = None) -> LoadedModel:
        """Load (or reuse) a model from a worker thread; scratch presets use the chosen dataset."""
        self.wait_for_engine()
        return self.models.get(source, self.dataset, self.dataset_split, self.store, progress)

    # -- errors -----------------------------------------------------------------

    @on(Worker.StateChanged)
    def _report_worker_error(self, event: Worker.StateChanged) -> None:
        """The one place a failed worker is reported (screens may show theirs in place first)."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.show_error(event.worker.error)

    def show_error(self, error: BaseException) -> None:
        """Tell the user what went wrong: a WorkbenchError's message, or a short bug notice."""
        if isinstance(error, WorkbenchError):
            self.notify(str(error), severity="error", timeout=10)
            return
        self.log.error("".join(traceback.format_exception(error)))
        self.notify(
            f"{type(error).__name__}: {error}\n(This is a bug in lm-workbench.)",
            title="Internal error",
            severity="error",
            timeout=15,
        )

    # -- actions ----------------------------------------------------------------

    def action_help(self) -> None:
        """Show the keys of this screen and of the app."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def delay_update(self, delay: float = 0.05) -> None:
        """Paint at once: Textual holds back every screen switch 50 ms (``switch_mode`` calls this) to mask
        a screen being built. Ours are built once and kept, so there is nothing to mask, and the wait alone
        is more than the 33 ms a switch may take. tests/test_textual_assumptions.py fails if Textual changes it."""

    async def action_quit(self) -> None:
        """Quit; with runs going, ask whether to leave them running (the default) or stop them with a checkpoint."""
        self._ask_before_quitting()

    @work(thread=True, group="quit", exclusive=True, exit_on_error=False)
    def _ask_before_quitting(self) -> None:
        from engine.store import ACTIVE_STATUSES

        going = [run for run in self.store.list_runs() if run.status in ACTIVE_STATUSES]
        if not going:
            self.call_from_thread(self.exit)
            return

        def answered(choice: str | None) -> None:
            if choice == "leave":
                self.exit()
            elif choice == "stop":
                self._stop_runs_and_exit(going)

        self.call_from_thread(self.push_screen, QuitScreen(going), answered)

    @work(thread=True, group="quit", exit_on_error=False)
    def _stop_runs_and_exit(self, runs: list[Run]) -> None:
        """Ask each run to stop: its process finishes the step and saves a checkpoint, with or without the app."""
        from engine.errors import StoreError

        for run in runs:
            with contextlib.suppress(StoreError):  # it ended meanwhile: nothing to stop
                self.store.request_control(run.id, "stop")
        self.call_from_thread(
            self.exit, message=f"Asked {len(runs)} run(s) to stop; each saves a checkpoint. Follow them with: lmwb runs"
        )


def run_app() -> None:
    """Start the workbench in this terminal (what `lmwb` with no arguments does)."""
    WorkbenchApp().run()
