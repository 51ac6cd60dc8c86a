"""What the app assumes of Textual's behaviour, checked so that an upgrade that changes it fails here first.

Two overrides keep a screen switch within the 33 ms that bench/ui.py measures
(see bench/README.md for the figures with and without them):

- ``WorkbenchApp.delay_update`` paints at once: Textual's ``switch_mode``
  calls ``delay_update`` to hold painting back 50 ms.
- ``WorkbenchScreen.on_screen_resume`` sets ``ScreenResume.refresh_styles``
  to False: otherwise Textual restyles every widget of a screen it resumes.

pyproject.toml pins textual to the minor version these were checked on. If a
test here fails after an upgrade, measure again with bench/ui.py and drop the
override that is no longer needed, or adapt it.
"""

from __future__ import annotations

import asyncio

from textual import events
from textual.app import App
from textual.screen import Screen
from textual.widgets import Static


class CountingScreen(Screen):
    """A screen that counts how often Textual restyles it; ``keep_styles`` answers the resume as our screens do."""

    keep_styles = False

    def __init__(self) -> None:
        super().__init__()
        self.restyles = 0

    def compose(self):
        yield Static("text")

    def update_node_styles(self, animate: bool = True) -> None:
        self.restyles += 1
        super().update_node_styles(animate)

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        if self.keep_styles:
            event.refresh_styles = False


class KeepingScreen(CountingScreen):
    keep_styles = True


class Probe(App):
    MODES = {"first": CountingScreen, "counting": CountingScreen, "keeping": KeepingScreen}
    DEFAULT_MODE = "first"

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []

    def delay_update(self, delay: float = 0.05) -> None:
        self.delays.append(delay)
        super().delay_update(delay)


def test_switch_mode_holds_painting_back_through_delay_update() -> None:
    async def story() -> None:
        app = Probe()
        async with app.run_test() as pilot:
            app.switch_mode("counting")
            await pilot.pause()
            assert app.delays == [0.05]

    asyncio.run(story())


def test_a_resumed_screen_is_restyled_unless_its_resume_handler_says_not_to() -> None:
    async def story() -> None:
        app = Probe()
        async with app.run_test() as pilot:
            for mode in ("counting", "keeping"):
                app.switch_mode(mode)
                await pilot.pause()
                app.switch_mode("first")
                await pilot.pause()
                screen = app.get_screen_stack(mode)[0]
                before = screen.restyles
                app.switch_mode(mode)
                await pilot.pause()
                restyled = screen.restyles - before
                assert restyled == (0 if screen.keep_styles else 1), (mode, restyled)
                app.switch_mode("first")
                await pilot.pause()

    asyncio.run(story())
