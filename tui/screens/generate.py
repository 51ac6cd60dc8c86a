"""Generate: write a prompt, set sampling, watch the text arrive token by token.

One thread worker drives the engine's ``TokenStream`` (two in A/B mode, in
lockstep, with the same seed) and posts the tokens to the UI in batches, at
most ~30 a second, so a fast model never floods the screen. Stop cancels the
stream at the next token. Every finished generation is logged in the store;
the history dialog searches that log.

Each generation is the first branch of an ``engine.branches.BranchTree``.
Walking its tokens (Ctrl+G, ←/→), ↑/↓ pick one of a token's alternatives
and Enter continues the text from it: a new branch, written by the same
worker with the tree's settings and seed, and logged like any generation.
[ and ] go back and forth between the branches. Branching takes one model's
text: in A/B mode it is refused with a line saying so. A shows, for the
selected token, where each head looked (``engine.attention``), computed in a
worker of its own.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

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
from tui.widgets.attention_map import AttentionMap
from tui.widgets.config_form import ConfigForm
from tui.widgets.token_stream import ShownToken, TokenStreamView, probability_colour

if TYPE_CHECKING:
    from engine.attention import TokenAttention
    from engine.branches import Branch, BranchTree
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
        "with ←/→ to see each token's top alternatives, pick one with ↑/↓ and press Enter to let the "
        "model go on from it instead: a branch, with the same settings and seed (the text before it "
        "is kept, the fork is underlined). [ and ] go back and forth between the branches; each is "
        "logged like any generation. A shows where each attention head looked as the model wrote the "
        "selected token: a row per layer, a strip of bars per head over the tokens before it. "
        "Ctrl+B turns on A/B: the same prompt and seed on two models side by side (branching takes "
        "one model's text). Ctrl+O browses and searches past generations."
    )

    BINDINGS = [
        # First, so they show in a narrow footer while walking the tokens (the only time they are offered).
        Binding(
            "left_square_bracket",
            "switch_branch(-1)",
            "Branches",
            key_display="[ ]",
            id="generate.branch.previous",
            tooltip="Show the branch before this one ([) or after it (])",
        ),
        Binding(
            "right_square_bracket",
            "switch_branch(1)",
            "Next branch",
            show=False,
            id="generate.branch.next",
            tooltip="Show the branch after this one",
        ),
        Binding(
            "a",
            "toggle_attention",
            "Attention",
            id="generate.attention",
            tooltip="Show where each head looked as the model wrote the selected token",
        ),
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
    attention_shown: reactive[bool] = reactive(False)

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

    class Attention(Message, bubble=False):
        """Where the heads looked as the model wrote a token (``look`` numbers the request)."""

        def __init__(self, look: int, attention: "TokenAttention") -> None:
            super().__init__()
            self.look, self.attention = look, attention

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[str, "TokenStream"] = {}
        self._stopped = False
        self._run = 0
        """Numbers each generation, so late messages from a stopped one are ignored."""
        self._first_token: dict[str, float] = {}
        self._received: dict[str, int] = {}
        """Tokens each side's stream has sent in this run (a branch's shared tokens are not counted)."""
        self._trees: dict[str, "BranchTree"] = {}
        """Each side's generation and its branches."""
        self._branch: dict[str, "Branch"] = {}
        """The branch each side shows."""
        self._look = 0
        """Numbers each attention request, so an answer for a token no longer selected is ignored."""

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
                            yield Static("", id=f"branch-{side}", classes="output-branch")
                            yield TokenStreamView(placeholder="Ctrl+R generates", id=f"tokens-{side}")
                            yield Static("", id=f"stats-{side}", classes="output-stats")
                yield Static("", id="token-detail")
        yield AttentionMap(id="attention")

    def on_mount(self) -> None:
        self.query_one("#model-a", Input).value = self.workbench.model
        self.query_one("#model-b-row").display = False
        self.query_one("#output-b").display = False
        self.query_one("#attention").display = False
        for side in SIDES:
            self.query_one(f"#branch-{side}").display = False
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
        from engine.branches import BranchTree

        self._trees = {side: BranchTree(source, prompt, settings) for side, source in sources}
        for side, source in sources:
            self.query_one(f"#title-{side}", Label).update(f"{side.upper()} · {source}")
        self._write({side: tree.root for side, tree in self._trees.items()})

    def _write(self, branches: dict[str, "Branch"]) -> None:
        """Let the worker write these branches (one per side), showing each from its shared tokens on."""
        self.action_stop()
        self._stopped = False
        for side, branch in branches.items():
            self._show_branch(side, branch)
            self.query_one(f"#stats-{side}", Static).update(Text("loading model…", style="dim"))
        self.generating = True
        self._run += 1
        self._first_token = {}
        self._received = {side: 0 for side in branches}
        self._generate(self._run, [(side, self._trees[side], branch) for side, branch in branches.items()])

    def action_stop(self) -> None:
        """Cancel the streams at their next token (safe to call from the UI thread any time)."""
        self._stopped = True
        for stream in list(self._streams.values()):
            stream.cancel()

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, run: int, jobs: list[tuple[str, "BranchTree", "Branch"]]) -> None:
        from engine.generation import record_generation

        streams: dict[str, TokenStream] = {}
        try:
            for side, tree, branch in jobs:
                loaded = self.workbench.load_model(tree.source)
                streams[side] = tree.stream(branch, loaded.model, loaded.tokenizer)
            self._streams = streams
            if self._stopped:
                return
            for side, tree, _ in jobs:
                self.post_message(self.Started(run, side, tree.source, tree.settings.seed))
            self._pump(run, {side: branch.follow(streams[side]) for side, _, branch in jobs})
            for side, tree, branch in jobs:
                if branch.result is not None:
                    self.post_message(self.Finished(run, side, branch.result))
                    record_generation(self.workbench.store, tree.source, branch.result, tree.settings)
        finally:
            if self._streams is streams:
                self._streams = {}
            self.post_message(self.Done(run))

    def _pump(self, run: int, iterators: dict[str, Iterator["TokenEvent"]]) -> None:
        """Advance every stream a token at a time, posting what arrived every POST_INTERVAL."""
        pending: dict[str, list[ShownToken]] = {side: [] for side in iterators}
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
        self._received[message.side] += len(message.tokens)
        rate = self._received[message.side] / message.last if message.last > 0 else 0.0
        self.query_one(f"#stats-{message.side}", Static).update(
            f"{len(view.tokens)} tokens · {rate:.1f} tok/s · first token {first:.2f} s · generating…"
        )

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        if message.run == self._run:
            self._show_result(message.side, message.result)

    def _show_result(self, side: str, result: "GenerationResult") -> None:
        self.query_one(f"#stats-{side}", Static).update(
            f"{len(result.token_ids)} tokens · {result.tokens_per_second:.1f} tok/s · "
            f"first token {result.time_to_first_token:.2f} s · {result.finish_reason}"
        )

    @on(Done)
    def _done(self, message: Done) -> None:
        if message.run != self._run:
            return
        self.generating = False
        self._show_branch_line()
        view, branch = self.query_one("#tokens-a", TokenStreamView), self._branch.get("a")
        if branch is not None and branch.parent is not None and view.has_focus and view.cursor is None:
            view.cursor = self._walk_to(branch, branch.fork)  # a branch just written: on its fork

    @on(Worker.StateChanged)
    def _show_error_in_place(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        if event.worker.group == "attention" and isinstance(event.worker.error, WorkbenchError):
            self.query_one("#attention", AttentionMap).say(str(event.worker.error))
            event.stop()
            return
        if event.worker.group != "generate":
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
        if message.picked is not None and message.view.has_focus:
            detail.append("  ↑↓ pick, ⏎ branch", style="dim")
        if token.alternatives:
            detail.append("\nalternatives: ", style="dim")
            for number, (text, _token_id, probability) in enumerate(token.alternatives):
                detail.append(f"{text!r}", style="bold reverse" if number == message.picked else "bold")
                detail.append(f" {probability:.3f}  ", style=probability_colour(probability))
        self.query_one("#token-detail", Static).update(detail)
        if self.attention_shown and message.view.id == "tokens-a":
            self._look_at(message.index)

    # -- branches ---------------------------------------------------------------

    @on(TokenStreamView.AlternativeTaken)
    def _alternative_taken(self, message: TokenStreamView.AlternativeTaken) -> None:
        """Enter on an alternative: go on from it in a new branch (or show the branch that took it before)."""
        side = message.view.id.removeprefix("tokens-") if message.view.id else "a"
        if self.ab_mode:
            self._say("Branching takes one model's text: turn A/B off (Ctrl+B), then pick the alternative again.")
            return
        if self.generating:
            self._say("Wait for this text to end, or stop it with Ctrl+S, then take the alternative.")
            return
        tree, branch = self._trees.get(side), self._branch.get(side)
        if tree is None or branch is None:
            self._say("This text has no alternatives to branch from; generate it again with Ctrl+R.")
            return
        try:
            taken = tree.fork(branch, message.index, message.token_id)
        except WorkbenchError as error:
            self._say(str(error))
            return
        if taken.result is None:  # made now (or made and stopped before it began)
            self._write({side: taken})
        else:
            self._show_branch(side, taken)

    def action_switch_branch(self, step: int) -> None:
        """[ and ]: the branch before or after the one shown, in the order they were made."""
        tree, branch = self._trees["a"], self._branch["a"]
        self._show_branch("a", tree.branches[(branch.number - 1 + step) % len(tree.branches)])

    def _show_branch(self, side: str, branch: "Branch") -> None:
        """Put a branch on view: its tokens so far, its fork underlined and selected, its line and stats."""
        self._branch[side] = branch
        view = self.query_one(f"#tokens-{side}", TokenStreamView)
        walked_to = view.cursor
        forked = branch.parent is not None
        view.set_tokens([shown(event) for event in branch.events], marked=branch.fork if forked else None)
        if view.has_focus and walked_to is not None:  # walking the tokens: go on at the fork, or where it was
            view.cursor = self._walk_to(branch, walked_to)
        if view.cursor is None:
            self.query_one("#token-detail", Static).update("")
            self._look_at(None)
        if branch.result is not None:
            self._show_result(side, branch.result)
        self._show_branch_line()

    @staticmethod
    def _walk_to(branch: "Branch", index: int) -> int | None:
        """Where the cursor goes on a branch shown while walking: its fork, else the same place (if written yet)."""
        index = branch.fork if branch.parent is not None else min(index, len(branch.events) - 1)
        return index if 0 <= index < len(branch.events) else None

    def _show_branch_line(self) -> None:
        """'branch 2/3 · from 1 at token 14 ' fox'' under a side's title, once it has branches."""
        for side in SIDES:
            tree, line = self._trees.get(side), self.query_one(f"#branch-{side}", Static)
            line.display = tree is not None and len(tree.branches) > 1
            if tree is not None and line.display:
                line.update(Text(tree.describe(self._branch[side]), style="italic"))
        self.refresh_bindings()

    def _say(self, message: str) -> None:
        """A refusal or a problem, in place under the outputs."""
        self.query_one("#token-detail", Static).update(Text(message, style="bold red"))

    # -- attention --------------------------------------------------------------

    def action_toggle_attention(self) -> None:
        self.attention_shown = not self.attention_shown

    def watch_attention_shown(self, shown_: bool) -> None:
        self.query_one("#attention").display = shown_
        if shown_:
            self._look_at(self.query_one("#tokens-a", TokenStreamView).cursor)

    def _look_at(self, index: int | None) -> None:
        """Ask for the attention of side A's token ``index`` (the answer for the latest request is shown)."""
        tree, branch = self._trees.get("a"), self._branch.get("a")
        attention = self.query_one("#attention", AttentionMap)
        if tree is None or branch is None:
            attention.say("Attention is shown for a generation of this session; generate with Ctrl+R.")
            return
        if index is None or index >= len(branch.events):
            attention.say("Select a token with ←/→ to see where each head looked as the model wrote it.")
            return
        self._look += 1
        attention.say(f"looking at token #{index}…")
        self._attention(self._look, tree, branch.token_ids[: index + 1], index)

    @work(thread=True, exclusive=True, group="attention", exit_on_error=False)
    def _attention(self, look: int, tree: "BranchTree", token_ids: list[int], index: int) -> None:
        from engine.attention import attention_in_generation

        loaded = self.workbench.load_model(tree.source)
        attention = attention_in_generation(loaded.model, loaded.tokenizer, tree.prompt, token_ids, index)
        self.post_message(self.Attention(look, attention))

    @on(Attention)
    def _attention_arrived(self, message: Attention) -> None:
        if message.look == self._look:
            self.query_one("#attention", AttentionMap).show(message.attention)

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
        self._trees, self._branch = {}, {}
        self._show_branch_line()
        self.query_one("#tokens-a", TokenStreamView).set_tokens([ShownToken(generation["text"], -1)])
        self.query_one("#title-a", Label).update(f"A · {generation['model']} · from history")
        self.query_one("#stats-a", Static).update(
            f"{generation.get('token_count', '?')} tokens · {generation.get('tokens_per_second') or 0:.1f} tok/s"
            f" · {generation.get('finish_reason', '')}"
            f" · {str(generation.get('created_at', ''))[:16].replace('T', ' ')}"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Stop only while generating, Generate only while not; the token keys while walking tokens."""
        if action == "stop":
            return self.generating
        if action == "generate":
            return not self.generating
        walking = self.focused is not None and self.focused.id == "tokens-a" and "a" in self._trees
        if action == "switch_branch":
            # Switching while a branch is written would show its tokens arriving on another.
            return walking and len(self._trees["a"].branches) > 1 and (None if self.generating else True)
        if action == "toggle_attention":
            return walking
        return True

    def watch_generating(self) -> None:
        self.refresh_bindings()
