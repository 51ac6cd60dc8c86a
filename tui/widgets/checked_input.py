"""A one-line input that checks what you type, off the UI thread, and says so under it.

Opening a dataset path or parsing a model source touches the disk, so the
check runs in a thread worker a moment after the typing pauses; the verdict
(what was found, or the engine's message saying what is wrong) appears under
the input. Enter on an accepted value posts ``CheckedInput.Accepted``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Label, Static

from engine.errors import WorkbenchError

# Typing pauses this long before the text is checked, so each keystroke stays instant.
CHECK_DELAY = 0.25


class CheckedInput(Vertical):
    """A labelled input whose text ``check(text)`` describes, or rejects with a WorkbenchError."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    class Checked(Message, bubble=False):
        def __init__(self, text: str, verdict: str, ok: bool) -> None:
            super().__init__()
            self.text, self.verdict, self.ok = text, verdict, ok

    class Accepted(Message):
        """Enter was pressed on text the check accepted."""

        def __init__(self, checked_input: "CheckedInput", value: str) -> None:
            super().__init__()
            self.checked_input = checked_input
            self.value = value

        @property
        def control(self) -> "CheckedInput":
            return self.checked_input

    def __init__(self, label: str, placeholder: str, check: Callable[[str], str], *, id: str) -> None:
        super().__init__(id=id)
        self.label = label
        self.placeholder = placeholder
        self.check = check
        """Runs in a worker thread: returns a one-line description, or raises WorkbenchError."""
        self._timer: Timer | None = None
        self._accepted: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="checked-row"):
            yield Label(self.label, classes="checked-label")
            yield Input(placeholder=self.placeholder, id=f"{self.id}-input", compact=True)
        yield Static("", id=f"{self.id}-status", classes="checked-status")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def status(self) -> Static:
        return self.query_one(".checked-status", Static)

    @property
    def verdict_is_error(self) -> bool:
        """True while the status line shows what is wrong with the text."""
        return self.status.has_class("-error")

    def _show(self, verdict: str | Text, *, error: bool = False) -> None:
        self.status.update(verdict)
        self.status.set_class(error, "-error")
        self.status.display = bool(verdict)

    def on_mount(self) -> None:
        self._show("")

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        self._accepted = None
        if self._timer is not None:
            self._timer.stop()
        text = event.value.strip()
        if not text:
            self._show("")
            return
        self._show(Text("checking…", style="dim"))
        self._timer = self.set_timer(
            CHECK_DELAY,
            lambda: self.run_worker(
                lambda: self._run_check(text), thread=True, exclusive=True, group="check", exit_on_error=False
            ),
        )

    def _run_check(self, text: str) -> None:
        try:
            self.post_message(self.Checked(text, self.check(text), True))
        except WorkbenchError as exc:
            self.post_message(self.Checked(text, str(exc), False))

    @on(Checked)
    def _checked(self, message: Checked) -> None:
        if message.text != self.input.value.strip():
            return  # an answer about text that has since changed
        self._accepted = message.text if message.ok else None
        self._show(message.verdict, error=not message.ok)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._accepted is not None and self._accepted == event.value.strip():
            self.post_message(self.Accepted(self, self._accepted))
