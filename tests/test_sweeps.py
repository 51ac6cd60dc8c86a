"""Sweeps: a grid of runs made by one command, every bad input refused before anything is recorded.

A person varies settings by their config names (``lmwb sweep --vary
learning_rate=1e-3,3e-4 --vary batch_size=2,4``) or types a comma list into
the Train form. The runs here are real run processes on ``scratch:nano`` and
a tiny corpus, started by the real ``lmwb sweep`` in a child process; the
refusals run ``main()`` in this process (each is one line, and the store
holds no sweep and no run after it). Every wait has a deadline and every
child process a timeout; conftest.py ends any run a test leaves going.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from engine.errors import SettingsError
from engine.store import FINISHED_STATUSES, RunStore
from engine.sweeps import (
    MAX_RUNS,
    describe_grid,
    grid_points,
    plan_sweep,
    point_label,
    setting_values,
    values_in_text,
    varied_settings,
)
from tests.conftest import (
    REPO_ROOT,
    assert_one_line_error,
    lmwb_command,
    lmwb_in_process,
    lmwb_in_subprocess,
    write_fables,
)
from tests.test_tui_app import SIZE, collecting_notices, open_train_screen, shown_text, story, wait_until
from tui.app import WorkbenchApp
from tui.screens.confirm import ConfirmScreen
from tui.widgets.config_form import ConfigForm

RUN_TIMEOUT = 120  # seconds for a sweep's runs to load, train a few steps and end (2 shared cores)


def small_runs(dataset: Path) -> tuple[str, ...]:
    """Flags every run of a test sweep shares: scratch:nano, a few steps, one evaluation at the end."""
    return (
        "--model",
        "scratch:nano",
        "--dataset",
        str(dataset),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--block-size",
        "16",
        "--vocab-size",
        "300",
        "--eval-every",
        "3",
        "--sample-every",
        "0",
        "--checkpoint-every",
        "0",
    )


def given(dataset: Path, **settings: object) -> dict:
    """The settings of small_runs, as the engine takes them."""
    return {
        "model": "scratch:nano",
        "dataset": str(dataset),
        "max_steps": 3,
        "warmup_steps": 1,
        "block_size": 16,
        "vocab_size": 300,
        **settings,
    }


def wait_until_ended(store: RunStore, sweep_id: str, count: int, timeout: float = RUN_TIMEOUT) -> list:
    """The sweep's runs, oldest first, once all ``count`` have ended."""
    deadline = time.monotonic() + timeout
    while True:
        runs = store.list_runs(sweep_id=sweep_id, descending=False)
        if len(runs) == count and all(run.status in FINISHED_STATUSES for run in runs):
            return runs
        if time.monotonic() > deadline:
            pytest.fail(f"sweep {sweep_id} had not ended after {timeout} s: {[(r.name, r.status) for r in runs]}")
        time.sleep(0.2)


def assert_nothing_recorded() -> None:
    store = RunStore()
    assert store.sweeps() == [] and store.list_runs() == []


# --- the grid: names, values, order --------------------------------------------------------


def test_values_are_converted_by_each_settings_type() -> None:
    assert setting_values("learning_rate", ["1e-3", " 3e-4 "]) == [0.001, 0.0003]
    assert setting_values("batch_size", ["8", "16"]) == [8, 16]
    assert setting_values("gradient_checkpointing", ["yes", "off"]) == [True, False]
    assert setting_values("precision", ["auto", "fp32"]) == ["auto", "fp32"]  # checked per point by validate()
    assert setting_values("max_steps", ["none", "100"]) == [None, 100]  # an optional setting can be left unset


def test_the_grid_varies_the_first_setting_slowest_and_names_each_point() -> None:
    varied = varied_settings([("learning_rate", ["1e-3", "3e-4"]), ("batch_size", ["8", "16"])])
    assert describe_grid(varied) == "4 runs: learning_rate × batch_size"
    assert [point_label(point) for point in grid_points(varied)] == [
        "learning_rate=0.001 batch_size=8",
        "learning_rate=0.001 batch_size=16",
        "learning_rate=0.0003 batch_size=8",
        "learning_rate=0.0003 batch_size=16",
    ]


@pytest.mark.parametrize(
    ("name", "texts", "words"),
    [
        ("learning_rat", ["1e-3"], ("not a training setting", "did you mean learning_rate")),
        ("batch_size", ["8", "x"], ("batch_size: takes whole numbers; 'x' is not one",)),
        ("learning_rate", ["1e-3", "fast"], ("takes finite numbers", "'fast'")),
        ("lora", ["maybe"], ("takes true or false",)),
        ("learning_rate", [""], ("empty list",)),
        ("learning_rate", ["", ""], ("empty list",)),
        ("learning_rate", ["1e-3", ""], ("empty value",)),
        ("seed", ["1", "01"], ("twice",)),
        ("dataset", ["fables", "qa"], ("cannot be varied", "one dataset")),
        ("sample_prompt", ["Once", "The"], ("cannot be varied", "commas")),
    ],
)
def test_a_bad_name_or_value_is_one_clear_error(name: str, texts: list[str], words: tuple[str, ...]) -> None:
    with pytest.raises(SettingsError) as refused:
        setting_values(name, texts)
    assert refused.value.field == name
    for word in words:
        assert word in str(refused.value)


def test_a_form_field_is_a_list_only_where_a_comma_cannot_be_part_of_its_value() -> None:
    assert values_in_text("learning_rate", "1e-3, 3e-4") == [0.001, 0.0003]
    assert values_in_text("learning_rate", "1e-3") is None
    assert values_in_text("sample_prompt", "Once upon a time, there") is None
    assert values_in_text("lora_targets", "c_attn,c_proj") is None
    with pytest.raises(SettingsError, match="cannot be varied"):
        values_in_text("dataset", "fables, qa")


def test_the_grid_size_is_checked_before_any_run_is_planned(fables: Path) -> None:
    varied = {"seed": list(range(MAX_RUNS + 1))}
    # A dataset that does not exist would fail the first plan; the count is refused before that.
    with pytest.raises(SettingsError, match=f"makes {MAX_RUNS + 1} runs .* more than {MAX_RUNS}"):
        plan_sweep(given(fables.parent / "no-such-dataset"), varied)
    plan = plan_sweep(given(fables), varied, allow_large=True)  # asked for: planned, nothing recorded
    assert len(plan.runs) == MAX_RUNS + 1 and plan.runs[-1].config.seed == MAX_RUNS
    assert_nothing_recorded()


def test_a_sweep_over_model_sizes_plans_each_preset_for_itself(fables: Path) -> None:
    shared = {name: value for name, value in given(fables).items() if name != "model"}
    plan = plan_sweep(shared, {"model": ["scratch:nano", "scratch:tiny"]})
    assert [run.config.model for run in plan.runs] == ["scratch:nano", "scratch:tiny"]
    assert [run.config.name for run in plan.runs] == ["model=scratch:nano", "model=scratch:tiny"]
    # Each preset gets its own picks (a narrower model takes a larger learning rate).
    assert plan.runs[0].config.learning_rate > plan.runs[1].config.learning_rate
    with pytest.raises(SettingsError, match="model"):
        plan_sweep(shared, {"model": ["scratch:nano", "scratch:huge"]})
    assert_nothing_recorded()


def test_every_point_is_planned_as_a_run_and_a_bad_one_names_its_run(fables: Path) -> None:
    plan = plan_sweep(given(fables, name="rates"), {"learning_rate": [1e-3, 3e-4]})
    assert plan.name == "rates" and "name" not in plan.settings
    assert [run.config.name for run in plan.runs] == ["learning_rate=0.001", "learning_rate=0.0003"]
    # The varied value counts as given: the scratch preset's learning rate is not picked over it,
    # while what is left out is still picked for each run (the floor follows each run's rate).
    assert [run.config.min_learning_rate for run in plan.runs] == pytest.approx([1e-4, 3e-5])
    with pytest.raises(SettingsError) as refused:
        plan_sweep(given(fables), {"learning_rate": [1e-3, -1.0]})
    assert refused.value.field == "learning_rate" and "(run learning_rate=-1)" in str(refused.value)
    with pytest.raises(SettingsError, match="both varied and given"):
        plan_sweep(given(fables, learning_rate=1e-3), {"learning_rate": [1e-3, 3e-4]})


# --- lmwb sweep: refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("--vary", "learnin_rate=1e-3,3e-4"), ("learnin_rate", "did you mean learning_rate")),
        (("--vary", "batch_size=8,x"), ("batch_size: takes whole numbers; 'x' is not one",)),
        (("--vary", "learning_rate="), ("learning_rate", "empty list")),
        (("--vary", "learning_rate=,"), ("learning_rate", "empty list")),
        (("--vary", "learning_rate"), ("--vary", "NAME=V1,V2")),
        (("--vary", "seed=1,2", "--vary", "seed=3"), ("seed", "varied twice")),
        (("--vary", "learning_rate=1e-3,3e-4", "--lr", "1e-3"), ("learning_rate", "both varied and given")),
        (("--vary", "lr=1e-3,3e-4"), ("--lr sets learning_rate",)),
        (("--vary", "dataset=fables,qa"), ("dataset", "cannot be varied")),
        (("--vary", "learning_rate=1e-3,-1"), ("learning_rate", "out of range", "run learning_rate=-1")),
        (("--vary", "seed=0,1,2,3,4,5,6,7,8", "--vary", "batch_size=1,2,3,4,5,6,7,8"), ("72 runs", "--yes")),
        (("--vary", "seed=1,2", "--resume", "abc"), ("--resume", "a sweep makes new runs")),
        (("--vary", "seed=1,2", "--nproc", "2"), ("--nproc", "--parallel")),
        (("--vary", "seed=1,2", "--queue"), ("--queue", "queued already")),
        (("--vary", "seed=1,2", "--parallel", "0"), ("--parallel", "at least 1")),
        (("--vary", "seed=1,2", "--probe-file", "no-such-prompts.txt"), ("--probe-file", "there is no file")),
        ((), ("needs a setting to vary",)),
    ],
)
def test_bad_input_is_one_line_and_records_nothing(
    capsys, fables: Path, arguments: tuple[str, ...], words: tuple[str, ...]
) -> None:
    status, out, err = lmwb_in_process(capsys, "sweep", *small_runs(fables), *arguments, "--detach")
    assert_one_line_error(status, err, *words)
    assert_nothing_recorded()


def test_a_block_size_beyond_the_models_context_is_refused_before_the_sweep_is_recorded(capsys, fables) -> None:
    # Only a start can check it (the context is read from the model): every run is checked before any is made.
    arguments = [arg for arg in small_runs(fables) if arg not in ("--block-size", "16")]
    status, _, err = lmwb_in_process(capsys, "sweep", *arguments, "--vary", "block_size=16,999", "--detach")
    assert_one_line_error(status, err, "block_size", "context of 256", "(run block_size=999)")
    assert_nothing_recorded()


# --- real sweeps ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_two_by_two_sweep_runs_to_completion_in_grid_order(capsys, monkeypatch, fables: Path) -> None:
    result = lmwb_in_subprocess(
        "sweep",
        *small_runs(fables),
        "--vary",
        "learning_rate=1e-3,3e-4",
        "--vary",
        "batch_size=2,4",
        "--probe",
        "The fox",
        "--probe-tokens",
        "4",
        "--detach",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("Sweep ") and "4 runs: learning_rate × batch_size, one at a time" in first
    sweep_id = first.split()[1].rstrip(":")
    store = RunStore()
    runs = wait_until_ended(store, sweep_id, 4)
    grid = [(1e-3, 2), (1e-3, 4), (3e-4, 2), (3e-4, 4)]
    assert [(run.config["learning_rate"], run.config["batch_size"]) for run in runs] == grid
    assert [run.name for run in runs] == [f"learning_rate={lr:g} batch_size={batch}" for lr, batch in grid]
    for run in runs:
        assert run.status == "completed" and run.steps == 3 and run.sweep_id == sweep_id, (run.name, run.error)
        assert [(row["step"], row["prompt"]) for row in store.probes(run.id)] == [(3, "The fox")]  # at its evaluation
        assert f"  {run.id}  {run.name}" in result.stdout  # each run's id and values were printed
    # One after another, in grid order: each started once the one before it had finished.
    for before, after in zip(runs, runs[1:], strict=False):
        assert before.finished_at <= after.started_at

    listed = lmwb_in_subprocess("sweeps", "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr
    [sweep] = json.loads(listed.stdout)
    assert sweep["id"] == sweep_id and sweep["name"] == "learning_rate × batch_size"
    assert sweep["varied"] == {"learning_rate": [1e-3, 3e-4], "batch_size": [2, 4]}
    assert sweep["statuses"] == {"completed": 4} and sweep["parallel"] == 1
    assert sweep["settings"]["max_steps"] == 3 and "learning_rate" not in sweep["settings"]
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line a row
    status, table, _ = lmwb_in_process(capsys, "sweeps")
    assert status == 0
    [row] = [line for line in table.splitlines() if sweep_id in line]
    assert "learning_rate 0.001, 0.0003; batch_size 2, 4" in row and "4: 4 completed" in row

    # Then compared: the runs differ in what the sweep varied (and in the minimum learning rate the plan
    # picks from each learning rate), and share every other setting.
    status, shown, _ = lmwb_in_process(capsys, "sweeps", "show", sweep_id, "--json")
    assert status == 0
    comparison = json.loads(shown)["comparison"]
    assert list(comparison["differing"]) == ["batch_size", "learning_rate", "min_learning_rate"]
    assert comparison["differing"]["batch_size"] == [2, 4, 2, 4]
    assert comparison["differing"]["learning_rate"] == [1e-3, 1e-3, 3e-4, 3e-4]
    assert comparison["differing"]["min_learning_rate"] == pytest.approx([1e-4, 1e-4, 3e-5, 3e-5])
    same = comparison["same"]
    assert same["model"] == "scratch:nano" and same["max_steps"] == 3 and same["block_size"] == 16
    assert [run["id"] for run in comparison["runs"]] == [run.id for run in runs]
    for compared in comparison["runs"]:
        assert compared["results"]["steps"] == 3 and compared["results"]["best_val_loss"] is not None


@pytest.mark.slow
def test_parallel_two_trains_two_at_once_and_ctrl_c_stops_the_followed_sweep(fables: Path) -> None:
    arguments = [*small_runs(fables), "--steps", "100000", "--vary", "seed=1,2,3", "--parallel", "2"]
    follower = subprocess.Popen(
        lmwb_command("sweep", *arguments),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        store = RunStore()
        deadline = time.monotonic() + RUN_TIMEOUT
        while len([run for run in store.list_runs() if run.status == "running" and run.steps > 0]) < 2:
            assert follower.poll() is None and time.monotonic() < deadline, "the sweep's runs never both trained"
            time.sleep(0.2)
        follower.send_signal(signal.SIGINT)
        out, _ = follower.communicate(timeout=RUN_TIMEOUT)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=10)
    assert follower.returncode == 0, out
    assert "started: seed=1" in out and "started: seed=2" in out
    assert "Stopping the sweep: 2 run(s) stop with a checkpoint, 1 queued run(s) cancelled." in out
    runs = {run.name: run for run in RunStore().list_runs()}
    assert {name: run.status for name, run in runs.items()} == {
        "seed=1": "stopped",
        "seed=2": "stopped",
        "seed=3": "cancelled",
    }
    assert "ended. 3 runs: 2 stopped, 1 cancelled. Compare them: lmwb sweeps show" in out  # as asked: exit 0
    # The two trained at once: each started before the other finished.
    first, second = runs["seed=1"], runs["seed=2"]
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    assert runs["seed=3"].started_at is None


@pytest.mark.slow
def test_a_followed_sweep_with_a_failed_run_says_so_and_exits_1(tmp_path: Path) -> None:
    """A corpus too short for one validation window of 200 tokens: that run fails as it starts, the other trains."""
    short = write_fables(tmp_path / "short.txt", count=40)
    arguments = [arg for arg in small_runs(short) if arg not in ("--block-size", "16")]
    result = lmwb_in_subprocess("sweep", *arguments, "--vary", "block_size=200,16", timeout=2 * RUN_TIMEOUT)
    sweep_id = result.stdout.split()[1].rstrip(":")
    runs = RunStore().list_runs(sweep_id=sweep_id, descending=False)
    assert [(run.name, run.status) for run in runs] == [("block_size=200", "failed"), ("block_size=16", "completed")]
    assert "fewer than one window of block_size + 1 = 201" in (runs[0].error or "")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"run {runs[0].id} (1/2) failed at step 0: block_size=200" in result.stdout  # with its error under it
    ended = f"Sweep {sweep_id} ended. 2 runs: 1 completed, 1 failed. See what went wrong: lmwb sweeps show {sweep_id}"
    assert result.stdout.splitlines()[-1] == ended
    assert result.stderr == ""


# --- the Train form ---------------------------------------------------------------------------


@story
async def test_a_comma_list_on_the_train_form_shows_the_run_count_and_starts_a_sweep(fables: Path) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        train = await open_train_screen(pilot)
        form = train.query_one("#config", ConfigForm)
        form.set_values(
            {
                **given(fables, eval_every=3, sample_every=0, checkpoint_every=0),
                "max_steps": 100000,  # the first run trains until the test ends; the others wait their turn
            }
        )
        count = train.query_one("#sweep-count", Static)
        assert form.errors == {} and not count.display

        form.query_one("#field-learning_rate", Input).value = "1e-3, 3e-4"
        await pilot.pause()
        assert form.errors == {} and count.display and "2 runs: learning_rate" in shown_text(count)
        form.query_one("#field-batch_size", Input).value = "2, 4"
        await pilot.pause()
        assert "4 runs: batch_size × learning_rate" in shown_text(count)

        # A field that cannot be varied says so, in place; a bad value in a list too.
        dataset = form.query_one("#field-dataset", Input)
        chosen = dataset.value
        dataset.value = "fables, qa"
        await pilot.pause()
        assert form.errors["dataset"].startswith("cannot be varied")
        dataset.value = chosen
        form.query_one("#field-warmup_steps", Input).value = "1, -1"
        await pilot.pause()
        assert list(form.errors) == ["warmup_steps"] and "-1 is out of range" in form.errors["warmup_steps"]
        form.query_one("#field-warmup_steps", Input).value = "1"
        await pilot.pause()
        assert form.errors == {}

        # A grid over MAX_RUNS is asked about first; No records nothing.
        form.query_one("#field-seed", Input).value = ", ".join(str(seed) for seed in range(MAX_RUNS + 1))
        await pilot.pause()
        assert f"{4 * (MAX_RUNS + 1)} runs" in shown_text(count) and "it asks first" in shown_text(count)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is train
        assert_nothing_recorded()
        form.query_one("#field-seed", Input).value = "1337"
        await pilot.pause()

        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.current_mode == "runs", timeout=60)
        store = RunStore()
        [sweep] = store.sweeps()
        assert sweep["varied"] == {"batch_size": [2, 4], "learning_rate": [1e-3, 3e-4]}
        runs = store.list_runs(sweep_id=sweep["id"], descending=False)
        assert [run.name for run in runs] == [
            "batch_size=2 learning_rate=0.001",
            "batch_size=2 learning_rate=0.0003",
            "batch_size=4 learning_rate=0.001",
            "batch_size=4 learning_rate=0.0003",
        ]
        assert [run.config["max_steps"] for run in runs] == [100000] * 4
        assert train.run_id == runs[0].id  # Train follows the first run


@pytest.mark.slow
@story
async def test_the_train_screen_follows_the_whole_sweep_saying_where_it_is(fables: Path) -> None:
    """A sweep started on the form: Train follows its first run, then its second once the first has ended."""
    notices, heard = collecting_notices()

    app = WorkbenchApp()
    async with app.run_test(size=SIZE, message_hook=heard) as pilot:
        train = await open_train_screen(pilot)
        form = train.query_one("#config", ConfigForm)
        form.set_values(given(fables, eval_every=3, sample_every=0, checkpoint_every=0))
        form.query_one("#field-learning_rate", Input).value = "1e-3, 3e-4"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.current_mode == "runs", timeout=60)
        train = await open_train_screen(pilot)  # back on Train: it follows the sweep's first run
        [sweep] = RunStore().sweeps()
        first, second = RunStore().list_runs(sweep_id=sweep["id"], descending=False)
        status = train.query_one("#run-status", Static)

        def status_line() -> str:
            """The status as one line (it wraps at the screen's width)."""
            return " ".join(shown_text(status).split())

        assert train.run_id == first.id
        await wait_until(pilot, lambda: f"sweep {sweep['id']} · run 1 of 2 · {first.name} ·" in status_line())

        # The first run ends; the screen moves on to the second by itself, and says so.
        await wait_until(pilot, lambda: train.run_id == second.id, timeout=RUN_TIMEOUT)
        assert RunStore().get_run(first.id).status == "completed"
        # The notice is a message the app handles after the switch: wait for it, as a person would see it appear.
        await wait_until(pilot, lambda: any(f"the sweep goes on with {second.name}" in notice for notice in notices))
        await wait_until(
            pilot,
            lambda: f"sweep {sweep['id']} · run 2 of 2 · {second.name} · completed" in status_line(),
            timeout=RUN_TIMEOUT,
        )
        # The sweep has ended: the screen stays on its last run.
        await pilot.pause(1.0)
        assert train.run_id == second.id
