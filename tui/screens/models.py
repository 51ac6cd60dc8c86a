"""Models: choose where a model comes from, load it, and see what it is.

Choices are the scratch presets, models already in the Hugging Face cache and
the checkpoints of past runs; the input takes any hub id, directory,
``run:<id>@<step>`` or ``scratch:<preset>``. Loading happens in a worker that
reports each stage, so the screen keeps answering keys while weights load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from engine.errors import WorkbenchError
from tui.screens.base import WorkbenchScreen
from tui.widgets.checked_input import CheckedInput
from tui.widgets.formatting import human_bytes, human_count

if TYPE_CHECKING:
    from engine.models import ModelChoice, ModelInfo

LOG_LINES = 8


class ModelsScreen(WorkbenchScreen):
    """Model sources, loading with progress, and the loaded model's facts."""

    MODE = "models"
    TITLE = "Models"
    HELP = (
        "Choose a model: a scratch preset (trained from nothing on the chosen dataset), a model in "
        "your Hugging Face cache, a checkpoint of a past run, or type any hub id, directory, "
        "run:<id>@<step> or scratch:<preset>. Enter loads it and makes it the chosen model for "
        "Generate, Train and the tokenizer view. Loading never blocks the screen."
    )

    BINDINGS = [
        Binding("l", "load_highlighted", "Load", id="models.load", tooltip="Load the highlighted model"),
        Binding(
            "i",
            "focus_input",
            "Type a source",
            id="models.input",
            tooltip="Type a hub id, directory, run:<id>@<step> or scratch:<preset>",
        ),
        Binding("g", "generate", "Generate", id="models.generate", tooltip="Generate with the chosen model"),
        Binding("r", "refresh", "Refresh", id="models.refresh", tooltip="List the model choices again"),
        Binding("escape", "focus_list", "Back to list", show=False, id="models.focus_list"),
    ]

    class Listed(Message, bubble=False):
        def __init__(self, choices: list["ModelChoice"]) -> None:
            super().__init__()
            self.choices = choices

    class LoadProgress(Message, bubble=False):
        def __init__(self, source: str, stage: str) -> None:
            super().__init__()
            self.source, self.stage = source, stage

    class Loaded(Message, bubble=False):
        def __init__(self, source: str, info: "ModelInfo") -> None:
            super().__init__()
            self.source, self.info = source, info

    def __init__(self) -> None:
        super().__init__()
        self._log: list[str] = []
        self._loading: str | None = None
        self._descriptions: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        yield CheckedInput(
            "model",
            "a hub id, a directory, run:<id>@<step> or scratch:<preset> (i)",
            self._describe_source,
            id="source",
        )
        with Horizontal(id="models-body"):
            yield OptionList(id="model-list")
            with VerticalScroll(id="models-right"):
                yield Label("", id="model-title")
                yield ProgressBar(id="model-progress", show_eta=False, show_percentage=False)
                yield Static("", id="model-info")
                yield Static("", id="model-log")

    def on_mount(self) -> None:
        self.query_one("#model-progress").display = False
        self.query_one("#model-list").focus()
        self.watch(self.workbench, "engine_loaded", self._engine_loaded)
        self.watch(self.workbench, "model", self._model_changed)

    def _engine_loaded(self, loaded: bool) -> None:
        if loaded:
            self._list_choices()
        else:
            self.query_one("#model-list", OptionList).set_options([Option("loading torch…", disabled=True)])

    def _model_changed(self, model: str) -> None:
        if self._loading is None:
            self.query_one("#model-title", Label).update(f"chosen: {model}  (Enter or l loads it)")

    # -- choices ----------------------------------------------------------------

    @work(thread=True, exclusive=True, group="list", exit_on_error=False)
    def _list_choices(self) -> None:
        from engine.models import list_model_choices

        self.post_message(self.Listed(list_model_choices(self.workbench.store)))

    @on(Listed)
    def _show_choices(self, message: Listed) -> None:
        options = self.query_one("#model-list", OptionList)
        options.clear_options()
        for choice in message.choices:
            prompt = Text(no_wrap=True, overflow="ellipsis")
            prompt.append(choice.source)
            prompt.append(f"  {choice.kind}", style="dim")
            options.add_option(Option(prompt, id=choice.source))
        self._descriptions = {choice.source: choice.description for choice in message.choices}
        sources = [choice.source for choice in message.choices]
        if self.workbench.model in sources:
            options.highlighted = sources.index(self.workbench.model)

    @on(OptionList.OptionHighlighted, "#model-list")
    def _choice_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self._loading is None and event.option.id:
            self.query_one("#model-info", Static).update(self._descriptions.get(event.option.id, ""))

    @on(OptionList.OptionSelected, "#model-list")
    def _choice_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.load(event.option.id)

    # -- typed sources, checked as you type -------------------------------------

    def _describe_source(self, text: str) -> str:
        """The source input's check (in a worker, once torch is loaded): the canonical source."""
        self.workbench.wait_for_engine()
        from engine.model_source import ModelSource

        return f"✓ {ModelSource.parse(text)} · Enter loads it"

    @on(CheckedInput.Accepted, "#source")
    def _source_accepted(self, event: CheckedInput.Accepted) -> None:
        self.load(event.value)

    # -- loading ----------------------------------------------------------------

    def load(self, source: str) -> None:
        """Make ``source`` the chosen model and load it in a worker, showing each stage."""
        self.workbench.model = source
        self._loading = source
        self._log = []
        self.query_one("#model-title", Label).update(f"loading {source}…")
        self.query_one("#model-info", Static).update("")
        self.query_one("#model-log", Static).update("")
        bar = self.query_one("#model-progress", ProgressBar)
        bar.update(total=None)
        bar.display = True
        self._load(source)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self, source: str) -> None:
        if not self.workbench.engine_loaded:
            self.post_message(self.LoadProgress(source, "loading torch…"))

        def progress(stage: str) -> None:
            self.post_message(self.LoadProgress(source, stage))

        loaded = self.workbench.load_model(source, progress=progress)
        self.post_message(self.Loaded(source, loaded.info()))

    @on(LoadProgress)
    def _show_progress(self, message: LoadProgress) -> None:
        if message.source != self._loading:
            return
        self._log = (self._log + [message.stage])[-LOG_LINES:]
        self.query_one("#model-log", Static).update(Text("\n".join(self._log), style="dim"))

    @on(Loaded)
    def _show_info(self, message: Loaded) -> None:
        if message.source != self._loading:
            return
        self._loading = None
        self.query_one("#model-progress").display = False
        self.query_one("#model-title", Label).update(f"loaded: {message.source}")
        info = message.info
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("source", info.source)
        table.add_row("parameters", human_count(info.parameters))
        table.add_row("layers · heads", f"{info.layers} · {info.heads}")
        table.add_row("context", f"{info.context_length:,} tokens")
        table.add_row("vocabulary", f"{info.vocab_size:,}")
        table.add_row("dtype · device", f"{info.dtype} · {info.device}")
        table.add_row("memory", human_bytes(info.memory_bytes))
        self.query_one("#model-info", Static).update(table)

    @on(Worker.StateChanged)
    def _show_error_in_place(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or not isinstance(event.worker.error, WorkbenchError):
            return
        if event.worker.group == "load":
            self._loading = None
            self.query_one("#model-progress").display = False
            self.query_one("#model-title", Label).update(Text("could not load the model", style="bold red"))
            self.query_one("#model-info", Static).update(Text(str(event.worker.error), style="red"))
            event.stop()
        elif event.worker.group == "list":
            self.query_one("#model-info", Static).update(Text(str(event.worker.error), style="red"))
            event.stop()

    # -- keys -------------------------------------------------------------------

    def action_load_highlighted(self) -> None:
        options = self.query_one("#model-list", OptionList)
        if options.highlighted is not None:
            option = options.get_option_at_index(options.highlighted)
            if option.id:
                self.load(option.id)

    def action_focus_input(self) -> None:
        self.query_one("#source-input").focus()

    def action_focus_list(self) -> None:
        self.query_one("#model-list").focus()

    def action_generate(self) -> None:
        self.app.switch_mode("generate")

    def action_refresh(self) -> None:
        if self.workbench.engine_loaded:
            self._list_choices()
