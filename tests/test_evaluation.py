"""Evaluating a model on a dataset: the validation split is held out by the rule training used.

The documents are planted: of varied lengths, so the last tenth of the tokens
(the split by position) and the documents a hash picks (the split by document)
are different text, of different lengths.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.datasets import VALIDATION_FRACTION, open_dataset, tokenize_dataset
from engine.evaluation import evaluate
from engine.store import RunStore
from tests.conftest import assert_one_line_error, lmwb_in_process

WINDOW = 16  # tokens per evaluation window (the tiny model's context is 64)


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """Sixty documents of 10 to 120 words in a .jsonl file."""
    rng = random.Random(7)
    words = ["fox", "crow", "mill", "cheese", "river", "stone", "wolf", "lamb", "oak", "reed", "ant", "lion"]
    texts = [" ".join(rng.choices(words, k=rng.randint(10, 120))).capitalize() + "." for _ in range(60)]
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def predicted_tokens(path: Path, tokenizer_dir: Path, by: str) -> int:
    """The tokens an evaluation predicts on the validation split held out ``by`` a rule: each whole window's."""
    from transformers import AutoTokenizer

    tokens = tokenize_dataset(open_dataset(str(path)), AutoTokenizer.from_pretrained(tokenizer_dir))
    validation = tokens.split(VALIDATION_FRACTION, by=by)[1]
    return (len(validation.ids) - 1) // WINDOW * WINDOW


def test_evaluate_holds_out_the_validation_split_by_the_rule_given(planted: Path, tiny_model_dir: Path):
    by_document = predicted_tokens(planted, tiny_model_dir, "document")
    by_position = predicted_tokens(planted, tiny_model_dir, "position")
    assert by_document != by_position  # the planted documents make the two splits differ

    results = {
        by: evaluate(str(tiny_model_dir), str(planted), split_by=by, block_size=WINDOW, device="cpu")
        for by in ("document", "position")
    }

    assert (results["document"].tokens, results["position"].tokens) == (by_document, by_position)
    assert results["document"].loss != results["position"].loss
    assert results["document"].split_by == "document"
    # Left out, a model that is no run's is measured as training holds out by default: by position.
    default = evaluate(str(tiny_model_dir), str(planted), block_size=WINDOW, device="cpu")
    assert (default.split_by, default.tokens, default.loss) == ("position", by_position, results["position"].loss)
    # The whole dataset is no held-out split.
    assert evaluate(str(tiny_model_dir), str(planted), "all", block_size=WINDOW, device="cpu").split_by is None


def test_a_run_split_by_document_is_evaluated_on_the_documents_it_held_out(capsys, planted, tiny_model_dir):
    shape = ("--batch-size", "2", "--block-size", str(WINDOW))
    status, out, err = lmwb_in_process(
        capsys,
        "train",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(planted),
        "--split-by",
        "document",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--eval-every",
        "3",
        "--sample-every",
        "0",
        "--checkpoint-every",
        "0",
        "--device",
        "cpu",
        *shape,
    )
    assert status == 0, err
    run = RunStore().list_runs()[0]
    last_val_loss = [row["val_loss"] for row in RunStore().metrics(run.id) if row.get("val_loss") is not None][-1]

    # The run's own windows: its block and batch size, its ten evaluation batches.
    same_windows = ("--model", f"run:{run.id}", "--dataset", str(planted), *shape, "--max-batches", "10", "--json")
    status, out, err = lmwb_in_process(capsys, "eval", *same_windows)
    assert status == 0, err
    evaluation = json.loads(out)
    assert evaluation["split_by"] == "document"
    assert evaluation["loss"] == pytest.approx(last_val_loss, rel=1e-5)  # the text the run was validated on

    status, out, err = lmwb_in_process(capsys, "eval", *same_windows, "--split-by", "position")
    assert status == 0, err
    assert json.loads(out)["split_by"] == "position"
    assert json.loads(out)["loss"] != pytest.approx(last_val_loss, rel=1e-5)

    status, out, err = lmwb_in_process(capsys, "eval", *same_windows[:-1])
    assert status == 0, err
    assert f"run:{run.id} on planted.jsonl (val split, held out by document)" in " ".join(out.split())


def test_a_split_rule_that_is_not_one_is_one_line_naming_the_flag(capsys, tiny_model_dir):
    status, _, err = lmwb_in_process(
        capsys, "eval", "--model", str(tiny_model_dir), "--dataset", "fables", "--split-by", "documents"
    )
    assert_one_line_error(status, err, "--split-by", "'documents' is not a choice", "use position or document")
    assert RunStore().evaluations() == []
