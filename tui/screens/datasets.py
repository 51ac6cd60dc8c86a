"""Datasets: pick or open text to train on, see its size, its tokens and what it says.

The list holds the bundled sample texts, the datasets in the local Hugging
Face cache, and the datasets earlier runs used; an input opens any file, folder
or saved dataset and says what is wrong with it as you type. A dataset with
several splits (a saved DatasetDict, most cached ones) offers them in a choice
above its stats, and is read one split at a time. The highlighted dataset (and
split) is the app's chosen one (the Train screen and the scratch
tokenizers use it). Token counts and the tokenizer view use the chosen
model's tokenizer, loaded in a worker once torch is ready. The tokenizer lab,
under the tokenizer view, trains BPE tokenizers of a few sizes on the dataset
and compares them (``engine.tokenizer_lab``); its recommended vocabulary can be
handed to the Train screen for a scratch model. Counting, checking and the lab
all read the dataset shown, in the split picked (``_shown_dataset``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, OptionList, ProgressBar, Select, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState, get_current_worker

from tui.screens.base import WorkbenchScreen
from tui.widgets.checked_input import CheckedInput
from tui.widgets.formatting import human_bytes, human_count
from tui.widgets.health_view import HealthView
from tui.widgets.token_stream import ShownToken, TokenStreamView
from tui.widgets.tokenizer_lab import tokenizer_lab_report

if TYPE_CHECKING:
    from engine.datasets import Dataset, DatasetStats
    from engine.tokenizer_lab import TokenizerComparison

PREVIEW_LINES = 40
LAB_PROGRESS_INTERVAL = 0.1  # seconds between the lab's progress lines (it reports every tokenized batch)


def shown_path(path: Path) -> str:
    """A path as short as it can be read: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def tokens_of(tokenizer: Any, text: str) -> list[ShownToken]:
    """Split ``text`` with ``tokenizer`` into tokens as displayed (id and decoded piece)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ShownToken(tokenizer.decode([token_id]), token_id) for token_id in ids]


def _dataset_label(dataset: "Dataset") -> str:
    """A dataset's name, with its split where it has one: "stories (validation)"."""
    return dataset.name if dataset.split is None else f"{dataset.name} ({dataset.split})"


class DatasetsScreen(WorkbenchScreen):
    """Datasets and the tokenizer view."""

    MODE = "datasets"
    TITLE = "Datasets"
    HELP = (
        "Pick a bundled, Hugging Face cache or recent dataset from the list, or type a path to a file "
        "(.txt .md .jsonl .csv, also .gz or .zst; .parquet .arrow), a folder of them, or a directory saved "
        "with save_to_disk. A dataset with several splits asks for one in the choice above its stats "
        "(s goes there). The highlighted dataset is the one Train uses. 'c' counts its tokens "
        "with the chosen model's tokenizer; the Tokenizer tab shows any text split into tokens. "
        "In the preview, Enter sends a line to the tokenizer. 'l' opens the tokenizer lab: it trains "
        "byte-level BPE tokenizers of 1,000, 4,000 and 16,000 entries (and the size the planner would pick) on "
        "the dataset and compares them with GPT-2's (when cached) and the chosen model's: bytes per token, "
        "entries seen fewer than 10 times, embedding parameters; 'l' again cancels it. 'u' then gives the "
        "recommended vocabulary to the Train screen's vocab_size, for a scratch model."
        " 'h' checks the dataset (the Check tab): duplicate and near-duplicate documents, duplicate lines, "
        "validation text that also sits in training, encoding problems, a plot of document lengths, then its "
        "tokens against the chosen model; a second check of the same data is instant."
    )

    BINDINGS = [
        Binding("o", "open_path", "Open path", id="datasets.open", tooltip="Type a file or folder to open"),
        Binding(
            "c",
            "count_tokens",
            "Count tokens",
            id="datasets.count_tokens",
            tooltip="Count the dataset's tokens with the chosen model's tokenizer",
        ),
        # The tabs' own keys stay out of the footer, which the tabs' names already fill at 80 columns.
        Binding(
            "t",
            "show_tab('tokenizer')",
            "Tokenizer",
            show=False,
            id="datasets.tokenizer",
            tooltip="Show text split into tokens",
        ),
        Binding(
            "v",
            "show_tab('overview')",
            "Overview",
            show=False,
            id="datasets.overview",
            tooltip="Show the dataset's stats and preview",
        ),
        Binding(
            "h",
            "check",
            "Check",
            id="datasets.check",
            tooltip="Check the dataset: duplicates, validation text in training, encoding, lengths, tokens",
        ),
        Binding(
            "l",
            "compare_tokenizers",
            "Tokenizer lab",
            id="datasets.tokenizer_lab",
            tooltip="Train BPE tokenizers of a few sizes on the dataset and compare them with GPT-2's and the model's",
        ),
        Binding("l", "cancel_lab", "Cancel lab", id="datasets.cancel_lab", tooltip="Stop the tokenizer lab"),
        Binding(
            "u",
            "use_vocabulary",
            "Use vocab",
            id="datasets.use_vocabulary",
            tooltip="Give the lab's recommended vocabulary to the Train screen's vocab_size (for a scratch model)",
        ),
        Binding("s", "pick_split", "Split", id="datasets.split", tooltip="Pick the split of a dataset with several"),
        Binding("escape", "focus_list", "Back to list", show=False, id="datasets.focus_list"),
    ]

    class Listed(Message, bubble=False):
        """The datasets to offer: (value, label, kind) for bundled ones, cached ones, then recent ones."""

        def __init__(self, entries: list[tuple[str, str, str]]) -> None:
            super().__init__()
            self.entries = entries

    class SplitsFound(Message, bubble=False):
        """The splits ``value`` has (none for most), and the one it is read as (None: the user is to pick)."""

        def __init__(self, value: str, splits: tuple[str, ...], split: str | None) -> None:
            super().__init__()
            self.value, self.splits, self.split = value, splits, split

    class Opened(Message, bubble=False):
        """A dataset was read: its stats and its first lines."""

        def __init__(self, value: str, dataset: "Dataset", stats: "DatasetStats", preview: str) -> None:
            super().__init__()
            self.value, self.dataset, self.stats, self.preview = value, dataset, stats, preview

    class CountProgress(Message, bubble=False):
        def __init__(self, done: int, total: int) -> None:
            super().__init__()
            self.done, self.total = done, total

    class Counted(Message, bubble=False):
        def __init__(self, dataset: "Dataset", model: str, tokens: int) -> None:
            super().__init__()
            self.dataset, self.model, self.tokens = dataset, model, tokens

    class Tokenized(Message, bubble=False):
        def __init__(self, text: str, model: str, tokens: list[ShownToken]) -> None:
            super().__init__()
            self.text, self.model, self.tokens = text, model, tokens

    class LabProgress(Message, bubble=False):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class LabDone(Message, bubble=False):
        """The tokenizer lab's comparison of the tokenizers on ``dataset``, for ``model``, after ``seconds``."""

        def __init__(self, dataset: "Dataset", model: str, comparison: "TokenizerComparison", seconds: float) -> None:
            super().__init__()
            self.dataset, self.model, self.comparison, self.seconds = dataset, model, comparison, seconds

    def __init__(self) -> None:
        super().__init__()
        self._opened: dict[str, str] = {}  # paths opened in this session: value -> label
        self._splits: dict[str, str] = {}  # the split picked for each dataset with several, in this session
        self._token_counts: dict[tuple["Dataset", str], int] = {}
        self._stats: tuple[str, "DatasetStats", "Dataset"] | None = None
        self._lab_worker: Worker | None = None  # the lab running now
        self._lab: "TokenizerComparison | None" = None  # its answer for the chosen dataset and model

    def compose_body(self) -> ComposeResult:
        yield CheckedInput(
            "open",
            "a .txt .jsonl .csv .parquet .gz… file, a folder or a saved dataset (o)",
            self._describe_path,
            id="path",
        )
        with Horizontal(id="datasets-body"):
            yield OptionList(id="dataset-list")
            with TabbedContent(id="datasets-tabs", initial="overview"):
                with TabPane("Overview", id="overview"):
                    yield Select[str]([], prompt="pick a split", id="split-select", compact=True)
                    yield Static("", id="dataset-stats")
                    with Horizontal(id="token-row"):
                        yield Static("", id="token-count")
                        yield ProgressBar(id="token-progress", show_eta=False)
                    yield Label("Preview · Enter on a line shows its tokens", id="preview-label")
                    yield OptionList(id="preview")
                with TabPane("Tokenizer", id="tokenizer"):
                    yield Input(placeholder="type text to see its tokens…", id="tokenize-input", compact=True)
                    yield Static("", id="tokenize-summary")
                    yield TokenStreamView(placeholder="tokens appear here", show_ids=True, id="tokenize-view")
                    yield Static("", id="lab-status")
                    with VerticalScroll(id="lab-box"):
                        yield Static("", id="lab-report")
                with TabPane("Check", id="check"):
                    yield HealthView(id="health")

    def on_mount(self) -> None:
        self.query_one("#token-progress").display = False
        self.query_one("#split-select").display = False
        self.query_one("#tokenize-view", TokenStreamView).colouring = "alternate"
        self.query_one("#dataset-list").focus()
        self.call_after_refresh(self._list_datasets)  # after the first frame: it imports numpy
        self.watch(self.workbench, "model", self._model_changed, init=False)
        self._forget_lab()
        for chosen in ("dataset", "dataset_split", "model"):
            self.watch(self.workbench, chosen, self._forget_lab, init=False)

    # -- the list ---------------------------------------------------------------

    @work(thread=True, exclusive=True, group="list", exit_on_error=False)
    def _list_datasets(self) -> None:
        from engine.datasets import bundled_datasets, cached_datasets

        entries = [(dataset.name, dataset.name, "bundled") for dataset in bundled_datasets()]
        entries += [(dataset.name, dataset.name, "cached") for dataset in cached_datasets()]
        known = {value for value, _, _ in entries}
        for run in self.workbench.store.list_runs():
            if run.dataset and run.dataset not in known:
                known.add(run.dataset)
                entries.append((run.dataset, run.dataset, "recent"))
        self.post_message(self.Listed(entries))

    @on(Listed)
    def _show_list(self, message: Listed) -> None:
        options = self.query_one("#dataset-list", OptionList)
        entries = message.entries + [
            (value, label, "opened")
            for value, label in self._opened.items()
            if value not in {v for v, _, _ in message.entries}
        ]
        highlighted = self.workbench.dataset
        options.clear_options()
        for value, label, kind in entries:
            prompt = Text(no_wrap=True, overflow="ellipsis")
            prompt.append(label)
            prompt.append(f"  {kind}", style="dim")
            options.add_option(Option(prompt, id=value))
        values = [value for value, _, _ in entries]
        if highlighted not in values and values:
            highlighted = values[0]
        if highlighted in values:
            options.highlighted = values.index(highlighted)

    @on(OptionList.OptionHighlighted, "#dataset-list")
    def _dataset_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        value = event.option.id or ""
        self.workbench.dataset = value
        self._open_dataset(value, self._splits.get(value))

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open_dataset(self, value: str, split: str | None) -> None:
        """Its splits first (a dataset with several is read as the one picked, or waits for a pick), then it."""
        from engine.datasets import dataset_splits, open_dataset

        splits = dataset_splits(value)
        if split not in splits:
            split = splits[0] if len(splits) == 1 else None
        self.post_message(self.SplitsFound(value, splits, split))
        if splits and split is None:
            return
        dataset = open_dataset(value, split=split)
        self.post_message(self.Opened(value, dataset, dataset.stats(), dataset.preview(PREVIEW_LINES)))

    @on(SplitsFound)
    def _offer_splits(self, message: SplitsFound) -> None:
        if message.value != self.workbench.dataset:
            return
        self.workbench.dataset_split = message.split
        choice = self.query_one("#split-select", Select)
        choice.display = len(message.splits) > 1
        self.refresh_bindings()  # s picks a split only where there are several
        choice.set_options((f"split: {split}", split) for split in message.splits)
        if message.split is not None:
            choice.value = message.split
        elif message.splits:
            self._stats = None
            self.query_one("#dataset-stats", Static).update(
                f"{message.value} has the splits {', '.join(message.splits)}, each read as a dataset of its "
                "own: pick one above (s)."
            )
            self.query_one("#token-count", Static).update("")
            self.query_one("#preview", OptionList).clear_options()

    @on(Select.Changed, "#split-select")
    def _split_picked(self, event: Select.Changed) -> None:
        value = self.workbench.dataset
        if not isinstance(event.value, str) or event.value == self.workbench.dataset_split:
            return  # cleared, or set to the split already read
        self._splits[value] = event.value
        self.workbench.dataset_split = event.value
        self._open_dataset(value, event.value)

    def action_pick_split(self) -> None:
        choice = self.query_one("#split-select", Select)
        self.action_show_tab("overview")
        choice.focus()
        choice.expanded = True

    @on(Opened)
    def _show_dataset(self, message: Opened) -> None:
        if message.value != self.workbench.dataset:
            return
        self._stats = (message.value, message.stats, message.dataset)
        self._show_stats()
        preview = self.query_one("#preview", OptionList)
        preview.clear_options()
        for line in message.preview.splitlines():
            if line.strip():
                preview.add_option(Option(Text(line, no_wrap=True, overflow="ellipsis")))

    def _show_stats(self) -> None:
        if self._stats is None:
            return
        value, stats, dataset = self._stats
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("dataset", dataset.name)
        if dataset.split is not None:
            table.add_row("split", dataset.split)
        table.add_row("path", shown_path(dataset.path))
        if dataset.field is not None:
            table.add_row("text from", dataset.field)
        table.add_row("files", f"{stats.files:,}")
        table.add_row("size", human_bytes(stats.bytes))
        table.add_row("documents", f"{stats.documents:,}")
        table.add_row("characters", human_count(stats.characters))
        self.query_one("#dataset-stats", Static).update(table)
        tokens = self._token_counts.get((dataset, self.workbench.model))
        self.query_one("#token-count", Static).update(
            f"tokens  {tokens:,} ({self.workbench.model} tokenizer)"
            if tokens is not None
            else f"tokens  press c to count with {self.workbench.model}'s tokenizer"
        )

    # -- opening a path, checked as you type ------------------------------------

    @staticmethod
    def _describe_path(text: str) -> str:
        """The path input's check (in a worker): what the dataset holds, or DatasetError."""
        from engine.datasets import dataset_splits, open_dataset

        splits = dataset_splits(text)
        if len(splits) > 1:
            return f"✓ {Path(text).name}: a saved dataset with the splits {', '.join(splits)} · Enter opens it"
        dataset = open_dataset(text)
        files = len(dataset.files)
        return f"✓ {dataset.name}: {files} file{'s' if files != 1 else ''} · Enter opens it"

    @on(CheckedInput.Accepted, "#path")
    def _path_accepted(self, event: CheckedInput.Accepted) -> None:
        self._opened[event.value] = event.value
        self.workbench.dataset = event.value
        event.checked_input.input.value = ""
        self.query_one("#dataset-list").focus()
        self.call_after_refresh(self._list_datasets)  # after the first frame: it imports numpy

    # -- token counting ---------------------------------------------------------

    def action_count_tokens(self) -> None:
        dataset = self._shown_dataset()
        if dataset is None:
            return
        self.query_one("#token-count", Static).update(f"tokens  counting with {self.workbench.model}…")
        bar = self.query_one("#token-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._count_tokens(dataset, self.workbench.model)

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def _count_tokens(self, dataset: "Dataset", model: str) -> None:
        from engine.datasets import count_tokens

        loaded = self.workbench.load_model(model)

        def progress(done: int, total: int) -> None:
            self.post_message(self.CountProgress(done, total))

        tokens = count_tokens(dataset, loaded.tokenizer, progress=progress)
        self.post_message(self.Counted(dataset, model, tokens))

    @on(CountProgress)
    def _show_count_progress(self, message: CountProgress) -> None:
        self.query_one("#token-progress", ProgressBar).update(total=message.total, progress=message.done)

    @on(Counted)
    def _show_count(self, message: Counted) -> None:
        self._token_counts[(message.dataset, message.model)] = message.tokens
        self.query_one("#token-progress").display = False
        self._show_stats()

    # -- the tokenizer view -----------------------------------------------------

    @on(Input.Changed, "#tokenize-input")
    def _text_typed(self, event: Input.Changed) -> None:
        self._tokenize(event.value, self.workbench.model)

    @on(OptionList.OptionSelected, "#preview")
    def _preview_line_chosen(self, event: OptionList.OptionSelected) -> None:
        line = str(event.option.prompt.plain if isinstance(event.option.prompt, Text) else event.option.prompt)
        self.action_show_tab("tokenizer")
        self.query_one("#tokenize-input", Input).value = line

    @work(thread=True, exclusive=True, group="tokenize", exit_on_error=False)
    def _tokenize(self, text: str, model: str) -> None:
        if not text:
            self.post_message(self.Tokenized(text, model, []))
            return
        if not self.workbench.engine_loaded:
            self.app.call_from_thread(self.query_one("#tokenize-summary", Static).update, "loading torch…")
        tokenizer = self.workbench.load_model(model).tokenizer
        self.post_message(self.Tokenized(text, model, tokens_of(tokenizer, text)))

    @on(Tokenized)
    def _show_tokens(self, message: Tokenized) -> None:
        if message.text != self.query_one("#tokenize-input", Input).value:
            return  # an older text's answer, arriving after a newer keystroke
        self.query_one("#tokenize-view", TokenStreamView).set_tokens(message.tokens)
        count = len(message.tokens)
        self.query_one("#tokenize-summary", Static).update(
            f"{count} token{'s' if count != 1 else ''} · {message.model} tokenizer" if count else ""
        )

    def _model_changed(self, model: str) -> None:
        self._show_stats()
        text = self.query_one("#tokenize-input", Input).value
        if text:
            self._tokenize(text, model)

    # -- the tokenizer lab -------------------------------------------------------

    def action_compare_tokenizers(self) -> None:
        dataset = self._shown_dataset()
        if dataset is None:
            return
        self.query_one("#datasets-tabs", TabbedContent).active = "tokenizer"
        self._lab = None
        self.query_one("#lab-box").display = False
        self.query_one("#lab-status", Static).update(f"Tokenizer lab on {_dataset_label(dataset)}: starting…")
        self._lab_worker = self._compare_tokenizers(dataset, self.workbench.model)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="lab", exit_on_error=False)
    def _compare_tokenizers(self, dataset: "Dataset", model: str) -> None:
        """Train and measure the tokenizers (engine.tokenizer_lab); a cancel stops it at its next progress line."""
        import time

        if not self.workbench.engine_loaded:
            self.post_message(self.LabProgress("loading torch…"))
        self.workbench.wait_for_engine()
        from engine.tokenizer_lab import compare_tokenizers

        worker = get_current_worker()
        started = last_shown = time.monotonic()

        def progress(text: str) -> None:
            nonlocal last_shown
            if time.monotonic() - last_shown >= LAB_PROGRESS_INTERVAL:
                last_shown = time.monotonic()
                self.post_message(self.LabProgress(text))

        comparison = compare_tokenizers(
            dataset,
            model=model,
            store=self.workbench.store,
            progress=progress,
            cancelled=lambda: worker.is_cancelled,
        )
        if comparison is not None and not worker.is_cancelled:
            self.post_message(self.LabDone(dataset, model, comparison, time.monotonic() - started))

    @on(LabProgress)
    def _show_lab_progress(self, message: LabProgress) -> None:
        if self._lab_worker is not None and self._lab_worker.is_running:
            self.query_one("#lab-status", Static).update(f"Tokenizer lab: {message.text}")

    @on(LabDone)
    def _show_lab(self, message: LabDone) -> None:
        if message.dataset != self._shown_dataset(quiet=True) or message.model != self.workbench.model:
            return  # for a dataset, split or model no longer chosen
        self._lab = message.comparison
        self.query_one("#lab-report", Static).update(tokenizer_lab_report(message.comparison))
        self.query_one("#lab-box").display = True
        self.query_one("#lab-status", Static).update(
            f"Lab on {_dataset_label(message.dataset)} in {message.seconds:.1f} s · "
            f"u gives Train vocab {message.comparison.recommended}"
        )
        self.refresh_bindings()

    def _forget_lab(self, _: object = None) -> None:
        """A new dataset or model: the lab's answer was for the old one, so it goes (a running lab is stopped)."""
        if self._lab_worker is not None:
            self._lab_worker.cancel()
        self._lab_worker = self._lab = None
        self.query_one("#lab-box").display = False
        self.query_one("#lab-status", Static).update(
            "l: the tokenizer lab trains BPE tokenizers on this dataset and recommends a vocabulary"
        )
        self.refresh_bindings()

    @on(Worker.StateChanged)
    def _lab_ended(self, event: Worker.StateChanged) -> None:
        if event.worker is self._lab_worker:
            self.refresh_bindings()  # its key starts a lab again

    def action_cancel_lab(self) -> None:
        if self._lab_worker is not None:
            self._lab_worker.cancel()
        self.query_one("#lab-status", Static).update("Tokenizer lab cancelled · l starts it again")
        self.refresh_bindings()

    def action_use_vocabulary(self) -> None:
        if self._lab is None:
            return
        size = self._lab.recommended
        self.workbench.vocab_size = size
        self.notify(f"Train's vocab_size is now {size}: a scratch: model started there gets a {size}-entry tokenizer.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The lab's key starts it, or cancels it while it runs; 'u' only once it has an answer; 's' where
        the dataset has splits to pick from."""
        running = self._lab_worker is not None and not self._lab_worker.is_finished
        if action == "compare_tokenizers":
            return not running
        if action == "cancel_lab":
            return running
        if action == "use_vocabulary":
            return self._lab is not None
        if action == "pick_split":
            return any(choice.display for choice in self.query("#split-select"))
        return True

    # -- the check --------------------------------------------------------------

    def action_check(self) -> None:
        """Check the dataset shown (its split too) in the Check tab, then against the chosen model."""
        dataset = self._shown_dataset()
        if dataset is None:
            return
        self.action_show_tab("check")
        self.query_one(HealthView).check(dataset, self.workbench.model)

    def _shown_dataset(self, quiet: bool = False) -> "Dataset | None":
        """The chosen dataset as opened and shown, in the split picked: what counting, the check and the lab read.

        None (with a word, unless ``quiet``) while it is still opening or waits for a split to be picked.
        """
        shown = self._stats
        if shown is None or (shown[0], shown[2].split) != (self.workbench.dataset, self.workbench.dataset_split):
            if not quiet:
                self.notify("Pick a dataset first.", severity="warning")
            return None
        return shown[2]

    # -- errors and keys --------------------------------------------------------

    @on(Worker.StateChanged)
    def _show_error_in_place(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        group = event.worker.group
        if group == "open":
            self.query_one("#dataset-stats", Static).update(Text(str(event.worker.error), style="bold red"))
        elif group == "count":
            self.query_one("#token-progress").display = False
            self.query_one("#token-count", Static).update(Text(str(event.worker.error), style="bold red"))
        elif group == "tokenize":
            self.query_one("#tokenize-summary", Static).update(Text(str(event.worker.error), style="bold red"))
        elif group == "lab":
            self.query_one("#lab-status", Static).update(Text(str(event.worker.error), style="bold red"))
        else:
            return
        from engine.errors import WorkbenchError

        if isinstance(event.worker.error, WorkbenchError):
            event.stop()  # shown in place; the app's handler reports only bugs

    def action_open_path(self) -> None:
        self.query_one("#path-input").focus()

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#datasets-tabs", TabbedContent).active = tab
        if tab == "tokenizer":
            self.query_one("#tokenize-input").focus()

    def action_focus_list(self) -> None:
        self.query_one("#dataset-list").focus()

    @on(OptionList.OptionSelected, "#dataset-list")
    def _train_on_it(self) -> None:
        """Enter on a dataset: it is already chosen, so go and train on it."""
        self.app.switch_mode("train")
