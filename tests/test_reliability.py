"""Reliability: a kill -9, a crash mid-write or a crowd of writers never loses a run.

Every test here runs real processes against the real database in the test's
private LMWB_HOME, and kills them with SIGKILL, which no code can catch or
clean up after: what survives is what the design guarantees.

The moments of a kill are made exact with SIGSTOP: the trainer is frozen,
the test checks that it is where it should be (a checkpoint's temporary
directory exists; the database's write lock is held), and only then is it
killed. A freeze that lands elsewhere is thawed and tried again.

What must hold after every kill:
  1. the database passes ``PRAGMA integrity_check``;
  2. the next ``lmwb`` start marks the run ``interrupted``;
  3. every checkpoint the store lists loads (weights and trainer state), and
     after the resume no temporary or unrecorded checkpoint directory is left;
  4. ``lmwb train --resume ID --steps N`` continues from the last checkpoint
     and the run's losses, step by step, are those of a run never killed.

The killed trainers are real processes; the resume and the never-killed
reference run the same command line code (``tui.cli.main``) in the test's
process, which spares two torch start-ups per test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine.store import RunStore, process_alive
from tests.conftest import REPO_ROOT, lmwb_command
from tui.cli import main

TOTAL_STEPS = 60
# One intra-op thread per trainer: several trainers share few cores here, and
# the never-killed reference run must do its sums the same way.
TRAINER_THREADS = "1"


def training_flags(model: Path, dataset: Path, *, checkpoint_every: int) -> list[str]:
    """`lmwb train` flags for a short run of the tiny model (which has dropout: random state matters)."""
    return [
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--steps",
        str(TOTAL_STEPS),
        "--batch-size",
        "4",
        "--block-size",
        "32",
        "--lr",
        "3e-3",
        "--min-lr",
        "3e-4",
        "--warmup",
        "2",
        "--eval-every",
        "20",
        "--checkpoint-every",
        str(checkpoint_every),
        "--seed",
        "7",
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def never_killed(tmp_path_factory, tiny_model_dir, fables_excerpt) -> list[dict]:
    """The metrics of the same run trained start to finish by `lmwb train` (in this process), never killed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMWB_HOME", str(tmp_path_factory.mktemp("never-killed-home")))
        with one_torch_thread():
            assert main(["train", *training_flags(tiny_model_dir, fables_excerpt, checkpoint_every=20)]) == 0
        [run] = RunStore().list_runs()
        assert run.status == "completed"
        return RunStore().metrics(run.id)


@contextlib.contextmanager
def one_torch_thread():
    """Train in this process with the trainers' thread count, so sums are done the same way."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(TRAINER_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """Whatever a test started is killed when it ends, even when it fails half way (frozen ones too)."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def started(process: subprocess.Popen) -> subprocess.Popen:
    STARTED.append(process)
    return process


def start_training(*flags: str) -> tuple[subprocess.Popen, str]:
    """Start a real `lmwb train` process; return it and the run id it prints first."""
    process = started(
        subprocess.Popen(
            lmwb_command("train", *flags),
            cwd=REPO_ROOT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": TRAINER_THREADS},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    first_line = process.stdout.readline()
    if not first_line.startswith(("Started run", "Resuming run")):
        process.kill()
        raise AssertionError(f"lmwb train did not start: {first_line}{process.communicate()[1]}")
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
    return process, first_line.split()[2].rstrip(":")


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a process; return what it wrote to stderr."""
    process.wait(timeout=timeout)
    return process.stderr.read()


def wait_for(condition, timeout: float = 120.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def database() -> Path:
    return Path(os.environ["LMWB_HOME"]) / "workbench.db"


def integrity() -> str:
    connection = sqlite3.connect(database())
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()


def write_lock_held() -> bool:
    """Whether another process holds the database's write lock right now (never waits for it)."""
    connection = sqlite3.connect(database(), timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        assert "locked" in str(error) or "busy" in str(error), error
        return True
    finally:
        connection.close()


def kill_when(process: subprocess.Popen, caught, tries: int = 20_000) -> None:
    """Freeze the process, and kill it -9 if ``caught()`` holds while frozen; else thaw it and try again."""
    rng = random.Random(0)
    for _ in range(tries):
        assert process.poll() is None, "the trainer finished before the moment came"
        os.kill(process.pid, signal.SIGSTOP)
        if caught():
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.004))
    raise AssertionError("never caught the trainer at that moment")


def checkpoints_dir(run_id: str) -> Path:
    return Path(os.environ["LMWB_HOME"]) / "runs" / run_id / "checkpoints"


def assert_recovers_like_a_run_never_killed(run_id: str, never_killed: list[dict], capsys) -> None:
    """The four guarantees of this module's docstring, checked in the order a user meets them."""
    from transformers import AutoModelForCausalLM

    from engine.checkpoints import load_trainer_state

    assert integrity() == "ok"
    assert RunStore().get_run(run_id).status == "running"  # nobody has looked yet
    assert main(["runs", "--json"]) == 0  # the next lmwb start sweeps
    capsys.readouterr()
    interrupted = RunStore().get_run(run_id)
    assert interrupted.status == "interrupted"
    assert "ended without finishing" in interrupted.error

    recorded = RunStore().checkpoints(run_id)
    assert recorded, "the kill came before the first checkpoint; nothing to resume"
    for checkpoint in recorded:
        path = Path(checkpoint["path"])
        assert AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).num_parameters() > 0
        assert load_trainer_state(path)["step"] == checkpoint["step"]

    with one_torch_thread():  # the command line's own code, in this process: no second torch start-up
        # (checkpoints every 20 steps from here: a resume may change how often it saves, not what it learns)
        assert main(["train", "--resume", run_id, "--steps", str(TOTAL_STEPS), "--checkpoint-every", "20"]) == 0
    printed = capsys.readouterr().out
    assert f"Resuming run {run_id}" in printed and "completed" in printed

    run = RunStore().get_run(run_id)
    assert (run.status, run.steps) == ("completed", TOTAL_STEPS)
    on_disk = sorted(path.name for path in checkpoints_dir(run_id).iterdir())
    assert on_disk == sorted(Path(row["path"]).name for row in RunStore().checkpoints(run_id))
    assert integrity() == "ok"

    got = RunStore().metrics(run_id)
    assert [row["step"] for row in got] == list(range(1, TOTAL_STEPS + 1))
    for column in ("train_loss", "lr", "grad_norm", "tokens"):
        assert [row[column] for row in got] == pytest.approx([row[column] for row in never_killed], rel=1e-4), column
    evaluated = [row["step"] for row in never_killed if row["val_loss"] is not None]
    assert [got[step - 1]["val_loss"] for step in evaluated] == pytest.approx(
        [never_killed[step - 1]["val_loss"] for step in evaluated], rel=1e-4
    )


# -----------------------------------------------------------------------------
# kill -9 of `lmwb train`


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_leaves_no_half_checkpoint(
    tiny_model_dir, fables_excerpt, never_killed, capsys
):
    process, run_id = start_training(*training_flags(tiny_model_dir, fables_excerpt, checkpoint_every=3))
    store = RunStore()
    wait_for(lambda: store.checkpoints(run_id), what="the first checkpoint")
    store.close()

    def writing_a_checkpoint() -> bool:
        return any(path.name.startswith(".tmp-") for path in checkpoints_dir(run_id).iterdir())

    kill_when(process, writing_a_checkpoint)
    assert writing_a_checkpoint()  # the half-written checkpoint is there, under its temporary name
    assert all(not Path(row["path"]).name.startswith(".tmp-") for row in RunStore().checkpoints(run_id))
    assert_recovers_like_a_run_never_killed(run_id, never_killed, capsys)
    assert not any(path.name.startswith(".tmp-") for path in checkpoints_dir(run_id).iterdir())


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_database_write_loses_nothing_committed(
    tiny_model_dir, fables_excerpt, never_killed, capsys
):
    # A checkpoint every step means a metrics flush, a heartbeat and a checkpoint record every step.
    process, run_id = start_training(*training_flags(tiny_model_dir, fables_excerpt, checkpoint_every=1))
    store = RunStore()
    wait_for(lambda: len(store.metrics(run_id)) >= 5, what="5 steps")
    store.close()
    kill_when(process, write_lock_held)
    assert not write_lock_held()  # the lock died with the process
    assert_recovers_like_a_run_never_killed(run_id, never_killed, capsys)


# A small script that runs the real app (headless, as its own tests do), starts a
# run from the Train screen's form, and keeps the app running until it is killed.
APP_WITH_A_RUN_GOING = textwrap.dedent("""
    import asyncio, json, sys
    from tui.app import WorkbenchApp
    from tui.widgets.config_form import ConfigForm

    async def main(settings):
        app = WorkbenchApp()
        async with app.run_test(size=(100, 32)) as pilot:
            await pilot.press("4")
            while not (app.screen.query("#config") and app.screen.query_one("#config").is_mounted):
                await pilot.pause(0.05)
            form = app.screen.query_one("#config", ConfigForm)
            form.set_values(settings)
            assert form.errors == {}, form.errors
            assert form.settings().max_steps == settings["max_steps"]  # the form holds them, fields and all
            await pilot.press("ctrl+r")
            while app.screen.run_id is None:
                await pilot.pause(0.05)
            print("Started run", app.screen.run_id, flush=True)
            while True:
                await pilot.pause(0.1)

    asyncio.run(main(json.loads(sys.argv[1])))
""")


@pytest.mark.slow
def test_kill_9_of_the_app_leaves_its_run_going_and_kill_9_of_the_run_resumes_it_exactly(
    tiny_model_dir, fables_excerpt, never_killed, capsys
):
    # The form holds what training_flags() gives `lmwb train`; every other field keeps its default.
    form = {
        "model": str(tiny_model_dir),
        "dataset": str(fables_excerpt),
        "max_steps": TOTAL_STEPS,
        "batch_size": 4,
        "block_size": 32,
        "learning_rate": 3e-3,
        "min_learning_rate": 3e-4,
        "warmup_steps": 2,
        "eval_every": 20,
        "checkpoint_every": 10,
        "seed": 7,
        "device": "cpu",
    }
    app = started(
        subprocess.Popen(
            [sys.executable, "-c", APP_WITH_A_RUN_GOING, json.dumps(form)],
            cwd=REPO_ROOT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": TRAINER_THREADS},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    first_line = app.stdout.readline()
    assert first_line.startswith("Started run"), first_line + app.communicate()[1]
    run_id = first_line.split()[2]
    store = RunStore()
    # The first checkpoint, not a count of metrics: those are flushed once a
    # second, and on a quiet machine the whole run can finish inside one flush.
    wait_for(lambda: store.checkpoints(run_id), what="the run's first checkpoint")
    # Frozen at once, so the kills land mid-run however fast this machine trains
    # the tiny model (all 60 steps can take half a second).
    run = store.get_run(run_id)
    os.kill(run.pid, signal.SIGSTOP)
    app.kill()
    app.wait(timeout=30)
    # The run is a process of its own, in a session of its own: the app's death does not reach it.
    assert run.pid != app.pid and process_alive(run.pid, run.process_start)
    assert store.get_run(run_id).status == "running"
    os.kill(run.pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(run.pid, run.process_start), what="the run's process to die")
    assert len(store.metrics(run_id)) < TOTAL_STEPS
    assert_recovers_like_a_run_never_killed(run_id, never_killed, capsys)


# -----------------------------------------------------------------------------
# kill -9 of a process writing metric batches, many times over (no torch: fast)

METRICS_WRITER = textwrap.dedent("""
    import sys
    from engine.store import RunStore

    store = RunStore()
    run_id, step, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store.set_status(run_id, "running")
    while True:
        store.add_metrics(run_id, [{"step": step + i, "train_loss": 1 / (step + i), "lr": 1e-3}
                                   for i in range(1, batch + 1)])
        step += batch
        store.heartbeat(run_id, steps=step, tokens=step * 128)
        print(step, flush=True)
""")


def test_kill_9_mid_metrics_batch_keeps_every_committed_batch_whole():
    """Kill a writer at random moments, many times: batches are all or nothing, committed ones all there."""
    batch, rng = 40, random.Random(6)
    store = RunStore()
    run_id = store.create_run(name="killed often", model="scratch:nano", dataset="fables", config={}).id
    last_step = 0
    for _ in range(6):
        writer = started(
            subprocess.Popen(
                [sys.executable, "-c", METRICS_WRITER, run_id, str(last_step), str(batch)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        acknowledged = [int(writer.stdout.readline()) for _ in range(rng.randint(1, 4))][-1]
        time.sleep(rng.uniform(0, 0.003))
        writer.kill()
        writer.wait(timeout=30)

        assert integrity() == "ok"
        steps = [row["step"] for row in store.metrics(run_id)]
        assert steps == list(range(1, len(steps) + 1))  # no gaps, no torn batch
        assert len(steps) % batch == 0 and len(steps) >= acknowledged
        assert RunStore().mark_interrupted_runs() == [run_id]
        last_step = len(steps)
    assert store.get_run(run_id).status == "interrupted"


# -----------------------------------------------------------------------------
# Many writers at once


class RunsScreenReader(threading.Thread):
    """Polls the store the way the Runs screen does: the list of runs, then each run's new metric rows."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.seen: dict[str, list[int]] = {}
        self.errors: list[str] = []
        self.polls = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        store = RunStore()
        try:
            while not self._stopping.wait(self.interval):
                for run in store.list_runs():
                    steps = self.seen.setdefault(run.id, [])
                    steps += [row["step"] for row in store.metrics(run.id, after_step=steps[-1] if steps else -1)]
                self.polls += 1
        except Exception as error:  # noqa: BLE001 - any failure of a reader is the finding
            self.errors.append(f"{type(error).__name__}: {error}")
        finally:
            store.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)


@pytest.mark.slow
def test_two_headless_trainers_and_an_app_job_write_at_once_while_the_runs_screen_reads(tiny_model_dir, fables_excerpt):
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    reader = RunsScreenReader()
    reader.start()
    # The headless trainers are given more steps than they need: they train until the app's job is done.
    flags = [*training_flags(tiny_model_dir, fables_excerpt, checkpoint_every=10), "--steps", "100000"]
    headless = [start_training(*flags, "--name", f"headless {n}") for n in (1, 2)]
    store = RunStore()
    wait_for(lambda: all(store.metrics(run_id) for _, run_id in headless), what="both headless trainers")

    app_config = TrainingConfig(
        model=str(tiny_model_dir),
        dataset=str(fables_excerpt),
        max_steps=20,
        batch_size=4,
        block_size=32,
        warmup_steps=2,
        eval_every=5,
        checkpoint_every=5,
        sample_every=10,
        sample_length=8,
        device="cpu",
        name="in the app",
    )
    with one_torch_thread():
        job = TrainingJob(app_config, store=RunStore())
        app_run_id = job.start()
        assert job.join(timeout=600) and job.error is None
    assert all(process.poll() is None for process, _ in headless), "a headless trainer stopped early"
    for process, _ in headless:
        process.send_signal(signal.SIGTERM)  # stops cleanly, with a checkpoint
    errors = [finish(process) for process, _ in headless]
    # One last poll sees the final rows: the poll under way now may have read before they were written,
    # the one after it began after the last write (a reader that failed stops polling: its error is the finding).
    polls_after_the_last_write = reader.polls + 2
    wait_for(
        lambda: reader.polls >= polls_after_the_last_write or not reader.is_alive(),
        timeout=60,
        what="a poll of the Runs screen reader begun after the last write",
    )
    reader.stop()

    assert reader.errors == [] and reader.polls > 10
    assert not any("locked" in error for error in errors), errors
    assert all(process.returncode == 0 for process, _ in headless), errors
    runs = {run.id: run for run in store.list_runs()}
    assert runs[app_run_id].status == "completed" and runs[app_run_id].steps == 20
    for _, run_id in headless:
        assert runs[run_id].status == "stopped"
        # the two were training the whole time the app's job was
        assert (
            runs[run_id].started_at
            < runs[app_run_id].started_at
            < runs[app_run_id].finished_at
            < runs[run_id].finished_at
        )
    for run_id, run in runs.items():
        every_step = list(range(1, run.steps + 1))
        assert [row["step"] for row in store.metrics(run_id)] == every_step, run.name  # none lost
        assert reader.seen[run_id] == every_step, run.name  # each seen once, in order, while it was written
