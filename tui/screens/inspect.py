"""Inspect: where a model is surprised by a text, and what each of its layers predicted there.

Paste a text (or open a file) and press Ctrl+R: a thread worker scores every
token with the app's model (``engine.inspection.score_text``, keeping the
hidden states the lens reads) and posts the score back. The text then shows
each token coloured by its surprise, or with a second model (A/B, Ctrl+B) by
how much more or less surprised B is than A. Moving the cursor over the
tokens shows the selected token's probability, rank and entropy, and the
logit lens at its place: what each layer of model A predicted there, read
from the kept states in another worker, so the UI thread never waits on the
model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, Static, TextArea
from textual.worker import Worker, WorkerState

from engine.errors import WorkbenchError
from tui.screens.base import WorkbenchScreen
from tui.widgets.checked_input import CheckedInput
from tui.widgets.lens_table import lens_table
from tui.widgets.scored_text import (
    ColouredToken,
    ScoredTextView,
    difference_colour,
    probability_text,
    token_colours,
    token_label,
)
from tui.widgets.token_stream import probability_colour

if TYPE_CHECKING:
    from engine.inspection import LensReadout, TextScore
    from engine.models import LoadedModel

# The lens is read for this many likeliest tokens per layer; the table shows as many as its width holds.
LENS_TOP = 8


def describe_text_file(path: str) -> str:
    """What the file input says about a file it can read (SettingsError saying what is wrong otherwise)."""
    from engine.checks import read_text_file

    text = read_text_file("file", path)
    return f"{len(text):,} characters, {text.count(chr(10)) + 1:,} lines · Enter reads and scores it"


class InspectScreen(WorkbenchScreen):
    """A text, scored token by token by one or two models, and the logit lens at the selected token."""

    MODE = "inspect"
    TITLE = "Inspect"
    HELP = (
        "Paste or type a text (or press Ctrl+O and give a file's path, then Enter) and press Ctrl+R: model A "
        "scores every token, and the text is shown coloured by surprise (green: likely, red: 10 bits or more, "
        "1 in 1,000). ←/→ and ↑/↓ select a token: its probability, rank and entropy show on the right with "
        "the logit lens at its place (what each layer of model A predicted for it; GPT-2 family models). "
        "Ctrl+B adds model B (same tokenizer): the text is then coloured by B's surprise minus A's, red where "
        "B is more surprised, blue where less. Ctrl+T edits the text again; Ctrl+G goes back to the tokens."
    )

    BINDINGS = [
        Binding("ctrl+r", "score", "Score", id="inspect.score", tooltip="Score the text with model A (and B)"),
        Binding("ctrl+b", "toggle_ab", "A/B", id="inspect.ab", tooltip="Compare two models that share a tokenizer"),
        Binding("ctrl+o", "open_file", "Open file", id="inspect.open", tooltip="Type the path of a text file"),
        Binding("ctrl+t", "edit_text", "Text", id="inspect.edit", tooltip="Edit the text"),
        Binding("ctrl+g", "focus_tokens", "Tokens", id="inspect.tokens", tooltip="Select tokens with ←/→ and ↑/↓"),
    ]

    ab_mode: reactive[bool] = reactive(False)
    scoring: reactive[bool] = reactive(False)

    class Status(Message, bubble=False):
        """What the scoring worker is doing (loading, scoring a window)."""

        def __init__(self, run: int, text: str) -> None:
            super().__init__()
            self.run, self.text = run, text

    class Scored(Message, bubble=False):
        def __init__(self, run: int, score: TextScore, model: LoadedModel, sources: tuple[str, str | None]) -> None:
            super().__init__()
            self.run, self.score, self.model, self.sources = run, score, model, sources

    class Done(Message, bubble=False):
        """The scoring worker ended (with a score or an error)."""

        def __init__(self, run: int) -> None:
            super().__init__()
            self.run = run

    class FileRead(Message, bubble=False):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Lensed(Message, bubble=False):
        def __init__(self, run: int, readout: LensReadout) -> None:
            super().__init__()
            self.run, self.readout = run, readout

    def __init__(self) -> None:
        super().__init__()
        self._run = 0
        """Numbers each scoring, so a late message from an earlier one is ignored."""
        self._scored: InspectScreen.Scored | None = None
        self._readout: LensReadout | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="model-row"):
            yield Label("model A", classes="input-label")
            yield Input(id="model-a", classes="model-input", compact=True)
            yield Label("model B", classes="input-label", id="model-b-label")
            yield Input(placeholder="e.g. run:<id>", id="model-b", classes="model-input", compact=True)
        yield CheckedInput("file", "a UTF-8 text file to read (Ctrl+O)", describe_text_file, id="file")
        with Horizontal(id="inspect-body"):
            with Vertical(id="inspect-left"):
                yield TextArea(id="text", soft_wrap=True, show_line_numbers=False)
                yield ScoredTextView(placeholder="Ctrl+R scores the text", id="scored")
                yield Static(Text("Paste a text, then Ctrl+R.", style="dim"), id="totals")
            with Vertical(id="inspect-right"):
                yield Static(
                    Text("Score a text, then select a token to see what the model made of it.", style="dim"),
                    id="token-detail",
                )
                yield Label("", id="lens-title")
                with VerticalScroll(id="lens-box"):
                    yield Static("", id="lens")

    def on_mount(self) -> None:
        self.query_one("#model-a", Input).value = self.workbench.model
        self.query_one("#scored").display = False
        self.query_one("#model-b-label").display = False
        self.query_one("#model-b").display = False
        self.query_one("#text").focus()
        self.watch(self.workbench, "model", self._model_changed, init=False)

    def _model_changed(self, model: str) -> None:
        self.query_one("#model-a", Input).value = model

    # -- scoring ----------------------------------------------------------------

    def action_score(self) -> None:
        if not self.workbench.engine_loaded:
            self.notify("torch is still loading; try again in a moment.", severity="warning")
            return
        source_a = self.query_one("#model-a", Input).value.strip()
        source_b = self.query_one("#model-b", Input).value.strip() if self.ab_mode else None
        if not source_a or source_b == "":
            self._show_totals(Text(f"Type a model for {'A' if not source_a else 'B'}.", style="bold red"))
            return
        self._run += 1
        self.scoring = True
        self._show_totals(Text("loading the model…", style="dim"))
        self._score(self._run, self.query_one("#text", TextArea).text, source_a, source_b)

    @work(thread=True, exclusive=True, group="score", exit_on_error=False)
    def _score(self, run: int, text: str, source_a: str, source_b: str | None) -> None:
        from engine.inspection import score_text

        def status(message: str) -> None:
            self.post_message(self.Status(run, message))

        try:
            loaded = self.workbench.load_model(source_a, status)
            other = None if source_b is None else self.workbench.load_model(source_b, status)
            score = score_text(
                loaded.model,
                loaded.tokenizer,
                text,
                against=None if other is None else (other.model, other.tokenizer),
                keep_states=True,
                progress=lambda done, total: status(f"Scoring: window {done} of {total}…"),
            )
            self.post_message(self.Scored(run, score, loaded, (source_a, source_b)))
        finally:
            self.post_message(self.Done(run))

    @on(Done)
    def _done(self, message: Done) -> None:
        if message.run == self._run:
            self.scoring = False

    @on(Status)
    def _status(self, message: Status) -> None:
        if message.run == self._run:
            self._show_totals(Text(message.text, style="dim"))

    @on(Scored)
    def _scored_arrived(self, message: Scored) -> None:
        if message.run != self._run:
            return
        self._scored = message
        score = message.score
        self._show_totals(self._totals(message))
        self._colour_tokens(score)
        self.query_one("#text").display = False
        view = self.query_one("#scored", ScoredTextView)
        view.display = True
        view.focus()

    def _colour_tokens(self, score: TextScore) -> None:
        """Show the score's tokens coloured by surprise, or by B's minus A's with a second model."""
        against = None if score.against is None else [token.surprise for token in score.against.tokens]
        colours = token_colours([token.surprise for token in score.tokens], against)
        tokens = [ColouredToken(token.text, colour) for token, colour in zip(score.tokens, colours, strict=True)]
        view = self.query_one("#scored", ScoredTextView)
        view.border_title = f"{len(tokens):,} tokens"
        view.border_subtitle = (
            "red: B more surprised · blue: less" if against is not None else "green: likely · red: ≥ 10 bits"
        )
        view.set_tokens(tokens, cursor=0)

    def _totals(self, message: Scored) -> Text:
        """A line per model: its loss per token and bits per byte."""
        score = message.score
        lines = []
        for side, each in (("A", score), ("B", score.against)):
            if each is not None:
                line = Text(f"{side} ", style="bold")
                line.append(f"loss {each.loss:.3f} · {each.bits_per_byte:.3f} bits/byte")
                lines.append(line)
        return Text("\n").join(lines)

    def _show_totals(self, text: Text) -> None:
        self.query_one("#totals", Static).update(text)

    @on(Worker.StateChanged)
    def _show_error_in_place(self, event: Worker.StateChanged) -> None:
        """A bad text, model or file is said where the user looks: under the text, or in the lens's place."""
        if event.state != WorkerState.ERROR or not isinstance(event.worker.error, WorkbenchError):
            return
        message = Text(str(event.worker.error), style="bold red")
        if event.worker.group == "score":
            self._show_totals(message)
            event.stop()
        elif event.worker.group == "lens":
            self.query_one("#lens", Static).update(message)
            event.stop()

    # -- the selected token and the lens -----------------------------------------

    @on(ScoredTextView.Selected)
    def _token_selected(self, message: ScoredTextView.Selected) -> None:
        if self._scored is None:
            return
        self._show_token(message.index)
        self.query_one("#lens-title", Label).update(f"Logit lens (A): the guesses for #{message.index}")
        self._lens(self._run, message.index)

    def _show_token(self, index: int) -> None:
        """The selected token: its text and id, then each model's probability, rank, surprise and entropy."""
        assert self._scored is not None
        score = self._scored.score
        token = score.tokens[index]
        title = Text()
        title.append(f"#{index} ", style="dim")
        title.append(token_label(token.text, 24), style="bold")
        title.append(f"  id {token.id}", style="dim")
        table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False)
        for column in ("", "p", "rank", "surprise", "H"):
            table.add_column(column, justify="right", no_wrap=True, header_style="dim")
        for side, each in (("A", score), ("B", score.against)):
            if each is not None:
                scored = each.tokens[index]
                table.add_row(
                    Text(side if score.against is not None else "", style="bold"),
                    Text(probability_text(scored.probability), style=probability_colour(scored.probability)),
                    f"{scored.rank:,}",
                    f"{scored.surprise:.1f} bits",
                    f"{scored.entropy:.1f}",
                )
        parts: list[RenderableType] = [title, table]
        if score.against is not None:
            difference = score.against.tokens[index].surprise - token.surprise
            parts.append(Text(f"B − A: {difference:+.2f} bits", style=difference_colour(difference)))
        self.query_one("#token-detail", Static).update(Group(*parts))

    @work(thread=True, exclusive=True, group="lens", exit_on_error=False)
    def _lens(self, run: int, position: int) -> None:
        from engine.inspection import logit_lens

        scored = self._scored
        if scored is None:
            return
        loaded, score = scored.model, scored.score
        readout = logit_lens(loaded.model, loaded.tokenizer, score.text, position, LENS_TOP, score=score)
        self.post_message(self.Lensed(run, readout))

    @on(Lensed)
    def _lensed(self, message: Lensed) -> None:
        view = self.query_one("#scored", ScoredTextView)
        if message.run != self._run or message.readout.position != view.cursor:
            return
        self._readout = message.readout
        self._show_lens()

    def _show_lens(self) -> None:
        """The lens table, with as many likeliest tokens per layer as the panel's width holds."""
        if self._readout is None:
            return
        lens = self.query_one("#lens", Static)
        width = max(lens.size.width, 20)
        console = Console(width=1000)
        table = lens_table(self._readout, 1)
        for top in range(LENS_TOP, 1, -1):
            wider = lens_table(self._readout, top)
            if Measurement.get(console, console.options, wider).maximum <= width:
                table = wider
                break
        lens.update(table)

    def on_resize(self) -> None:
        self._show_lens()

    # -- the text, the file, A/B ------------------------------------------------

    def action_open_file(self) -> None:
        self.query_one("#file-input", Input).focus()

    @on(CheckedInput.Accepted, "#file")
    def _file_accepted(self, event: CheckedInput.Accepted) -> None:
        self._read_file(event.value)

    @work(thread=True, exclusive=True, group="score", exit_on_error=False)
    def _read_file(self, path: str) -> None:
        from engine.checks import read_text_file

        self.post_message(self.FileRead(read_text_file("file", str(Path(path)))))

    @on(FileRead)
    def _file_read(self, message: FileRead) -> None:
        self.query_one("#text", TextArea).text = message.text
        self.action_score()

    def action_edit_text(self) -> None:
        self.query_one("#scored").display = False
        text = self.query_one("#text", TextArea)
        text.display = True
        text.focus()

    def action_focus_tokens(self) -> None:
        if self._scored is None:
            self.notify("Score a text first (Ctrl+R).", severity="warning")
            return
        self.query_one("#text").display = False
        view = self.query_one("#scored", ScoredTextView)
        view.display = True
        view.focus()

    def action_toggle_ab(self) -> None:
        self.ab_mode = not self.ab_mode

    def watch_ab_mode(self, on_: bool) -> None:
        self.query_one("#model-b-label").display = on_
        self.query_one("#model-b").display = on_
        if on_:
            self.query_one("#model-b").focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Score only while not scoring."""
        if action == "score":
            return not self.scoring
        return True

    def watch_scoring(self) -> None:
        self.refresh_bindings()
