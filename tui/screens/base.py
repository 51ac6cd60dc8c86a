"""What every workbench screen shares: the nav bar, the footer of keys, and following the store."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, cast

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, get_current_worker

from tui.widgets.key_footer import KeyFooter
from tui.widgets.nav_bar import NavBar

if TYPE_CHECKING:
    from tui.app import WorkbenchApp


class WorkbenchScreen(Screen):
    """A screen of the workbench: subclasses set MODE, TITLE, HELP and compose_body()."""

    BINDINGS = [
        # Help first, so the footer shows it before the screen's own keys however narrow the terminal.
        Binding("question_mark", "app.help", "Help", id="screen.help", tooltip="Keys and what each screen does"),
        Binding(
            "escape",
            "leave_field",
            "Leave field",
            show=False,
            id="screen.leave_field",
            tooltip="Leave the text field, so single keys (1-6, ?) act again",
        ),
    ]

    MODE = ""
    HELP = ""
    """A few sentences for the help screen: what this screen is for."""

    def __init__(self) -> None:
        super().__init__()
        self._shown = threading.Event()
        self._wake = threading.Event()

    @property
    def workbench(self) -> "WorkbenchApp":
        """The app, typed: the shared selection, store, models and training job."""
        return cast("WorkbenchApp", self.app)

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE, self.workbench.SCREEN_ORDER)
        yield from self.compose_body()
        yield KeyFooter(compact=True, show_command_palette=False)  # Ctrl+P is in the help; its 12 columns go to keys

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the nav bar and the footer."""
        yield from ()

    def action_leave_field(self) -> None:
        """Escape: stop typing in a field, so 1–6 and the screen's letter keys work again."""
        self.set_focus(None)

    # -- following the store ----------------------------------------------------

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Textual restyles every widget of a screen it resumes, though a
        # suspended screen's styles are current already (a theme or CSS change
        # made meanwhile is applied by switch_mode or refresh_css before this
        # runs): tens of milliseconds for the Train form, on every switch.
        # tests/test_textual_assumptions.py fails if Textual stops honouring this.
        event.refresh_styles = False
        self._shown.set()
        self._wake.set()

    def on_screen_suspend(self) -> None:
        self._shown.clear()

    def follow(self, read: Callable[[], Message | None], interval: float) -> Worker:
        """Call ``read()`` every ``interval`` seconds in one thread, while this screen is shown.

        ``read`` runs in that thread: it asks the store what changed and returns
        a message for the screen, or None when nothing did (then nothing is
        redrawn). One long-lived thread, not a worker per tick: a poll that
        finds nothing costs a few SQL reads and no UI work at all. Following
        something else cancels the previous loop.
        """

        def loop() -> None:
            worker = get_current_worker()
            while not worker.is_cancelled:
                if self._shown.is_set():
                    message = read()
                    if message is not None and not worker.is_cancelled:
                        self.post_message(message)
                self._wake.wait(interval)
                self._wake.clear()

        return self.run_worker(loop, thread=True, exclusive=True, group="follow", exit_on_error=False)

    def poll_now(self) -> None:
        """Wake the follow loop at once (the user changed what it should read)."""
        self._wake.set()
