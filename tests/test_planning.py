"""Planning a run from the settings given: on time when only a budget is given, and a scratch preset's picks."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from engine.datasets import VALIDATION_FRACTION, Dataset, open_dataset, tokenize_dataset
from engine.errors import DatasetError, SettingsError
from engine.models import train_tokenizer
from engine.planning import MAX_EPOCHS_ON_TIME, PRESET_LEARNING_RATES, dataset_bytes, plan_run, vocabulary_for
from tests.conftest import FABLES


def test_a_budget_alone_plans_the_run_on_time(fables) -> None:
    plan = plan_run({"model": "scratch:nano", "dataset": str(fables), "max_time": 600})
    assert plan.config.max_steps is None and plan.config.planned_on_time
    assert plan.config.max_epochs == MAX_EPOCHS_ON_TIME["nano"] == 16
    assert plan.explanation().startswith(
        "Plan: 10 min of training or 16 epochs of the data if sooner (more would memorise it), "
        "the learning rate decaying over it · picked "
    )


def test_steps_and_a_budget_keep_the_steps_and_the_budget_is_a_limit(fables) -> None:
    plan = plan_run({"model": "scratch:nano", "dataset": str(fables), "max_time": 60, "max_steps": 500})
    assert plan.config.max_steps == 500 and plan.config.max_time == 60
    assert plan.explanation().startswith("Plan: 500 steps · ")


def test_a_scratch_preset_gets_picks_from_its_data_and_budget_with_the_reasons_in_one_line() -> None:
    plan = plan_run({"model": "scratch:tiny", "dataset": "fables", "max_time": 300})
    config = plan.config
    assert config.learning_rate == PRESET_LEARNING_RATES["tiny"]
    assert config.min_learning_rate == pytest.approx(config.learning_rate / 10)
    assert config.vocab_size == vocabulary_for(FABLES.stat().st_size) == 1024
    assert (config.batch_size, config.block_size) == (16, 128)
    assert config.max_epochs == MAX_EPOCHS_ON_TIME["tiny"] == 8  # a larger model memorises sooner
    # 50 steps for a 5-minute budget, but the 8 passes over 301 KB take 264 steps or more: a tenth of them.
    assert config.warmup_steps == 26
    line = plan.explanation()
    assert "\n" not in line
    assert "lr 0.001 (tiny preset)" in line
    assert "warmup 26 steps (a tenth of ≥264 steps of 8 passes)" in line
    assert "vocab 1024 (301 KB of text)" in line
    assert "batch 16 × 128 tokens" in line


def test_every_pick_is_overridable(fables) -> None:
    given = {
        "model": "scratch:tiny",
        "dataset": str(fables),
        "max_time": 300,
        "learning_rate": 5e-4,
        "min_learning_rate": 1e-5,
        "warmup_steps": 7,
        "batch_size": 3,
        "block_size": 64,
        "vocab_size": 777,
        "max_epochs": 40,
    }
    plan = plan_run(given)
    assert {name: getattr(plan.config, name) for name in given} == given
    assert "picked" not in plan.explanation()  # nothing was left to pick


def test_a_warmup_picked_for_a_budget_fits_the_passes_over_little_data(tmp_path) -> None:
    """Little text, a long budget: the passes end long before the budget, and the warmup well before them."""
    text = tmp_path / "notes.txt"
    text.write_text(FABLES.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    config = plan_run({"model": "scratch:nano", "dataset": str(text), "max_time": 600}).config
    assert config.warmup_steps == 3  # not the 50 of a 10-minute budget
    # The real passes are at least that long: the plan's count assumed 4 bytes a token.
    dataset = open_dataset(str(text))
    tokens = tokenize_dataset(dataset, train_tokenizer(dataset, config.vocab_size))
    train_tokens = len(tokens.split(VALIDATION_FRACTION, by=config.split_by)[0].ids)
    assert config.epoch_cap_steps(train_tokens) >= 10 * config.warmup_steps


def test_epochs_cap_only_a_run_planned_on_time(fables) -> None:
    """A run of so many steps has its length; an epoch cap on it would be a setting silently ignored."""
    assert plan_run({"model": "scratch:nano", "dataset": str(fables), "max_steps": 50}).config.max_epochs is None
    with pytest.raises(SettingsError, match="max_epochs") as refused:
        plan_run({"model": "scratch:nano", "dataset": str(fables), "max_steps": 50, "max_epochs": 4})
    assert "caps a run planned on time" in str(refused.value)
    with pytest.raises(SettingsError, match="max_epochs"):
        plan_run({"model": "scratch:nano", "dataset": str(fables), "max_time": 60, "max_epochs": 0})


def test_a_smaller_preset_is_suggested_when_the_data_is_little_for_the_model(tmp_path) -> None:
    text = tmp_path / "little.txt"
    text.write_text("A short story about a fox and a crow. " * 200, encoding="utf-8")
    plan = plan_run({"model": "scratch:small", "dataset": str(text), "max_time": 60})
    assert "scratch:tiny may do better" in plan.explanation()
    assert plan.config.vocab_size == 512  # the smallest vocabulary for little text


def test_a_pretrained_model_is_planned_on_time_with_nothing_picked(tiny_model_dir, fables) -> None:
    plan = plan_run({"model": str(tiny_model_dir), "dataset": str(fables), "max_time": 90})
    assert plan.config.max_steps is None
    assert plan.explanation() == "Plan: 1 min 30 s of training, the learning rate decaying over it"


def test_bad_settings_are_refused_before_the_dataset_is_opened(tmp_path) -> None:
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(SettingsError, match="max_time"):
        plan_run({"model": "scratch:nano", "dataset": missing, "max_time": -5})
    with pytest.raises(DatasetError, match="nope.txt"):
        plan_run({"model": "scratch:nano", "dataset": missing, "max_time": 5})


@pytest.mark.parametrize(
    ("data_bytes", "vocabulary"), [(0, 512), (200_000, 512), (300_000, 1024), (600_000, 2048), (10**9, 8192)]
)
def test_the_vocabulary_grows_with_the_data_within_its_bounds(data_bytes: int, vocabulary: int) -> None:
    assert vocabulary_for(data_bytes) == vocabulary


def test_no_steps_and_no_budget_is_refused_with_what_to_give() -> None:
    from engine.training_config import TrainingConfig

    with pytest.raises(SettingsError, match="max_steps: is needed unless the run is planned on time"):
        TrainingConfig(model="scratch:nano", dataset="fables", max_steps=None).validate()


# --- the size a plan scales by: the text, not the files ----------------------------------------

DOCUMENT = "Le renard et le corbeau, déjà célèbres, se rencontrent près du moulin.\n"  # 2-byte é: bytes ≠ characters


def write_gz(path: Path, texts: list[str]) -> Path:
    path.write_bytes(gzip.compress("".join(texts).encode("utf-8")))
    return path


def write_jsonl_zst(path: Path, texts: list[str]) -> Path:
    import zstandard

    lines = "".join(json.dumps({"text": text, "id": number}) + "\n" for number, text in enumerate(texts))
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode("utf-8")))
    return path


def write_parquet(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), path)
    return path


@pytest.mark.parametrize(
    ("name", "write"),
    [("notes.txt.gz", write_gz), ("records.jsonl.zst", write_jsonl_zst), ("records.parquet", write_parquet)],
)
def test_a_compressed_dataset_is_planned_by_its_text_not_its_files(tmp_path, tiny_model_dir, monkeypatch, name, write):
    from transformers import AutoTokenizer

    texts = [f"{number}: {DOCUMENT * 8}" for number in range(1200)]
    text_bytes = sum(len(text.encode("utf-8")) for text in texts)
    path = write(tmp_path / name, texts)
    assert path.stat().st_size < text_bytes / 4  # what the planner used to see

    dataset = open_dataset(str(path))
    assert (
        dataset_bytes(dataset)
        == text_bytes
        == tokenize_dataset(dataset, AutoTokenizer.from_pretrained(tiny_model_dir)).num_bytes
    )
    plan = plan_run({"model": "scratch:tiny", "dataset": str(path), "max_time": 60})
    assert plan.config.vocab_size == vocabulary_for(text_bytes) == 2048
    assert f"vocab 2048 ({text_bytes / 1e3:.0f} KB of text)" in plan.explanation()

    # Planned again (each run of a sweep), the count comes from the cache: the files are hashed, not read as text.
    monkeypatch.setattr(Dataset, "_pieces", lambda self: pytest.fail("the text was read again"))
    assert dataset_bytes(open_dataset(str(path))) == text_bytes


def test_a_changed_file_is_counted_again(tmp_path) -> None:
    path = write_gz(tmp_path / "notes.txt.gz", [DOCUMENT] * 10)
    assert dataset_bytes(open_dataset(str(path))) == 10 * len(DOCUMENT.encode("utf-8"))
    write_gz(path, [DOCUMENT] * 11)
    assert dataset_bytes(open_dataset(str(path))) == 11 * len(DOCUMENT.encode("utf-8"))


def test_a_big_compressed_file_is_counted_a_block_at_a_time(tmp_path) -> None:
    texts = [f"{number}: {DOCUMENT}" for number in range(300_000)]  # 24 MB of text, a few hundred KB on disk
    path = write_gz(tmp_path / "big.txt.gz", texts)
    dataset = open_dataset(str(path))

    tracemalloc.start()
    try:
        counted = dataset_bytes(dataset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counted == sum(len(text.encode("utf-8")) for text in texts)
    assert peak < 2_000_000  # a few 64 KB blocks, never the 24 MB of text
