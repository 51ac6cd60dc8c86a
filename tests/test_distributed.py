"""Several processes, one run: torchrun with the gloo backend on this CPU machine.

The story: a user with N GPUs types ``lmwb train --nproc N ...``; the run
appears in the store like any other, with its world size, and its loss curve
is the curve one process would draw with the same global batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.datasets import WindowSampler, open_dataset, tokenize_dataset
from engine.distributed import ProcessRank, this_process, torchrun_arguments, training_device
from engine.errors import SettingsError, TrainingError
from engine.models import load_model


@pytest.fixture
def train_split(tiny_model_dir: Path):
    tokenizer = load_model(str(tiny_model_dir), device="cpu").tokenizer
    return tokenize_dataset(open_dataset("fables"), tokenizer).split(0.1)[0]


def test_two_ranks_together_see_exactly_the_batch_of_one_process_with_twice_the_batch(train_split):
    alone = WindowSampler(train_split, block_size=16, batch_size=6, seed=7)
    ranks = [WindowSampler(train_split, block_size=16, batch_size=3, seed=7, rank=r, world_size=2) for r in (0, 1)]

    for _ in range(4):
        x, y = alone.next_batch()
        parts = [sampler.next_batch() for sampler in ranks]
        assert x.tolist() == parts[0][0].tolist() + parts[1][0].tolist()
        assert y.tolist() == parts[0][1].tolist() + parts[1][1].tolist()
    assert parts[0][0].tolist() != parts[1][0].tolist()  # each rank trains on its own windows


def test_the_process_rank_comes_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch):
    assert this_process() == ProcessRank(0, 0, 1) and this_process().writes and not this_process().distributed

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    place = this_process()
    assert place == ProcessRank(rank=3, local_rank=1, world_size=4)
    assert place.distributed and not place.writes

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(TrainingError, match="WORLD_SIZE='two'"):
        this_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match="RANK=3 does not fit WORLD_SIZE=2"):
        this_process()


def test_cpu_ranks_train_on_the_cpu_and_a_named_gpu_cannot_be_shared():
    two = ProcessRank(rank=1, local_rank=1, world_size=2)
    assert training_device("cpu", two) == "cpu"
    assert training_device("cuda:1", ProcessRank()) == "cuda:1"  # one process keeps what it asked for
    with pytest.raises(SettingsError, match="each takes the GPU of its local rank"):
        training_device("cuda:1", two)
    with pytest.raises(SettingsError) as caught:
        training_device("mps", two)
    assert caught.value.field == "device"


def test_torchruns_arguments_are_a_list_that_no_shell_reads():
    arguments = torchrun_arguments("tui.cli", ["train", "--name=a name; rm -rf ~", "--steps=3"], 4)
    assert arguments[0] == "--standalone" and "--nproc-per-node=4" in arguments
    assert arguments[-5:] == ["-m", "tui.cli", "train", "--name=a name; rm -rf ~", "--steps=3"]


# -----------------------------------------------------------------------------
# lmwb train --nproc 2: real processes under torchrun, gloo on the CPU

REPOSITORY = Path(__file__).resolve().parent.parent


def run_python(*arguments: str) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a process of its own, from the repository, as a user would type it."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *arguments], cwd=REPOSITORY, env=environment,
                          capture_output=True, text=True, timeout=600)


def lmwb(*arguments: str) -> subprocess.CompletedProcess:
    """`lmwb ARGUMENTS`."""
    return run_python("-m", "tui.cli", *arguments)


@pytest.fixture
def fables_excerpt(tmp_path: Path) -> Path:
    path = tmp_path / "fables-excerpt.txt"
    path.write_text((REPOSITORY / "sample_texts" / "fables.txt").read_text(encoding="utf-8")[:24_000], encoding="utf-8")
    return path


# scratch:nano has no dropout, so one process and two see the same arithmetic.
SETTINGS = dict(model="scratch:nano", block_size=32, learning_rate=3e-3, min_learning_rate=3e-4, warmup_steps=2,
                eval_every=3, sample_every=3, vocab_size=512, device="cpu",
                seed=11)


def as_flags(settings: dict) -> list[str]:
    from tui.cli import TRAINING_FLAG_NAMES

    return [f"{TRAINING_FLAG_NAMES[field]}={value}" for field, value in settings.items()]


@pytest.mark.slow
def test_two_processes_draw_the_loss_curve_of_one_process_with_the_same_global_batch(fables_excerpt: Path):
    from engine.store import RunStore
    from engine.training import TrainingConfig, TrainingJob

    store = RunStore()
    # One process, 4 windows a step: 3 steps, then resumed to 6.
    alone = TrainingConfig(dataset=str(fables_excerpt), batch_size=4, max_steps=3, **SETTINGS)
    first = TrainingJob(alone, store).run()
    TrainingJob(TrainingConfig.from_dict({**alone.as_dict(), "max_steps": 6}), store, resume_run=first.id).run()

    # Two processes, 2 windows each: the same, through `lmwb train --nproc 2` and its resume.
    flags = as_flags({"dataset": fables_excerpt, "batch_size": 2, **SETTINGS})
    started = lmwb("train", "--nproc", "2", "--steps", "3", *flags)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "global batch 2 x 1 x 2 = 4 windows" in started.stdout
    two = next(run for run in store.list_runs() if run.id != first.id)
    assert f"Started run {two.id} as 2 processes" in started.stdout
    # torchrun by hand works too: resume it that way.
    resumed = run_python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                         "-m", "tui.cli", "train", "--resume", two.id, "--steps", "6")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resuming run {two.id} as 2 processes" in resumed.stdout

    assert len(store.list_runs()) == 2  # the second rank wrote no run of its own
    two = store.get_run(two.id)
    assert (two.status, two.steps, two.world_size, two.tokens) == ("completed", 6, 2, 6 * 4 * 32)
    expected, got = store.metrics(first.id), store.metrics(two.id)
    assert [row["step"] for row in got] == [1, 2, 3, 4, 5, 6]
    for column in ("train_loss", "val_loss", "grad_norm", "lr"):
        assert [row[column] for row in got] == pytest.approx([row[column] for row in expected], rel=1e-4,
                                                            nan_ok=True), column
    assert [row["step"] for row in store.samples(two.id)] == [3, 6]  # rank 0 alone samples
    assert [row["step"] for row in store.checkpoints(two.id)] == [3, 6]


def test_resuming_with_another_number_of_processes_is_refused(fables_excerpt: Path, capsys):
    from engine.store import RunStore
    from tui.cli import main

    run = RunStore().create_run(name="two", model="scratch:nano", dataset=str(fables_excerpt), world_size=2,
                                config={"model": "scratch:nano", "dataset": str(fables_excerpt), "max_steps": 3,
                                        "warmup_steps": 1})
    RunStore().set_status(run.id, "stopped")

    assert main(["train", "--resume", run.id, "--steps", "6"]) == 2
    assert f"resume it as 2 (lmwb train --resume {run.id} --nproc 2)" in capsys.readouterr().err


def test_nproc_is_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys):
    from tui.cli import main

    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--nproc", "2", "--model", "scratch:nano", "--dataset", "fables"]) == 2
    assert "under torchrun, leave it out" in capsys.readouterr().err


def test_each_rank_runs_the_users_arguments_less_nproc():
    from tui.cli import _rank_arguments, build_parser

    typed = ["train", "--model", "./m", "--dataset", "my data", "--nproc", "2", "--sample-prompt", "-dash first",
             "--lr", "0.001", "--lora", "--name", "a; b"]
    arguments = _rank_arguments(build_parser().parse_args(typed))

    assert "--nproc" not in " ".join(arguments)
    again = vars(build_parser().parse_args(arguments))
    assert {key: value for key, value in again.items() if key != "nproc"} == {
        key: value for key, value in vars(build_parser().parse_args(typed)).items() if key != "nproc"}
