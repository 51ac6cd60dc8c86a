"""The workbench app driven like a user would: keys, the real engine, real small models.

Each story runs the whole app headless (``App.run_test``) in the test's own
LMWB_HOME, presses keys, and checks what the screens show and what the store
recorded.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

import pytest
from textual.command import Command, CommandInput, CommandList, CommandPalette
from textual.geometry import Region
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Collapsible, DataTable, Input, OptionList, Static, TextArea
from textual.widgets._footer import FooterKey

from engine.store import RunStore
from tests.conftest import REPO_ROOT, lmwb_command
from tui.app import WorkbenchApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.datasets import DatasetsScreen
from tui.screens.generate import GenerateScreen
from tui.screens.help import HelpScreen
from tui.screens.quit import QuitScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen
from tui.screens.train import FORM_SECTIONS
from tui.widgets.config_form import ConfigForm
from tui.widgets.key_footer import KeyFooter
from tui.widgets.loss_chart import LossChart
from tui.widgets.token_stream import TokenStreamView

SIZE = (100, 32)


def story(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (no async pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def wait_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Let the app run until ``condition()`` holds (workers finish on their own threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {condition.__doc__ or condition}")
        await pilot.pause(0.05)


def shown_text(widget: Widget) -> str:
    """The text a widget shows on screen right now, line by line (its padding and border too: its outer size)."""
    strips = widget.render_lines(Region(0, 0, widget.outer_size.width, widget.outer_size.height))
    return "\n".join(strip.text.rstrip() for strip in strips)


def collecting_notices() -> tuple[list[str], Callable[[Message], None]]:
    """The notifications an app shows, as they come, and the hook that collects them (``run_test(message_hook=)``)."""
    notices: list[str] = []

    def heard(message: Message) -> None:
        if isinstance(message, Notify):
            notices.append(message.notification.message)

    return notices, heard


async def open_train_screen(pilot: Pilot) -> Screen:
    """From any screen (out of any field): go to Train and wait until its form, built once torch is in, is there."""
    await pilot.press("escape", "4")
    await wait_until(
        pilot, lambda: bool(pilot.app.screen.query("#config")) and pilot.app.screen.query_one("#config").is_mounted
    )
    return pilot.app.screen


@story
async def test_first_screen_lists_the_bundled_datasets_with_stats() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, DatasetsScreen)
        options = app.screen.query_one("#dataset-list", OptionList)
        await wait_until(pilot, lambda: options.option_count > 0)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(label.startswith("fables") for label in labels)
        stats = app.screen.query_one("#dataset-stats", Static)
        await wait_until(pilot, lambda: "characters" in shown_text(stats))
        assert "fables" in shown_text(stats)


@story
async def test_a_wrong_path_is_explained_under_the_input_as_you_type(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("A fox met a crow.\nThe crow sang.\n", encoding="utf-8")
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        path_input = app.screen.query_one("#path-input", Input)
        assert path_input.has_focus
        status = app.screen.query_one("#path-status", Static)
        path_input.value = str(tmp_path / "missing.txt")
        await wait_until(pilot, lambda: status.has_class("-error"))
        assert "missing.txt" in shown_text(status)

        path_input.value = str(tmp_path / "notes.txt")
        await wait_until(pilot, lambda: "✓" in shown_text(status))
        await pilot.press("enter")
        assert app.dataset == str(tmp_path / "notes.txt")
        stats = app.screen.query_one("#dataset-stats", Static)
        await wait_until(pilot, lambda: "notes" in shown_text(stats))


@story
async def test_the_tokenizer_view_shows_typed_text_as_tokens_with_ids(tiny_model_dir) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        app.model = str(tiny_model_dir)
        await pilot.press("t")
        await pilot.press(*"the fox")
        view = app.screen.query_one("#tokenize-view", TokenStreamView)
        await wait_until(pilot, lambda: view.text == "the fox")
        assert all(token.token_id >= 0 for token in view.tokens)
        summary = shown_text(app.screen.query_one("#tokenize-summary", Static))
        assert f"{len(view.tokens)} token" in summary


@story
async def test_generate_streams_tokens_and_logs_the_generation(tiny_model_dir) -> None:
    messages = []
    app = WorkbenchApp()
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await pilot.press("3")
        assert isinstance(app.screen, GenerateScreen)
        await wait_until(pilot, lambda: bool(app.screen.query("#settings")))
        screen = app.screen
        screen.query_one("#model-a", Input).value = str(tiny_model_dir)
        screen.query_one("#prompt", TextArea).text = "The fox and the crow"
        screen.query_one("#settings", ConfigForm).set_values({"max_new_tokens": 24, "seed": 7})
        await pilot.press("ctrl+r")
        await wait_until(
            pilot, lambda: not screen.generating and "first token" in shown_text(screen.query_one("#stats-a", Static))
        )

        batches = [m for m in messages if isinstance(m, GenerateScreen.Tokens)]
        view = screen.query_one("#tokens-a", TokenStreamView)
        assert batches and sum(len(batch.tokens) for batch in batches) == len(view.tokens) > 0
        assert all(token.probability is not None and token.alternatives for token in view.tokens)
        assert "tok/s" in shown_text(screen.query_one("#stats-a", Static))

        await pilot.press("ctrl+g", "right")
        detail = shown_text(screen.query_one("#token-detail", Static))
        assert "alternatives" in detail and "p=" in detail

        logged = app.store.generations()
        assert len(logged) == 1 and logged[0]["model"] == str(tiny_model_dir)


@story
async def test_bad_sampling_settings_are_shown_beside_the_field(tiny_model_dir) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_until(pilot, lambda: bool(app.screen.query("#settings")))
        form = app.screen.query_one("#settings", ConfigForm)
        form.query_one("#field-temperature", Input).focus()
        form.query_one("#field-temperature", Input).value = ""
        await pilot.press(*"-1")
        await pilot.pause()
        assert "temperature" in form.errors
        assert form.query_one("#error-temperature").display
        form.query_one("#field-top_k", Input).value = "lots"
        await pilot.pause()
        assert form.errors["top_k"] == "needs a whole number"
        await pilot.press("ctrl+r")
        assert not app.screen.generating


@story
async def test_help_lists_the_screen_keys_and_the_palette_offers_them() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = shown_text(app.screen.query_one("#help-keys", Static))
        assert "Count tokens" in keys or "datasets.count_tokens" in keys
        await pilot.press("escape")
        assert isinstance(app.screen, DatasetsScreen)

        await pilot.press("ctrl+p")
        await pilot.press(*"Runs")

        def palette_found_runs() -> bool:
            """the command palette to find Runs for what was typed and highlight it"""
            palette = app.screen
            if not isinstance(palette, CommandPalette) or palette.query_one(CommandInput).value != "Runs":
                return False
            commands = palette.query_one(CommandList)
            if commands.highlighted is None:
                return False
            command = commands.get_option_at_index(commands.highlighted)
            # a search hit (discovery hits, listed before anything is typed, score 0)
            return isinstance(command, Command) and command.hit.score > 0 and command.hit.text == "Runs"

        await wait_until(pilot, palette_found_runs)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "runs")


@pytest.mark.slow
@story
async def test_train_ten_steps_then_find_the_run_completed_in_runs() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        # Datasets: the first bundled dataset is highlighted; pick fables.
        options = app.screen.query_one("#dataset-list", OptionList)
        await wait_until(pilot, lambda: options.option_count > 0)
        while not str(options.get_option_at_index(options.highlighted).prompt).startswith("fables"):
            await pilot.press("down")
        assert app.dataset == "fables"

        train = await open_train_screen(pilot)
        form = train.query_one("#config", ConfigForm)
        assert form.query_one("#field-model", Input).value == "scratch:nano"
        assert form.query_one("#field-dataset", Input).value == "fables"
        form.set_values(
            {
                "max_steps": 10,
                "batch_size": 2,
                "block_size": 32,
                "warmup_steps": 2,
                "eval_every": 5,
                "eval_batches": 2,
                "sample_every": 5,
                "sample_length": 8,
                "checkpoint_every": 0,
                "vocab_size": 512,
                "name": "ten steps",
            }
        )
        assert form.errors == {}
        await pilot.press("ctrl+r")
        chart = train.query_one("#train-chart", LossChart)
        await wait_until(pilot, lambda: train.run_id is not None)
        assert RunStore().get_run(train.run_id).pid != os.getpid()  # a process of its own
        await wait_until(pilot, lambda: train.status == "completed", timeout=240)
        await wait_until(pilot, lambda: chart.points >= 10)
        # The run's status turns completed a moment before its process writes its last progress (step 10).
        status = train.query_one("#run-status", Static)
        await wait_until(pilot, lambda: "step 10/10" in shown_text(status), timeout=10)
        assert "step 10:" in shown_text(train.query_one("#samples", Static))

        await pilot.press("escape", "5")
        table = app.screen.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        row = [str(cell) for cell in table.get_row_at(0)]
        assert "completed" in row and "ten steps" in row and "10" in row

        await pilot.press("enter")
        assert isinstance(app.screen, RunDetailScreen)
        detail = app.screen
        await wait_until(pilot, lambda: detail.run is not None)
        await wait_until(pilot, lambda: detail.query_one("#run-chart", LossChart).points >= 10)
        await pilot.press("o")
        assert "max_steps" in shown_text(detail.query_one("#run-config", Static))
        await pilot.press("k")
        await wait_until(pilot, lambda: detail.query_one("#run-checkpoints", DataTable).row_count >= 1)
        await pilot.press("escape")
        assert app.current_mode == "runs" and not isinstance(app.screen, RunDetailScreen)


@pytest.mark.slow
@story
async def test_a_time_budget_on_the_train_form_plans_the_run_on_time() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await start_small_run(pilot, app, max_time=6.0, eval_every=20, eval_batches=1)
        train = app.screen
        config = RunStore().get_run(run_id).config
        assert config["max_steps"] is None and config["max_time"] == 6.0  # steps left alone: planned on time
        form = train.query_one("#config", ConfigForm)
        await wait_until(pilot, lambda: form.query_one("#field-max_steps", Input).value == "")  # the form shows it
        assert form.query_one("#field-learning_rate", Input).value == "0.002"  # and what the plan picked
        status = train.query_one("#run-status", Static)
        await wait_until(pilot, lambda: "/≈" in shown_text(status), timeout=120)  # the steps its budget reaches
        await wait_until(pilot, lambda: train.status == "completed", timeout=120)
        run = RunStore().get_run(run_id)
        assert "budget" in (run.progress or {}).get("message", "")


async def start_small_run(pilot: Pilot, app: WorkbenchApp, **settings: object) -> None:
    """From any screen: go to Train, fill the form for a quick scratch:nano run, start it."""
    form = (await open_train_screen(pilot)).query_one("#config", ConfigForm)
    form.set_values(
        {
            "model": "scratch:nano",
            "dataset": "fables",
            "batch_size": 2,
            "block_size": 32,
            "warmup_steps": 2,
            "eval_every": 0,
            "sample_every": 0,
            "checkpoint_every": 0,
            "vocab_size": 512,
            **settings,
        }
    )
    assert form.errors == {}
    await pilot.press("ctrl+r")
    await wait_until(pilot, lambda: app.screen.run_id is not None)
    return app.screen.run_id


def footer_keys(screen: Screen) -> list[str]:
    """The descriptions of the keys the footer offers now."""
    return [key.description for key in screen.query_one(KeyFooter).query(FooterKey)]


def wait_for_status(run_id: str, statuses: tuple[str, ...], timeout: float = 120) -> Any:
    """Poll the store (not the app) until the run has one of ``statuses``."""
    store = RunStore()
    deadline = time.monotonic() + timeout
    while (run := store.get_run(run_id)).status not in statuses:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is {run.status}, not {statuses}, after {timeout:.0f} s")
        time.sleep(0.1)
    return run


@pytest.mark.slow
@story
async def test_the_run_is_its_own_process_paused_and_continued_from_the_app_and_left_running_on_quit() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await start_small_run(pilot, app, max_steps=5000, name="long one")
        run = RunStore().get_run(run_id)
        assert run.pid != os.getpid()  # trained by a process of its own, not in the app
        train = app.screen
        await wait_until(pilot, lambda: train._run is not None and train._run.steps >= 2, timeout=180)

        # The footer offers what fits the run's state: Pause while it runs, Continue once paused.
        await wait_until(pilot, lambda: "Pause" in footer_keys(train) and "Continue" not in footer_keys(train))
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: RunStore().get_run(run_id).status == "paused", timeout=30)
        paused_at = RunStore().get_run(run_id).steps
        await pilot.pause(1.0)
        assert RunStore().get_run(run_id).steps == paused_at
        await wait_until(pilot, lambda: "Continue" in footer_keys(train) and "Pause" not in footer_keys(train))
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: RunStore().get_run(run_id).steps > paused_at, timeout=60)

        # Quitting asks; Escape stays, and Enter takes the default: leave the run going.
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("escape")
        assert not isinstance(app.screen, QuitScreen) and app.is_running
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("enter")
        await wait_until(pilot, lambda: not app.is_running, timeout=30)

    store = RunStore()
    running = store.get_run(run_id)
    assert running.status == "running" and running.control is None
    time.sleep(1.5)
    assert store.get_run(run_id).steps > running.steps  # it trains on with the app gone

    # Reopened, the app follows it again on the Train screen, its curve from step 0; then stops it on quit.
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        train = await open_train_screen(pilot)
        await wait_until(pilot, lambda: train.run_id == run_id)
        chart = train.query_one("#train-chart", LossChart)
        await wait_until(pilot, lambda: chart.series and min(chart.series[run_id].train.xs["step"]) == 1)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("s")
        await wait_until(pilot, lambda: not app.is_running, timeout=30)
    stopped = wait_for_status(run_id, ("stopped",), timeout=120)
    assert RunStore().checkpoints(run_id)[-1]["step"] == stopped.steps


@pytest.mark.slow
@story
async def test_the_runs_screen_pauses_continues_and_stops_a_run_started_by_lmwb_train_elsewhere(tmp_path: Path) -> None:
    child = subprocess.Popen(
        lmwb_command(
            "train",
            "--model",
            "scratch:nano",
            "--dataset",
            "fables",
            "--steps",
            "100000",
            "--batch-size",
            "2",
            "--block-size",
            "32",
            "--eval-every",
            "0",
            "--sample-every",
            "0",
            "--checkpoint-every",
            "0",
            "--vocab-size",
            "512",
            "--name",
            "from a terminal",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 180
        while not RunStore().list_runs(status="running") or RunStore().list_runs()[0].steps < 2:
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.poll() else ""
            time.sleep(0.2)
        run_id = RunStore().list_runs()[0].id

        app = WorkbenchApp()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5")
            runs = app.screen
            assert isinstance(runs, RunsScreen)
            table = runs.query_one("#runs-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1 and runs.highlighted_id() == run_id)
            await wait_until(pilot, lambda: "Pause" in footer_keys(runs))
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: RunStore().get_run(run_id).status == "paused", timeout=30)
            await wait_until(pilot, lambda: "paused" in str(table.get_row_at(0)[1]))
            await wait_until(pilot, lambda: "Continue" in footer_keys(runs))
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: RunStore().get_run(run_id).status == "running", timeout=30)
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: RunStore().get_run(run_id).status == "stopped", timeout=60)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert f"Run {run_id} stopped" in out
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)


def record_run(store: RunStore, name: str, losses: list[float], status: str = "completed", **setup: Any) -> str:
    """Write a run into the store the way a trainer in another process would."""
    run = store.create_run(
        name=name, model="scratch:nano", dataset="fables", config={"max_steps": len(losses)}, **setup
    )
    store.set_status(run.id, "running")
    store.add_metrics(run.id, [{"step": step, "train_loss": loss} for step, loss in enumerate(losses, 1)])
    store.heartbeat(run.id, steps=len(losses), tokens=64 * len(losses))
    if status != "running":
        store.set_status(run.id, status)
    return run.id


@story
async def test_an_80_column_footer_still_shows_help_quit_and_the_screen_keys() -> None:
    """The footer cuts what does not fit; the keys every screen shares must not be what it cuts."""
    store = RunStore()
    record_run(store, "live", [4.2, 3.9], status="running")  # a running run adds Pause and Stop to the Runs footer
    app = WorkbenchApp()
    async with app.run_test(size=(80, 24)) as pilot:
        for screen_key in ("1", "2", "5"):  # the screens that open on a list, not in a text field
            await pilot.press(screen_key)
            await wait_until(pilot, lambda: "Quit" in footer_keys(app.screen))
            await pilot.pause()
            shown = [key for key in app.screen.query_one(KeyFooter).query(FooterKey) if key.region.width]
            assert shown[0].description == "Help"
            assert {"Quit", "Screens"} <= {key.description for key in shown}
            assert max(key.region.right for key in shown) <= 80, [key.description for key in shown]


@story
async def test_runs_update_live_overlay_marked_runs_export_and_delete(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = RunStore()
    first = record_run(store, "first", [4.0, 3.5, 3.2])
    live = record_run(store, "live", [4.2, 3.9], status="running", lora=True, world_size=2)
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        runs = app.screen
        table = runs.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        # How each run was trained shows beside its model: LoRA, and the processes of a distributed run.
        assert "scratch:nano +LoRA ×2" in [str(cell) for cell in table.get_row(live)]
        assert "scratch:nano" in [str(cell) for cell in table.get_row(first)]

        # A trainer elsewhere logs more steps: the row follows.
        store.add_metrics(live, [{"step": 3, "train_loss": 3.7}, {"step": 4, "train_loss": 3.6}])
        store.heartbeat(live, steps=4, tokens=256)
        await wait_until(pilot, lambda: "4" in [str(cell) for cell in table.get_row(live)])

        # Mark both: the chart overlays their curves.
        await pilot.press("space", "down", "space")
        chart = runs.query_one("#runs-chart", LossChart)
        await wait_until(pilot, lambda: set(chart.series) == {first, live} and chart.points == 7)

        # Filter by name.
        await pilot.press("slash", *"fir")
        await wait_until(pilot, lambda: table.row_count == 1)
        await pilot.press("escape")
        runs.query_one("#runs-filter", Input).value = ""
        await wait_until(pilot, lambda: table.row_count == 2)

        table.move_cursor(row=[str(key.value) for key in table.rows].index(first))
        await pilot.press("e")
        await wait_until(pilot, lambda: len(list(tmp_path.glob(f"lmwb-first-{first}.*"))) == 2)

        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: table.row_count == 1)
    assert [run.id for run in store.list_runs()] == [live]


@story
async def test_train_screen_shows_the_progress_record_a_run_writes_with_its_gpu_memory() -> None:
    from engine.run_process import TrainingProgress

    store = RunStore()
    run_id = record_run(store, "on a gpu", [4.0, 3.6], status="running")
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        train = await open_train_screen(pilot)
        await wait_until(pilot, lambda: train.run_id == run_id)  # the run going is followed at once
        status = train.query_one("#run-status", Static)
        await wait_until(pilot, lambda: "on a gpu" in shown_text(status))
        # What a trainer on CUDA writes with its heartbeat (this machine has no GPU to measure).
        progress = TrainingProgress(
            step=2,
            max_steps=9,
            status="running",
            phase="Tokenizing fables: 40%",
            gpu_memory_bytes=3 * 2**30 // 2,
            mfu=0.412,
        )
        store.heartbeat(run_id, steps=2, tokens=128, progress=progress.as_dict())
        await wait_until(pilot, lambda: "GPU 1.5 GB peak · MFU 41%" in shown_text(status))
        assert "step 2/9" in shown_text(status) and "Tokenizing fables: 40%" in shown_text(status)


@story
async def test_a_theme_chosen_on_one_screen_reaches_the_others() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        train = await open_train_screen(pilot)
        dark = train.styles.background
        await pilot.press("escape", "1")
        app.theme = "textual-light"
        await pilot.pause()
        light = app.screen.styles.background
        assert light != dark
        # Train was suspended when the theme changed; it is restyled on the way back.
        await pilot.press("4")
        assert app.screen is train and train.styles.background == light


@story
async def test_a_block_size_beyond_the_model_context_is_shown_beside_its_field() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        form = (await open_train_screen(pilot)).query_one("#config", ConfigForm)
        form.set_values({"model": "scratch:nano", "dataset": "fables", "block_size": 300})
        assert form.errors == {}  # the form alone cannot know the model's context
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "block_size" in form.errors)
        assert form.errors["block_size"].startswith("300 is more than the model's context of 256 tokens")
        assert app.focused is form.query_one("#field-block_size", Input)
    assert RunStore().list_runs() == []  # refused before a run was created


@story
async def test_a_screen_shown_first_after_a_theme_change_has_its_own_styles_and_the_theme() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        app.theme = "textual-light"
        await pilot.pause()
        light = app.screen.styles.background
        await pilot.press("5")  # Runs is made now, after the change
        await wait_until(pilot, lambda: bool(app.screen.query("#runs-chart")))
        runs = app.screen
        assert runs.styles.background == light
        assert runs.query_one("#runs-bar").styles.height.value == 1  # from runs.tcss, read with the app
        assert runs.query_one("#runs-chart").styles.border_top[0] == "hkey"


@story
async def test_the_train_form_folds_the_less_common_settings_and_opens_them_when_needed() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=(80, 24)) as pilot:
        form = (await open_train_screen(pilot)).query_one("#config", ConfigForm)
        headings = {str(section.title): section for section in form.query(Collapsible)}
        assert list(headings) == [heading for heading, _ in FORM_SECTIONS]
        assert all(section.collapsed for section in headings.values())
        assert form.query_one("#field-learning_rate").display and not form.query_one("#field-lora_rank").region

        # The keyboard opens a heading: Tab from the last field in sight to it, Enter.
        form.query_one("#field-name", Input).focus()
        await pilot.press("tab", "enter")
        schedule = headings["Schedule and optimizer"]
        assert not schedule.collapsed
        await pilot.press("tab")
        assert app.focused is form.query_one("#field-epochs", Input)

        # A folded field opens its heading when it shows an error...
        form.set_values({"eval_every": "often"})
        await pilot.pause()
        assert "eval_every" in form.errors and not headings["Evaluation, samples, checkpoints"].collapsed
        # ...or when it is filled with a value other than its default (say, from a resumed run).
        form.set_values({"eval_every": 50, "lora_rank": 4, "seed": 1337})
        await pilot.pause()
        assert form.errors == {} and not headings["LoRA"].collapsed
        assert not form.query_one("#error-eval_every").has_class("-visible")  # the fixed field's error is gone
        assert headings["Device and precision"].collapsed


@story
async def test_a_chart_on_a_hidden_screen_waits_to_be_shown_before_it_plots_again() -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        train = await open_train_screen(pilot)
        chart = train.query_one("#train-chart", LossChart)
        await pilot.press("escape", "5")
        chart.add_metrics("r1", [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.5}])
        await pilot.pause(1.5)  # the once-a-second tick comes while Runs is shown
        assert chart._dirty
        await pilot.press("4")
        await wait_until(pilot, lambda: not chart._dirty)
        assert chart.points == 2
