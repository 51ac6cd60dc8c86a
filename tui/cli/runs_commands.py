"""`lmwb runs` and its actions: what the store holds of each training run, and what can be done to it.

List, show, follow, pause/continue/stop, delete, export (metrics, or the
model as a Hugging Face directory), compare, and each probe prompt's
completions step by step.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.store import RUN_ORDERINGS
from tui.cli.common import EXIT_OK, CommandError, non_negative_int, open_store, run_status, stop_on_signals
from tui.cli.output import (
    key_value_panel,
    local_time,
    new_table,
    print_comparison,
    print_json,
    status_spinner,
    stdout_console,
    table_cell,
)
from tui.cli.progress import follow_progress, print_training_summary
from tui.widgets.formatting import CHANGED_STYLE, changed_words, model_label

if TYPE_CHECKING:
    from engine.store import RunStore


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`lmwb runs` and its actions."""
    runs = commands.add_parser("runs", help="list, show, delete and export training runs")
    runs.add_argument("--status", type=run_status, help="only runs with this status (running, completed, ...)")
    runs.add_argument("--search", metavar="QUERY", help="only runs whose name, model or dataset contains this")
    runs.add_argument(
        "--sort",
        choices=tuple(RUN_ORDERINGS),
        default="created_at",
        help="sort field (default: created_at, newest first)",
    )
    runs.add_argument("--reverse", action="store_true", help="reverse the sort order")
    runs.add_argument("--json", action="store_true", help="print JSON for scripts")
    runs.set_defaults(handler=cmd_runs_list)
    actions = runs.add_subparsers(title="actions", metavar="ACTION")

    show = actions.add_parser(
        "show", help="one run: config, metrics, checkpoints, samples, and each probe prompt's latest completion"
    )
    show.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(handler=cmd_runs_show)

    delete = actions.add_parser("delete", help="delete a run with its metrics and checkpoints")
    delete.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_runs_delete)

    export = actions.add_parser("export", help="a run's metrics as CSV or JSON")
    export.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    export.add_argument("--format", choices=("csv", "json"), default="json", help="csv or json (default: json)")
    export.add_argument("--output", type=Path, metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=cmd_runs_export)

    probes = actions.add_parser(
        "probes", help="a run's probe prompts and the completion at each evaluated step, changes highlighted"
    )
    probes.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    probes.add_argument("--prompt", metavar="TEXT", help="only this probe prompt")
    probes.add_argument("--json", action="store_true", help="print JSON for scripts")
    probes.set_defaults(handler=cmd_runs_probes)

    follow = actions.add_parser(
        "follow", help="the live progress of a run, wherever it was started (Ctrl+C leaves the run going)"
    )
    follow.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    follow.set_defaults(handler=cmd_runs_follow)
    for action, text in (
        ("pause", "pause a running run between two steps (it keeps its place and memory)"),
        ("continue", "continue a paused run"),
        ("stop", "stop a run with a checkpoint (it can be resumed), or cancel a queued one"),
    ):
        control = actions.add_parser(action, help=text)
        control.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
        control.set_defaults(handler=cmd_runs_control, action=action)

    compare = actions.add_parser(
        "compare",
        help="runs side by side: the settings that differ, best val loss, bits/byte, tokens/s, steps, wall time",
    )
    compare.add_argument("run_ids", nargs="+", metavar="ID", help="two run ids or more (unique prefixes are enough)")
    compare.add_argument("--json", action="store_true", help="print JSON for scripts")
    written = compare.add_mutually_exclusive_group()
    written.add_argument("--csv", type=Path, metavar="FILE", help="also write the comparison as CSV to FILE")
    written.add_argument("--markdown", type=Path, metavar="FILE", help="also write it as a Markdown table to FILE")
    compare.set_defaults(handler=cmd_runs_compare)

    export_model = actions.add_parser(
        "export-model", help="a run's checkpoint as a plain Hugging Face model directory (LoRA adapters merged in)"
    )
    export_model.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    export_model.add_argument("directory", type=Path, metavar="DIR", help="a new (or empty) directory to write")
    export_model.add_argument(
        "--step", type=non_negative_int, metavar="N", help="that step's checkpoint (default: the latest)"
    )
    export_model.set_defaults(handler=cmd_runs_export_model)


# ---------------------------------------------------------------------------
# lmwb runs


def cmd_runs_list(args: argparse.Namespace) -> int:
    """Runs, filtered and sorted, newest first by default."""
    descending = RUN_ORDERINGS[args.sort] != args.reverse
    runs = open_store().list_runs(status=args.status, search=args.search, order_by=args.sort, descending=descending)
    rows = [run.as_dict() for run in runs]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        stdout_console().print("No runs yet. Start one with: lmwb train --model scratch:tiny --dataset NAME")
        return EXIT_OK
    columns = ["id", "name", "status", "model", "dataset", "steps", "best val loss", "created"]
    table_rows = [
        [
            row["id"],
            row["name"],
            row["status"],
            model_label(row["model"], row["lora"], row["world_size"]),
            row["dataset"],
            row["steps"],
            row["best_val_loss"],
            local_time(row["created_at"]),
        ]
        for row in rows
    ]
    stdout_console().print(new_table("Runs", columns, table_rows))
    return EXIT_OK


def cmd_runs_show(args: argparse.Namespace) -> int:
    """One run in full: config, metrics summary, samples, checkpoints, each probe prompt's latest completion."""
    store = open_store()
    run = store.get_run(args.run_id)
    detail = run.as_dict()
    detail["metrics_summary"] = summarize_metrics(store.metrics(run.id))
    detail["samples"] = store.samples(run.id)
    detail["checkpoints"] = store.checkpoints(run.id)
    detail["probes"] = [{"prompt": prompt, **steps[-1]} for prompt, steps in _probe_timelines(store, run.id).items()]
    if args.json:
        print_json(detail)
        return EXIT_OK

    _print_run(detail)
    return EXIT_OK


def _print_run(detail: dict[str, Any]) -> None:
    """A run for people: what it is, how far it got, its config, checkpoints, latest samples and probes."""
    console = stdout_console()
    summary = detail["metrics_summary"]
    status = detail["status"] + (f": {detail['error']}" if detail["error"] else "")
    about = [
        ("name", detail["name"]),
        ("status", status),
        ("model", detail["model"]),
        ("dataset", detail["dataset"]),
        ("steps", detail["steps"]),
        ("tokens", detail["tokens"]),
        ("best val loss", detail["best_val_loss"]),
        ("created", local_time(detail["created_at"])),
        ("finished", local_time(detail["finished_at"])),
        ("LoRA", detail["lora"]),
        ("processes", detail["world_size"]),
    ] + ([("notes", detail["notes"])] if detail["notes"] else [])
    console.print(key_value_panel(f"Run {detail['id']}", about))
    console.print()
    # Config values as typed (a seed is 1337, not 1,337).
    console.print(
        key_value_panel(
            "Config", [(key, None if value is None else str(value)) for key, value in sorted(detail["config"].items())]
        )
    )
    console.print()
    console.print(
        key_value_panel(
            "Metrics",
            [
                ("logged steps", summary["logged_steps"]),
                (
                    "train loss",
                    f"{table_cell(summary['first_train_loss']).plain} → {table_cell(summary['last_train_loss']).plain}",
                ),
                ("best val loss", summary["best_val_loss"]),
                ("last val loss", summary["last_val_loss"]),
                ("last val perplexity", summary["last_val_ppl"]),
                ("last val bits/byte", summary["last_val_bpb"]),
                ("tokens/s", None if summary["tokens_per_sec"] is None else round(summary["tokens_per_sec"])),
            ],
        )
    )
    if detail["checkpoints"]:
        rows = [[c["step"], c["val_loss"], c["path"]] for c in detail["checkpoints"]]
        console.print(new_table("Checkpoints", ["step", "val loss", "path"], rows))
    for sample in detail["samples"][-3:]:
        console.print()
        console.print(Text(f"Sample at step {sample['step']}", style="bold"))
        console.print(Text(f"{sample['prompt']}{sample['text']}"))
    if detail["probes"]:
        console.print()
        console.print(Text("Probes: each prompt's latest completion (all of them: lmwb runs probes ID)", style="bold"))
        _print_probe_timelines(console, {probe["prompt"]: [probe] for probe in detail["probes"]})


def summarize_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a person asks of a run's metrics: how far, where the loss started and ended, the best eval."""

    def values(key: str) -> list[Any]:
        return [row[key] for row in rows if row.get(key) is not None]

    train_losses, val_losses = values("train_loss"), values("val_loss")
    speeds = values("tokens_per_sec")
    evaluated = [row for row in rows if row.get("val_loss") is not None]
    last_eval = evaluated[-1] if evaluated else {}
    return {
        "logged_steps": len(rows),
        "last_step": rows[-1]["step"] if rows else None,
        "first_train_loss": train_losses[0] if train_losses else None,
        "last_train_loss": train_losses[-1] if train_losses else None,
        "best_val_loss": min(val_losses) if val_losses else None,
        "last_val_loss": last_eval.get("val_loss"),
        "last_val_ppl": last_eval.get("val_ppl"),
        "last_val_bpb": last_eval.get("val_bpb"),
        "tokens_per_sec": speeds[-1] if speeds else None,
    }


def cmd_runs_follow(args: argparse.Namespace) -> int:
    """The live progress of any run on this LMWB_HOME, read from the store; Ctrl+C leaves the run going."""
    from engine.run_process import progress_of
    from engine.store import FINISHED_STATUSES

    store = open_store()
    run = store.get_run(args.run_id)
    last_check = time.monotonic()

    def next_progress(interval: float = 0.25) -> tuple[Any, bool]:
        nonlocal run, last_check
        if leaving.wait(interval):
            return _stored_progress(run, progress_of(run)), True
        if time.monotonic() - last_check > 2.0:  # a run whose process died is marked interrupted
            store.mark_interrupted_runs()
            last_check = time.monotonic()
        run = store.get_run(run.id)
        return _stored_progress(run, progress_of(run)), run.status in FINISHED_STATUSES

    with stop_on_signals(lambda: None) as leaving:
        print(
            f"Following run {run.id} ({run.name}), {run.status}. Ctrl+C stops following; the run goes on.", flush=True
        )
        follow_progress(next_progress, threading.Event())
    if leaving.is_set() and run.status not in FINISHED_STATUSES:
        print(f"Stopped following; run {run.id} goes on. Follow it again: lmwb runs follow {run.id}", flush=True)
        return EXIT_OK
    print_training_summary(store, run, _stored_progress(run, progress_of(run)))
    return EXIT_OK


def _stored_progress(run: Any, progress: Any) -> Any:
    """A run's progress record with its current status (a queued run has none yet; a dead one says so)."""
    from engine.run_process import TrainingProgress

    if progress is None:
        progress = TrainingProgress(step=run.steps, tokens=run.tokens, max_steps=run.config.get("max_steps", 0))
    phase = progress.phase if run.status in ("running", "starting") else run.status
    return dataclasses.replace(progress, status=run.status, phase=phase, message=run.error or progress.message)


def cmd_runs_control(args: argparse.Namespace) -> int:
    """Pause, continue or stop a run (a queued one is cancelled) and wait for its answer."""
    from engine.run_process import ANSWER_TIMEOUT, control_run

    store = open_store()
    doing = {"pause": "pausing", "continue": "continuing", "stop": "stopping"}[args.action]
    with status_spinner(f"Asking run {args.run_id} to {args.action} (it answers between two steps)…") as update:

        def waiting(run: Any) -> None:
            if run.progress and run.progress.get("phase") == "stopping":
                update(f"Run {run.id} is stopping: saving a checkpoint…")
            else:
                update(f"Waiting up to {ANSWER_TIMEOUT:g} s for run {run.id} to answer ({doing})…")

        run = control_run(store, args.run_id, args.action, waiting=waiting)
    if run.status == "cancelled":
        print(f"Cancelled queued run {run.id}; it never started.", flush=True)
    elif run.status == "paused":
        print(f"Run {run.id} paused at step {run.steps}. Continue it with: lmwb runs continue {run.id}", flush=True)
    elif run.status == "running":
        print(f"Run {run.id} continues from step {run.steps}.", flush=True)
    else:
        checkpoints = store.checkpoints(run.id)
        saved = f"; checkpoint {checkpoints[-1]['path']}" if checkpoints else ""
        print(f"Run {run.id} {run.status} at step {run.steps}{saved}.", flush=True)
        if run.status == "stopped":
            print(f"Resume it with: lmwb train --resume {run.id}", flush=True)
    return EXIT_OK


def cmd_runs_delete(args: argparse.Namespace) -> int:
    """Delete a run that is not running, after asking (on a terminal) unless --yes."""
    from engine.store import ACTIVE_STATUSES

    store = open_store()
    run = store.get_run(args.run_id)
    if run.status in ACTIVE_STATUSES:
        raise CommandError(
            f"Run {run.id} is {run.status} (process {run.pid} on {run.host}); stop it first, then delete it."
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"Not deleting run {run.id} without confirmation; pass --yes to delete it.")
        checkpoints = len(store.checkpoints(run.id))
        answer = input(f"Delete run {run.id} ({run.name}, {run.steps} steps, {checkpoints} checkpoints)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.", file=sys.stderr)
            return EXIT_OK
    store.delete_run(run.id)
    print(f"Deleted run {run.id}.", file=sys.stderr)
    return EXIT_OK


def cmd_runs_export(args: argparse.Namespace) -> int:
    """A run's metrics as CSV or JSON, to stdout or a file."""
    store = open_store()
    run = store.get_run(args.run_id)
    text = store.export_run(run.id, args.format)
    if args.output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return EXIT_OK
    _write_text(args.output, text, "--output")
    print(f"Wrote run {run.id} as {args.format} to {args.output}.", file=sys.stderr)
    return EXIT_OK


def cmd_runs_compare(args: argparse.Namespace) -> int:
    """Runs side by side: a table (or JSON), optionally written as CSV or Markdown too."""
    from engine.comparison import compare_runs

    comparison = compare_runs(open_store(), args.run_ids)
    for path, fmt, text in ((args.csv, "CSV", comparison.to_csv), (args.markdown, "Markdown", comparison.to_markdown)):
        if path is not None:
            _write_text(path, text(), "--" + fmt.lower())
            print(f"Wrote the comparison of {len(comparison.runs)} runs as {fmt} to {path}.", file=sys.stderr)
    if args.json:
        print_json(comparison.as_json())
    else:
        print_comparison(comparison)
    return EXIT_OK


def _write_text(path: Path, text: str, flag: str) -> None:
    """Write a file a command was asked for; a path that cannot be written is the user's to change."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise CommandError(f"Cannot write {path}: {error.strerror}. Choose another {flag} path.") from None


def cmd_runs_export_model(args: argparse.Namespace) -> int:
    """A run's checkpoint written as a plain Hugging Face model directory, LoRA adapters merged in."""
    from engine.model_source import ModelSource
    from engine.models import export_model

    store = open_store()
    source = ModelSource("run", store.get_run(args.run_id).id, args.step)
    with status_spinner(f"Exporting {source}…") as update:
        path = export_model(source, args.directory, store=store, progress=update)
    print(
        f"Wrote {source} to {path}; it loads with AutoModelForCausalLM.from_pretrained, or here as --model {path}.",
        file=sys.stderr,
    )
    return EXIT_OK


def _probe_timelines(store: RunStore, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each probe prompt of a run (in the order the run wrote them) with its completions by step: step, text."""
    timelines: dict[str, list[dict[str, Any]]] = {}
    for row in store.probes(run_id):
        timelines.setdefault(row["prompt"], []).append({"step": row["step"], "text": row["text"]})
    return timelines


def _print_probe_timelines(console: Console, timelines: dict[str, list[dict[str, Any]]]) -> None:
    """Each prompt on a line, then its completions a row a step, the words changed since the step before
    highlighted (``lmwb runs probes``, and the latest completions in ``lmwb runs show``)."""
    for prompt, steps in timelines.items():
        console.print(Text(prompt, style="bold"))  # on a line of its own: a table's title folds to the table
        table = Table(show_header=False, box=None)
        table.add_column(justify="right", style="dim", no_wrap=True)
        table.add_column(overflow="fold")
        previous = None
        for step in steps:
            table.add_row(f"step {step['step']:,}", changed_words(previous, step["text"]))
            previous = step["text"]
        console.print(table)


def cmd_runs_probes(args: argparse.Namespace) -> int:
    """Each probe prompt of a run with its completion at every evaluated step (text: what changed highlighted)."""
    store = open_store()
    run = store.get_run(args.run_id)
    timelines = _probe_timelines(store, run.id)
    if args.prompt is not None:
        if args.prompt not in timelines:
            known = "; its prompts: " + ", ".join(map(repr, timelines)) if timelines else ""
            raise CommandError(f"Run {run.id} has no completions of the probe prompt {args.prompt!r}{known}.")
        timelines = {args.prompt: timelines[args.prompt]}
    if args.json:
        print_json({"prompts": [{"prompt": prompt, "steps": steps} for prompt, steps in timelines.items()]})
        return EXIT_OK
    console = stdout_console()
    if not timelines:
        console.print(
            f"Run {run.id} has no probe completions: it was given no probe prompts, or has not evaluated yet. "
            "Give a run some with: lmwb train --probe TEXT (repeatable) or --probe-file FILE."
        )
        return EXIT_OK
    console.print(
        Text.assemble(
            f"Run {run.id} ({run.name}): each probe prompt's completion at every evaluated step; ",
            ("what changed since the step before", CHANGED_STYLE),
            " is highlighted.",
        )
    )
    _print_probe_timelines(console, timelines)
    return EXIT_OK
