"""A scored text: every token coloured by how surprised a model was by it, with a cursor to select one.

The colours are the workbench's one scale for "how likely": a token's
surprise in bits is coloured as the Generate screen colours a probability
(green for a likely token, red from about 10 bits, one in a thousand). Two
models (A/B) colour the difference instead: red where B is more surprised
than A, blue where less, grey where they agree. The command line colours its
rendering with the same functions.

The view lays its lines out itself, a whole token to a line where it fits,
so it knows the line and column of every token: the cursor moves by token
(←/→) and by line (↑/↓), and the view scrolls to keep it in sight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.geometry import Region
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from tui.widgets.token_stream import probability_colour, visible_text

# A difference in surprise of this many bits or more gets the strongest colour.
DIFFERENCE_SCALE = 5.0
_AGREEING = (150, 150, 150)
_MORE_SURPRISED = (235, 70, 60)
_LESS_SURPRISED = (70, 150, 245)


def surprise_colour(bits: float) -> str:
    """A token's surprise (bits) on the probability scale: green at 0 bits, yellow near 5, red from 10."""
    return probability_colour(2.0**-bits)


def difference_colour(bits: float) -> str:
    """Model B's surprise minus model A's (bits): red where B is more surprised, blue where less, grey near 0."""
    strength = min(abs(bits) / DIFFERENCE_SCALE, 1.0)
    far = _MORE_SURPRISED if bits > 0 else _LESS_SURPRISED
    red, green, blue = (round(near + (to - near) * strength) for near, to in zip(_AGREEING, far, strict=True))
    return f"rgb({red},{green},{blue})"


def token_label(text: str, width: int = 12) -> str:
    """A token's text in one short line: spaces as ·, line breaks as ↵, tabs as ⇥, nothing as ∅; cut with …."""
    label = text.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥") or "∅"
    return label if cell_len(label) <= width else label[: width - 1] + "…"


def probability_text(probability: float) -> str:
    """A probability in at most five characters: 12%, 0.4%, <0.1%."""
    if probability >= 0.1:
        return f"{probability:.0%}"
    return f"{probability:.1%}" if probability >= 0.001 else "<0.1%"


def token_colours(surprises: list[float], against: list[float] | None = None) -> list[str]:
    """Each token's colour: by its surprise, or with ``against`` (model B's surprises) by B's minus A's."""
    if against is None:
        return [surprise_colour(bits) for bits in surprises]
    return [difference_colour(b - a) for a, b in zip(surprises, against, strict=True)]


@dataclass(frozen=True)
class ColouredToken:
    """A token as the view shows it: the piece of text it covers, in its colour."""

    text: str
    colour: str


class ScoredTextView(VerticalScroll, can_focus=True):
    """Tokens in their colours, laid out in lines, with a keyboard cursor on one of them."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    BINDINGS = [
        Binding("left", "move(-1)", "Previous token", show=False, id="scored.previous"),
        Binding("right", "move(1)", "Next token", show=False, id="scored.next"),
        Binding("up", "move_line(-1)", "Line up", show=False, id="scored.line_up"),
        Binding("down", "move_line(1)", "Line down", show=False, id="scored.line_down"),
        Binding("home", "move_to(0)", "First token", show=False, id="scored.first"),
        Binding("end", "move_to(-1)", "Last token", show=False, id="scored.last"),
    ]

    cursor: reactive[int | None] = reactive(None, init=False)

    class Selected(Message):
        """The cursor moved to the token at ``index``."""

        def __init__(self, view: ScoredTextView, index: int) -> None:
            super().__init__()
            self.view = view
            self.index = index

        @property
        def control(self) -> ScoredTextView:
            return self.view

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.tokens: list[ColouredToken] = []
        self.placeholder = placeholder
        self._body = Static("", classes="scored-body")
        self._places: list[tuple[int, int]] = []  # (line, column) where each token starts

    def compose(self):
        yield self._body

    def on_mount(self) -> None:
        self._redraw()

    def on_resize(self, event: events.Resize) -> None:
        self._redraw()

    def set_tokens(self, tokens: list[ColouredToken], cursor: int | None = None) -> None:
        """Show a new scored text (or new colours for the same one), the cursor on ``cursor``."""
        self.tokens = list(tokens)
        self.set_reactive(ScoredTextView.cursor, None)
        self._redraw()
        if cursor is not None and self.tokens:
            self.cursor = min(cursor, len(self.tokens) - 1)

    def _redraw(self) -> None:
        if not self.tokens:
            self._places = []
            self._body.update(Text(self.placeholder, style="dim italic"))
            return
        lines, self._places = self._layout(max(self.scrollable_content_region.width, 8))
        self._body.update(Text("\n").join(lines))

    def _layout(self, width: int) -> tuple[list[Text], list[tuple[int, int]]]:
        """The tokens in lines of at most ``width`` cells, wrapped between words.

        A word (a token that begins with a space or a line break, and the
        tokens up to the next such) that does not fit begins the next line;
        a line break in a token ends the line (shown as ↵); a word wider
        than a line wraps between its tokens, a token wider than a line is
        cut. An empty piece (half of a character) shows as ∅ only under the
        cursor.
        """
        shown = [
            visible_text(token.text) or ("∅" if index == self.cursor else "") for index, token in enumerate(self.tokens)
        ]
        lines = [Text()]
        places = []
        for index, (token, text) in enumerate(zip(self.tokens, shown, strict=True)):
            style = Style(color=token.colour)
            if index == self.cursor:
                style += Style(reverse=True, bold=True)
            if lines[-1].cell_len and lines[-1].cell_len + self._word_width(shown, index) > width:
                lines.append(Text())
            for number, part in enumerate(text.split("\n")):
                if number:
                    lines.append(Text())
                if lines[-1].cell_len + cell_len(part) > width and lines[-1].cell_len:
                    lines.append(Text())
                if number == 0:
                    places.append((len(lines) - 1, lines[-1].cell_len))
                while cell_len(part) > width - lines[-1].cell_len:
                    room = width - lines[-1].cell_len
                    cut = next(i for i in range(len(part), -1, -1) if cell_len(part[:i]) <= room) or 1
                    lines[-1].append(part[:cut], style)
                    lines.append(Text())
                    part = part[cut:]
                lines[-1].append(part, style)
        return lines, places

    def _word_width(self, shown: list[str], index: int) -> int:
        """Cells of the word that begins at token ``index`` (0 where it does not begin a word: it stays on)."""
        if index and shown[index][:1] not in (" ", "↵") and not shown[index - 1].endswith("\n"):
            return 0
        width = 0
        for later, text in enumerate(shown[index:]):
            if later and text[:1] in (" ", "↵"):
                break
            width += cell_len(text.split("\n")[0])
            if "\n" in text:
                break
        return width

    def watch_cursor(self, cursor: int | None) -> None:
        self._redraw()
        if cursor is None or not self.tokens:
            return
        line, _ = self._places[cursor]
        self.scroll_to_region(Region(0, line, 1, 1), animate=False, immediate=True)
        self.post_message(self.Selected(self, cursor))

    def action_move(self, delta: int) -> None:
        if not self.tokens:
            return
        if self.cursor is None:
            self.cursor = 0 if delta > 0 else len(self.tokens) - 1
        else:
            self.cursor = min(max(self.cursor + delta, 0), len(self.tokens) - 1)

    def action_move_line(self, delta: int) -> None:
        """To the token nearest the cursor's column on the next line with a token starting on it."""
        if not self.tokens:
            return
        if self.cursor is None:
            self.action_move(delta)
            return
        line, column = self._places[self.cursor]
        lines = sorted({place[0] for place in self._places})
        later = [number for number in lines if (number - line) * delta > 0]
        if not later:
            return
        target = min(later) if delta > 0 else max(later)
        on_line = [index for index, place in enumerate(self._places) if place[0] == target]
        self.cursor = next(
            (index for index in reversed(on_line) if self._places[index][1] <= column),
            on_line[0],
        )

    def action_move_to(self, index: int) -> None:
        if self.tokens:
            self.cursor = index % len(self.tokens)
