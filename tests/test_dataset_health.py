"""The dataset check and its fixes, on data each test makes with a known answer.

A user points `lmwb datasets check` (or the Datasets screen's Check view) at
their data before training: copies, near copies, validation text that also
sits in training, broken encodings and too little text for the model are
reported, and a clean file says so. `lmwb datasets dedupe` writes a copy
without the copies, never touching the original; training can hold out whole
documents (split_by document) so no document sits on both sides.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from engine.datasets import VALIDATION_FRACTION, open_dataset, tokenize_dataset
from engine.errors import DatasetError, SettingsError
from engine.training_config import TrainingConfig
from tests.conftest import assert_one_line_error, lmwb_in_process


def document(rng: random.Random, words: int = 200, lines: int = 4) -> str:
    """Made-up words in ``lines`` lines: no two documents (or lines, or 200 bytes) of these share text by chance."""
    made_up = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(words)
    ]
    per_line = words // lines
    return "\n".join(" ".join(made_up[i : i + per_line]) for i in range(0, words, per_line))


def documents(count: int, seed: int = 0, **shape: int) -> list[str]:
    rng = random.Random(seed)
    return [document(rng, **shape) for _ in range(count)]


def write_jsonl(path: Path, texts: list[str], **extra: object) -> Path:
    path.write_text("".join(json.dumps({"text": text, **extra, "n": n}) + "\n" for n, text in enumerate(texts)))
    return path


def write_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- training split by document --------------------------------------------------------------


def test_the_document_split_puts_no_document_on_both_sides(tmp_path: Path, tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    unique = documents(60, words=30)
    texts = unique + unique[:15]  # copies of the first fifteen at the end
    tokens = tokenize_dataset(open_dataset(str(write_jsonl(tmp_path / "d.jsonl", texts))), tokenizer)

    train, validation = tokens.split(VALIDATION_FRACTION, by="document")

    def texts_of(ids: np.ndarray) -> list[str]:
        return [text for text in tokenizer.decode(ids).split(tokenizer.eos_token) if text]

    train_texts, validation_texts = texts_of(train.ids), texts_of(validation.ids)
    assert set(train_texts).isdisjoint(validation_texts)
    assert sorted(train_texts + validation_texts) == sorted(texts)  # every document, whole, on one side
    assert 0.05 < len(validation.ids) / len(tokens.ids) <= VALIDATION_FRACTION
    assert train.num_bytes + validation.num_bytes == tokens.num_bytes
    assert "whole documents" in validation.name
    again = tokens.split(VALIDATION_FRACTION, by="document")[1]
    assert np.array_equal(again.ids, validation.ids)

    _, by_position = tokens.split(VALIDATION_FRACTION)
    assert any(text in train_texts for text in texts_of(by_position.ids))  # the copies at the end leak


def test_one_document_cannot_be_split_by_document(tmp_path: Path, tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens = tokenize_dataset(open_dataset(str(write_file(tmp_path / "one.txt", documents(1)[0]))), tokenizer)
    with pytest.raises(DatasetError, match="cannot be split by document: it has 1 document .*Split it by position"):
        tokens.split(VALIDATION_FRACTION, by="document")


def test_split_by_is_a_checked_training_setting():
    config = TrainingConfig(model="gpt2", dataset="fables", split_by="documents")
    with pytest.raises(SettingsError, match="use position or document") as caught:
        config.validate()
    assert caught.value.field == "split_by"
    assert TrainingConfig(model="gpt2", dataset="fables").split_by == "position"


def test_a_run_split_by_document_trains(tmp_path: Path, tiny_model_dir: Path):
    from engine.store import RunStore
    from engine.training import TrainingJob

    dataset = write_jsonl(tmp_path / "d.jsonl", documents(80, words=60))
    config = TrainingConfig(
        model=str(tiny_model_dir),
        dataset=str(dataset),
        split_by="document",
        max_steps=3,
        batch_size=2,
        block_size=32,
        warmup_steps=1,
        eval_every=3,
        eval_batches=1,
        sample_every=0,
        checkpoint_every=0,
        device="cpu",
    )
    run = TrainingJob(config, RunStore()).run()
    assert run.status == "completed" and run.config["split_by"] == "document"


def test_lmwb_train_refuses_an_unknown_split_by(capsys):
    status, _, err = lmwb_in_process(
        capsys, "train", "--model", "scratch:nano", "--dataset", "fables", "--split-by", "x"
    )
    assert_one_line_error(status, err, "--split-by", "use position or document")
