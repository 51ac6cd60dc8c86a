"""Pick a sweep to compare its runs: every sweep, newest first, with what it varies and its runs by status."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from engine.store import RUN_STATUSES

if TYPE_CHECKING:
    from tui.app import WorkbenchApp


def sweep_line(sweep: dict) -> Text:
    """One sweep as the list shows it: id, what it varies, how many runs and where they are."""
    statuses = sweep["statuses"]
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{sweep['id']}  ", style="dim")
    line.append(f"{sweep['name']}  ", style="bold")
    line.append(f"{sum(statuses.values())} runs")
    if statuses:
        counts = [f"{statuses[status]} {status}" for status in RUN_STATUSES if status in statuses]
        line.append(": " + ", ".join(counts), style="dim")
    return line


class SweepPickerScreen(ModalScreen[str | None]):
    """The sweeps in the store; Enter picks one (its id), Escape picks none."""

    BINDINGS = [Binding("escape", "dismiss", "Close", id="sweeps.close")]

    class Listed(Message, bubble=False):
        def __init__(self, sweeps: list[dict]) -> None:
            super().__init__()
            self.sweeps = sweeps

    @property
    def workbench(self) -> WorkbenchApp:
        """The app, typed: the sweeps are in its store."""
        return cast("WorkbenchApp", self.app)

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-picker"):
            yield Label("Sweeps · Enter compares one's runs · Escape closes", id="sweep-picker-title")
            yield OptionList(Option(Text("reading the sweeps…", style="dim"), disabled=True), id="sweep-list")

    def on_mount(self) -> None:
        self.query_one("#sweep-list").focus()
        self._list()

    @work(thread=True, group="sweeps", exit_on_error=False)
    def _list(self) -> None:
        self.post_message(self.Listed(self.workbench.store.sweeps()))

    @on(Listed)
    def _show(self, message: Listed) -> None:
        options = self.query_one("#sweep-list", OptionList)
        options.clear_options()
        if not message.sweeps:
            hint = "no sweeps yet: start one with lmwb sweep --vary NAME=V1,V2 (or a comma list on Train)"
            options.add_option(Option(Text(hint, style="dim"), disabled=True))
            return
        options.add_options(Option(sweep_line(sweep), id=sweep["id"]) for sweep in message.sweeps)
        options.highlighted = 0

    @on(OptionList.OptionSelected, "#sweep-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
