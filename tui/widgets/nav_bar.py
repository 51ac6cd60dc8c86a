"""The top line of every screen: where you are, the keys to go elsewhere, engine status.

The screen-switching keys (a digit per screen, and the function key of the
same number from a text field) are app bindings; this bar is where they are
shown, so the footer below stays free for the current screen's own actions.
While a text field has focus a digit is text, so the bar shows the function
keys instead (F4 for 4), the ones that still switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual.events import Click
from textual.widget import Widget
from textual.widgets import Input, TextArea

# Widgets in which a digit key is typed, not taken as a screen switch.
TEXT_FIELDS = (Input, TextArea)


class NavBar(Widget):
    """The screens as tabs with their keys, and on the right a short status.

    It knows the app only by the two reactives it watches, ``model`` and
    ``engine_status``, and keeps their latest values to draw.
    """

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    def __init__(self, current: str, screens: Sequence[tuple[str, str, str]]) -> None:
        """``screens``: (mode, key, title) in the order shown; ``current`` is the mode shown now."""
        super().__init__()
        self.current = current
        self.screens = screens
        self._spans: list[tuple[int, int, str]] = []
        self._model = ""
        self._engine_status = ""
        self._in_text_field = False

    def on_mount(self) -> None:
        self.watch(self.app, "engine_status", self._engine_status_changed)
        self.watch(self.app, "model", self._model_changed)
        self.watch(self.screen, "focused", self._focus_changed)

    def _focus_changed(self, focused: Widget | None) -> None:
        in_text_field = isinstance(focused, TEXT_FIELDS)
        if in_text_field != self._in_text_field:
            self._in_text_field = in_text_field
            self.refresh()

    def _engine_status_changed(self, status: str) -> None:
        self._engine_status = status
        self.refresh()

    def _model_changed(self, model: str) -> None:
        self._model = model
        self.refresh()

    def render(self) -> Text:
        bar = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        for mode, key, title in self.screens:
            start = len(bar)
            current = mode == self.current
            shown_key = f"F{key}" if self._in_text_field else key
            bar.append(f" {shown_key} ", style="bold reverse" if current else "bold")
            bar.append(f"{title} ", style="bold reverse" if current else "")
            self._spans.append((start, len(bar), mode))
            bar.append(" ")
        # The chosen model and the engine's state, as much as fits.
        for status in (f"{self._model} · {self._engine_status} ", f"{self._engine_status} "):
            gap = self.size.width - len(bar) - len(status)
            if gap >= 0:
                bar.append(" " * gap)
                bar.append(status, style="dim")
                break
        return bar

    def on_click(self, event: Click) -> None:
        for start, end, mode in self._spans:
            if start <= event.x < end:
                self.app.switch_mode(mode)
