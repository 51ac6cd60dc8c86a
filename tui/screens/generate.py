"""Generate: write a prompt, set sampling, watch the text arrive token by token.

One thread worker drives the engine's ``TokenStream`` (two in A/B mode, in
lockstep, with the same seed) and posts the tokens to the UI in batches, at
most ~30 a second, so a fast model never floods the screen. Stop cancels the
stream at the next token. Every finished generation is logged in the store;
the history dialog searches that log.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, Static, TextArea
from textual.worker import Worker, WorkerState

from engine.errors import WorkbenchError
from tui.screens.base import WorkbenchScreen
from tui.screens.history import HistoryScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.token_stream import ShownToken, TokenStreamView, probability_colour

if TYPE_CHECKING:
    from engine.generation import GenerationResult, TokenEvent, TokenStream

# Batches of tokens reach the screen at most this often (seconds).
POST_INTERVAL = 1 / 30
SIDES = ("a", "b")


def shown(event: "TokenEvent") -> ShownToken:
    """A streamed token as the view shows it, with its alternatives."""
    return ShownToken(
        event.text,
        event.token_id,
        event.probability,
        [(alt.text, alt.token_id, alt.probability) for alt in event.alternatives],
    )


class GenerateScreen(WorkbenchScreen):
    """The prompt, the sampling settings, and one or two streaming outputs."""

    MODE = "generate"
    TITLE = "Generate"
    HELP = (
        "Type a prompt, adjust the sampling settings (errors show beside the field), and press "
        "Ctrl+R. Tokens stream in with tokens/s and the time to the first token; Ctrl+S stops at "
        "once. Ctrl+L colours tokens by probability; Ctrl+G puts the cursor on the tokens — move "
        "with ←/→ to see each token's top alternatives. Ctrl+B turns on A/B: the same prompt and "
        "seed on two models side by side. Ctrl+O browses and searches past generations."
    )

    BINDINGS = [
        Binding("ctrl+r", "generate", "Generate", id="generate.run", tooltip="Generate from the prompt"),
        Binding("ctrl+s", "stop", "Stop", id="generate.stop", tooltip="Stop generating now"),
        Binding(
            "ctrl+b", "toggle_ab", "A/B", id="generate.ab", tooltip="Compare two models on the same prompt and seed"
        ),
        Binding(
            "ctrl+l", "toggle_colour", "Colour", id="generate.colour", tooltip="Colour tokens by their probability"
        ),
        Binding(
            "ctrl+g",
            "focus_tokens",
            "Tokens",
            id="generate.tokens",
            tooltip="Select tokens with ←/→ to see their alternatives",
        ),
        Binding("ctrl+o", "history", "History", id="generate.history", tooltip="Browse and search past generations"),
    ]

    ab_mode: reactive[bool] = reactive(False)
    generating: reactive[bool] = reactive(False)

    class Started(Message, bubble=False):
        def __init__(self, run: int, side: str, source: str, seed: int | None) -> None:
            super().__init__()
            self.run, self.side, self.source, self.seed = run, side, source, seed

    class Tokens(Message, bubble=False):
        """A batch of new tokens for one side, with the stream's clock at its first and last token."""

        def __init__(self, run: int, side: str, tokens: list[ShownToken], first: float, last: float) -> None:
            super().__init__()
            self.run, self.side, self.tokens, self.first, self.last = run, side, tokens, first, last

    class Finished(Message, bubble=False):
        def __init__(self, run: int, side: str, result: "GenerationResult") -> None:
            super().__init__()
            self.run, self.side, self.result = run, side, result

    class Done(Message, bubble=False):
        """The worker ended (normally, stopped, or failed)."""

        def __init__(self, run: int) -> None:
            super().__init__()
            self.run = run

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[str, "TokenStream"] = {}
        self._stopped = False
        self._run = 0
        """Numbers each generation, so late messages from a stopped one are ignored."""
        self._first_token: dict[str, float] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="generate-body"):
            with Vertical(id="generate-left"):
                yield Label("Prompt", classes="section")
                yield TextArea(id="prompt", soft_wrap=True, show_line_numbers=False)
                with Horizontal(classes="model-row"):
                    yield Label("model A", classes="model-label")
                    yield Input(id="model-a", classes="model-input", compact=True)
                with Horizontal(classes="model-row", id="model-b-row"):
                    yield Label("model B", classes="model-label")
                    yield Input(
                        placeholder="e.g. run:<id> or a directory", id="model-b", classes="model-input", compact=True
                    )
                yield Label("Sampling", classes="section")
                yield Vertical(Static("loading torch…", classes="placeholder"), id="settings-box")
            with Vertical(id="generate-right"):
                with Horizontal(id="outputs"):
                    for side in SIDES:
                        with Vertical(id=f"output-{side}", classes="output"):
                            yield Label("", id=f"title-{side}", classes="output-title")
                            yield TokenStreamView(placeholder="Ctrl+R generates", id=f"tokens-{side}")
                            yield Static("", id=f"stats-{side}", classes="output-stats")
                yield Static("", id="token-detail")

    def on_mount(self) -> None:
        self.query_one("#model-a", Input).value = self.workbench.model
        self.query_one("#model-b-row").display = False
        self.query_one("#output-b").display = False
        self.query_one("#prompt").focus()
        self.watch(self.workbench, "engine_loaded", self._engine_loaded)
        self.watch(self.workbench, "model", self._model_changed, init=False)

    def _engine_loaded(self, loaded: bool) -> None:
        if not loaded or self.query("#settings-box ConfigForm"):
            return
        from engine.generation import GenerationSettings

        box = self.query_one("#settings-box")
        box.remove_children()
        box.mount(ConfigForm(GenerationSettings, id="settings"))

    def _model_changed(self, model: str) -> None:
        self.query_one("#model-a", Input).value = model

    # -- starting and stopping --------------------------------------------------

    def action_generate(self) -> None:
        if not self.workbench.engine_loaded:
            self.notify("torch is still loading; try again in a moment.", severity="warning")
            return
        settings = self.query_one("#settings", ConfigForm).settings()
        if settings is None:
            self.notify("Fix the sampling settings marked in red first.", severity="error")
            self.query_one("#settings", ConfigForm).focus_first_error()
            return
        prompt = self.query_one("#prompt", TextArea).text
        sources = [("a", self.query_one("#model-a", Input).value.strip())]
        if self.ab_mode:
            sources.append(("b", self.query_one("#model-b", Input).value.strip()))
            if settings.seed is None:
                # Same seed on both sides is what makes the comparison fair.
                settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        for side, source in sources:
            if not source:
                self.notify(f"Type a model for side {side.upper()}.", severity="error")
                return
        self.action_stop()
        self._stopped = False
        for side, source in sources:
            self.query_one(f"#tokens-{side}", TokenStreamView).clear()
            self.query_one(f"#title-{side}", Label).update(f"{side.upper()} · {source}")
            self.query_one(f"#stats-{side}", Static).update(Text("loading model…", style="dim"))
        self.query_one("#token-detail", Static).update("")
        self.generating = True
        self._run += 1
        self._first_token = {}
        self._generate(self._run, prompt, settings, sources)

    def action_stop(self) -> None:
        """Cancel the streams at their next token (safe to call from the UI thread any time)."""
        self._stopped = True
        for stream in list(self._streams.values()):
            stream.cancel()

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, run: int, prompt: str, settings: Any, sources: list[tuple[str, str]]) -> None:
        from engine.generation import TokenStream, record_generation

        streams: dict[str, TokenStream] = {}
        try:
            for side, source in sources:
                loaded = self.workbench.load_model(source)
                streams[side] = TokenStream(loaded.model, loaded.tokenizer, prompt, settings)
            self._streams = streams
            if self._stopped:
                return
            for side, source in sources:
                self.post_message(self.Started(run, side, source, settings.seed))
            self._pump(run, streams)
            for side, source in sources:
                result = streams[side].result
                if result is not None:
                    self.post_message(self.Finished(run, side, result))
                    record_generation(self.workbench.store, source, result, settings)
        finally:
            if self._streams is streams:
                self._streams = {}
            self.post_message(self.Done(run))

    def _pump(self, run: int, streams: dict[str, "TokenStream"]) -> None:
        """Advance every stream a token at a time, posting what arrived every POST_INTERVAL."""
        iterators = {side: iter(stream) for side, stream in streams.items()}
        pending: dict[str, list[ShownToken]] = {side: [] for side in streams}
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        last_post = time.monotonic()
        while iterators:
            for side in list(iterators):
                event = next(iterators[side], None)
                if event is None:
                    del iterators[side]
                    continue
                if not pending[side]:
                    first[side] = event.elapsed
                pending[side].append(shown(event))
                last[side] = event.elapsed
            now = time.monotonic()
            if now - last_post >= POST_INTERVAL or not iterators:
                last_post = now
                for side, tokens in pending.items():
                    if tokens:
                        self.post_message(self.Tokens(run, side, tokens, first[side], last[side]))
                        pending[side] = []

    @on(Started)
    def _started(self, message: Started) -> None:
        if message.run != self._run:
            return
        seed = f" · seed {message.seed}" if message.seed is not None else ""
        self.query_one(f"#stats-{message.side}", Static).update(
            Text(f"waiting for the first token…{seed}", style="dim")
        )

    @on(Tokens)
    def _tokens_arrived(self, message: Tokens) -> None:
        if message.run != self._run:
            return
        view = self.query_one(f"#tokens-{message.side}", TokenStreamView)
        first = self._first_token.setdefault(message.side, message.first)
        view.append(message.tokens)
        count = len(view.tokens)
        rate = count / message.last if message.last > 0 else 0.0
        self.query_one(f"#stats-{message.side}", Static).update(
            f"{count} tokens · {rate:.1f} tok/s · first token {first:.2f} s · generating…"
        )

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        if message.run != self._run:
            return
        result = message.result
        self.query_one(f"#stats-{message.side}", Static).update(
            f"{len(result.token_ids)} tokens · {result.tokens_per_second:.1f} tok/s · "
            f"first token {result.time_to_first_token:.2f} s · {result.finish_reason}"
        )

    @on(Done)
    def _done(self, message: Done) -> None:
        if message.run == self._run:
            self.generating = False

    @on(Worker.StateChanged)
    def _show_error_in_place(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "generate" or event.state != WorkerState.ERROR:
            return
        if isinstance(event.worker.error, WorkbenchError):
            for side in SIDES:
                stats = self.query_one(f"#stats-{side}", Static)
                if self.query_one(f"#output-{side}").display:
                    stats.update(Text(str(event.worker.error), style="bold red"))
            event.stop()

    # -- looking at tokens ------------------------------------------------------

    def action_toggle_colour(self) -> None:
        for view in self.query(TokenStreamView):
            view.colouring = "plain" if view.colouring == "probability" else "probability"

    def action_focus_tokens(self) -> None:
        view = self.query_one("#tokens-a", TokenStreamView)
        view.focus()
        if view.tokens and view.cursor is None:
            view.cursor = 0

    @on(TokenStreamView.Selected)
    def _token_selected(self, message: TokenStreamView.Selected) -> None:
        token = message.token
        detail = Text()
        detail.append(f"#{message.index} ", style="dim")
        detail.append(repr(token.text), style="bold")
        detail.append(f" id {token.token_id}")
        if token.probability is not None:
            detail.append(f"  p={token.probability:.3f}", style=probability_colour(token.probability))
        if token.alternatives:
            detail.append("\nalternatives: ", style="dim")
            for text, _token_id, probability in token.alternatives:
                detail.append(f"{text!r}", style="bold")
                detail.append(f" {probability:.3f}  ", style=probability_colour(probability))
        self.query_one("#token-detail", Static).update(detail)

    # -- A/B, history, focus ----------------------------------------------------

    def action_toggle_ab(self) -> None:
        self.ab_mode = not self.ab_mode

    def watch_ab_mode(self, on_: bool) -> None:
        self.query_one("#model-b-row").display = on_
        self.query_one("#output-b").display = on_
        if on_:
            self.query_one("#model-b").focus()

    def action_history(self) -> None:
        def chosen(generation: dict | None) -> None:
            if generation:
                self.show_generation(generation)

        self.app.push_screen(HistoryScreen(), chosen)

    def show_generation(self, generation: dict) -> None:
        """Put a logged generation back on screen: its prompt, model, settings and text."""
        self.query_one("#prompt", TextArea).text = generation["prompt"]
        self.query_one("#model-a", Input).value = generation["model"]
        settings = generation.get("settings") or {}
        if self.query("#settings"):
            self.query_one("#settings", ConfigForm).set_values(settings)
        self.query_one("#tokens-a", TokenStreamView).set_tokens([ShownToken(generation["text"], -1)])
        self.query_one("#title-a", Label).update(f"A · {generation['model']} · from history")
        self.query_one("#stats-a", Static).update(
            f"{generation.get('token_count', '?')} tokens · {generation.get('tokens_per_second') or 0:.1f} tok/s"
            f" · {generation.get('finish_reason', '')}"
            f" · {str(generation.get('created_at', ''))[:16].replace('T', ' ')}"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Stop only while generating, Generate only while not."""
        if action == "stop":
            return self.generating
        if action == "generate":
            return not self.generating
        return True

    def watch_generating(self) -> None:
        self.refresh_bindings()
