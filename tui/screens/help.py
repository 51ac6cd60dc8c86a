"""The help screen: what the current screen is for, and every key it and the app answer to."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """Keys of the screen it was opened from (read from its live bindings), and of the app."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.about = screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(self._summary(), id="help-summary")
            yield Static(self._keys(), id="help-keys")
            yield Static(
                "Ctrl+P opens the command palette: every action above, searchable, plus "
                "'Theme' to change colours. Tab moves between fields; Escape leaves one. "
                "Press Escape to close this help.",
                id="help-footer",
            )

    def _summary(self) -> Text:
        title = getattr(self.about, "TITLE", None) or type(self.about).__name__
        summary = Text(f"{title}\n", style="bold")
        summary.append(getattr(self.about, "HELP", "") or "")
        return summary

    def _keys(self) -> Table:
        """The screen's own keys first, then the app's (those with an id: the workbench's own).

        A focused field's editing keys and Textual's focus keys are left out.
        """
        table = Table(box=None, expand=True, show_header=True, header_style="bold")
        table.add_column("key", no_wrap=True)
        table.add_column("action")
        table.add_column("id", style="dim", no_wrap=True)
        active = [
            item
            for item in self.about.active_bindings.values()
            if item.node in (self.about, self.app) and item.binding.id and item.binding.description
        ]
        active.sort(key=lambda item: item.node is self.app)
        seen: set[str] = set()
        for item in active:
            binding = item.binding
            if (binding.id or binding.action) in seen:
                continue
            seen.add(binding.id or binding.action)
            table.add_row(self.app.get_key_display(binding), binding.tooltip or binding.description, binding.id or "")
        return table
