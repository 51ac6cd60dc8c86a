"""Training, as a user meets it: pick a model and some text, train, watch the run in the store.

Real tiny GPT-2 models (built by conftest), real text files, a real database
in the test's private LMWB_HOME. Runs are a few dozen steps of a 2-layer,
32-wide model, so each test takes about a second.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.checkpoints import TRAINER_STATE_FILE, checkpoints_to_remove
from engine.datasets import VALIDATION_FRACTION, open_dataset, tokenize_dataset
from engine.errors import DatasetError, SettingsError, TrainingError
from engine.evaluation import evaluate
from engine.home import run_dir
from engine.schedule import configure_optimizer, get_lr
from engine.store import RunStore
from engine.training import TrainingJob, failure_message, largest_fitting_batch
from engine.training_config import TrainingConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread; on a shared machine, threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store() -> RunStore:
    return RunStore()


def settings(model: Path | str, dataset: Path, **overrides) -> TrainingConfig:
    """Small, fast settings for the tiny model; evaluation, samples and periodic checkpoints off."""
    values = dict(
        model=str(model),
        dataset=str(dataset),
        max_steps=20,
        batch_size=4,
        block_size=32,
        learning_rate=3e-3,
        min_learning_rate=3e-4,
        warmup_steps=2,
        eval_every=0,
        eval_batches=2,
        sample_every=0,
        checkpoint_every=0,
        device="cpu",
        seed=7,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def stop_at(step: int):
    """A progress callback that stops its job once the job reports `step`."""

    def callback(progress) -> None:
        if progress.step >= step and progress.status == "running":
            job_holder[0].stop()

    job_holder: list[TrainingJob] = []
    return callback, job_holder


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -----------------------------------------------------------------------------
# A run from start to finish


def test_fine_tuning_lowers_the_loss_and_records_everything(tiny_model_dir, fables_excerpt, store):
    config = settings(
        tiny_model_dir,
        fables_excerpt,
        max_steps=50,
        eval_every=25,
        sample_every=25,
        checkpoint_every=25,
        sample_prompt="The fox",
        sample_length=8,
    )
    job = TrainingJob(config, store)
    run = job.run()

    assert run.status == "completed" and run.error is None
    assert run.steps == 50 and run.tokens == 50 * 4 * 32
    assert job.progress.status == "completed" and job.progress.step == 50
    assert job.progress.gpu_memory_bytes is None  # trained on the CPU

    rows = store.metrics(run.id)
    assert [row["step"] for row in rows] == list(range(1, 51))
    for row in rows:
        assert row["lr"] > 0 and row["grad_norm"] > 0 and row["tokens_per_sec"] > 0
        assert row["tokens"] == row["step"] * 4 * 32 and row["elapsed"] > 0
    losses = [row["train_loss"] for row in rows]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5

    evaluated = [row for row in rows if row["val_loss"] is not None]
    assert [row["step"] for row in evaluated] == [25, 50]
    tokens = tokenize_dataset(open_dataset(str(fables_excerpt)), AutoTokenizer.from_pretrained(tiny_model_dir))
    val_split = tokens.split(0.1)[1]
    for row in evaluated:
        assert row["val_ppl"] == pytest.approx(math.exp(row["val_loss"]))
        assert row["val_bpb"] == pytest.approx(row["val_loss"] / math.log(2) * len(val_split.ids) / val_split.num_bytes)
    assert run.best_val_loss == pytest.approx(min(row["val_loss"] for row in evaluated))

    samples = store.samples(run.id)
    assert [(s["step"], s["prompt"]) for s in samples] == [(25, "The fox"), (50, "The fox")]
    assert all(s["text"] for s in samples)

    checkpoints = store.checkpoints(run.id)
    assert [c["step"] for c in checkpoints] == [25, 50]
    assert [c["val_loss"] for c in checkpoints] == [row["val_loss"] for row in evaluated]
    on_disk = sorted(p.name for p in (run_dir(run.id) / "checkpoints").iterdir())
    assert on_disk == ["step-25", "step-50"]


def test_a_checkpoint_is_a_plain_hugging_face_model_with_the_same_logits(tiny_model_dir, fables_excerpt, store):
    job = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=6), store)
    run = job.run()
    checkpoint = Path(store.checkpoints(run.id)[-1]["path"])
    assert checkpoint.name == "step-6"

    reloaded = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = torch.tensor([tokenizer.encode("The crow said to the fox")])
    job.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, job.model(ids).logits)

    state = torch.load(checkpoint / TRAINER_STATE_FILE, weights_only=True)
    assert state["step"] == 6 and state["config"]["max_steps"] == 6


def test_a_scratch_model_first_trains_its_tokenizer_on_the_dataset(fables_excerpt, store):
    messages: list[str] = []
    config = settings("scratch:nano", fables_excerpt, max_steps=5, vocab_size=400)
    run = TrainingJob(config, store, on_progress=lambda p: messages.append(p.message)).run()

    assert run.status == "completed"
    assert any("tokenizer" in message.lower() for message in messages)
    checkpoint = Path(store.checkpoints(run.id)[-1]["path"])
    assert len(AutoTokenizer.from_pretrained(checkpoint)) <= 400
    assert AutoModelForCausalLM.from_pretrained(checkpoint).config.n_embd == 96


def test_epochs_set_the_number_of_steps(tiny_model_dir, fables_excerpt, store):
    config = settings(tiny_model_dir, fables_excerpt, epochs=0.5)
    job = TrainingJob(config, store)
    run = job.run()
    tokens = tokenize_dataset(open_dataset(str(fables_excerpt)), AutoTokenizer.from_pretrained(tiny_model_dir))
    train_tokens = len(tokens.split(0.1)[0].ids)
    assert run.steps == math.ceil(0.5 * train_tokens / (4 * 32)) == job.progress.max_steps


# -----------------------------------------------------------------------------
# Stopping, pausing, resuming


def test_stop_and_pause_from_another_thread(tiny_model_dir, fables_excerpt, store):
    job = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=100_000), store)
    run_id = job.start()
    wait_for(lambda: job.progress.step >= 2)

    job.pause()
    wait_for(lambda: job.progress.status == "paused")
    assert store.get_run(run_id).status == "paused"
    paused_at = job.progress.step
    time.sleep(0.3)
    assert job.progress.step == paused_at

    job.resume()
    wait_for(lambda: job.progress.step > paused_at + 2)
    assert store.get_run(run_id).status == "running"

    job.stop()
    assert job.join(timeout=60)
    run = store.get_run(run_id)
    assert run.status == "stopped" and job.progress.status == "stopped"
    assert store.checkpoints(run_id)[-1]["step"] == job.progress.step == run.steps
    assert store.metrics(run_id)[-1]["step"] == run.steps


class StatusWatchingStore(RunStore):
    """A real store that notes the progress a run's record holds at the moment its status changes."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_at_status: dict[str, dict] = {}

    def set_status(self, run_id: str, status, error: str | None = None) -> None:
        self.progress_at_status[status] = self.get_run(run_id).progress
        super().set_status(run_id, status, error=error)


@pytest.mark.parametrize("ending", ["completed", "stopped"])
def test_a_run_writes_its_last_progress_before_its_final_status(tiny_model_dir, fables_excerpt, ending):
    """Whoever sees the run end (the Train screen, `lmwb runs follow`) sees its last step, not the one before."""
    store = StatusWatchingStore()
    time_limit = {"max_steps": 100_000, "max_time": 0.5} if ending == "stopped" else {"max_steps": 6}
    run = TrainingJob(settings(tiny_model_dir, fables_excerpt, **time_limit), store).run()
    assert run.status == ending
    assert store.progress_at_status[ending]["step"] == run.steps > 0


def test_max_time_stops_the_run_with_a_checkpoint(tiny_model_dir, fables_excerpt, store):
    job = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=100_000, max_time=0.5), store)
    run = job.run()
    assert run.status == "stopped"
    assert "Time limit" in job.progress.message
    assert store.checkpoints(run.id)[-1]["step"] == run.steps > 0


BUDGET = 12.0  # seconds: long enough that the tiny model takes well over the old default of 200 steps


def planned_on_time(model: Path, dataset: Path, **overrides) -> TrainingConfig:
    """A run planned on time: no max_steps, a budget, an evaluation and a checkpoint along the way."""
    values = dict(max_steps=None, max_time=BUDGET, eval_every=100, checkpoint_every=150, warmup_steps=10)
    return settings(model, dataset, **{**values, **overrides})


def test_a_run_planned_on_time_spends_its_budget_and_ends_at_the_minimum_rate(tiny_model_dir, fables_excerpt, store):
    job = TrainingJob(planned_on_time(tiny_model_dir, fables_excerpt), store)
    run = job.run()
    assert run.status == "completed", run.error
    assert "budget" in job.progress.message
    assert (job.progress.max_steps, job.progress.steps_estimated) == (run.steps, False)
    assert abs(job.progress.elapsed - BUDGET) <= 0.1 * BUDGET  # the final evaluation and checkpoint included
    metrics = store.metrics(run.id)
    elapsed = metrics[-1]["elapsed"]  # training time: steps, evaluations and checkpoints
    assert abs(elapsed - BUDGET) <= 0.1 * BUDGET, elapsed
    assert run.steps > 200
    config = job.config
    assert metrics[-1]["lr"] == pytest.approx(config.min_learning_rate, abs=0.02 * config.learning_rate)
    assert max(row["lr"] for row in metrics) == pytest.approx(config.learning_rate, rel=0.01)
    rates = [row["lr"] for row in metrics if row["step"] > config.warmup_steps]
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates))  # decays all the way
    last = metrics[-1]
    assert last["val_loss"] is not None  # the final evaluation
    assert store.checkpoints(run.id)[-1]["step"] == run.steps  # and the final checkpoint


def test_a_run_planned_on_time_resumes_for_the_rest_of_its_budget(tiny_model_dir, fables_excerpt, store):
    config = planned_on_time(tiny_model_dir, fables_excerpt)
    stop_at_50, holder = stop_at(50)
    first = TrainingJob(config, store, on_progress=stop_at_50)
    holder.append(first)
    stopped = first.run()
    assert stopped.status == "stopped" and stopped.steps == 50
    spent = store.metrics(stopped.id)[-1]["elapsed"]

    resumed_job = TrainingJob(config, store, resume_run=stopped.id)
    resumed = resumed_job.run()
    assert resumed.status == "completed" and resumed.steps > 50
    metrics = store.metrics(resumed.id)
    assert metrics[-1]["elapsed"] == pytest.approx(BUDGET, rel=0.1)  # the budget counts both sessions
    assert metrics[-1]["elapsed"] - spent < BUDGET
    assert metrics[-1]["lr"] == pytest.approx(config.min_learning_rate, abs=0.02 * config.learning_rate)

    smaller = dataclasses.replace(config, max_time=spent)  # a budget already spent
    with pytest.raises(SettingsError, match="max_time"):
        TrainingJob(smaller, store, resume_run=resumed.id).run()


def test_a_run_planned_on_time_ends_after_max_epochs_annealed_and_resumes_only_with_more(
    tiny_model_dir, fables_excerpt, store
):
    """Small data, a long budget: the run ends once it has made its passes over the data, at the minimum rate."""
    config = planned_on_time(tiny_model_dir, fables_excerpt, max_time=600, max_epochs=2)
    job = TrainingJob(config, store)
    run = job.run()
    assert run.status == "completed", run.error
    tokens = tokenize_dataset(open_dataset(str(fables_excerpt)), AutoTokenizer.from_pretrained(tiny_model_dir))
    train_tokens = len(tokens.split(VALIDATION_FRACTION, by=config.split_by)[0].ids)
    assert run.steps == config.epoch_cap_steps(train_tokens) == math.ceil(2 * train_tokens / (4 * 32))
    assert job.progress.message.startswith("Completed 2 passes over its data (max_epochs) in ")
    metrics = store.metrics(run.id)
    assert metrics[-1]["elapsed"] < 60  # far short of the 600 s budget
    assert metrics[-1]["lr"] == pytest.approx(config.min_learning_rate, abs=0.02 * config.learning_rate)
    rates = [row["lr"] for row in metrics if row["step"] > config.warmup_steps]
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates))
    assert store.checkpoints(run.id)[-1]["step"] == run.steps and metrics[-1]["val_loss"] is not None

    with pytest.raises(SettingsError, match="max_epochs") as refused:  # more time alone cannot go on
        TrainingJob(dataclasses.replace(config, max_time=900), store, resume_run=run.id).run()
    assert "give a larger max_epochs" in str(refused.value)
    resumed = TrainingJob(dataclasses.replace(config, max_epochs=3), store, resume_run=run.id).run()
    assert resumed.status == "completed" and resumed.steps == math.ceil(3 * train_tokens / (4 * 32))

    # A warmup longer than the passes would end the run before its rate ever decays: refused, saying why.
    too_short = dataclasses.replace(config, max_epochs=0.01, warmup_steps=10)
    with pytest.raises(SettingsError, match="warmup_steps") as refused:
        TrainingJob(too_short, store).run()
    assert "steps of the run (0.01 passes over this data)" in str(refused.value)


def test_a_resumed_run_matches_one_that_was_never_stopped(tiny_model_dir, fables_excerpt, store):
    # The tiny model has dropout on, so this also checks that random state resumes.
    config = settings(tiny_model_dir, fables_excerpt, max_steps=16, eval_every=4)
    whole = TrainingJob(config, store).run()

    stop_after_7, holder = stop_at(7)
    first_part = TrainingJob(config, store, on_progress=stop_after_7)
    holder.append(first_part)
    stopped = first_part.run()
    assert stopped.status == "stopped" and stopped.steps == 7
    assert [c["step"] for c in store.checkpoints(stopped.id)] == [7]

    resumed = TrainingJob(config, store, resume_run=stopped.id).run()
    assert resumed.id == stopped.id and resumed.status == "completed" and resumed.steps == 16

    expected, got = store.metrics(whole.id), store.metrics(resumed.id)
    assert [row["step"] for row in got] == list(range(1, 17))
    for column in ("train_loss", "lr", "grad_norm", "tokens"):
        assert [row[column] for row in got] == pytest.approx([row[column] for row in expected], rel=1e-5), column
    evaluated = [row["step"] for row in expected if row["val_loss"] is not None]
    assert evaluated == [4, 8, 12, 16]
    assert [got[step - 1]["val_loss"] for step in evaluated] == pytest.approx(
        [expected[step - 1]["val_loss"] for step in evaluated], rel=1e-5
    )


def test_resume_refuses_a_corrupt_trainer_state_and_cleans_up_leftovers(tiny_model_dir, fables_excerpt, store):
    config = settings(tiny_model_dir, fables_excerpt, max_steps=4)
    run = TrainingJob(config, store).run()
    checkpoints_dir = run_dir(run.id) / "checkpoints"
    (checkpoints_dir / "step-9").mkdir()  # renamed into place by a process killed before recording it
    state_file = checkpoints_dir / "step-4" / TRAINER_STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[:200])

    with pytest.raises(TrainingError, match="corrupt or truncated") as caught:
        TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=8), store, resume_run=run.id).run()
    assert str(checkpoints_dir / "step-4") in str(caught.value)
    assert sorted(p.name for p in checkpoints_dir.iterdir()) == ["step-4"]


def test_a_new_run_sweeps_away_checkpoint_writes_of_killed_processes(tiny_model_dir, fables_excerpt, store):
    earlier = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=2), store).run()
    checkpoints_dir = run_dir(earlier.id) / "checkpoints"
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    abandoned = checkpoints_dir / f".tmp-step-9-{dead_pid}"
    being_written = checkpoints_dir / f".tmp-step-9-{os.getpid()}"
    abandoned.mkdir()
    being_written.mkdir()

    TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=2), store).run()
    assert not abandoned.exists() and being_written.exists()


def test_resume_needs_a_total_beyond_the_checkpoint(tiny_model_dir, fables_excerpt, store):
    config = settings(tiny_model_dir, fables_excerpt, max_steps=4)
    run = TrainingJob(config, store).run()
    with pytest.raises(SettingsError) as caught:
        TrainingJob(config, store, resume_run=run.id).run()
    assert caught.value.field == "max_steps" and "already at step 4" in str(caught.value)


def test_a_run_resumes_from_a_workbench_home_that_was_moved(tiny_model_dir, fables_excerpt, lmwb_home, monkeypatch):
    run = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=4), RunStore()).run()
    moved = lmwb_home.with_name("moved-home")
    lmwb_home.rename(moved)
    monkeypatch.setenv("LMWB_HOME", str(moved))

    store = RunStore()
    resumed = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=6), store, resume_run=run.id).run()
    assert resumed.status == "completed" and resumed.steps == 6
    assert [c["step"] for c in store.checkpoints(run.id)] == [4, 6]
    assert all(Path(c["path"]).is_dir() and Path(c["path"]).is_relative_to(moved) for c in store.checkpoints(run.id))


# -----------------------------------------------------------------------------
# Failures


def test_a_run_that_raises_is_failed_with_its_message(tiny_model_dir, fables_excerpt, store):
    def failing_at_step_3(progress) -> None:
        if progress.step == 3:
            raise RuntimeError("the disk caught fire")

    job = TrainingJob(settings(tiny_model_dir, fables_excerpt), store, on_progress=failing_at_step_3)
    with pytest.raises(RuntimeError, match="the disk caught fire"):
        job.run()
    run = store.get_run(job.run_id)
    assert run.status == "failed" and run.error == "RuntimeError: the disk caught fire"
    assert [row["step"] for row in store.metrics(run.id)] == [1, 2, 3]
    assert job.progress.status == "failed"


def test_a_failure_in_a_background_job_is_kept_on_the_job(tiny_model_dir, fables_excerpt, store):
    job = TrainingJob(settings(tiny_model_dir, fables_excerpt, sample_every=1, sample_prompt="fox " * 80), store)
    run_id = job.start()
    assert job.join(timeout=60)
    assert isinstance(job.error, SettingsError) and job.error.field == "sample_prompt"
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert run.error == "sample_prompt: is longer than the model's context of 64 tokens; shorten it."


@pytest.mark.parametrize("model", ["tiny_model_dir", "scratch:nano"])
def test_a_block_size_beyond_the_context_is_refused_before_the_run_exists(request, model, fables_excerpt, store):
    model = str(request.getfixturevalue(model)) if model == "tiny_model_dir" else model
    context = 64 if model != "scratch:nano" else 256
    job = TrainingJob(settings(model, fables_excerpt, block_size=context + 1), store)
    with pytest.raises(SettingsError, match=f"block_size: {context + 1} is more than the model's context of {context}"):
        job.start()
    assert store.list_runs() == []


def test_a_dataset_too_small_for_one_window_names_the_dataset(tiny_model_dir, tmp_path, store):
    tiny_text = tmp_path / "note.txt"
    tiny_text.write_text("A fox. A crow. " * 10, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        TrainingJob(settings(tiny_model_dir, tiny_text), store).run()
    assert caught.value.field == "dataset" and "fewer than one window" in str(caught.value)


def test_a_missing_dataset_is_refused_before_a_run_is_recorded(tiny_model_dir, tmp_path, store):
    with pytest.raises(DatasetError):
        TrainingJob(settings(tiny_model_dir, tmp_path / "nowhere.txt"), store).start()
    assert store.list_runs() == []


def test_out_of_memory_says_what_to_lower():
    config = TrainingConfig(model="gpt2", dataset="fables", batch_size=16, grad_accum=1)
    message = failure_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), config, 12)
    assert "Out of memory at step 12" in message
    assert "batch_size 8 with grad_accum 2" in message and "block_size" in message


# -----------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("block_size", -1),
        ("max_steps", True),
        ("grad_accum", "2"),
        ("learning_rate", 0),
        ("learning_rate", float("nan")),
        ("min_learning_rate", -1e-5),
        ("warmup_steps", 500),
        ("beta1", 1.0),
        ("beta2", -0.1),
        ("weight_decay", -1),
        ("grad_clip", -1),
        ("max_time", 0),
        ("epochs", 0),
        ("eval_every", -5),
        ("eval_batches", 0),
        ("sample_length", 0),
        ("checkpoints_kept", 0),
        ("seed", -1),
        ("seed", 2**32),
        ("device", "tpu"),
        ("precision", "fp8"),
        ("vocab_size", 100),
        ("model", ""),
        ("model", "scratch:huge"),
        ("dataset", "  "),
        ("name", "x" * 201),
        ("sample_prompt", None),
    ],
)
def test_bad_settings_name_their_field(field, value):
    config = TrainingConfig(model="gpt2", dataset="fables", max_steps=200)
    setattr(config, field, value)
    with pytest.raises(SettingsError) as caught:
        config.validate()
    assert caught.value.field == field


def test_min_learning_rate_above_learning_rate_is_refused():
    with pytest.raises(SettingsError, match="above learning_rate") as caught:
        TrainingConfig(model="gpt2", dataset="fables", learning_rate=1e-4, min_learning_rate=1e-3).validate()
    assert caught.value.field == "min_learning_rate"


def test_settings_round_trip_and_unknown_keys_are_named():
    config = TrainingConfig(model="scratch:tiny", dataset="fables", epochs=2.0, name="first try")
    assert TrainingConfig.from_dict(config.as_dict()) == config
    with pytest.raises(SettingsError, match="not a training setting") as caught:
        TrainingConfig.from_dict({**config.as_dict(), "learning_rte": 1e-3})
    assert caught.value.field == "learning_rte" and "learning_rate" in str(caught.value)
    with pytest.raises(SettingsError) as missing:
        TrainingConfig.from_dict({"model": "gpt2"})
    assert missing.value.field == "dataset"


# -----------------------------------------------------------------------------
# Schedule, optimizer, retention


def test_learning_rate_warms_up_then_decays_to_the_minimum():
    config = TrainingConfig(model="gpt2", dataset="fables", learning_rate=1e-3, min_learning_rate=1e-4, warmup_steps=10)
    rates = [get_lr(step, config, 100) for step in range(101)]
    assert rates[:10] == pytest.approx([1e-3 * (s + 1) / 11 for s in range(10)])
    assert rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[100] == pytest.approx(1e-4)


def test_weight_decay_applies_to_matrices_only(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = TrainingConfig(model="gpt2", dataset="fables", weight_decay=0.1)
    decayed, not_decayed = configure_optimizer(model, config, torch.device("cpu")).param_groups
    assert decayed["weight_decay"] == 0.1 and not_decayed["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in not_decayed["params"])
    assert len(decayed["params"]) + len(not_decayed["params"]) == len(list(model.parameters()))


def test_retention_keeps_the_newest_and_the_best():
    rows = [
        {"step": 10, "val_loss": 3.0},
        {"step": 20, "val_loss": 2.1},
        {"step": 30, "val_loss": 2.5},
        {"step": 40, "val_loss": None},
        {"step": 50, "val_loss": 2.4},
    ]
    assert checkpoints_to_remove(rows, kept=2) == [10, 30]
    assert checkpoints_to_remove(rows, kept=1) == [10, 30, 40]
    assert checkpoints_to_remove(rows[:1], kept=2) == []


def test_old_checkpoints_are_removed_from_disk_and_store(tiny_model_dir, fables_excerpt, store):
    config = settings(
        tiny_model_dir, fables_excerpt, max_steps=10, checkpoint_every=2, eval_every=2, checkpoints_kept=2
    )
    run = TrainingJob(config, store).run()
    recorded = store.checkpoints(run.id)
    best = min(recorded, key=lambda row: row["val_loss"])
    assert {row["step"] for row in recorded} == {8, 10, best["step"]}
    on_disk = {p.name for p in (run_dir(run.id) / "checkpoints").iterdir()}
    assert on_disk == {Path(row["path"]).name for row in recorded}


# -----------------------------------------------------------------------------
# Evaluating any model


def test_evaluate_scores_a_model_and_records_it(tiny_model_dir, fables_excerpt, store):
    messages: list[str] = []
    base = evaluate(str(tiny_model_dir), str(fables_excerpt), store=store, device="cpu", progress=messages.append)
    assert base.split == "val" and base.perplexity == pytest.approx(math.exp(base.loss))
    tokens = tokenize_dataset(open_dataset(str(fables_excerpt)), AutoTokenizer.from_pretrained(tiny_model_dir))
    val_split = tokens.split(0.1)[1]
    assert base.tokens == (len(val_split.ids) - 1) // 64 * 64  # whole windows of the model's context
    assert base.bits_per_byte == pytest.approx(base.loss / math.log(2) * len(val_split.ids) / val_split.num_bytes)
    assert any("Evaluating" in message for message in messages)

    run = TrainingJob(settings(tiny_model_dir, fables_excerpt, max_steps=30), store).run()
    tuned = evaluate(f"run:{run.id}", str(fables_excerpt), store=store, device="cpu")
    assert tuned.loss < base.loss - 0.5
    whole = evaluate(str(tiny_model_dir), str(fables_excerpt), split="all", store=store, device="cpu", max_batches=2)
    assert whole.split == "all" and whole.tokens == 2 * 8 * 64

    recorded = store.evaluations()
    assert [row["id"] for row in recorded] == [whole.evaluation_id, tuned.evaluation_id, base.evaluation_id]
    assert recorded[-1]["bits_per_byte"] == pytest.approx(base.bits_per_byte)


def test_evaluate_refuses_an_unknown_split(tiny_model_dir, fables_excerpt):
    with pytest.raises(SettingsError) as caught:
        evaluate(str(tiny_model_dir), str(fables_excerpt), split="test")
    assert caught.value.field == "split"


def test_a_device_and_a_precision_are_read_the_same_way_everywhere() -> None:
    from engine.devices import device_name
    from engine.errors import ModelSourceError, SettingsError
    from engine.models import pick_device
    from engine.training_config import TrainingConfig

    config = TrainingConfig(model="scratch:nano", dataset="fables", device=" CPU ", precision="FP32")
    config.validate()
    assert (config.device, config.precision) == ("cpu", "fp32")
    assert str(pick_device("CPU")) == "cpu" and device_name("Cuda:1") == "cuda:1"
    for bad in ("gpu", "cuda:x", "", 3):
        with pytest.raises(SettingsError, match="is not a device; use auto, cpu, cuda, cuda:N or mps"):
            TrainingConfig(model="scratch:nano", dataset="fables", device=bad).validate()
    with pytest.raises(ModelSourceError, match="is not a device"):
        pick_device("gpu")


@pytest.mark.parametrize(
    ("settings_given", "device", "wanted"),
    [
        ({}, "cuda", False),  # 200 steps: the compile would not pay for itself
        ({"max_steps": 5000}, "cuda", True),
        ({"max_steps": None, "max_time": 3600.0}, "cuda", True),
        ({"max_steps": None, "max_time": 60.0}, "cuda", False),
        ({"max_steps": 5000}, "cpu", False),  # auto compiles on CUDA only
        ({"compile": "on"}, "cpu", True),
        ({"compile": "off", "max_steps": 5000}, "cuda", False),
    ],
)
def test_auto_compiles_a_long_run_on_cuda_only(settings_given, device, wanted) -> None:
    config = TrainingConfig(model="scratch:nano", dataset="fables", **settings_given)
    config.validate()
    assert config.compile_wanted(device) is wanted


def test_compile_takes_only_its_choices() -> None:
    with pytest.raises(SettingsError, match="compile"):
        TrainingConfig(model="scratch:nano", dataset="fables", compile="yes").validate()


@pytest.mark.parametrize(
    ("limit", "wanted", "fitted"), [(64, 32, 32), (20, 32, 16), (5, 32, 4), (1, 32, 1), (0, 32, 0)]
)
def test_the_batch_is_halved_until_it_fits(limit: int, wanted: int, fitted: int) -> None:
    tried: list[int] = []

    def fits(size: int) -> bool:
        tried.append(size)
        return size <= limit

    assert largest_fitting_batch(fits, wanted) == fitted
    assert tried[0] == wanted and tried == sorted(tried, reverse=True)
