"""The tokenizer lab: which vocabulary should a from-scratch model of this dataset have?

A bigger byte-level BPE vocabulary packs more bytes into each token, so a
window of ``block_size`` tokens holds more text. But every entry needs an
embedding row, and an entry the data shows a model only a few times is one
whose embedding it never learns. The lab puts numbers on both sides:

- it trains BPE tokenizers at a few vocabulary sizes on the dataset (through
  ``engine.models.train_tokenizer``, the one a scratch model uses, so they are
  cached by content hash and size, and the chosen one is ready for training),
  and compares them with GPT-2's tokenizer when it is in the local Hugging
  Face cache (never downloaded) and with the chosen model's;
- for each it reports bytes per token, the vocabulary entries seen fewer than
  ``RARE_BELOW`` times in the data, and the embedding parameters they cost at
  a scratch preset's width;
- the recommendation is the planner's rule, ``planning.vocabulary_for``: the
  size ``lmwb train`` picks for a scratch model when vocab_size is left out.

Everything is measured on the whole dataset, not a held-out part: a scratch
model's tokenizer is trained on all of its dataset (so are these), and these
are the tokens it will train on. The trained tokenizers' bytes per token are
therefore in-sample, a little better than they would be on new text; GPT-2's
and a pretrained model's are not. Measuring tokenizes through
``tokenize_dataset``, so the ids are cached as training's are: training on the
chosen tokenizer starts without tokenizing again.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from engine.checks import check_int
from engine.datasets import Dataset, tokenize_dataset, tokenizer_fingerprint
from engine.errors import SettingsError
from engine.model_source import SCRATCH_PRESETS, ModelSource, scratch_parameter_count
from engine.models import END_OF_TEXT, MIN_VOCAB_SIZE, ModelRequest, cached_hub_tokenizer, train_tokenizer
from engine.planning import BYTES_PER_VOCABULARY_ENTRY, VOCABULARY_BOUNDS, dataset_bytes, vocabulary_for

if TYPE_CHECKING:
    from engine.store import RunStore

DEFAULT_SIZES = (1000, 4000, 16000)
# An entry seen fewer times than this in the data gets too few gradient updates to learn its embedding.
RARE_BELOW = 10
# The preset whose width prices the embeddings when the chosen model is not a scratch one.
DEFAULT_PRESET = "tiny"
GPT2 = "gpt2"
_COUNT_CHUNK = 1 << 24  # token ids counted at once

Progress = Callable[[str], None]
TokenizerKind = Literal["trained", "gpt2", "model"]


@dataclass(frozen=True)
class TokenizerMeasure:
    """One tokenizer measured on the dataset."""

    name: str  # "BPE 4000", "gpt2", or the model source
    kind: TokenizerKind  # trained here, GPT-2's from the cache, or the chosen model's
    vocabulary: int  # entries it has (a trained one may have fewer than asked: the data held no more merges)
    tokens: int  # tokens of text (the end-of-text ids that join documents not counted)
    bytes_per_token: float
    rare: int  # vocabulary entries seen fewer than RARE_BELOW times in the data (never seen included)
    unseen: int  # of those, entries never seen (bytes that do not occur; merges used only inside longer ones)
    embedding_parameters: int  # vocabulary x the preset's width
    parameters: int  # the whole scratch preset with this vocabulary (embeddings tied, counted once)
    recommended: bool = False  # the planner's size

    @property
    def rare_fraction(self) -> float:
        """The share of the vocabulary seen fewer than RARE_BELOW times."""
        return self.rare / self.vocabulary

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON output."""
        return dataclasses.asdict(self) | {"rare_fraction": self.rare_fraction}


@dataclass(frozen=True)
class TokenizerComparison:
    """The lab's answer: every tokenizer measured, the vocabulary to use, and what to know about the numbers."""

    dataset: str
    data_bytes: int  # the dataset's text in UTF-8 bytes, as the planner sizes it
    preset: str  # the scratch preset whose width prices the embeddings
    width: int
    measures: tuple[TokenizerMeasure, ...]
    recommended: int  # planning.vocabulary_for(data_bytes)
    recommendation: str  # the advice, in plain words
    notes: tuple[str, ...]  # GPT-2 not cached, a model sharing GPT-2's tokenizer, where the numbers come from

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON output."""
        return {
            "dataset": self.dataset,
            "bytes": self.data_bytes,
            "preset": self.preset,
            "width": self.width,
            "rare_below": RARE_BELOW,
            "recommended_vocab_size": self.recommended,
            "recommendation": self.recommendation,
            "notes": list(self.notes),
            "tokenizers": [measure.as_dict() for measure in self.measures],
        }


class _Cancelled(Exception):
    """Raised from a progress callback, so the tokenization or training in hand stops there."""


def parse_sizes(text: str) -> tuple[int, ...]:
    """Vocabulary sizes from text such as "1000,4000,16000" or "1k,4k,16k"; SettingsError("sizes") otherwise."""
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(k?)", part.strip().lower())
        if match is None:
            raise SettingsError(
                "sizes",
                f"{part.strip()!r} is not a vocabulary size; give whole numbers of at least {MIN_VOCAB_SIZE} "
                "separated by commas, like 1000,4000,16000 (or 1k,4k,16k).",
            )
        sizes.append(int(match.group(1)) * (1000 if match.group(2) else 1))
    return check_sizes(sizes)


def check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """The sizes to train, smallest first, each once; SettingsError("sizes") for none, or one too small."""
    if not sizes:
        raise SettingsError("sizes", "give at least one vocabulary size, like 1000,4000,16000.")
    for size in sizes:
        check_int("sizes", size, MIN_VOCAB_SIZE, hint=f" (256 bytes + {END_OF_TEXT})")
    return tuple(sorted(set(sizes)))


def compare_tokenizers(
    dataset: Dataset,
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    model: str | None = None,
    store: RunStore | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> TokenizerComparison | None:
    """Train BPE tokenizers of ``sizes`` on the dataset and measure them, GPT-2's and ``model``'s; None if cancelled.

    ``model`` is a model source: a scratch: preset names the preset whose
    width prices the embeddings (its tokenizer is one of the trained ones);
    any other source's tokenizer is measured too. The size the planner would
    pick is always among those trained. ``progress`` gets a line at every
    step, every few megabytes a tokenizer trains on and every tokenized batch;
    ``cancelled`` is asked as often, and the work stops at the next one.
    """
    sizes = check_sizes(sizes)
    source = ModelSource.parse(model) if model else None
    preset = source.value if source is not None and source.kind == "scratch" else DEFAULT_PRESET
    report = progress or (lambda message: None)
    data_bytes = dataset_bytes(dataset)
    recommended = vocabulary_for(data_bytes)
    notes: list[str] = []
    others = _reference_tokenizers(source, store, notes, report)
    trained = sorted({*sizes, recommended})
    steps = len(trained) + len(others)

    def step_report(number: int, name: str) -> Progress:
        def say(message: str) -> None:
            if cancelled is not None and cancelled():
                raise _Cancelled
            report(f"{name} ({number} of {steps}): {message}")

        return say

    measures = []
    try:
        for number, size in enumerate(trained, start=1):
            say = step_report(number, f"BPE {size}")
            say("training…")
            tokenizer = train_tokenizer(dataset, size, say)  # its progress lines let a cancel end the training
            measures.append(
                _measure(f"BPE {size}", "trained", dataset, tokenizer, preset, say, recommended=size == recommended)
            )
        for number, (name, kind, tokenizer) in enumerate(others, start=len(trained) + 1):
            measures.append(_measure(name, kind, dataset, tokenizer, preset, step_report(number, name)))
    except _Cancelled:
        return None
    short = [size for size, measure in zip(trained, measures, strict=False) if measure.vocabulary < size]
    if short:
        notes.append(
            f"The data holds merges for {measures[trained.index(short[0])].vocabulary} entries only: "
            f"asking for {', '.join(map(str, short))} gives that."
        )
    if any(measure.kind == "trained" for measure in measures):
        notes.append(
            "Measured on the whole dataset, as a scratch model sees it: the BPE rows are in-sample, "
            "a little better than on new text."
        )
    return TokenizerComparison(
        dataset=dataset.name,
        data_bytes=data_bytes,
        preset=preset,
        width=SCRATCH_PRESETS[preset]["n_embd"],
        measures=tuple(measures),
        recommended=recommended,
        recommendation=_recommendation(preset, recommended, measures),
        notes=tuple(notes),
    )


def _reference_tokenizers(
    source: ModelSource | None, store: RunStore | None, notes: list[str], report: Progress
) -> list[tuple[str, TokenizerKind, Any]]:
    """GPT-2's tokenizer if cached, and the chosen model's unless it is a scratch preset or GPT-2's own.

    Loaded before anything is trained, so a model that cannot be loaded is
    refused at once.
    """
    report("Looking for GPT-2's tokenizer in the Hugging Face cache…")
    found: list[tuple[str, TokenizerKind, Any]] = []
    gpt2 = cached_hub_tokenizer(GPT2)
    if gpt2 is None:
        notes.append("GPT-2's tokenizer is not cached here, so it is not compared (the lab never downloads).")
    else:
        found.append((GPT2, "gpt2", gpt2))
    if source is None or source.kind == "scratch" or str(source) == GPT2:
        return found
    report(f"Loading {source}'s tokenizer…")
    tokenizer = ModelRequest.of(source).load_tokenizer(store=store)
    if gpt2 is not None and tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(gpt2):
        notes.append(f"{source} uses GPT-2's tokenizer: its numbers are the gpt2 row's.")
    else:
        found.append((str(source), "model", tokenizer))
    return found


def _measure(
    name: str,
    kind: TokenizerKind,
    dataset: Dataset,
    tokenizer: Any,
    preset: str,
    say: Progress,
    *,
    recommended: bool = False,
) -> TokenizerMeasure:
    """Tokenize the dataset (or read its cached ids) and count what each vocabulary entry is used for."""
    tokenized = tokenize_dataset(
        dataset, tokenizer, progress=lambda done, total: say(f"tokenizing the data, {done / max(total, 1):.0%}")
    )
    counts = token_counts(tokenized.ids, len(tokenizer))
    separators = int(counts[tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else 0
    tokens = len(tokenized.ids) - separators
    vocabulary = len(counts)
    return TokenizerMeasure(
        name=name,
        kind=kind,
        vocabulary=vocabulary,
        tokens=tokens,
        bytes_per_token=tokenized.num_bytes / max(tokens, 1),
        rare=int((counts < RARE_BELOW).sum()),
        unseen=int((counts == 0).sum()),
        embedding_parameters=vocabulary * SCRATCH_PRESETS[preset]["n_embd"],
        parameters=scratch_parameter_count(preset, vocabulary),
        recommended=recommended,
    )


def token_counts(ids: np.ndarray, vocabulary: int) -> np.ndarray:
    """How often each token id occurs in ``ids`` (at least ``vocabulary`` entries), counted in chunks."""
    counts = np.zeros(vocabulary, dtype=np.int64)
    for start in range(0, len(ids), _COUNT_CHUNK):
        chunk = np.bincount(ids[start : start + _COUNT_CHUNK], minlength=len(counts))
        if len(chunk) > len(counts):  # an id past the tokenizer's length (a model's odd vocabulary)
            counts = np.pad(counts, (0, len(chunk) - len(counts)))
        counts += chunk
    return counts


def _recommendation(preset: str, recommended: int, measures: list[TokenizerMeasure]) -> str:
    """The planner's vocabulary, why, and what the measurements say of it and of the largest one trained."""
    low, high = VOCABULARY_BOUNDS
    if recommended == high:
        why = "the largest the planner picks"
    elif recommended == low:
        why = "the smallest the planner picks: there is little text to learn entries from"
    else:
        why = f"about one entry per {BYTES_PER_VOCABULARY_ENTRY} bytes of text"
    chosen = next(measure for measure in measures if measure.recommended)
    text = (
        f"Use a vocabulary of {recommended} for scratch:{preset}: {why}, the size lmwb train picks when "
        f"vocab_size is left out. It gives {chosen.bytes_per_token:.2f} bytes a token, with "
        f"{chosen.rare_fraction:.0%} of its entries seen fewer than {RARE_BELOW} times"
    )
    largest = max((measure for measure in measures if measure.kind == "trained"), key=lambda m: m.vocabulary)
    if largest.vocabulary > chosen.vocabulary and largest.rare_fraction > chosen.rare_fraction:
        text += f"; {largest.vocabulary} gives {largest.bytes_per_token:.2f} with {largest.rare_fraction:.0%}"
    return text + "."
