"""Concurrency, the long version: trainers write one database for minutes while a reader polls it like the Runs screen.

    .venv/bin/python -m bench.concurrency                 # two headless trainers + the app's job, 3 minutes
    .venv/bin/python -m bench.concurrency --minutes 10
    .venv/bin/python -m bench.concurrency --quick         # a 40-second smoke run

Two (``--trainers``) headless ``lmwb train`` processes and a ``TrainingJob`` in
this process, as the app runs it, train ``scratch:nano`` on the bundled fables
with evaluation, samples and checkpoints on, in one fresh ``LMWB_HOME``, each
until ``--max-time`` stops it with a checkpoint. Meanwhile a reader thread does
what the Runs screen does a few times a second: list the runs, then fetch each
run's metric rows after the last step it has.

At the end it prints, for each run, the rows written (the step count the
trainer itself reports) against the rows found in the database, the steps
missing, and the rows the reader saw; then how long the reader's polls took,
every "database is locked" seen anywhere, and the integrity check. It exits 1
if a row is missing or the database was ever locked.

The short version of this, a few dozen steps, is the test
``test_two_headless_trainers_and_an_app_job_write_at_once_while_the_runs_screen_reads``.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# What every trainer is told; the trainers differ only in their seed.
MODEL, DATASET = "scratch:nano", "fables"
SETTINGS = {
    "batch_size": 4,
    "block_size": 64,
    "warmup_steps": 10,
    "eval_every": 50,
    "eval_batches": 4,
    "sample_every": 100,
    "sample_length": 16,
    "checkpoint_every": 50,
    "vocab_size": 2048,
    "device": "cpu",
}
FLAGS = {
    "batch_size": "--batch-size",
    "block_size": "--block-size",
    "warmup_steps": "--warmup",
    "eval_every": "--eval-every",
    "sample_every": "--sample-every",
    "checkpoint_every": "--checkpoint-every",
    "vocab_size": "--vocab-size",
    "device": "--device",
}
SUMMARY_LINE = re.compile(r"Run (\w+) (\w+) at step (\d+)")
MANY_STEPS = 10_000_000  # the time limit, not the step count, ends every run


@dataclass
class Writer:
    """One trainer and what it says it wrote."""

    label: str
    run_id: str = ""
    status: str = ""
    steps_written: int = 0
    errors: str = ""


class RunsScreenReader(threading.Thread):
    """Polls like the Runs screen: list the runs, then each run's metric rows after the last step seen."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.seen: dict[str, list[int]] = {}
        self.poll_seconds: list[float] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        from engine.store import RunStore

        store = RunStore()
        while not self.stopping.wait(self.interval):
            started = time.perf_counter()
            try:
                for run in store.list_runs():
                    steps = self.seen.setdefault(run.id, [])
                    steps += [row["step"] for row in store.metrics(run.id, after_step=steps[-1] if steps else -1)]
            except Exception as error:  # noqa: BLE001 - a failing read is what this bench looks for
                self.errors.append(f"{type(error).__name__}: {error}")
            self.poll_seconds.append(time.perf_counter() - started)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long every trainer trains (default 3)")
    parser.add_argument("--trainers", type=int, default=2, help="headless lmwb train processes (default 2)")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between the reader's polls (default 0.25)")
    parser.add_argument("--quick", action="store_true", help="40 seconds of training: a smoke run")
    parser.add_argument("--home", type=Path, help="LMWB_HOME to use (default: a new temporary directory)")
    return parser.parse_args()


def headless_trainer(index: int, seconds: float) -> subprocess.Popen:
    flags = [
        "--model",
        MODEL,
        "--dataset",
        DATASET,
        "--steps",
        str(MANY_STEPS),
        "--max-time",
        f"{seconds:g}",
        "--seed",
        str(index),
        "--name",
        f"headless {index}",
    ]
    for name, flag in FLAGS.items():
        flags += [flag, str(SETTINGS[name])]
    # One intra-op thread each: the trainers share the machine's cores.
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "train", *flags],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish_headless(process: subprocess.Popen, writer: Writer) -> None:
    stdout, writer.errors = process.communicate()
    for match in SUMMARY_LINE.finditer(stdout):
        writer.run_id, writer.status, writer.steps_written = match[1], match[2], int(match[3])
    if not writer.run_id:
        writer.errors += f"\n(no summary line; exit status {process.returncode})\n{stdout[-2000:]}"


def main() -> int:
    args = parse_args()
    seconds = 40.0 if args.quick else args.minutes * 60
    home = args.home or Path(tempfile.mkdtemp(prefix="lmwb-concurrency-"))
    os.environ["LMWB_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from engine.datasets import open_dataset
    from engine.models import load_model, quiet_transformers
    from engine.store import RunStore
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    torch.set_num_threads(1)
    quiet_transformers()
    print(
        f"LMWB_HOME={home}; {args.trainers} headless trainers + 1 in-process job, {seconds:g} s each, "
        f"reader every {args.poll:g} s",
        flush=True,
    )
    # Train the scratch tokenizer once, so the trainers start from the cache rather than all at once.
    load_model(MODEL, device="cpu", dataset=open_dataset(DATASET), vocab_size=SETTINGS["vocab_size"])

    reader = RunsScreenReader(interval=args.poll)
    reader.start()
    headless = [
        (headless_trainer(index, seconds), Writer(f"lmwb train #{index}")) for index in range(1, args.trainers + 1)
    ]
    store = RunStore()
    while len(store.list_runs()) < args.trainers:  # let the headless ones get going first
        time.sleep(0.5)
    job = TrainingJob(
        TrainingConfig(
            model=MODEL, dataset=DATASET, max_steps=MANY_STEPS, max_time=seconds, seed=0, name="in the app", **SETTINGS
        ),
        store=RunStore(),
    )
    app_writer = Writer("app TrainingJob", run_id=job.start())
    job.join()
    app_writer.status, app_writer.steps_written = job.progress.status, job.progress.step
    app_writer.errors = "" if job.error is None else f"{type(job.error).__name__}: {job.error}"
    for process, writer in headless:
        finish_headless(process, writer)
    time.sleep(3 * args.poll)  # a last poll after the last write
    reader.stopping.set()
    reader.join()

    writers = [writer for _, writer in headless] + [app_writer]
    return report(writers, reader, store, home / "workbench.db")


def report(writers: list[Writer], reader: RunsScreenReader, store, database: Path) -> int:
    """Print rows written against rows found; return 1 if anything was lost or locked."""
    print(
        f"\n{'run':10} {'writer':18} {'status':10} {'rows written':>12} {'rows found':>11} {'missing':>8} "
        f"{'reader saw':>11}"
    )
    lost = 0
    for writer in writers:
        found = [row["step"] for row in store.metrics(writer.run_id)] if writer.run_id else []
        missing = len(set(range(1, writer.steps_written + 1)) - set(found))
        seen = reader.seen.get(writer.run_id, [])
        in_order = seen == sorted(set(seen))
        lost += missing + (len(found) != writer.steps_written) + (not in_order)
        print(
            f"{writer.run_id:10} {writer.label:18} {writer.status:10} {writer.steps_written:>12} {len(found):>11} "
            f"{missing:>8} {len(seen):>11}{'' if in_order else '  (out of order or repeated!)'}"
        )

    polls = sorted(reader.poll_seconds)
    if polls:
        print(
            f"\nreader: {len(polls)} polls; per poll median {statistics.median(polls) * 1000:.1f} ms, "
            f"p99 {polls[int(len(polls) * 0.99) - 1] * 1000:.1f} ms, max {polls[-1] * 1000:.1f} ms"
        )
    messages = [writer.errors for writer in writers] + reader.errors
    locked = sum(message.count("locked") for message in messages)
    print(f"'database is locked': {locked}")
    for writer in writers:
        if writer.errors.strip():
            print(f"{writer.label} said:\n{writer.errors.strip()[-1500:]}")
    for error in reader.errors[:5]:
        print(f"reader: {error}")
    with sqlite3.connect(database) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    print(f"integrity_check: {integrity}")
    ok = (
        lost == 0
        and locked == 0
        and not reader.errors
        and integrity == "ok"
        and all(writer.status in ("stopped", "completed") for writer in writers)
    )
    print("OK: every row written was found, nothing was locked" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
