"""`lmwb` in a real terminal: tmux runs it, sends keys, and we read the screen.

This is the closest test to a user at a keyboard: a real pseudo-terminal of a
fixed size (100x30), the real entry point, no test harness inside the app.
Skipped only where tmux is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

EXITED = "LMWB-EXITED"


class Terminal:
    """One tmux session on a private server, running one command."""

    def __init__(self, command: str, *, width: int = 100, height: int = 30) -> None:
        self.socket = f"lmwb-test-{uuid.uuid4().hex[:8]}"
        self.tmux(
            "new-session",
            "-d",
            "-s",
            "app",
            "-x",
            str(width),
            "-y",
            str(height),
            f"{command}; echo {EXITED} $?; sleep 60",
        )

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        done.check_returncode()
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "app")

    def press(self, *keys: str) -> None:
        """Send keys one at a time, as a person would (an Escape too close to a key reads as Alt+key)."""
        for key in keys:
            self.tmux("send-keys", "-t", "app", key)
            # A loaded machine may read an Escape and the next key together as Alt+key.
            time.sleep(1.0 if key == "Escape" else 0.3)

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s; the screen shows:\n{screen}")
            time.sleep(0.25)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal(lmwb_home: Path, tmp_path: Path):
    command = (
        f"cd {REPO_ROOT} && LMWB_HOME={lmwb_home} HF_HUB_OFFLINE=1 HF_HOME={tmp_path / 'hf'} "
        f"{sys.executable} -m tui.cli"
    )
    term = Terminal(command)
    yield term
    term.close()


def test_lmwb_opens_switches_screens_and_quits_cleanly(terminal: Terminal) -> None:
    terminal.wait_for("fables", timeout=60)
    screen = terminal.wait_for("Count tokens")  # the footer shows this screen's keys
    assert "1 Datasets" in screen and "5 Runs" in screen

    terminal.wait_for("torch ready")
    terminal.press("2")
    terminal.wait_for("scratch:tiny")

    terminal.press("4")
    screen = terminal.wait_for("learning rate")
    assert "Start" in screen

    terminal.press("Escape", "5")
    screen = terminal.wait_for("best val")
    assert "status" in screen and "created" in screen

    terminal.press("?")
    terminal.wait_for("runs.mark")
    terminal.press("Escape", "1")
    terminal.wait_for("Count tokens")

    terminal.press("C-q")
    screen = terminal.wait_for(EXITED, timeout=30)
    assert f"{EXITED} 0" in screen


def test_a_run_started_in_the_app_outlives_the_terminal_and_shows_again_when_reopened(
    lmwb_home: Path, tmp_path: Path
) -> None:
    from engine.store import RunStore

    command = (
        f"cd {REPO_ROOT} && LMWB_HOME={lmwb_home} HF_HUB_OFFLINE=1 HF_HOME={tmp_path / 'hf'} "
        f"OMP_NUM_THREADS=1 {sys.executable} -m tui.cli"
    )
    first = Terminal(command)
    try:
        first.wait_for("torch ready")
        first.press("4")
        first.wait_for("learning rate")
        first.press("Escape", "C-r")
        first.wait_for("running", timeout=180)  # the run is training
    finally:
        first.close()  # the terminal goes, as with a dropped SSH connection: tmux's server hangs up on the app
    store = RunStore()
    [run] = store.list_runs()
    assert run.status in ("starting", "running") and run.steps < 200

    deadline = time.monotonic() + 300
    while (run := store.get_run(run.id)).status not in ("completed", "failed", "interrupted", "stopped"):
        assert time.monotonic() < deadline, f"run {run.id} is still {run.status} at step {run.steps}"
        time.sleep(0.5)
    assert run.status == "completed" and run.steps == 200

    reopened = Terminal(command)
    try:
        reopened.wait_for("torch ready")
        reopened.press("4")
        screen = reopened.wait_for("Completed 200 steps.", timeout=60)
        assert "completed" in screen and "200/200" in screen and run.name in screen
    finally:
        reopened.close()


def test_function_keys_switch_screens_from_a_text_field_without_typing_into_it(terminal: Terminal) -> None:
    terminal.wait_for("torch ready")
    terminal.press("4")
    screen = terminal.wait_for("learning rate")
    assert "f1-6 Screens" in screen  # the footer shows the keys
    screen = terminal.wait_for("F4 Train")  # and, with a text field focused, the bar shows F-keys, not digits
    assert "F1 Datasets" in screen.splitlines()[0]

    def field_line(screen: str) -> str:
        return next(line for line in screen.splitlines() if line.startswith("model "))[:36].rstrip()

    terminal.press("5")  # the form's first field has the cursor: a digit is text there
    screen = terminal.wait_for("5 ")
    typed = field_line(screen)
    assert "5" in typed and "learning rate" in screen  # still on Train
    terminal.press("F5")
    screen = terminal.wait_for("space Mark")  # the Runs screen, built and showing its keys
    assert "learning rate" not in screen
    assert " 5 Runs" in screen.splitlines()[0] and "F5" not in screen.splitlines()[0]  # its table: digits switch
    terminal.press("F4")
    screen = terminal.wait_for("learning rate")
    assert field_line(screen) == typed  # F5 and F4 left the field's text as it was
    terminal.press("F1")
    terminal.wait_for("Count tokens")
