"""Comparing runs: only the settings that differ, the results with the best marked, and every way out of it.

The runs are written into the store the way a trainer in another process
writes them (a config, metrics rows, a status), with numbers chosen so every
answer is known: the engine's comparison, its JSON, CSV and Markdown, then
``lmwb runs compare`` and ``lmwb sweeps show``, then the Runs screen.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, OptionList, Static

from engine.comparison import RESULT_KEYS, compare_runs
from engine.errors import StoreError
from engine.store import RunStore
from engine.training_config import TrainingConfig
from tests.conftest import assert_one_line_error, lmwb_in_process
from tests.test_tui_app import SIZE, collecting_notices, shown_text, story, wait_until
from tui.app import WorkbenchApp
from tui.screens.compare import CompareScreen
from tui.screens.sweep_picker import SweepPickerScreen
from tui.widgets.loss_chart import LossChart


def record(
    store: RunStore,
    name: str,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    status: str = "completed",
    sweep_id: str | None = None,
) -> str:
    """A finished run as its trainer leaves it: its config, its metrics rows, how far it got, its status."""
    run = store.create_run(name=name, model="scratch:nano", dataset="fables", config=config, sweep_id=sweep_id)
    store.set_status(run.id, "running")
    store.add_metrics(run.id, rows)
    store.heartbeat(run.id, steps=rows[-1]["step"] if rows else 0, tokens=rows[-1]["tokens"] if rows else 0)
    store.set_status(run.id, status)
    return run.id


def config(**settings: Any) -> dict[str, Any]:
    """A full stored config, as a run records it, with these settings changed."""
    return TrainingConfig(model="scratch:nano", dataset="fables", **settings).as_dict()


def rows(val_losses: dict[int, tuple[float, float]], speeds: list[float], step_seconds: float) -> list[dict]:
    """Metrics rows: a train loss and tokens/s every step, ``val_losses`` {step: (loss, bpb)} where evaluated."""
    out = []
    for step, speed in enumerate(speeds, start=1):
        row: dict[str, Any] = {
            "step": step,
            "train_loss": 5.0 - 0.1 * step,
            "tokens_per_sec": speed,
            "tokens": 64 * step,
            "elapsed": step_seconds * step,
        }
        if step in val_losses:
            row["val_loss"], row["val_bpb"] = val_losses[step]
        out.append(row)
    return out


@pytest.fixture
def three_runs() -> tuple[RunStore, str, str, str]:
    """Three runs of scratch:nano on fables that differ in learning rate and batch size.

    fast: lr 1e-3, batch 8: best val 3.0 at step 2 (bpb 2.0), tokens/s median 1,000, 4 steps in 8 s.
    slow: lr 3e-4, batch 16: best val 3.5 at step 4 (bpb 2.5), median 2,000 (a slow first step), 4 steps in 4 s.
    broken: lr 3e-4, batch 8: failed before its first step, no metrics.
    (No run is left queued: the first lmwb command or app to look would start it.)
    """
    store = RunStore()
    fast = record(
        store,
        "fast",
        config(learning_rate=1e-3),
        rows({2: (3.0, 2.0), 4: (3.2, 2.1)}, [1000.0, 900.0, 1100.0, 1000.0], 2.0),
    )
    slow = record(
        store,
        "slow",
        config(batch_size=16),
        rows({2: (3.9, 2.9), 4: (3.5, 2.5)}, [10.0, 2000.0, 2100.0, 1900.0], 1.0),
        status="stopped",
    )
    broken = record(store, "broken", config(), [], status="failed")
    return store, fast, slow, broken


# --- the engine --------------------------------------------------------------------------------


def test_only_the_settings_that_differ_are_columns_and_the_rest_are_listed_once(three_runs) -> None:
    store, fast, slow, broken = three_runs
    comparison = compare_runs(store, [fast, slow, broken])
    assert comparison.differing == {"batch_size": [8, 16, 8], "learning_rate": [1e-3, 3e-4, 3e-4]}
    assert comparison.same["model"] == "scratch:nano" and comparison.same["dataset"] == "fables"
    assert comparison.same["max_steps"] == 200 and comparison.same["world_size"] == 1
    assert "name" not in comparison.same  # a run's name labels its row; it is not a setting
    assert comparison.header() == [
        "id",
        "name",
        "batch_size",
        "learning_rate",
        "best val loss",
        "val bits/byte",
        "tokens/s",
        "steps",
        "wall time",
        "status",
    ]


def test_results_are_read_from_the_metrics_and_the_best_of_each_column_is_marked(three_runs) -> None:
    store, fast, slow, broken = three_runs
    by_id = {run.id: run for run in compare_runs(store, [fast, slow, broken]).runs}
    assert by_id[fast].results == {
        "best_val_loss": 3.0,
        "val_bpb": 2.0,  # at the best evaluation (step 2), not the last (2.1)
        "tokens_per_sec": 1000.0,
        "steps": 4,
        "wall_time": 8.0,
        "status": "completed",
    }
    assert by_id[slow].results["tokens_per_sec"] == 1950.0  # the median: a slow first step counts once
    assert by_id[slow].results["wall_time"] == 4.0
    assert by_id[broken].results == dict.fromkeys(RESULT_KEYS[:3], None) | {
        "steps": 0,
        "wall_time": None,
        "status": "failed",
    }
    assert by_id[fast].best == {"best_val_loss", "val_bpb"}
    assert by_id[slow].best == {"tokens_per_sec", "wall_time"}
    assert by_id[broken].best == set()

    cells = {row[0].text: row for row in compare_runs(store, [fast, slow]).cells()}
    assert [(cell.text, cell.best) for cell in cells[fast][4:]] == [
        ("3.0000", True),
        ("2.0000", True),
        ("1,000", False),
        ("4", False),  # steps have no best
        ("0:08", False),
        ("completed", False),
    ]


def test_a_column_where_every_run_has_the_same_value_has_no_best() -> None:
    store = RunStore()
    same = rows({1: (3.0, 2.0)}, [500.0], 1.0)
    first, second = record(store, "a", config(seed=1), same), record(store, "b", config(seed=2), same)
    comparison = compare_runs(store, [first, second])
    assert comparison.differing == {"seed": [1, 2]}
    assert all(not run.best for run in comparison.runs)


def test_a_setting_an_old_run_lacks_counts_as_its_default() -> None:
    store = RunStore()
    # A run recorded before compile and auto_batch existed: its config lacks them (and most else).
    old = record(store, "old", {"model": "scratch:nano", "dataset": "fables", "learning_rate": 1e-3}, [])
    new = record(store, "new", config(compile="off"), [])
    comparison = compare_runs(store, [old, new])
    assert comparison.differing == {"learning_rate": [1e-3, 3e-4], "compile": ["auto", "off"]}
    assert comparison.same["auto_batch"] is False and comparison.same["warmup_steps"] == 20


def test_the_json_shape(three_runs) -> None:
    store, fast, slow, _ = three_runs
    shape = compare_runs(store, [slow[:4], fast]).as_json()  # a unique prefix is enough
    assert set(shape) == {"differing", "same", "runs"}
    assert shape["differing"] == {"batch_size": [16, 8], "learning_rate": [3e-4, 1e-3]}
    assert shape["runs"][0] == {
        "id": slow,
        "name": "slow",
        "settings": {"batch_size": 16, "learning_rate": 3e-4},
        "results": {
            "best_val_loss": 3.5,
            "val_bpb": 2.5,
            "tokens_per_sec": 1950.0,
            "steps": 4,
            "wall_time": 4.0,
            "status": "stopped",
        },
        "best": ["tokens_per_sec", "wall_time"],
    }
    assert shape["runs"][1]["best"] == ["best_val_loss", "val_bpb"]
    assert json.loads(json.dumps(shape)) == shape


def test_csv_holds_plain_values_and_markdown_marks_the_best_in_bold(three_runs) -> None:
    store, fast, slow, broken = three_runs
    comparison = compare_runs(store, [fast, slow, broken])
    table = list(csv.DictReader(io.StringIO(comparison.to_csv())))
    assert list(table[0]) == ["id", "name", "batch_size", "learning_rate", *RESULT_KEYS]
    assert table[0] == {
        "id": fast,
        "name": "fast",
        "batch_size": "8",
        "learning_rate": "0.001",
        "best_val_loss": "3.0",
        "val_bpb": "2.0",
        "tokens_per_sec": "1000.0",
        "steps": "4",
        "wall_time": "8.0",
        "status": "completed",
    }
    assert table[2]["best_val_loss"] == "" and table[2]["status"] == "failed"

    markdown = comparison.to_markdown().splitlines()
    assert markdown[0] == (
        "| id | name | batch_size | learning_rate | best val loss | val bits/byte | tokens/s | steps "
        "| wall time | status |"
    )
    assert markdown[1].startswith("| --- | --- |")
    assert markdown[2] == f"| {fast} | fast | 8 | 0.001 | **3.0000** | **2.0000** | 1,000 | 4 | 0:08 | completed |"
    assert markdown[3] == f"| {slow} | slow | 16 | 0.0003 | 3.5000 | 2.5000 | **1,950** | 4 | **0:04** | stopped |"
    assert markdown[4] == f"| {broken} | broken | 8 | 0.0003 | – | – | – | 0 | – | failed |"
    assert markdown[-1].startswith("Same in every run: model=scratch:nano, dataset=fables, ")


def test_fewer_than_two_runs_an_unknown_id_or_a_run_twice_are_refused(three_runs) -> None:
    store, fast, slow, _ = three_runs
    with pytest.raises(StoreError, match="needs 2 runs or more; 1 given"):
        compare_runs(store, [fast])
    with pytest.raises(StoreError, match="No run has an id starting with 'nope'"):
        compare_runs(store, [fast, "nope"])
    with pytest.raises(StoreError, match=f"Run {fast} is given twice"):
        compare_runs(store, [fast, slow, fast[:5]])


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def piped_output_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables go to a pipe here: lmwb picks its own width unless COLUMNS says otherwise."""
    monkeypatch.delenv("COLUMNS", raising=False)


def test_runs_compare_prints_the_table_with_the_best_starred_and_what_is_the_same(capsys, three_runs) -> None:
    _, fast, slow, broken = three_runs
    status, out, err = lmwb_in_process(capsys, "runs", "compare", fast, slow, broken)
    assert status == 0, err
    lines = out.splitlines()
    # The titles are on two lines: "batch_" over "size", "best val" over "loss".
    assert lines[0].split() == ["batch_", "learning_", "best", "val", "val", "wall"]
    assert lines[1].split() == [
        "id",
        "name",
        "size",
        "rate",
        "loss",
        "bits/byte",
        "tokens/s",
        "steps",
        "time",
        "status",
    ]
    fast_line = next(line for line in lines if fast in line)
    assert "3.0000 *" in fast_line and "2.0000 *" in fast_line and "1,000 " in fast_line
    slow_line = next(line for line in lines if slow in line)
    assert "1,950 *" in slow_line and "0:04 *" in slow_line and "3.5000 " in slow_line
    assert "Same in all 3 runs: model=scratch:nano, dataset=fables" in out
    assert "* best:" in out


def test_a_terminal_too_narrow_for_a_row_per_run_gets_a_column_per_run(capsys, three_runs, monkeypatch) -> None:
    _, fast, slow, broken = three_runs
    monkeypatch.setenv("COLUMNS", "60")
    status, out, _ = lmwb_in_process(capsys, "runs", "compare", fast, slow, broken)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [fast, slow, broken]
    assert lines[2].split() == ["name", "fast", "slow", "broken"]
    assert next(line for line in lines if line.startswith("best val loss")).split()[3:] == [
        "3.0000",
        "*",
        "3.5000",
        "–",
    ]
    assert max(len(line) for line in lines) <= 60


def test_runs_compare_json_and_exports(capsys, three_runs, tmp_path: Path) -> None:
    store, fast, slow, _ = three_runs
    status, out, _ = lmwb_in_process(capsys, "runs", "compare", fast, slow, "--json")
    assert status == 0
    assert json.loads(out) == compare_runs(store, [fast, slow]).as_json()

    written = tmp_path / "compare.md"
    status, out, err = lmwb_in_process(capsys, "runs", "compare", fast, slow, "--markdown", str(written))
    assert status == 0 and f"Wrote the comparison of 2 runs as Markdown to {written}" in err
    assert written.read_text(encoding="utf-8") == compare_runs(store, [fast, slow]).to_markdown()
    assert fast in out  # the table is printed too

    written = tmp_path / "compare.csv"
    status, _, err = lmwb_in_process(capsys, "runs", "compare", fast, slow, "--csv", str(written))
    assert status == 0 and "as CSV" in err
    assert written.read_text(encoding="utf-8") == compare_runs(store, [fast, slow]).to_csv()


def test_runs_compare_mistakes_are_one_line_and_write_nothing(capsys, three_runs, tmp_path: Path) -> None:
    _, fast, slow, _ = three_runs
    target = tmp_path / "out.csv"
    status, _, err = lmwb_in_process(capsys, "runs", "compare", fast, "--csv", str(target))
    assert_one_line_error(status, err, "2 runs or more")
    status, _, err = lmwb_in_process(capsys, "runs", "compare", fast, "zzzz", "--csv", str(target))
    assert_one_line_error(status, err, "'zzzz'", "lmwb runs")
    status, _, err = lmwb_in_process(capsys, "runs", "compare", fast, fast, "--csv", str(target))
    assert_one_line_error(status, err, "given twice")
    assert not target.exists()
    status, _, err = lmwb_in_process(capsys, "runs", "compare", fast, slow, "--csv", str(tmp_path / "no" / "x.csv"))
    assert_one_line_error(status, err, "Cannot write", "x.csv")
    status, _, err = lmwb_in_process(capsys, "runs", "compare", fast, slow, "--csv", "a", "--markdown", "b")
    assert status == 2 and "not allowed with" in err


def test_sweeps_show_gives_the_sweeps_status_and_the_comparison_of_its_runs(capsys) -> None:
    store = RunStore()
    sweep = store.create_sweep(
        name="learning_rate", varied={"learning_rate": [1e-3, 3e-4, 1e-4]}, settings={"max_steps": 4}, parallel=2
    )
    high = record(
        store, "lr 1e-3", config(learning_rate=1e-3), rows({2: (3.0, 2.0)}, [100.0, 100.0], 1.0), sweep_id=sweep["id"]
    )
    status, out, err = lmwb_in_process(capsys, "sweeps", "show", sweep["id"][:4])
    assert status == 0, err
    assert f"Sweep {sweep['id']}" in out and "learning_rate 0.001, 0.0003, 0.0001" in out
    assert "One run in this sweep yet: nothing to compare." in out

    low = record(store, "lr 3e-4", config(), rows({2: (3.4, 2.4)}, [120.0, 120.0], 1.0), "failed", sweep["id"])
    status, out, _ = lmwb_in_process(capsys, "sweeps", "show", sweep["id"])
    assert status == 0
    assert "2: 1 completed, 1 failed" in out and "at once  2" in out
    assert next(line for line in out.splitlines() if line.startswith(high)).split()[-8:] == [
        "3.0000",
        "*",
        "2.0000",
        "*",
        "100",  # the failed run was faster
        "2",
        "0:02",  # as long as the other: no best
        "completed",
    ]
    assert "Same in all 2 runs: model=scratch:nano" in out

    status, out, _ = lmwb_in_process(capsys, "sweeps", "show", sweep["id"], "--json")
    shown = json.loads(out)
    assert shown["statuses"] == {"completed": 1, "failed": 1} and shown["parallel"] == 2
    assert shown["runs"] == [high, low]
    assert shown["comparison"] == compare_runs(store, [high, low]).as_json()

    status, _, err = lmwb_in_process(capsys, "sweeps", "show", "zz")
    assert_one_line_error(status, err, "No sweep has an id starting with 'zz'", "lmwb sweeps")


# --- the Runs screen -----------------------------------------------------------------------------


def row_of(table: Any, run_id: str) -> int:
    """Where a run is in the runs table now (the list is sorted newest first)."""
    return [str(key.value) for key in table.rows].index(run_id)


@story
async def test_mark_two_runs_compare_them_overlay_their_curves_and_switch_the_x_axis(
    three_runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _, fast, slow, _ = three_runs
    notices, heard = collecting_notices()

    app = WorkbenchApp()
    async with app.run_test(size=SIZE, message_hook=heard) as pilot:
        await pilot.press("5")
        runs = app.screen
        table = runs.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)

        # One run marked is not a comparison: the screen says what to do.
        table.move_cursor(row=row_of(table, fast))
        await pilot.press("space", "c")
        assert app.screen is runs
        await wait_until(pilot, lambda: any("Mark 2 runs or more with Space" in notice for notice in notices))

        table.move_cursor(row=row_of(table, slow))
        await pilot.press("space", "c")
        assert isinstance(app.screen, CompareScreen)
        compared = app.screen.query_one("#compare-table", DataTable)
        await wait_until(pilot, lambda: compared.row_count == 2)
        header = [str(key.value) for key in compared.columns]
        assert header[:4] == ["id", "name", "batch_size", "learning_rate"]
        cells = {
            str(compared.get_row(run_id)[1]): [str(cell) for cell in compared.get_row(run_id)]
            for run_id in (fast, slow)
        }
        assert cells["fast"][4] == "3.0000 *" and cells["slow"][6] == "1,950 *" and cells["slow"][4] == "3.5000"
        same = shown_text(app.screen.query_one("#compare-same", Static))
        assert "Same in every run: model=scratch:nano, dataset=fables" in same

        # The curves of both runs, overlaid; a draws them against tokens, then wall time, then steps again.
        chart = app.screen.query_one("#compare-chart", LossChart)
        await wait_until(pilot, lambda: set(chart.series) == {fast, slow} and chart.points == 12)
        title = app.screen.query_one("#compare-title", Static)
        assert "x axis: step" in shown_text(title)
        await pilot.press("a")
        assert chart.x_axis == "tokens" and "x axis: tokens" in shown_text(title)
        assert chart.series[slow].val.along("tokens") == ([128, 256], [3.9, 3.5])
        await pilot.press("a")
        assert chart.x_axis == "elapsed" and "x axis: wall time (s)" in shown_text(title)
        assert chart.series[fast].train.along("elapsed")[0] == [2.0, 4.0, 6.0, 8.0]

        await pilot.press("e")
        name = f"lmwb-comparison-{'-'.join(app.screen.run_ids)}"
        await wait_until(pilot, lambda: (tmp_path / f"{name}.md").exists() and (tmp_path / f"{name}.csv").exists())
        assert "**3.0000**" in (tmp_path / f"{name}.md").read_text(encoding="utf-8")

        await pilot.press("escape")
        assert app.screen is runs
        # The Runs chart cycles its x axis too, and says which it shows.
        await pilot.press("a")
        assert runs.query_one("#runs-chart", LossChart).x_axis == "tokens"
        assert "a x: tokens" in shown_text(runs.query_one("#runs-mode", Static))


@story
async def test_pick_a_sweep_its_runs_are_marked_and_compared() -> None:
    store = RunStore()
    sweep = store.create_sweep(name="learning_rate", varied={"learning_rate": [1e-3, 3e-4]}, settings={})
    high = record(
        store, "lr 1e-3", config(learning_rate=1e-3), rows({1: (3.0, 2.0)}, [100.0], 1.0), sweep_id=sweep["id"]
    )
    low = record(store, "lr 3e-4", config(), rows({1: (3.3, 2.2)}, [100.0], 1.0), sweep_id=sweep["id"])
    lone = record(store, "alone", config(seed=7), rows({1: (3.1, 2.1)}, [100.0], 1.0))
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        runs = app.screen
        table = runs.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        await pilot.press("w")
        assert isinstance(app.screen, SweepPickerScreen)
        options = app.screen.query_one("#sweep-list", OptionList)
        await wait_until(pilot, lambda: options.get_option_at_index(0).id == sweep["id"])
        assert "learning_rate  2 runs: 2 completed" in str(options.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        assert app.screen.run_ids == [high, low] and runs.marked == {high, low} and lone not in runs.marked
        compared = app.screen.query_one("#compare-table", DataTable)
        await wait_until(pilot, lambda: compared.row_count == 2)
        assert [str(key.value) for key in compared.columns][2] == "learning_rate"


@story
async def test_a_comparison_wider_than_the_screen_scrolls_sideways_under_the_runs_ids_and_names() -> None:
    store = RunStore()
    varied = [
        dict(learning_rate=1e-3, batch_size=8, warmup_steps=10, seed=1, weight_decay=0.1, dropout=0.0),
        dict(learning_rate=3e-4, batch_size=16, warmup_steps=20, seed=2, weight_decay=0.01, dropout=0.1),
        dict(learning_rate=6e-4, batch_size=32, warmup_steps=30, seed=3, weight_decay=0.0, dropout=0.2),
    ]
    ids = [
        record(store, f"run {index}", config(**settings), rows({2: (3.0 + index, 2.0)}, [100.0, 100.0], 1.0))
        for index, settings in enumerate(varied)
    ]
    app = WorkbenchApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        table = app.screen.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        for row in range(3):
            table.move_cursor(row=row)
            await pilot.press("space")
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen)
        compared = app.screen.query_one("#compare-table", DataTable)
        await wait_until(pilot, lambda: compared.row_count == 3)
        await pilot.pause()
        assert compared.max_scroll_x > 0  # six settings differ: the results are out of sight at 80 columns
        assert "status" not in shown_text(compared)

        await pilot.press(*["right"] * compared.max_scroll_x)
        await wait_until(pilot, lambda: compared.scroll_x == compared.max_scroll_x)
        lines = shown_text(compared).splitlines()
        assert lines[0].split()[:2] == ["id", "name"] and lines[0].split()[-1] == "status"
        assert "batch_" not in lines[0]  # scrolled out of sight, under the labels
        shown_rows = [line.split() for line in lines[2:5]]
        assert sorted(row[0] for row in shown_rows) == sorted(ids)
        for row in shown_rows:  # each row still says which run it is, and ends with its status
            assert f"{row[1]} {row[2]}" == f"run {ids.index(row[0])}" and row[-1] == "completed"
