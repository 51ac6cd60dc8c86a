"""What every workbench screen shares: the nav bar on top, the footer of keys below."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from tui.widgets.nav_bar import NavBar

if TYPE_CHECKING:
    from tui.app import WorkbenchApp


class WorkbenchScreen(Screen):
    """A screen of the workbench: subclasses set MODE, TITLE, HELP and compose_body()."""

    BINDINGS = [
        Binding("escape", "leave_field", "Leave field", show=False, id="screen.leave_field",
                tooltip="Leave the text field, so single keys (1-5, ?) act again"),
    ]

    MODE = ""
    HELP = ""
    """A few sentences for the help screen: what this screen is for."""

    @property
    def workbench(self) -> "WorkbenchApp":
        """The app, typed: the shared selection, store, models and training job."""
        return cast("WorkbenchApp", self.app)

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the nav bar and the footer."""
        yield from ()

    def action_leave_field(self) -> None:
        """Escape: stop typing in a field, so 1–5 and the screen's letter keys work again."""
        self.set_focus(None)
