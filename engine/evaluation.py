"""How well a model predicts text: the next-token loss, the held-out split, and scoring any model on any dataset.

Training and ``lmwb eval`` measure alike: fixed windows of ``block_size + 1``
tokens over the validation split (``VALIDATION_FRACTION`` of a dataset's
tokens, held out by ``TokenizedDataset.split``'s one rule, by position or by
document), the mean next-token loss over them (``estimate_loss``), and from it
perplexity and bits per byte, which compares models whatever their tokenizer.
``evaluate`` loads a model, scores it, and records the result in the store.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.checks import check_int
from engine.datasets import VALIDATION_FRACTION, TokenSplit, check_split_by, open_dataset, tokenize_dataset
from engine.devices import device_name, precision_name
from engine.errors import SettingsError
from engine.model_source import ModelSource
from engine.models import load_model, quiet_transformers
from engine.precision import autocast_context, resolve_precision
from engine.store import RunStore


def next_token_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``y`` from ``x`` (``y`` is ``x`` moved on by one token)."""
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def evaluation_windows(ids: np.ndarray, block_size: int, max_windows: int | None = None) -> np.ndarray:
    """Start offsets of fixed windows of ``block_size + 1`` tokens over a split.

    Windows follow each other (each predicts the tokens the last one did not),
    so with no limit every token is predicted once, up to the last whole
    window. With a limit, an even spread of them is kept. The same windows
    every time, so the validation curve moves only when the model does.
    """
    count = (len(ids) - 1) // block_size
    starts = np.arange(count, dtype=np.int64) * block_size
    if max_windows is not None and count > max_windows:
        starts = starts[np.linspace(0, count - 1, max_windows).round().astype(np.int64)]
    return starts


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    ids: np.ndarray,
    starts: np.ndarray,
    *,
    block_size: int,
    batch_size: int,
    device: torch.device,
    precision: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """Mean next-token loss over the windows at ``starts``, and how many tokens were predicted."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
    for done, batch_starts in enumerate(batches, start=1):
        windows = torch.from_numpy(np.stack([ids[s : s + block_size + 1] for s in batch_starts]).astype(np.int64))
        x, y = windows[:, :-1].to(device), windows[:, 1:].to(device)
        with autocast_context(device, precision):
            loss = next_token_loss(model, x, y)
        total_loss += loss.item() * y.numel()
        total_tokens += y.numel()
        if progress is not None:
            progress(done, len(batches))
    model.train(was_training)
    return total_loss / total_tokens, total_tokens


def bits_per_byte(loss: float, split: TokenSplit) -> float:
    """Loss in bits per byte of text: comparable across tokenizers, unlike loss per token."""
    return loss / math.log(2) * len(split.ids) / split.num_bytes


def perplexity(loss: float) -> float:
    """exp(loss), or infinity where that overflows."""
    return math.exp(loss) if loss < 700 else math.inf


def tokenizing_progress(dataset: str, report: Callable[[str], None]) -> Callable[[int, int], None]:
    """A ``tokenize_dataset`` progress callback that tells ``report`` "Tokenizing fables: 40%"."""

    def tell(done: int, total: int) -> None:
        report(f"Tokenizing {dataset}: {100 * done // total if total else 100}%")

    return tell


# -----------------------------------------------------------------------------
# Evaluating any model on any dataset


@dataclass
class EvaluationResult:
    """How well a model predicts a dataset's text: loss, perplexity, bits per byte (comparable across tokenizers)."""

    model: str
    dataset: str
    split: str
    split_by: str | None  # how the val split was held out (SPLIT_CHOICES); None for all of the dataset
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int  # tokens predicted
    evaluation_id: int | None = None  # its row in the store

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate(
    model_source: str,
    dataset: str,
    split: str = "val",
    *,
    dataset_field: str | None = None,
    dataset_split: str | None = None,
    split_by: str | None = None,
    block_size: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    store: RunStore | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Measure a model on a dataset's validation split (the tenth training holds out) or on all of it.

    ``split_by`` holds the validation split out as training does (one of
    SPLIT_CHOICES); left out, it is the run's own for a ``run:`` model, so a
    run is measured on the text it did not train on, else by position.
    Every token of the split is predicted once, up to the last whole window
    (or an even spread of ``max_batches`` batches of windows), in windows of
    ``block_size`` tokens (default: the model's context, at most 1024).
    ``progress`` is told, in words, what is happening (loading, tokenizing,
    "Evaluating: 3/10 batches"). The result is recorded in the store, so a
    base model and its fine-tuned checkpoint can be compared on the same text
    later.
    """
    report = progress or (lambda message: None)
    if split not in ("val", "all"):
        raise SettingsError("split", f"{split!r} is not a split; use val or all.")
    check_int("batch_size", batch_size, 1)
    if block_size is not None:
        check_int("block_size", block_size, 1)
    if max_batches is not None:
        check_int("max_batches", max_batches, 1)
    precision = precision_name(precision)
    device = device_name(device)
    store = store if store is not None else RunStore()
    split_by = check_split_by(split_by if split_by is not None else run_split_by(model_source, store))
    data = open_dataset(dataset, dataset_field, dataset_split)
    quiet_transformers()
    loaded = load_model(model_source, device=device, dataset=data, store=store, progress=report)
    tokens = tokenize_dataset(data, loaded.tokenizer, progress=tokenizing_progress(data.name, report))
    if split == "val":
        text = tokens.split(VALIDATION_FRACTION, by=split_by)[1]
    else:
        text = TokenSplit(tokens.ids, tokens.num_bytes, f"all of '{data.name}'")
    if len(text.ids) < 2:
        raise SettingsError("dataset", f"{dataset!r} gives fewer than 2 {split} tokens; use more text.")
    context = loaded.info().context_length
    window = min(block_size or min(context, 1024), context, len(text.ids) - 1)
    starts = evaluation_windows(text.ids, window, None if max_batches is None else max_batches * batch_size)
    loss, predicted = estimate_loss(
        loaded.model,
        text.ids,
        starts,
        block_size=window,
        batch_size=batch_size,
        device=loaded.device,
        precision=resolve_precision(precision, loaded.device),
        progress=lambda done, total: report(f"Evaluating: {done}/{total} batches"),
    )
    result = EvaluationResult(
        model=str(loaded.source),
        dataset=data.name,
        split=split,
        split_by=split_by if split == "val" else None,
        loss=loss,
        perplexity=perplexity(loss),
        bits_per_byte=bits_per_byte(loss, text),
        tokens=predicted,
    )
    result.evaluation_id = store.add_evaluation(
        model=result.model,
        dataset=result.dataset,
        split=split,
        split_by=result.split_by,
        loss=loss,
        perplexity=result.perplexity,
        bits_per_byte=result.bits_per_byte,
        tokens=predicted,
    )
    return result


def run_split_by(model_source: str, store: RunStore) -> str:
    """How the run a ``run:`` model comes from held out its validation split; by position for any other model."""
    source = ModelSource.parse(model_source)
    if source.kind != "run":
        return "position"
    return str(store.get_run(source.value).config.get("split_by", "position"))
