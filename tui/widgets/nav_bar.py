"""The top line of every screen: where you are, the keys to go elsewhere, engine status.

The screen-switching keys (1–5) are app bindings; this bar is where they are
shown, so the footer below stays free for the current screen's own actions.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.events import Click
from textual.widget import Widget


class NavBar(Widget):
    """The screens as tabs with their keys, and on the right a short status."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current
        self._spans: list[tuple[int, int, str]] = []

    def on_mount(self) -> None:
        self.watch(self.app, "engine_status", lambda _: self.refresh())
        self.watch(self.app, "model", lambda _: self.refresh())

    def render(self) -> Text:
        bar = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        for mode, key, title in self.app.SCREEN_ORDER:
            start = len(bar)
            current = mode == self.current
            bar.append(f" {key} ", style="bold reverse" if current else "bold")
            bar.append(f"{title} ", style="bold reverse" if current else "")
            self._spans.append((start, len(bar), mode))
            bar.append(" ")
        # The chosen model and the engine's state, as much as fits.
        for status in (f"{self.app.model} · {self.app.engine_status} ", f"{self.app.engine_status} "):
            gap = self.size.width - len(bar) - len(status)
            if gap > 0:
                bar.append(" " * gap)
                bar.append(status, style="dim")
                break
        return bar

    def on_click(self, event: Click) -> None:
        for start, end, mode in self._spans:
            if start <= event.x < end:
                self.app.switch_mode(mode)
