"""A sweep: one grid of training runs, each point a full run, all made and queued by one command.

People sweep to learn which settings work: ``learning_rate`` over 1e-3 and
3e-4 times ``batch_size`` over 8 and 16 is four runs. Everything is checked
before anything is recorded: each varied setting's name and values (as typed,
converted by the ``TrainingConfig`` field's type), the size of the grid, and
every point's full settings, planned by ``planning.plan_run`` (the varied
values count as given) and validated as a single run would be. Only then is
the sweep recorded and its runs queued, in grid order (the first setting
varies slowest), each named for its point; the store's queue starts them, as
many at once as the sweep's ``parallel``.

No torch here: the CLI and the Train form check a sweep before torch loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import itertools
import math
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.checks import check_int
from engine.errors import SettingsError, StoreError
from engine.planning import RunPlan, plan_run
from engine.run_process import check_new_run, submit_run
from engine.store import ACTIVE_STATUSES, Run, RunStore
from engine.training_config import TrainingConfig

MAX_RUNS = 64  # a larger grid is made only when asked to (lmwb sweep --yes): it is likely a typo
# Settings every run of a sweep shares: runs on other data do not compare, and each run is named
# for its point (a name given names the sweep). The model may vary: "how big a model" is a sweep.
FIXED_SETTINGS = {
    "dataset": "a sweep's runs are measured on one dataset; start a sweep per dataset",
    "dataset_field": "a sweep's runs are measured on one dataset; start a sweep per dataset",
    "dataset_split": "a sweep's runs are measured on one dataset; start a sweep per dataset",
    "name": "each run is named for its point, and a name given names the sweep",
}
# Free text whose value may itself hold commas: a comma list of it would be ambiguous.
FREE_TEXT_SETTINGS = ("sample_prompt", "lora_targets")
SCALAR_TYPES = (bool, int, float, str)  # a setting of another type (a list of probe prompts) is not varied
# As the forms read a switch (tui/widgets/config_form.py).
SWITCH_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
NONE_WORD = "none"  # an optional setting left unset (max_steps none: planned on time)


def setting_values(name: str, texts: Sequence[str]) -> list[Any]:
    """The values of setting ``name`` typed as ``texts`` (``["1e-3", "3e-4"]``), converted by its field's type.

    SettingsError(name) for a setting that is not one or cannot be varied, an
    empty list or value, a value of the wrong type, or a value listed twice.
    Whether a value is in range is ``TrainingConfig.validate``'s question,
    asked for each point of the grid.
    """
    _check_variable(name)
    items = [text.strip() for text in texts]
    if not any(items):
        raise SettingsError(name, "has an empty list of values; give them as NAME=V1,V2,... (e.g. batch_size=8,16).")
    if not all(items):
        raise SettingsError(name, f"has an empty value in {','.join(texts)!r}; leave no value out between commas.")
    values = [_converted(name, item) for item in items]
    for index, value in enumerate(values):
        if value in values[:index]:
            raise SettingsError(name, f"lists {items[index]!r} twice; each value makes a run, so give each once.")
    return values


def values_in_text(name: str, text: str) -> list[Any] | None:
    """A form field's text as a sweep's values when it is a comma list (``"1e-3, 3e-4"``), else None.

    The free-text settings (a sample prompt, the LoRA targets) and the
    settings that hold a list themselves take a comma as part of their text;
    any other setting typed with a comma is a list, refused by name
    (SettingsError) where that setting cannot be varied.
    """
    if "," not in text or name in FREE_TEXT_SETTINGS or _field_kinds()[name][0] not in SCALAR_TYPES:
        return None
    return setting_values(name, text.split(","))


def varied_settings(pairs: Sequence[tuple[str, Sequence[str]]]) -> dict[str, list[Any]]:
    """Each varied setting with its converted values, in the order given; a setting varied twice is refused."""
    varied: dict[str, list[Any]] = {}
    for name, texts in pairs:
        if name in varied:
            raise SettingsError(name, "is varied twice; give all its values in one list (NAME=V1,V2,...).")
        varied[name] = setting_values(name, texts)
    return varied


def run_count(varied: dict[str, list[Any]]) -> int:
    """How many runs the grid makes: the product of the numbers of values."""
    return math.prod(len(values) for values in varied.values())


def describe_grid(varied: dict[str, list[Any]]) -> str:
    """``"4 runs: learning_rate × batch_size"``, as the CLI and the Train form announce a sweep."""
    count = run_count(varied)
    return f"{count} run{'s' if count != 1 else ''}: {' × '.join(varied)}"


def grid_points(varied: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the varied values, the first setting varying slowest."""
    return [dict(zip(varied, values, strict=True)) for values in itertools.product(*varied.values())]


def point_label(point: dict[str, Any]) -> str:
    """A point's varied values, ``"learning_rate=0.001 batch_size=8"``: the name of its run."""
    return " ".join(f"{name}={value_text(value)}" for name, value in point.items())


def value_text(value: Any) -> str:
    """A value as a run's name shows it: 0.001, 8, true, none."""
    if value is None:
        return NONE_WORD
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class SweepPlan:
    """A checked grid: what it varies, what its runs share, and each run's plan in grid order."""

    name: str  # the name given, or what it varies ("learning_rate × batch_size")
    varied: dict[str, list[Any]]
    settings: dict[str, Any]  # the settings given that every run shares
    runs: tuple[RunPlan, ...]  # one per point of grid_points(varied), each run named for its point

    def description(self) -> str:
        return describe_grid(self.varied)


def plan_sweep(given: dict[str, Any], varied: dict[str, list[Any]], *, allow_large: bool = False) -> SweepPlan:
    """Plan every run of the grid from the settings ``given`` and the ``varied`` values; nothing is recorded.

    ``given`` holds the settings every run shares (its ``name`` names the
    sweep). A setting both given and varied, a grid of more than MAX_RUNS
    runs (unless ``allow_large``), and any point whose settings a single run
    would refuse are each a SettingsError, the last naming its point.
    """
    if not varied:
        raise SettingsError("vary", "a sweep needs a setting to vary, e.g. learning_rate=1e-3,3e-4.")
    shared = {name: value for name, value in given.items() if name != "name"}
    for name in varied:
        if name in shared:
            raise SettingsError(name, "is both varied and given one value; keep one of the two.")
    count = run_count(varied)
    if count > MAX_RUNS and not allow_large:
        sizes = " × ".join(str(len(values)) for values in varied.values())
        raise SettingsError(
            "vary",
            f"this grid makes {count} runs ({sizes}), more than {MAX_RUNS}; vary fewer values, "
            "or confirm that you want them all (lmwb sweep --yes).",
        )
    plans = tuple(_plan_point(shared, point) for point in grid_points(varied))
    return SweepPlan(given.get("name") or " × ".join(varied), varied, shared, plans)


def _plan_point(shared: dict[str, Any], point: dict[str, Any]) -> RunPlan:
    label = point_label(point)
    with _naming_the_run(label):
        return plan_run({**shared, **point, "name": label})


@contextlib.contextmanager
def _naming_the_run(label: str) -> Iterator[None]:
    """A setting refused for one point of the grid says which run it was refused in."""
    try:
        yield
    except SettingsError as error:
        raise SettingsError(error.field, f"{error.reason.rstrip('.')} (run {label}).") from error


def start_sweep(plan: SweepPlan, store: RunStore, *, parallel: int = 1) -> tuple[dict, list[Run]]:
    """Check every run as a start would, record the sweep, queue its runs in grid order; return (sweep, runs).

    The queue starts them at once, ``parallel`` at a time (a whole number of
    at least 1), each as a process of its own.
    """
    check_int("parallel", parallel, 1, hint=" (runs of the sweep trained at once)")
    for run in plan.runs:
        with _naming_the_run(run.config.name):
            check_new_run(run.config, store)
    sweep = store.create_sweep(name=plan.name, varied=plan.varied, settings=plan.settings, parallel=parallel)
    runs = [submit_run(run.config, store, queue=True, sweep_id=sweep["id"]) for run in plan.runs]
    return sweep, runs


def stop_sweep(store: RunStore, sweep_id: str) -> tuple[list[str], list[str]]:
    """Cancel a sweep's queued runs, then ask its active ones to stop; return (stopping, cancelled) run ids.

    The queued runs go first, so a run that ends meanwhile starts none of
    them; a run that started meanwhile is stopped too. Stopping runs end on
    their own with a checkpoint, within a step or so.
    """
    sweep_id = store.get_sweep(sweep_id)["id"]
    stopping: list[str] = []
    cancelled: list[str] = []
    for status in ("queued", *ACTIVE_STATUSES):
        for run in store.list_runs(sweep_id=sweep_id, status=status, descending=False):
            try:
                store.request_control(run.id, "stop")
            except StoreError:  # it ended, or moved on, meanwhile
                continue
            (cancelled if status == "queued" else stopping).append(run.id)
    return stopping, cancelled


def sweep_runs(store: RunStore, sweep_id: str) -> list[Run]:
    """A sweep's runs in its order: the grid's, in which they were made and queued."""
    return store.list_runs(sweep_id=sweep_id, order_by="created_at", descending=False)


def run_to_follow(runs: Sequence[Run]) -> Run | None:
    """Of a sweep's runs, in its order, the one a follower shows: the first going, else the first queued.

    None once every run has ended. A front end that followed a run of the
    sweep to its end moves on to this one, so it follows the whole sweep.
    """
    going = [run for run in runs if run.status in ACTIVE_STATUSES]
    queued = [run for run in runs if run.status == "queued"]
    return next(iter(going + queued), None)


@dataclass(frozen=True)
class SweepPlace:
    """Where a run stands in its sweep: "sweep 3f2a09c1 · run 2 of 4"."""

    sweep_id: str
    number: int  # from 1, in the sweep's order
    count: int

    def __str__(self) -> str:
        return f"sweep {self.sweep_id} · run {self.number} of {self.count}"


def place_in_sweep(run: Run, runs: Sequence[Run]) -> SweepPlace | None:
    """Where ``run`` stands among its sweep's ``runs`` (as ``sweep_runs`` gives them); None outside a sweep."""
    ids = [other.id for other in runs]
    if run.sweep_id is None or run.id not in ids:
        return None
    return SweepPlace(run.sweep_id, ids.index(run.id) + 1, len(ids))


def _check_variable(name: str) -> None:
    """Refuse a name that is no setting (suggesting close ones), or one a sweep cannot vary."""
    kinds = _field_kinds()
    if name not in kinds:
        close = difflib.get_close_matches(name, kinds, n=3, cutoff=0.6)
        suggestion = f"did you mean {' or '.join(close)}?" if close else f"settings are: {', '.join(kinds)}."
        raise SettingsError(name, f"is not a training setting; {suggestion}")
    if name in FIXED_SETTINGS:
        raise SettingsError(name, f"cannot be varied: {FIXED_SETTINGS[name]}.")
    if name in FREE_TEXT_SETTINGS:
        raise SettingsError(name, "cannot be varied: its value is free text that may hold commas.")
    if kinds[name][0] not in SCALAR_TYPES:
        raise SettingsError(name, "cannot be varied: its value is a list of its own.")


def _converted(name: str, text: str) -> Any:
    """One value as typed, as its field's type: a whole number, a number, true or false, text, or none."""
    base, optional = _field_kinds()[name]
    if optional and text.lower() == NONE_WORD:
        return None
    unset = f" (or {NONE_WORD})" if optional else ""
    if base is bool:
        if text.lower() not in SWITCH_WORDS:
            raise SettingsError(name, f"takes true or false{unset}; {text!r} is not one.")
        return SWITCH_WORDS[text.lower()]
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(name, f"takes whole numbers{unset}; {text!r} is not one.") from None
    if base is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SettingsError(name, f"takes finite numbers such as 3e-4{unset}; {text!r} is not one.")
        return value
    return text


@functools.cache
def _field_kinds() -> dict[str, tuple[type, bool]]:
    """Each TrainingConfig field's (base type, optional), in the order the dataclass declares them."""
    hints = typing.get_type_hints(TrainingConfig)
    kinds = {}
    for field in dataclasses.fields(TrainingConfig):
        annotation = hints[field.name]
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        kinds[field.name] = (members[0], True) if union else (typing.get_origin(annotation) or annotation, False)
    return kinds
