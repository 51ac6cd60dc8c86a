"""Quitting with runs going: leave them running (the default) or stop them with a checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

if TYPE_CHECKING:
    from engine.store import Run


class QuitScreen(ModalScreen[str | None]):
    """Dismisses with "leave" (quit, runs go on), "stop" (quit, runs stop with a checkpoint) or None (stay)."""

    BINDINGS = [
        Binding("l", "answer('leave')", "Leave running", id="quit.leave"),
        Binding("s", "answer('stop')", "Stop them", id="quit.stop"),
        Binding("escape", "answer(None)", "Stay", id="quit.stay"),
    ]

    def __init__(self, runs: list["Run"]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        names = ", ".join(f"{run.name} ({run.status})" for run in self.runs[:3])
        more = f" and {len(self.runs) - 3} more" if len(self.runs) > 3 else ""
        count = "A run is" if len(self.runs) == 1 else f"{len(self.runs)} runs are"
        with Vertical(id="dialog"):
            yield Static(f"{count} going: {names}{more}.", id="title")
            yield Static(
                "Runs are processes of their own: left running, they go on without the app, and the "
                "app shows them again when you reopen it (or: lmwb runs follow ID).",
                id="question",
            )
            with Horizontal(id="buttons"):
                yield Button("Leave running (l)", id="leave", variant="primary")
                yield Button("Stop with a checkpoint (s)", id="stop", variant="warning")
                yield Button("Stay (esc)", id="stay")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "stay" else event.button.id)

    def action_answer(self, choice: str | None) -> None:
        self.dismiss(choice)
