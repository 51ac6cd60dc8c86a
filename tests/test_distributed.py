"""Several processes, one run: torchrun with the gloo backend on this CPU machine.

The story: a user with N GPUs types ``lmwb train --nproc N ...``; the run
appears in the store like any other, with its world size, and its loss curve
is the curve one process would draw with the same global batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.datasets import WindowSampler, open_dataset, tokenize_dataset
from engine.distributed import ProcessRank, this_process, torchrun_command, training_device
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


def test_the_torchrun_command_is_a_list_that_no_shell_reads():
    command = torchrun_command("tui.cli", ["train", "--name=a name; rm -rf ~", "--steps=3"], 4)
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=4" in command
    assert command[-5:] == ["-m", "tui.cli", "train", "--name=a name; rm -rf ~", "--steps=3"]
