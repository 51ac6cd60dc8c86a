"""Text shown token by token: streamed generations and tokenizer views.

One widget serves both places that show tokens. In a generation each token
carries its probability and the alternatives the model considered; in the
tokenizer view tokens have only an id and are shaded alternately so their
boundaries show. A keyboard cursor selects one token; the screen shows its
details (``TokenStreamView.Selected``). Where the selected token has
alternatives, ↑/↓ pick one and Enter takes it (``AlternativeTaken``: the
Generate screen branches from it); one token can be marked (a branch's fork).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

Colouring = Literal["plain", "probability", "alternate"]


@dataclass
class ShownToken:
    """A token as displayed: its text, id and, for generations, what the model thought."""

    text: str
    token_id: int
    probability: float | None = None
    alternatives: list[tuple[str, int, float]] = field(default_factory=list)  # (text, id, probability)


def probability_colour(probability: float) -> str:
    """Red for unlikely tokens (p ≤ 0.001), through yellow (p ≈ 0.03), to green (p = 1).

    The scale is logarithmic: a small model rarely gives any token p > 0.5, and
    what matters to the eye is 1 in 10 against 1 in 1000.
    """
    position = (math.log10(min(max(probability, 1e-3), 1.0)) + 3) / 3
    if position < 0.5:
        red, green = 220, int(60 + 320 * position)
    else:
        red, green = int(220 - 300 * (position - 0.5)), 220
    return f"rgb({red},{green},70)"


_ALTERNATE_BACKGROUNDS = ("rgb(40,70,120)", "rgb(110,60,40)", "rgb(40,100,70)", "rgb(90,50,110)")


def visible_text(text: str) -> str:
    """Show a token's whitespace so a lone space or newline token is still visible."""
    return text.replace("\n", "↵\n").replace("\t", "⇥")


class TokenStreamView(VerticalScroll, can_focus=True):
    """A scrolling view of tokens with an optional keyboard cursor over them."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    BINDINGS = [
        Binding("left", "move(-1)", "Prev token", show=False, id="tokens.previous"),
        Binding("right", "move(1)", "Next token", show=False, id="tokens.next"),
        Binding("home", "move_to(0)", "First token", show=False, id="tokens.first"),
        Binding("end", "move_to(-1)", "Last token", show=False, id="tokens.last"),
        Binding("up", "pick(-1)", "Previous alternative", show=False, id="tokens.alternative.previous"),
        Binding("down", "pick(1)", "Next alternative", show=False, id="tokens.alternative.next"),
        Binding(
            "enter",
            "take",
            "Branch",
            id="tokens.take",
            tooltip="Continue the text from the alternative picked with ↑/↓",
        ),
    ]

    colouring: reactive[Colouring] = reactive("plain")
    cursor: reactive[int | None] = reactive(None)
    picked: reactive[int | None] = reactive(None)
    """The alternative of the selected token that ↑/↓ picked (an index into its alternatives)."""

    class Selected(Message):
        """The keyboard cursor moved to a token, or another of its alternatives was picked."""

        def __init__(self, view: "TokenStreamView", index: int, token: ShownToken, picked: int | None) -> None:
            super().__init__()
            self.view = view
            self.index = index
            self.token = token
            self.picked = picked

        @property
        def control(self) -> "TokenStreamView":
            return self.view

    class AlternativeTaken(Message):
        """Enter on a picked alternative: the text should go on from it instead of the token."""

        def __init__(self, view: "TokenStreamView", index: int, token_id: int) -> None:
            super().__init__()
            self.view = view
            self.index = index
            self.token_id = token_id

        @property
        def control(self) -> "TokenStreamView":
            return self.view

    def __init__(self, *, placeholder: str = "", show_ids: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tokens: list[ShownToken] = []
        self.placeholder = placeholder
        self.show_ids = show_ids
        self.marked: int | None = None
        """A token shown underlined: where the branch on view forked from its parent."""
        self._drawn = ""
        self._starts: list[int] = []
        """The text drawn and where each token starts in it, to scroll the selected one into view."""
        self._body = Static("", classes="token-body")

    def compose(self):
        yield self._body

    def on_mount(self) -> None:
        self._redraw()

    def clear(self) -> None:
        """Forget every token (a new generation or a new text to tokenize)."""
        self.tokens = []
        self.cursor = None
        self._redraw()

    def set_tokens(self, tokens: list[ShownToken], *, marked: int | None = None) -> None:
        """Replace the whole text (the tokenizer view, a generation from history, a branch with its fork marked)."""
        self.tokens = list(tokens)
        self.marked = marked
        self.cursor = None
        self._redraw()

    def append(self, tokens: list[ShownToken]) -> None:
        """Add a batch of streamed tokens, keeping the end in view if it was in view."""
        following = self.scroll_y >= self.max_scroll_y - 1
        self.tokens.extend(tokens)
        self._redraw()
        if following:
            self.call_after_refresh(self.scroll_end, animate=False)

    @property
    def text(self) -> str:
        """The plain text of all tokens."""
        return "".join(token.text for token in self.tokens)

    def _style_for(self, index: int, token: ShownToken) -> Style:
        style = Style()
        if self.colouring == "probability" and token.probability is not None:
            style = Style(color=probability_colour(token.probability))
        elif self.colouring == "alternate":
            style = Style(bgcolor=_ALTERNATE_BACKGROUNDS[index % len(_ALTERNATE_BACKGROUNDS)], color="white")
        if index == self.marked:
            style += Style(underline=True)
        if index == self.cursor:
            style += Style(reverse=True, bold=True)
        return style

    def _redraw(self) -> None:
        if not self.tokens:
            self._body.update(Text(self.placeholder, style="dim italic"))
            return
        rendered = Text()
        self._starts = []
        for index, token in enumerate(self.tokens):
            self._starts.append(len(rendered))
            if self.colouring == "alternate":
                # Tokenizer view: every token must be seen, even a newline or a
                # piece of a character that only shows with the next token.
                shown = visible_text(token.text) or "∅"
            else:
                shown = token.text or ("∅" if index == self.cursor else "")
            rendered.append(shown, self._style_for(index, token))
        if self.show_ids:
            rendered.append("\n\nids: ", style="dim")
            rendered.append(" ".join(str(token.token_id) for token in self.tokens), style="dim")
        self._drawn = rendered.plain
        self._body.update(rendered)

    def watch_colouring(self) -> None:
        self._redraw()

    def watch_cursor(self, cursor: int | None) -> None:
        self._redraw()
        self.refresh_bindings()  # Enter is offered only on a token with alternatives
        if cursor is None or not self.tokens:
            return
        self.call_after_refresh(self._scroll_to_cursor)
        token = self.tokens[cursor]
        others = [i for i, (_, token_id, _) in enumerate(token.alternatives) if token_id != token.token_id]
        picked = others[0] if others else None  # the likeliest token it did not write
        if picked == self.picked:
            self._selected()
        self.picked = picked

    def watch_picked(self) -> None:
        self._selected()

    def _selected(self) -> None:
        if self.cursor is not None and self.tokens:
            self.post_message(self.Selected(self, self.cursor, self.tokens[self.cursor], self.picked))

    def _scroll_to_cursor(self) -> None:
        """Bring the selected token's line into view: the lines the text before it wraps into, at this width."""
        width = self._body.content_size.width
        if self.cursor is None or self.cursor >= len(self._starts) or width <= 0:
            return
        before = Text(self._drawn[: self._starts[self.cursor]])
        line = len(before.wrap(self.app.console, width)) - 1 if before else 0
        if not self.scroll_y <= line < self.scroll_y + self.scrollable_content_region.height:
            self.scroll_to(y=max(line - self.scrollable_content_region.height // 2, 0), animate=False)

    def _alternatives(self) -> list[tuple[str, int, float]]:
        return self.tokens[self.cursor].alternatives if self.cursor is not None and self.tokens else []

    def action_move(self, delta: int) -> None:
        if not self.tokens:
            return
        if self.cursor is None:
            self.cursor = 0 if delta > 0 else len(self.tokens) - 1
        else:
            self.cursor = min(max(self.cursor + delta, 0), len(self.tokens) - 1)

    def action_move_to(self, index: int) -> None:
        if self.tokens:
            self.cursor = index % len(self.tokens)

    def action_pick(self, delta: int) -> None:
        """Pick another alternative of the selected token; with none to pick, scroll as a view does."""
        alternatives = self._alternatives()
        if not alternatives:
            if delta < 0:
                self.action_scroll_up()
            else:
                self.action_scroll_down()
            return
        current = self.picked if self.picked is not None else -delta
        self.picked = min(max(current + delta, 0), len(alternatives) - 1)

    def action_take(self) -> None:
        """Take the picked alternative (the screen decides what that means)."""
        alternatives = self._alternatives()
        if self.picked is not None and self.cursor is not None and self.picked < len(alternatives):
            self.post_message(self.AlternativeTaken(self, self.cursor, alternatives[self.picked][1]))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Enter only where a token with alternatives is selected."""
        if action == "take":
            return bool(self._alternatives())
        return True
