"""A training run's progress as `lmwb` shows it, and how the run ended.

Live on a terminal, a line at a time in a pipe or log; then the summary line,
the latest checkpoint and how to resume. Shared by `lmwb train` (following its
own job) and `lmwb runs follow` (any run, read from the store); rich.progress
is imported only while a display is live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from rich.console import Console

from tui.cli.output import stdout_console, table_cell
from tui.widgets.formatting import human_duration

if TYPE_CHECKING:
    from engine.store import RunStore


def print_training_summary(store: RunStore, run: Any, progress: Any) -> None:
    """How the run ended, where its latest checkpoint is, and how to go on."""
    print(
        f"Run {run.id} {run.status} at step {run.steps} · {run.tokens:,} tokens · "
        f"best val loss {table_cell(run.best_val_loss).plain} · {human_duration(progress.elapsed)} of training",
        flush=True,
    )
    if run.status == "stopped" and progress.message:
        print(progress.message, flush=True)
    if run.error and run.status != "stopped":
        print(run.error, flush=True)
    checkpoints = store.checkpoints(run.id)
    if checkpoints:
        print(f"Latest checkpoint: {checkpoints[-1]['path']} (model source: run:{run.id})", flush=True)
    if run.status == "stopped":
        processes = f" --nproc {run.world_size}" if run.world_size > 1 else ""
        steps = run.config.get("max_steps")
        more = "" if steps is None else f" --steps {steps}"  # a run planned on time goes on with its budget
        print(f"Resume with: lmwb train --resume {run.id}{more}{processes}", flush=True)


def follow_training(job: Any, stopping: threading.Event, interval: float = 0.25) -> None:
    """Show a job's progress (``lmwb train`` in the foreground) until its thread ends."""

    def next_progress() -> tuple[Any, bool]:
        ended = job.join(timeout=interval)
        return job.progress, ended

    follow_progress(next_progress, stopping)


def follow_progress(next_progress: Callable[[], tuple[Any, bool]], stopping: threading.Event) -> None:
    """Show progress until it ends: live on a terminal, plain lines in a pipe.

    ``next_progress()`` waits a moment and returns (TrainingProgress, ended).
    ``stopping`` set means the user asked the run to stop: the display says so.
    """
    console = stdout_console()
    if console.is_terminal:
        _follow_live(next_progress, console, stopping)
    else:
        _follow_lines(next_progress, stopping)


class ProgressFields(TypedDict):
    """A progress record's numbers as shown: the live display's task fields, and each line in a pipe."""

    loss: str
    val: str
    speed: str
    eta: str
    gpu: str


def _progress_fields(progress: Any) -> ProgressFields:
    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    return ProgressFields(
        loss=number(progress.train_loss),
        val=number(progress.val_loss),
        speed=f"{progress.tokens_per_sec:,.0f}" if progress.tokens_per_sec else "–",
        eta=human_duration(progress.eta_seconds),
        gpu=("" if progress.gpu_memory_bytes is None else f" · GPU peak {progress.gpu_memory_bytes / 2**30:.1f} GiB")
        + ("" if progress.mfu is None else f" · MFU {progress.mfu:.0%}"),
    )


def _follow_live(next_progress: Callable[[], tuple[Any, bool]], console: Console, stopping: threading.Event) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]} · val {task.fields[val]} · {task.fields[speed]} tok/s · "
            "ETA {task.fields[eta]}{task.fields[gpu]}"
        ),
    )
    with Progress(*columns, console=console, refresh_per_second=4) as display:
        progress, ended = next_progress()
        task = display.add_task(
            progress.phase or progress.status, total=progress.max_steps or None, **_progress_fields(progress)
        )
        plan_shown = False
        while True:
            if progress.message.startswith("Plan:") and not plan_shown:  # how far the time budget will go
                display.console.print(progress.message)
                plan_shown = True
            description = (
                "stopping: saving a checkpoint"
                if stopping.is_set() and not ended
                else progress.phase or progress.status
            )
            display.update(
                task,
                description=description,
                completed=progress.step,
                total=progress.max_steps or None,
                **_progress_fields(progress),
            )
            if ended:
                return
            progress, ended = next_progress()


def _follow_lines(
    next_progress: Callable[[], tuple[Any, bool]], stopping: threading.Event, every_seconds: float = 2.0
) -> None:
    """One line per step (at most every few seconds, but every evaluation), for logs and pipes."""
    last_shown, last_val, last_time, told_stopping, plan_shown = None, None, 0.0, False, False
    ended = False
    while not ended:
        progress, ended = next_progress()
        if progress.message.startswith("Plan:") and not plan_shown:  # how far the time budget will go
            print(progress.message, flush=True)
            plan_shown = True
        training = progress.status in ("running", "paused", *FINISHED_PROGRESS)
        shown = progress.step if training else progress.phase
        due = time.monotonic() - last_time >= every_seconds or progress.val_loss != last_val or ended
        if shown and shown != last_shown and due:
            print(_progress_line(progress) if training else progress.phase, flush=True)
            last_shown, last_val, last_time = shown, progress.val_loss, time.monotonic()
        if stopping.is_set() and not told_stopping and not ended:
            print("Stopping: finishing this step and saving a checkpoint…", flush=True)
            told_stopping = True


# A progress record with one of these statuses describes the end of a run.
FINISHED_PROGRESS = ("completed", "stopped", "failed", "interrupted", "cancelled")


def _progress_line(progress: Any) -> str:
    fields = _progress_fields(progress)
    total = f"≈{progress.max_steps}" if progress.steps_estimated else str(progress.max_steps)
    return (
        f"step {progress.step}/{total} · loss {fields['loss']} · val {fields['val']} · "
        f"{fields['speed']} tok/s · ETA {fields['eta']}{fields['gpu']}"
    )
