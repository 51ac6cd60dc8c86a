"""Snapshots of the main layouts, at the sizes users have: 100x32 and the smallest, 80x24.

Each one waits until the screen has settled (torch loaded, lists filled) and
starts from an empty store, so nothing in it depends on time or speed. After
a deliberate layout change, look at the new pictures and accept them with
``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time

import pytest
from textual.pilot import Pilot
from textual.widgets import OptionList

from tests.conftest import REPO_ROOT
from tui.app import WorkbenchApp

WIDE = (100, 32)
SMALL = (80, 24)


@pytest.fixture(autouse=True)
def from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths are shown relative to the current directory; make that the same everywhere."""
    monkeypatch.chdir(REPO_ROOT)


async def settle(pilot: Pilot, ready, timeout: float = 60.0) -> None:
    """Wait until ``ready()`` and the app has no work in flight, then let it repaint.

    A screen's follow thread (``WorkbenchScreen.follow``) runs as long as the
    screen does, so it is not work in flight.
    """
    deadline = time.monotonic() + timeout
    app = pilot.app
    while not (app.engine_loaded and ready() and not any(w.is_running and w.group != "follow" for w in app.workers)):
        if time.monotonic() > deadline:
            raise AssertionError("the screen did not settle")
        await pilot.pause(0.05)
    app.screen.set_focus(None)  # a blinking cursor would make the picture depend on timing
    await pilot.pause(0.2)


def datasets_listed(pilot: Pilot) -> bool:
    screen = pilot.app.screen
    return bool(screen.query("#dataset-list")) and screen.query_one("#dataset-list", OptionList).option_count > 0


@pytest.mark.parametrize("size", [WIDE, SMALL], ids=["100x32", "80x24"])
def test_datasets_screen(snap_compare, size) -> None:
    async def ready(pilot: Pilot) -> None:
        await settle(
            pilot,
            lambda: datasets_listed(pilot) and pilot.app.screen.query_one("#preview", OptionList).option_count > 0,
        )

    assert snap_compare(WorkbenchApp(), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", [WIDE, SMALL], ids=["100x32", "80x24"])
def test_generate_screen(snap_compare, size) -> None:
    async def ready(pilot: Pilot) -> None:
        await pilot.press("3")
        await settle(pilot, lambda: bool(pilot.app.screen.query("#settings Input")))

    assert snap_compare(WorkbenchApp(), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", [WIDE, SMALL], ids=["100x32", "80x24"])
def test_train_screen(snap_compare, size) -> None:
    async def ready(pilot: Pilot) -> None:
        await pilot.press("4")
        # The form puts the cursor in its first field once it is mounted.
        await settle(
            pilot,
            lambda: (
                pilot.app.screen.query("#field-model")
                and pilot.app.focused is pilot.app.screen.query_one("#field-model")
            ),
        )

    assert snap_compare(WorkbenchApp(), terminal_size=size, run_before=ready)


def test_runs_screen_with_an_empty_store(snap_compare) -> None:
    async def ready(pilot: Pilot) -> None:
        await pilot.press("5")
        await settle(pilot, lambda: bool(pilot.app.screen.query("#runs-table")))

    assert snap_compare(WorkbenchApp(), terminal_size=WIDE, run_before=ready)


@pytest.mark.parametrize("size", [WIDE, SMALL], ids=["100x32", "80x24"])
def test_inspect_screen(snap_compare, size) -> None:
    async def ready(pilot: Pilot) -> None:
        await pilot.press("6")
        await settle(pilot, lambda: bool(pilot.app.screen.query("#scored")))

    assert snap_compare(WorkbenchApp(), terminal_size=size, run_before=ready)


def test_help_screen(snap_compare) -> None:
    async def ready(pilot: Pilot) -> None:
        await settle(pilot, lambda: datasets_listed(pilot))
        await pilot.press("question_mark")

    assert snap_compare(WorkbenchApp(), terminal_size=WIDE, run_before=ready)
