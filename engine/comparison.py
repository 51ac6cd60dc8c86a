"""Runs side by side: only the settings that differ between them, then how each one did.

A comparison answers "which settings work": one row per run, as columns the
settings that are not the same in every run (the rest are listed once), then
the results, with the best value of each result column marked. The CLI
(``lmwb runs compare``, ``lmwb sweeps show``), the Runs screen and the CSV
and Markdown exports all read the same ``Comparison``.

Where the numbers come from:

- **settings**: the run's stored config, with the model, dataset and number
  of processes of its record; a setting an older run's config lacks counts
  as TrainingConfig's default, so runs from before a setting existed compare.
- **best val loss**: the lowest validation loss the run logged.
- **val bits/byte**: at that same evaluation (the best one, whose checkpoint
  the trainer keeps), not at the last.
- **tokens/s**: the median of the run's logged throughput, so a slow first
  step (a compile, a warm cache) does not count for more than one step.
- **steps**: how far the run got.
- **wall time**: seconds of training, every session together and pauses left
  out (the last ``elapsed`` the run logged; none before its first logged step).
- **status**: where the run is now.

Best means lowest for the losses and the wall time, highest for tokens/s;
steps and status have none. A value is marked best when it is the best of its
column and some other run's value is worse (ties at the best are all marked;
a column where every run has the same value has no best).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.errors import StoreError
from engine.store import Run, RunStore
from engine.sweeps import value_text
from engine.training_config import TrainingConfig

MIN_COMPARED = 2
"""How many runs a comparison needs."""


@dataclass(frozen=True)
class ResultColumn:
    """A result a comparison shows for each run, and which way is better (None: no best)."""

    key: str
    label: str
    better: Literal["lower", "higher"] | None


RESULT_COLUMNS = (
    ResultColumn("best_val_loss", "best val loss", "lower"),
    ResultColumn("val_bpb", "val bits/byte", "lower"),
    ResultColumn("tokens_per_sec", "tokens/s", "higher"),
    ResultColumn("steps", "steps", None),
    ResultColumn("wall_time", "wall time", "lower"),
    ResultColumn("status", "status", None),
)
RESULT_KEYS = tuple(column.key for column in RESULT_COLUMNS)

# The run's own name is its row's label, not a setting it was trained with.
NOT_SETTINGS = ("name",)
# The columns that say which run a row is, first in every table: a front end keeps them in sight.
LABEL_COLUMNS = ("id", "name")


@dataclass(frozen=True)
class Cell:
    """One cell as people read it: its text, and whether it holds its column's best value."""

    text: str
    best: bool = False


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison: every setting it was trained with (defaults filled in) and its results."""

    id: str
    name: str
    settings: dict[str, Any]
    results: dict[str, Any]  # keyed by RESULT_KEYS
    best: frozenset[str]  # the result columns where this run holds the best value


@dataclass(frozen=True)
class Comparison:
    """Runs side by side: the settings that differ (a value per run), those that are the same, the results."""

    runs: tuple[ComparedRun, ...]
    differing: dict[str, list[Any]]  # setting -> its value in each run, in the runs' order
    same: dict[str, Any]  # setting -> the value every run has

    def header(self) -> list[str]:
        """The columns' titles: id, name (LABEL_COLUMNS), each differing setting, each result."""
        return [*LABEL_COLUMNS, *self.differing, *(column.label for column in RESULT_COLUMNS)]

    def cells(self) -> list[list[Cell]]:
        """A row of cells per run, as ``header()``: the table every front end shows."""
        return [
            [
                Cell(run.id),
                Cell(run.name),
                *(Cell(value_text(run.settings[name])) for name in self.differing),
                *(
                    Cell(result_text(column.key, run.results[column.key]), column.key in run.best)
                    for column in RESULT_COLUMNS
                ),
            ]
            for run in self.runs
        ]

    def same_text(self) -> str:
        """The settings every run shares, as ``name=value`` pairs."""
        return ", ".join(f"{name}={value_text(value)}" for name, value in self.same.items())

    def as_json(self) -> dict[str, Any]:
        """``{"differing": {setting: [value per run]}, "same": {setting: value}, "runs": [...]}``.

        Each run is ``{"id", "name", "settings": {differing setting: value}, "results": {result: value},
        "best": [result columns where it is best]}``; results are plain numbers (wall time in seconds).
        """
        return {
            "differing": self.differing,
            "same": self.same,
            "runs": [
                {
                    "id": run.id,
                    "name": run.name,
                    "settings": {name: run.settings[name] for name in self.differing},
                    "results": run.results,
                    "best": [key for key in RESULT_KEYS if key in run.best],
                }
                for run in self.runs
            ],
        }

    def to_csv(self) -> str:
        """One row per run: id, name, the differing settings, the results as plain values (wall time in s)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "name", *self.differing, *RESULT_KEYS])
        for run in self.runs:
            values = [run.settings[name] for name in self.differing] + [run.results[key] for key in RESULT_KEYS]
            writer.writerow([run.id, run.name, *("" if value is None else value for value in values)])
        return out.getvalue()

    def to_markdown(self) -> str:
        """A Markdown table (best values in bold), then the settings every run shares."""

        def row(texts: Sequence[str]) -> str:
            return "| " + " | ".join(text.replace("|", "\\|") for text in texts) + " |"

        lines = [row(self.header()), row(["---"] * len(self.header()))]
        for cells in self.cells():
            lines.append(row([f"**{cell.text}**" if cell.best else cell.text for cell in cells]))
        lines += [
            "",
            "Best in bold: the lowest val loss, bits per byte and wall time, the highest tokens/s.",
            "",
            f"Same in every run: {self.same_text()}",
        ]
        return "\n".join(lines) + "\n"


def compare_runs(store: RunStore, run_ids: Sequence[str]) -> Comparison:
    """Compare the runs with these ids (or unique prefixes), in the order given.

    StoreError for an id that matches no run (or several), for fewer than two
    runs, and for one run named twice.
    """
    runs = [store.get_run(run_id) for run_id in run_ids]
    return compare(runs, {run.id: store.metrics(run.id) for run in runs})


def compare(runs: Sequence[Run], metrics: Mapping[str, Sequence[dict]]) -> Comparison:
    """The comparison of ``runs`` from their metrics rows (``RunStore.metrics``, by run id)."""
    _check_compared(runs)
    settings = [run_settings(run) for run in runs]
    names = list(dict.fromkeys(name for each in settings for name in each))
    differing: dict[str, list[Any]] = {}
    same: dict[str, Any] = {}
    for name in names:
        values = [each.get(name) for each in settings]
        if all(value == values[0] for value in values):
            same[name] = values[0]
        else:
            differing[name] = values
    results = [run_results(run, metrics.get(run.id, ())) for run in runs]
    best: list[set[str]] = [set() for _ in runs]
    for column in RESULT_COLUMNS:
        for index in _best_of([each[column.key] for each in results], column.better):
            best[index].add(column.key)
    return Comparison(
        runs=tuple(
            ComparedRun(run.id, run.name, each, result, frozenset(marks))
            for run, each, result, marks in zip(runs, settings, results, best, strict=True)
        ),
        differing=differing,
        same=same,
    )


def run_settings(run: Run) -> dict[str, Any]:
    """Every setting the run was trained with: its config over TrainingConfig's defaults, and its record's."""
    settings = {field.name: _default(field) for field in dataclasses.fields(TrainingConfig)}
    settings |= run.config
    settings |= {"model": run.model, "dataset": run.dataset, "world_size": run.world_size}
    return {name: value for name, value in settings.items() if name not in NOT_SETTINGS}


def run_results(run: Run, metrics: Sequence[dict]) -> dict[str, Any]:
    """How the run did, by RESULT_KEYS (see the module's docstring for where each comes from)."""
    evaluated = [row for row in metrics if row.get("val_loss") is not None]
    best = min(evaluated, key=lambda row: row["val_loss"], default=None)
    speeds = [row["tokens_per_sec"] for row in metrics if row.get("tokens_per_sec") is not None]
    times = [row["elapsed"] for row in metrics if row.get("elapsed") is not None]
    return {
        "best_val_loss": None if best is None else best["val_loss"],
        "val_bpb": None if best is None else best.get("val_bpb"),
        "tokens_per_sec": statistics.median(speeds) if speeds else None,
        "steps": run.steps,
        "wall_time": times[-1] if times else None,
        "status": run.status,
    }


def result_text(key: str, value: Any) -> str:
    """A result as a cell shows it: losses to 4 decimals, whole tokens/s, wall time as m:ss (h:mm:ss)."""
    if value is None:
        return "–"
    if key in ("best_val_loss", "val_bpb"):
        return f"{value:.4f}"
    if key in ("tokens_per_sec", "steps"):
        return f"{value:,.0f}"
    if key == "wall_time":
        hours, rest = divmod(round(value), 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    return str(value)


def _check_compared(runs: Sequence[Run]) -> None:
    """Refuse what cannot be compared: fewer than two runs, or a run given twice."""
    if len(runs) < MIN_COMPARED:
        raise StoreError(
            f"A comparison needs {MIN_COMPARED} runs or more; {len(runs)} given. Run `lmwb runs` to list run ids."
        )
    seen: set[str] = set()
    for run in runs:
        if run.id in seen:
            raise StoreError(f"Run {run.id} is given twice; compare different runs.")
        seen.add(run.id)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None  # model and dataset: every run has its own


def _best_of(values: Sequence[Any], better: Literal["lower", "higher"] | None) -> list[int]:
    """The indexes holding the best value, when some other run's value is worse; none without a direction."""
    present = [value for value in values if value is not None]
    if better is None or len(set(present)) < 2:
        return []
    best = min(present) if better == "lower" else max(present)
    return [index for index, value in enumerate(values) if value == best]
