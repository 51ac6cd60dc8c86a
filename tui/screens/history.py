"""Past generations, newest first, searchable by what the prompt or the text said."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from tui.app import WorkbenchApp

HISTORY_LIMIT = 200


class HistoryScreen(ModalScreen[dict | None]):
    """Browse the generation log; Enter puts one back on the Generate screen."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="history.close"),
        Binding("down", "focus_list", "List", show=False, id="history.list"),
    ]

    class Found(Message, bubble=False):
        def __init__(self, search: str, generations: list[dict]) -> None:
            super().__init__()
            self.search, self.generations = search, generations

    def __init__(self) -> None:
        super().__init__()
        self._generations: list[dict] = []

    @property
    def workbench(self) -> WorkbenchApp:
        """The app, typed: the generation log is in its store."""
        return cast("WorkbenchApp", self.app)

    def compose(self) -> ComposeResult:
        with Vertical(id="history"):
            yield Label("Generation history · type to search · Enter opens · Escape closes", id="history-title")
            yield Input(placeholder="search prompts and outputs…", id="history-search", compact=True)
            yield OptionList(id="history-list")

    def on_mount(self) -> None:
        self.query_one("#history-search").focus()
        self._search("")

    @on(Input.Changed, "#history-search")
    def _typed(self, event: Input.Changed) -> None:
        self._search(event.value.strip())

    @on(Input.Submitted, "#history-search")
    def _submitted(self) -> None:
        self.action_focus_list()

    @work(thread=True, exclusive=True, group="history", exit_on_error=False)
    def _search(self, search: str) -> None:
        generations = self.workbench.store.generations(search=search or None, limit=HISTORY_LIMIT)
        self.post_message(self.Found(search, generations))

    @on(Found)
    def _show(self, message: Found) -> None:
        if message.search != self.query_one("#history-search", Input).value.strip():
            return
        self._generations = message.generations
        options = self.query_one("#history-list", OptionList)
        options.clear_options()
        if not message.generations:
            options.add_option(
                Option(
                    Text("no generations yet" if not message.search else "nothing matches", style="dim"), disabled=True
                )
            )
        for index, generation in enumerate(message.generations):
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(f"{str(generation.get('created_at', ''))[:16].replace('T', ' ')}  ", style="dim")
            line.append(f"{generation['model']}  ", style="bold")
            line.append(" ".join(generation["prompt"].split())[:60] or "(empty prompt)")
            line.append(" → ", style="dim")
            line.append(" ".join(generation["text"].split())[:80])
            options.add_option(Option(line, id=str(index)))
        if message.generations:
            options.highlighted = 0

    @on(OptionList.OptionSelected, "#history-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(self._generations[int(event.option.id)])

    def action_focus_list(self) -> None:
        self.query_one("#history-list").focus()
