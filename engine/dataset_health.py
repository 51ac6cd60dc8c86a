"""Dataset health: what is wrong with a dataset before a run is wasted on it, and a copy without it.

``check_dataset`` reads a dataset once and reports, in this order:

- **exact duplicates.** A duplicate document is one whose text equals an
  earlier document's, character for character; ``document_fraction`` is
  duplicates / documents (100 documents of which 30 copy an earlier one:
  0.30). A duplicate line is a non-blank line that equals an earlier
  non-blank line once the whitespace at its ends is removed;
  ``line_fraction`` is duplicate lines / non-blank lines.
- **near duplicates.** A document whose 5-word shingles have an estimated
  Jaccard similarity of at least 0.8 with an earlier document's, and which
  is not an exact copy of an earlier document (those are counted once,
  above): MinHash signatures, then locality-sensitive hashing over bands of
  them, then each candidate pair's similarity from its whole signatures.
- **train/validation leakage** under the engine's own split
  (``TokenizedDataset.split``): each validation document is cut into
  back-to-back windows of n tokens, and a window leaks when the same n
  tokens occur anywhere in the training tokens; a document shorter than n is
  one window, which leaks when the same document is in training. With a
  model, n is 50 of its tokens; without one the text's UTF-8 bytes are the
  tokens and n is 200 (about 50 GPT-2 tokens of English). A short validation
  split gets shorter n-grams, and the report says so. The same is measured
  under the split by document, which says whether ``split_by: document``
  would help.
- **encoding problems**: U+FFFD replacement characters, mojibake (UTF-8 read
  as cp1252: "Ã©" for "é", "â€™" for "’"), control characters other than tab
  and line breaks, and lines over 10,000 characters, each with its first
  places (document and line).
- **document lengths**, in characters, in half-decade buckets (1, 3, 10, 30, ...).
- **tokens against the model**, when one is given: its token count, bytes per
  token, tokens per parameter and what to expect (``engine.planning``'s rule).

The work is numpy over batches of text, not Python per character: words,
shingles and n-grams are hashed with one polynomial hash over
prefix sums (``_segment_hashes``). Reports are cached by the dataset's content
hash (and the tokenizer's fingerprint) in ``health_cache_dir()``, so a second
check of the same data reads its answer back.

``dedupe_dataset`` writes a copy of a dataset without its duplicate
documents (and near duplicates, if asked), never touching the original.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.datasets import (
    DEFAULT_FIELD,
    SUPPORTED_SUFFIXES,
    VALIDATION_FRACTION,
    Dataset,
    TokenizedDataset,
    atomic_output,
    tokenize_dataset,
    tokenizer_fingerprint,
)
from engine.errors import DatasetError
from engine.home import health_cache_dir
from engine.planning import FEW_TOKENS_PER_PARAMETER, data_size_advice, dataset_bytes, vocabulary_for

# (phase, done, total): phases are "reading", "near duplicates", "tokenizing", "leakage" and "leakage by document".
HealthProgress = Callable[[str, int, int], None]

SHINGLE_WORDS = 5  # words per shingle for near duplicates
NEAR_THRESHOLD = 0.8  # estimated Jaccard similarity from which a document is a near duplicate
MINHASH_PERMUTATIONS = 64
# 16 bands of 4 rows: a pair at Jaccard 0.8 shares a band with probability 0.9998, one at 0.3
# with 0.12; every candidate is then checked on its whole signature.
LSH_BANDS = 16
LEAKAGE_NGRAM_TOKENS = 50  # tokens of a model's tokenizer per leakage n-gram
LEAKAGE_NGRAM_BYTES = 200  # bytes per n-gram without a model: about 50 GPT-2 tokens of English
MIN_NGRAM = 8  # shorter n-grams match by chance: leakage is not measured below this
MIN_WINDOWS = 10  # a short validation split gets shorter n-grams, to hold at least this many windows
LONG_LINE_CHARACTERS = 10_000
NOTABLE_FRACTION = 0.01  # duplicate lines and leakage below this are not worth a finding
SHOWN = 5  # top repeated texts, example pairs and places of each problem kept in a report
SHOWN_CHARACTERS = 80  # repeated texts and examples are cut to this

_CACHE_FORMAT = 2  # bump when the report changes shape, so old cache entries are not read
_BATCH_BYTES = 1 << 21  # text hashed at once (numpy arrays of a few times this)
_CHUNK_TOKENS = 1 << 21  # tokens hashed at once when looking for leaked windows
_FILTER_BITS = 22  # a 4 M-entry table of the validation hashes' low bits drops most training n-grams at once
_EOS_BYTE = 256  # joins documents in the byte-level ids (bytes are 0-255)
_SPACE_BYTES = b" \t\n\r\x0b\x0c\x00"  # what separates words (NUL joins documents in a batch)
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[list(_SPACE_BYTES)] = True


# ---------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Repeated:
    """A text that occurs more than once, cut to SHOWN_CHARACTERS, and how often it occurs in all."""

    text: str
    count: int


@dataclass(frozen=True)
class Duplicates:
    """Exact duplicate documents and lines (see the module docstring for the definitions)."""

    documents: int  # documents that copy an earlier document
    document_fraction: float  # of all documents
    lines: int  # non-blank lines that repeat an earlier non-blank line
    line_fraction: float  # of all non-blank lines
    top_documents: list[Repeated]
    top_lines: list[Repeated]


@dataclass(frozen=True)
class NearPair:
    """A near duplicate (``second``) and the earlier document it resembles; documents count from 1."""

    first: int
    second: int
    similarity: float  # estimated Jaccard similarity of their shingles
    first_text: str
    second_text: str


@dataclass(frozen=True)
class NearDuplicates:
    """Documents that nearly copy an earlier one and are not exact copies."""

    documents: int
    fraction: float  # of all documents
    threshold: float
    shingle_words: int
    examples: list[NearPair]


@dataclass(frozen=True)
class Leakage:
    """How much of the validation split also sits in the training split."""

    tokenizer: str  # "bytes" (no model given) or the model whose tokenizer made the tokens
    ngram: int  # tokens per window
    ngram_note: str  # why the windows are shorter than usual, or ""
    windows: int  # validation windows under the split by position
    leaked: int  # of them, those whose tokens also occur in training
    fraction: float | None  # leaked / windows; None when the split is too short to measure
    document_split_fraction: float | None  # the same under split_by document; None: it cannot be split so


@dataclass(frozen=True)
class Location:
    """A place in the dataset: the document (from 1) and the line in it (from 1)."""

    document: int
    line: int


@dataclass(frozen=True)
class EncodingProblem:
    """One kind of encoding problem: how often it occurs and its first places."""

    kind: str  # "replacement", "mojibake", "control" or "long_line"
    description: str
    count: int
    locations: list[Location]


@dataclass(frozen=True)
class LengthBucket:
    """Documents of ``low`` to ``high`` characters (``high`` excluded)."""

    low: int
    high: int
    documents: int

    def label(self) -> str:
        """ "1-3", "300-1K", "10K-30K": the bucket's bounds, short."""
        return f"{_short(self.low)}-{_short(self.high)}"


def _short(number: int) -> str:
    for suffix, scale in (("M", 1_000_000), ("K", 1_000)):
        if number >= scale:
            return f"{number // scale}{suffix}"
    return str(number)


@dataclass(frozen=True)
class ModelFit:
    """The dataset against the model it would train: tokens, and tokens per parameter."""

    model: str
    tokens: int
    bytes_per_token: float
    parameters: int
    tokens_per_parameter: float
    advice: str  # plain words: what to expect with this much text


@dataclass(frozen=True)
class HealthReport:
    """Everything ``check_dataset`` found; ``findings()`` says what needs attention in plain words."""

    dataset: str
    path: str
    content_hash: str
    documents: int
    lines: int  # non-blank lines
    characters: int
    bytes: int  # UTF-8 bytes of the text
    duplicates: Duplicates
    near_duplicates: NearDuplicates
    leakage: Leakage
    encoding: list[EncodingProblem]  # only the kinds found
    lengths: list[LengthBucket]  # from the shortest document's bucket to the longest's
    model: ModelFit | None = None

    def findings(self) -> list[str]:
        """One line per problem worth acting on, most important first; none means the dataset is clean."""
        found = []
        duplicates, near, leakage = self.duplicates, self.near_duplicates, self.leakage
        if duplicates.documents:
            found.append(
                f"{duplicates.document_fraction:.1%} of documents copy an earlier one: "
                "'lmwb datasets dedupe' writes a copy without them"
            )
        if duplicates.line_fraction >= NOTABLE_FRACTION:
            found.append(f"{duplicates.line_fraction:.1%} of non-blank lines repeat an earlier line")
        if near.documents:
            found.append(
                f"{near.fraction:.1%} of documents nearly copy an earlier one: "
                "'lmwb datasets dedupe --near' writes a copy without them"
            )
        if leakage.fraction is not None and leakage.fraction >= NOTABLE_FRACTION:
            found.append(leakage_advice(leakage))
        for problem in self.encoding:
            found.append(f"{problem.description}: {problem.count:,}")
        if self.model is not None and self.model.tokens_per_parameter < FEW_TOKENS_PER_PARAMETER:
            found.append(self.model.advice)
        return found

    @property
    def clean(self) -> bool:
        return not self.findings()

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON: every section, then ``findings`` and ``clean``."""
        return dataclasses.asdict(self) | {"findings": self.findings(), "clean": self.clean}


def leakage_advice(leakage: Leakage) -> str:
    """Plain words on the leakage found, and whether splitting by document would help."""
    if leakage.fraction is None:
        return "the validation split is too short to measure leakage"
    line = f"{leakage.fraction:.1%} of validation windows also occur in training"
    after = leakage.document_split_fraction
    if after is not None and after < leakage.fraction:
        line += f": --split-by document keeps documents whole ({after:.1%} then)"
    elif leakage.fraction >= NOTABLE_FRACTION:
        line += ": the validation loss will flatter the model; remove repeated text"
    return line


def _from_plain(kind: Any, value: Any) -> Any:
    """Rebuild a value of type ``kind`` (a report dataclass, a list of them, an optional) from plain JSON."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _from_plain(next(arg for arg in typing.get_args(kind) if arg is not type(None)), value)
    if origin is list:
        return [_from_plain(typing.get_args(kind)[0], item) for item in value]
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{name: _from_plain(hints[name], item) for name, item in value.items()})
    return value


# ---------------------------------------------------------------------------
# The model a dataset is checked against


@dataclass(frozen=True)
class CheckedModel:
    """The model a dataset is checked against: its tokenizer and its size."""

    name: str
    tokenizer: Any
    parameters: int
    preset: str | None = None  # a scratch: model's preset, for advice on a smaller one


def checked_model(source: str, dataset: Dataset, *, progress: Callable[[str], None] | None = None) -> CheckedModel:
    """The model ``source`` as a run on ``dataset`` would have it.

    A scratch: preset is not built: its tokenizer is trained (or taken from the
    cache) at the vocabulary a run on this data would plan, and its parameters
    are counted from the preset. Any other model is loaded on the CPU, and its
    own parameters are counted.
    """
    from engine.model_source import ModelSource, scratch_parameter_count
    from engine.models import ModelRequest

    parsed = ModelSource.parse(source)
    request = ModelRequest.of(parsed, dataset, vocab_size=vocabulary_for(dataset_bytes(dataset)))
    if parsed.kind == "scratch":
        tokenizer = request.load_tokenizer(progress=progress)
        return CheckedModel(str(parsed), tokenizer, scratch_parameter_count(parsed.value, len(tokenizer)), parsed.value)
    loaded = request.load(device="cpu", progress=progress)
    return CheckedModel(str(parsed), loaded.tokenizer, loaded.info().parameters)


# ---------------------------------------------------------------------------
# The check


def check_dataset(
    dataset: Dataset, model: CheckedModel | None = None, progress: HealthProgress | None = None
) -> HealthReport:
    """Check ``dataset`` (against ``model``, if given): read from the cache, or measured now and cached."""
    report = progress or (lambda phase, done, total: None)
    content_hash = dataset.content_hash()
    scan: _Scan = _from_plain(_Scan, _cached(f"{content_hash}-data", lambda: _scan(dataset, report).as_dict()))
    leakage, fit = scan.leakage, None
    if model is not None:
        fingerprint = tokenizer_fingerprint(model.tokenizer)
        tokens = _cached(f"{content_hash}-{fingerprint}", lambda: _token_part(dataset, model, report))
        leakage = _from_plain(Leakage, tokens["leakage"])
        fit = _model_fit(model, tokens["tokens"], tokens["bytes"])
    return HealthReport(
        dataset=dataset.name,
        path=str(dataset.path),
        content_hash=content_hash,
        documents=scan.documents,
        lines=scan.lines,
        characters=scan.characters,
        bytes=scan.bytes,
        duplicates=scan.duplicates,
        near_duplicates=scan.near_duplicates,
        leakage=leakage,
        encoding=scan.encoding,
        lengths=scan.lengths,
        model=fit,
    )


def _model_fit(model: CheckedModel, tokens: int, text_bytes: int) -> ModelFit:
    per_parameter = tokens / model.parameters
    advice = data_size_advice(per_parameter, "tokens", model.preset)
    return ModelFit(
        model=model.name,
        tokens=tokens,
        bytes_per_token=text_bytes / tokens,
        parameters=model.parameters,
        tokens_per_parameter=per_parameter,
        advice=advice or f"{per_parameter:.2g} tokens per parameter: enough text for this model",
    )


def _token_part(dataset: Dataset, model: CheckedModel, report: HealthProgress) -> dict[str, Any]:
    """What depends on the model's tokenizer: its token count, and the leakage measured in its tokens."""
    tokens = tokenize_dataset(dataset, model.tokenizer, progress=lambda done, total: report("tokenizing", done, total))
    leakage = measure_leakage(tokens, LEAKAGE_NGRAM_TOKENS, model.name, report)
    return {"tokens": len(tokens.ids), "bytes": tokens.num_bytes, "leakage": dataclasses.asdict(leakage)}


def _cached(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON cached under ``key``, or ``compute()`` written there (a torn or old entry is recomputed)."""
    name = hashlib.sha256(f"{_CACHE_FORMAT}\0{key}".encode()).hexdigest()[:32]
    path = health_cache_dir() / f"{name}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    values = compute()
    try:
        with atomic_output(path) as stream:
            stream.write(json.dumps(values, ensure_ascii=False).encode())
    except OSError as exc:
        raise DatasetError(
            f"Cannot write the check's cache in {path.parent}: {exc.strerror or exc}. Free some disk space, "
            "or set LMWB_HOME to a writable place with room."
        ) from exc
    return values


# ---------------------------------------------------------------------------
# One pass over the documents


@dataclass(frozen=True)
class _Scan:
    """What one pass over the text finds (the report without the model's part), as cached."""

    documents: int
    lines: int
    characters: int
    bytes: int
    duplicates: Duplicates
    near_duplicates: NearDuplicates
    encoding: list[EncodingProblem]
    lengths: list[LengthBucket]
    leakage: Leakage  # in bytes; a model's tokens replace it

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _scan(dataset: Dataset, report: HealthProgress) -> _Scan:
    """Read every document once, feeding each measure; then find near duplicates and leakage."""
    total = _size_on_disk(dataset)
    documents = _Copies()
    lines = _LineCopies()
    encoding = _EncodingScan()
    near = _NearDuplicateFinder(report)
    byte_ids = _ByteIds()
    lengths: list[int] = []
    done = 0
    for index, text in enumerate(dataset.documents()):
        data = text.encode("utf-8")
        copy = documents.count(_document_key(data), text)
        lines.add(text)
        encoding.add(index, text)
        near.add(index, data, copy)
        byte_ids.add(data)
        lengths.append(len(text))
        done += len(data)
        if byte_ids.pending >= _BATCH_BYTES:
            byte_ids.flush()
            report("reading", min(done, total), total)
    near.flush()
    byte_ids.flush()
    report("reading", total, total)
    count = len(lengths)
    pairs = near.pairs()
    return _Scan(
        documents=count,
        lines=lines.lines,
        characters=sum(lengths),
        bytes=done,
        duplicates=Duplicates(
            documents=documents.copies,
            document_fraction=documents.copies / count,
            lines=lines.copies,
            line_fraction=lines.copies / max(lines.lines, 1),
            top_documents=documents.top(),
            top_lines=lines.top(),
        ),
        near_duplicates=NearDuplicates(
            documents=len(pairs),
            fraction=len(pairs) / count,
            threshold=NEAR_THRESHOLD,
            shingle_words=SHINGLE_WORDS,
            examples=_examples(dataset, pairs),
        ),
        encoding=encoding.problems(),
        lengths=_length_buckets(np.array(lengths)),
        leakage=measure_leakage(byte_ids.tokenized(dataset.name, done), LEAKAGE_NGRAM_BYTES, "bytes", report),
    )


def _size_on_disk(dataset: Dataset) -> int:
    """The bytes of the dataset's files: what reading progress is measured against (text may be less)."""
    return max(sum(file.stat().st_size for file in dataset.files), 1)


def _document_key(data: bytes) -> bytes:
    """The identity of a document's text: equal for equal texts, and for nothing else in practice."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_CHARACTERS else flat[: SHOWN_CHARACTERS - 1] + "…"


class _Copies:
    """Counts of keys, the texts of those seen twice or more, and how many occurrences were copies."""

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}
        self.texts: dict[Any, str] = {}
        self.copies = 0

    def count(self, key: Any, text: str) -> bool:
        """Count one occurrence; True when an earlier occurrence had the same key."""
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if seen:
            self.copies += 1
            if seen == 1:
                self.texts[key] = _cut(text)
        return bool(seen)

    def top(self) -> list[Repeated]:
        """The SHOWN most repeated texts, the most frequent first (the first repeated first among equals)."""
        ranked = sorted(self.texts, key=lambda key: -self.counts[key])[:SHOWN]
        return [Repeated(self.texts[key], self.counts[key]) for key in ranked]


class _LineCopies(_Copies):
    """Non-blank lines equal to an earlier non-blank line, whitespace at their ends aside."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0

    def add(self, text: str) -> None:
        for line in text.split("\n"):
            line = line.strip()
            if line:
                self.lines += 1
                self.count(hash(line), line)


# ---------------------------------------------------------------------------
# Encoding problems

# The characters cp1252 shows for bytes 0x80-0xBF, the continuation bytes of UTF-8: text that was
# UTF-8, decoded as cp1252 (or Latin-1), shows a lead character followed by one or two of these.
_CONTINUATION = "".join(
    bytes([byte]).decode("cp1252") if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else chr(byte)
    for byte in range(0x80, 0xC0)
)
_PROBLEMS = re.compile(
    "(?P<replacement>\ufffd)"
    f"|(?P<mojibake>[\u00c2-\u00df][{re.escape(_CONTINUATION)}]|[\u00e0-\u00ef][{re.escape(_CONTINUATION)}]{{2}})"
    "|(?P<control>[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f])"
)
# The first character of any of those: a fast search for it skips the text between problems.
_SUSPECTS = re.compile("[\ufffd\u00c2-\u00ef\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_DESCRIPTIONS = {
    "replacement": "replacement characters (U+FFFD: bytes that were not text, lost before this file)",
    "mojibake": "mojibake (UTF-8 read as cp1252, like 'Ã©' for 'é': decode the source as UTF-8)",
    "control": "control characters (other than tab and line breaks)",
    "long_line": f"lines over {LONG_LINE_CHARACTERS:,} characters",
}


class _EncodingScan:
    """Counts of each kind of encoding problem, with the first SHOWN places of each."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_DESCRIPTIONS, 0)
        self.places: dict[str, list[Location]] = {kind: [] for kind in _DESCRIPTIONS}

    def add(self, index: int, text: str) -> None:
        end = 0  # where the last problem found ends: a suspect inside it is part of it
        for suspect in _SUSPECTS.finditer(text):
            match = _PROBLEMS.match(text, suspect.start()) if suspect.start() >= end else None
            if match:
                self._found(match.lastgroup or "", index, text, match.start())
                end = match.end()
        if len(text) > LONG_LINE_CHARACTERS:
            offset = 0
            for line in text.split("\n"):
                if len(line) > LONG_LINE_CHARACTERS:
                    self._found("long_line", index, text, offset)
                offset += len(line) + 1

    def _found(self, kind: str, index: int, text: str, offset: int) -> None:
        self.counts[kind] += 1
        if len(self.places[kind]) < SHOWN:  # a line number costs a count of the text before it
            self.places[kind].append(Location(index + 1, text.count("\n", 0, offset) + 1))

    def problems(self) -> list[EncodingProblem]:
        return [
            EncodingProblem(kind, _DESCRIPTIONS[kind], count, self.places[kind])
            for kind, count in self.counts.items()
            if count
        ]


# ---------------------------------------------------------------------------
# Document lengths


def _length_buckets(lengths: np.ndarray) -> list[LengthBucket]:
    """Half-decade buckets (1-3, 3-10, 10-30, ...) from the shortest document's to the longest's."""
    edges = [0, 1]
    while edges[-1] <= lengths.max():  # 3 after 1, 10 after 3, 30 after 10: x3 and x10/3 in turn
        edges.append(edges[-1] * 3 if len(edges) % 2 == 0 else edges[-2] * 10)
    counts, _ = np.histogram(lengths, bins=edges)
    filled = np.flatnonzero(counts)
    first, last = int(filled[0]), int(filled[-1])
    return [LengthBucket(edges[i], edges[i + 1], int(counts[i])) for i in range(first, last + 1)]


# ---------------------------------------------------------------------------
# Hashing runs of values: words, shingles, n-grams

_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_BASE_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))


_POWER_TABLES: dict[int, np.ndarray] = {}  # base -> its powers, as many as asked for yet (rounded up)


def _powers(base: np.uint64, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) modulo 2**64 (uint64 arithmetic wraps), from a table kept between calls."""
    table = _POWER_TABLES.get(int(base))
    if table is None or len(table) < count:
        table = np.full(1 << max(count - 1, 1).bit_length(), base, dtype=np.uint64)
        table[0] = 1
        table = np.cumprod(table, dtype=np.uint64)
        _POWER_TABLES[int(base)] = table
    return table[:count]


def _mix(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every bit of the result depends on every bit of the input."""
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))


def _prefix_sums(values: np.ndarray) -> np.ndarray:
    """prefix[i] = sum of (v[j] + 1) * B**-j for j < i, modulo 2**64: what every run's hash is read from."""
    scaled = (values.astype(np.uint64) + np.uint64(1)) * _powers(_BASE_INVERSE, len(values))
    return np.concatenate((np.zeros(1, dtype=np.uint64), np.cumsum(scaled, dtype=np.uint64)))


def _segment_hashes(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each ``values[start:stop]``: equal runs hash equal wherever they sit.

    The polynomial hash sum(v[i] * B**(stop-1-i)) of every run at once, from
    one prefix sum of v[i] * B**-i (B odd, so invertible modulo 2**64): a few
    passes over ``values`` for any number of runs of any lengths. Its low bits
    depend only on the values' low bits: ``_mix`` it where bits are used as random.
    """
    if not len(starts):
        return np.zeros(0, dtype=np.uint64)
    prefix = _prefix_sums(values)
    return (prefix[stops] - prefix[starts]) * _powers(_BASE, len(values))[stops - 1]


def _window_hashes(values: np.ndarray, size: int) -> np.ndarray:
    """``_segment_hashes`` of every run of ``size`` values (``values[i:i+size]`` for each i), by slices."""
    count = len(values) - size + 1
    if count < 1:
        return np.zeros(0, dtype=np.uint64)
    prefix = _prefix_sums(values)
    return (prefix[size:] - prefix[:count]) * _powers(_BASE, len(values))[size - 1 :]


# ---------------------------------------------------------------------------
# Near duplicates: MinHash over word shingles, then bands


class _NearDuplicateFinder:
    """MinHash signatures of documents, batch by batch; then the near duplicates among them.

    Signatures are computed for a whole batch of documents at once with numpy
    (per-document sketch objects, as datasketch keeps, cost more than the rest
    of the check on a dataset of many short documents). Each permutation is an
    affine map ``a*h + b`` modulo 2**32 with ``a`` odd, over shingle hashes
    already mixed (datasketch's "affine32" scheme).
    """

    def __init__(self, report: HealthProgress) -> None:
        generator = np.random.default_rng(20240601)
        self._a = generator.integers(0, 1 << 31, MINHASH_PERMUTATIONS, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        self._b = generator.integers(0, 1 << 32, MINHASH_PERMUTATIONS, dtype=np.uint32)
        self._report = report
        self._batch: list[bytes] = []
        self._indexes: list[int] = []
        self._pending = 0
        self._signatures: list[np.ndarray] = []
        self._documents: list[np.ndarray] = []  # the document index of each signature row

    def add(self, index: int, data: bytes, copy: bool) -> None:
        """Take a document; an exact copy of an earlier one is left out (it is counted as such)."""
        if not copy:
            self._batch.append(data)
            self._indexes.append(index)
            self._pending += len(data)
            if self._pending >= _BATCH_BYTES:
                self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        signatures, signed = self._batch_signatures(self._batch)
        self._signatures.append(signatures[signed])
        self._documents.append(np.array(self._indexes)[signed])
        self._batch, self._indexes, self._pending = [], [], 0

    def _batch_signatures(self, batch: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(signature rows, which documents have one): a document without words has none."""
        data = np.frombuffer(b"\0".join(batch), dtype=np.uint8)
        document_starts = np.cumsum([0] + [len(item) + 1 for item in batch[:-1]])
        word = ~_IS_SPACE[data]
        edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        word_starts, word_stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        word_hashes = _segment_hashes(data, word_starts, word_stops)  # mixed with the shingles' hashes
        word_documents = np.searchsorted(document_starts, word_starts, side="right") - 1
        words = np.bincount(word_documents, minlength=len(batch))
        first_words = np.concatenate(([0], np.cumsum(words)[:-1]))
        # Every run of SHINGLE_WORDS words inside a document; a shorter document is one shingle of all its words.
        last = len(word_hashes) - SHINGLE_WORDS + 1
        full = np.flatnonzero(word_documents[: max(last, 0)] == word_documents[SHINGLE_WORDS - 1 :])
        short = np.flatnonzero((words > 0) & (words < SHINGLE_WORDS))
        starts = np.concatenate((full, first_words[short]))
        stops = np.concatenate((full + SHINGLE_WORDS, first_words[short] + words[short]))
        order = np.argsort(word_documents[starts], kind="stable")
        starts, stops = starts[order], stops[order]
        shingles = (_mix(_segment_hashes(word_hashes, starts, stops)) >> np.uint64(32)).astype(np.uint32)
        shingle_documents = word_documents[starts]
        signed = np.zeros(len(batch), dtype=bool)
        signed[shingle_documents] = True
        runs = np.searchsorted(shingle_documents, np.flatnonzero(signed))
        signatures = np.full((len(batch), MINHASH_PERMUTATIONS), np.iinfo(np.uint32).max, dtype=np.uint32)
        if not len(runs):
            return signatures, signed
        for first in range(0, MINHASH_PERMUTATIONS, 16):  # 16 permutations at once bound the memory
            a, b = self._a[first : first + 16, None], self._b[first : first + 16, None]
            permuted = a * shingles[None, :] + b
            signatures[signed, first : first + 16] = np.minimum.reduceat(permuted, runs, axis=1).T
        return signatures, signed

    def pairs(self) -> dict[int, tuple[int, float]]:
        """Each near-duplicate document's index -> (the earlier document it resembles, their similarity).

        Per band, documents whose rows of the band agree are candidates; each
        is compared with the first of its group on the whole signature, and
        is a near duplicate when at least NEAR_THRESHOLD of the signature agrees.
        """
        if not self._signatures:
            return {}
        signatures = np.concatenate(self._signatures)
        documents = np.concatenate(self._documents)
        found: dict[int, tuple[int, float]] = {}
        rows = MINHASH_PERMUTATIONS // LSH_BANDS
        for band in range(LSH_BANDS):
            self._report("near duplicates", band, LSH_BANDS)
            columns = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
            keys = _segment_hashes(columns.ravel(), *_row_runs(len(signatures), rows))
            order = np.argsort(keys, kind="stable")  # equal keys keep document order: the first is the earliest
            opens = np.concatenate(([True], keys[order][1:] != keys[order][:-1]))
            firsts = order[np.maximum.accumulate(np.where(opens, np.arange(len(order)), 0))]
            later, partner = order[~opens], firsts[~opens]
            similarity = (signatures[later] == signatures[partner]).mean(axis=1)
            near = similarity >= NEAR_THRESHOLD
            for row, other, value in zip(later[near], partner[near], similarity[near], strict=True):
                found.setdefault(int(documents[row]), (int(documents[other]), float(value)))
        self._report("near duplicates", LSH_BANDS, LSH_BANDS)
        return found


def _row_runs(count: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of ``count`` back-to-back runs of ``width`` values (the rows of a flattened matrix)."""
    starts = np.arange(count) * width
    return starts, starts + width


def _examples(dataset: Dataset, pairs: dict[int, tuple[int, float]]) -> list[NearPair]:
    """The first SHOWN near-duplicate pairs with their texts, read again as far as the last one needs."""
    shown = sorted(pairs.items())[:SHOWN]
    wanted = {index for second, (first, _) in shown for index in (first, second)}
    texts: dict[int, str] = {}
    for index, text in enumerate(dataset.documents() if wanted else ()):
        if index in wanted:
            texts[index] = _cut(text)
            if len(texts) == len(wanted):
                break
    return [
        NearPair(first + 1, second + 1, similarity, texts[first], texts[second])
        for second, (first, similarity) in shown
    ]


# ---------------------------------------------------------------------------
# Leakage


class _ByteIds:
    """The text's UTF-8 bytes as token ids, documents joined by _EOS_BYTE: the tokens without a model."""

    def __init__(self) -> None:
        self._batch: list[bytes] = []
        self._arrays: list[np.ndarray] = []
        self.pending = 0

    def add(self, data: bytes) -> None:
        self._batch.append(data)
        self.pending += len(data)

    def flush(self) -> None:
        if self._batch:
            joined = np.frombuffer(b"\0".join(self._batch), dtype=np.uint8).astype(np.uint16)
            joined[joined == 0] = _EOS_BYTE
            if self._arrays:
                self._arrays.append(np.array([_EOS_BYTE], dtype=np.uint16))
            self._arrays.append(joined)
        self._batch, self.pending = [], 0

    def tokenized(self, name: str, text_bytes: int) -> TokenizedDataset:
        token_bytes = np.ones(_EOS_BYTE + 1, dtype=np.int64)
        token_bytes[_EOS_BYTE] = 0
        ids = np.concatenate(self._arrays) if self._arrays else np.zeros(0, dtype=np.uint16)
        return TokenizedDataset(ids, text_bytes, name, token_bytes=token_bytes, eos_id=_EOS_BYTE)


def measure_leakage(tokens: TokenizedDataset, ngram: int, tokenizer: str, report: HealthProgress) -> Leakage:
    """The share of validation windows whose tokens also occur in training, by position and by document.

    Each validation document is cut into back-to-back windows of ``ngram``
    tokens (fewer when the split is short, down to MIN_NGRAM, so it holds
    MIN_WINDOWS), and a window leaks when the same tokens occur anywhere in
    training. A document shorter than a window is one window of its own, which
    leaks when the same document is in training: a short record copied across
    the split counts, however short.
    """
    train, validation = tokens.split(VALIDATION_FRACTION)
    unit = "bytes" if tokenizer == "bytes" else "tokens"
    size = min(ngram, len(validation.ids) // MIN_WINDOWS)
    if size < MIN_NGRAM:
        note = f"not measured: the validation split holds {len(validation.ids)} {unit}, too few for windows"
        return Leakage(tokenizer, ngram, note, 0, 0, None, None)
    note = f"{size} {unit}, not {ngram}: the validation split is short" if size < ngram else ""
    windows, leaked = _leaked_windows(train.ids, validation.ids, size, tokens.eos_id, "leakage", report)
    by_document = None
    with contextlib.suppress(DatasetError):  # a dataset of one document (a .txt file) cannot be split so
        train_documents, validation_documents = tokens.split(VALIDATION_FRACTION, by="document")
        counted, found = _leaked_windows(
            train_documents.ids, validation_documents.ids, size, tokens.eos_id, "leakage by document", report
        )
        by_document = found / max(counted, 1)
    return Leakage(tokenizer, size, note, windows, leaked, leaked / windows, by_document)


def _leaked_windows(
    train: np.ndarray, validation: np.ndarray, size: int, eos: int | None, phase: str, report: HealthProgress
) -> tuple[int, int]:
    """(validation windows, those whose tokens occur in ``train``: anywhere, or as a document when short).

    A table of the validation hashes' low bits lets most training n-grams go
    at one lookup; the few left are matched exactly.
    """
    starts, stops = _validation_windows(validation, size, eos)
    hashes = _run_hashes(validation, starts, stops, size)
    whole = stops - starts == size
    unique = np.unique(hashes[whole])
    mask = np.uint64((1 << _FILTER_BITS) - 1)
    maybe = np.zeros(1 << _FILTER_BITS, dtype=bool)
    maybe[unique & mask] = True
    found = [np.zeros(0, dtype=np.uint64)]
    for number, first in enumerate(range(0, len(train) - size + 1, _CHUNK_TOKENS)):
        report(phase, number * _CHUNK_TOKENS, len(train))
        ngrams = _window_hashes(np.asarray(train[first : first + _CHUNK_TOKENS + size - 1]), size)
        candidates = ngrams[maybe[ngrams & mask]]
        found.append(candidates[np.isin(candidates, unique)])
    report(phase, len(train), len(train))
    document_starts, document_stops = _document_runs(train, eos)
    short = document_stops - document_starts < size
    short_documents = _run_hashes(train, document_starts[short], document_stops[short], size)
    leaked = np.where(whole, np.isin(hashes, np.concatenate(found)), np.isin(hashes, short_documents))
    return len(hashes), int(leaked.sum())


def _document_runs(ids: np.ndarray, eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the documents in ``ids``, without their EOS; all of them is one without an EOS id."""
    ends = np.flatnonzero(np.asarray(ids) == eos) if eos is not None else np.zeros(0, dtype=np.int64)
    starts, stops = np.concatenate(([0], ends + 1)), np.concatenate((ends, [len(ids)]))
    filled = stops > starts
    return starts[filled], stops[filled]


def _validation_windows(ids: np.ndarray, size: int, eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of back-to-back windows of ``size`` inside each document; a shorter document is one."""
    starts, stops = _document_runs(ids, eos)
    lengths = stops - starts
    counts = np.where(lengths >= size, lengths // size, 1)
    number = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # the window's place in its doc
    window_starts = np.repeat(starts, counts) + number * size
    return window_starts, np.minimum(window_starts + size, np.repeat(stops, counts))


def _run_hashes(ids: np.ndarray, starts: np.ndarray, stops: np.ndarray, longest: int) -> np.ndarray:
    """``_segment_hashes`` of runs (sorted, none longer than ``longest``), a chunk of ``ids`` at a time."""
    hashes = np.zeros(len(starts), dtype=np.uint64)
    for first in range(0, len(ids), _CHUNK_TOKENS):
        chosen = slice(*np.searchsorted(starts, [first, first + _CHUNK_TOKENS]))
        if chosen.start < chosen.stop:
            piece = np.asarray(ids[first : first + _CHUNK_TOKENS + longest])
            hashes[chosen] = _segment_hashes(piece, starts[chosen] - first, stops[chosen] - first)
    return hashes


# ---------------------------------------------------------------------------
# A copy without duplicates


@dataclass(frozen=True)
class DedupeResult:
    """What ``dedupe_dataset`` wrote."""

    out: Path
    documents: int  # in the input
    exact_removed: int
    near_removed: int
    kept: int
    note: str  # how the copy is written when not in the input's own format, or ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"out": str(self.out)}


_MIRRORED = (".txt", ".md", ".jsonl", ".csv")  # formats written back as they were read


def dedupe_dataset(
    dataset: Dataset, out: Path, *, near: bool = False, progress: HealthProgress | None = None
) -> DedupeResult:
    """Write ``dataset`` to ``out`` without documents that copy an earlier one (and near copies, with ``near``).

    The original is never touched. A file is written as a file of its own
    format and a folder as a folder (each file in its format; a .txt or .md
    file that copies an earlier document is left out whole); .jsonl records
    and .csv rows are kept as they were, other fields and columns too. A
    dataset in any other format is written as JSONL with a "text" field.
    ``out`` must be new, outside the input, in a folder that exists; it is
    written under a temporary name and renamed, so a failure leaves nothing.
    """
    report = progress or (lambda phase, done, total: None)
    target = _checked_output(dataset, Path(out))
    near_copies, documents, exact = _documents_to_drop(dataset, near, report)
    keeper = _Keeper(near_copies)
    note = ""
    if not _mirrored(dataset):
        with atomic_output(target) as stream:
            _write_jsonl_documents(dataset, keeper, stream)
        note = "written as JSONL with a 'text' field: this dataset's format is read, not written"
    elif dataset.path.is_dir():
        _write_folder(dataset, keeper, target)
    else:
        with atomic_output(target) as stream:
            _write_file(dataset.files[0], dataset.field or DEFAULT_FIELD, keeper, stream)
    removed = exact + len(near_copies)
    return DedupeResult(target, documents, exact, len(near_copies), documents - removed, note)


def _checked_output(dataset: Dataset, out: Path) -> Path:
    """``out`` made absolute, or DatasetError: it is the input or inside it, it exists, its folder does
    not, or its suffix is not the format it would be written in."""
    target = out.expanduser().resolve()
    source = dataset.path.resolve()
    if target == source or source in target.parents:
        raise DatasetError(
            f"The output {out} is the input dataset, or inside it: dedupe never touches the original. "
            "Give a new path outside it."
        )
    if target.exists():
        raise DatasetError(f"The output {out} already exists: dedupe writes only new files. Give a new path.")
    if not target.parent.is_dir():
        raise DatasetError(f"The folder {target.parent} does not exist: create it, or put the output elsewhere.")
    suffix = target.suffix.lower()
    if not _mirrored(dataset):
        if suffix != ".jsonl":
            raise DatasetError(
                f"The output {out} is written as JSONL with a 'text' field (this dataset's format is read, "
                "not written): give a name ending in .jsonl."
            )
    elif source.is_file():
        if suffix != source.suffix.lower():
            raise DatasetError(f"The output {out} is written as {source.suffix}, like the input: give it that suffix.")
    elif suffix in SUPPORTED_SUFFIXES:
        raise DatasetError(f"The output {out} is written as a folder, like the input: give a name without {suffix}.")
    return target


def _mirrored(dataset: Dataset) -> bool:
    """Whether every file of the dataset is in a format dedupe writes back as it was."""
    return all(file.suffix.lower() in _MIRRORED for file in dataset.files)


def _documents_to_drop(dataset: Dataset, near: bool, report: HealthProgress) -> tuple[set[bytes], int, int]:
    """(keys of the near duplicates' texts, documents, exact copies): one pass, then the bands."""
    finder = _NearDuplicateFinder(report)
    seen: set[bytes] = set()
    keys: list[bytes] = []
    total, done, reported = _size_on_disk(dataset), 0, 0
    for index, text in enumerate(dataset.documents()):
        data = text.encode("utf-8")
        key = _document_key(data)
        if near:
            finder.add(index, data, key in seen)
        seen.add(key)
        keys.append(key)
        done += len(data)
        if done - reported >= _BATCH_BYTES:
            report("reading", min(done, total), total)
            reported = done
    report("reading", total, total)
    finder.flush()
    near_copies = {keys[index] for index in finder.pairs()} if near else set()
    return near_copies, len(keys), len(keys) - len(seen)


class _Keeper:
    """Whether each document is kept, text by text in the input's order: the first of each text, unless dropped."""

    def __init__(self, dropped: set[bytes]) -> None:
        self._dropped = dropped
        self._seen: set[bytes] = set()

    def keeps(self, text: str) -> bool:
        key = _document_key(text.encode("utf-8"))
        if key in self._seen or key in self._dropped:
            return False
        self._seen.add(key)
        return True


def _write_file(file: Path, field: str, keeper: _Keeper, stream: typing.BinaryIO) -> bool:
    """Write ``file``'s kept documents to ``stream`` in its own format; False when nothing of it is kept.

    Documents are found as the engine's readers find them: a .txt or .md file
    is one; a .jsonl line or .csv row with text in ``field`` is one (others
    are kept as they are). The input was read whole before, so it is valid.
    """
    suffix = file.suffix.lower()
    if suffix in (".txt", ".md"):
        data = file.read_bytes()
        if not keeper.keeps(data.decode("utf-8-sig")):
            return False
        stream.write(data)
    elif suffix == ".jsonl":
        with open(file, "rb") as lines:
            for line in lines:
                text = line.decode("utf-8-sig").strip()
                record = json.loads(text) if text else None
                value = record.get(field) if isinstance(record, dict) else None
                if record is None or (isinstance(value, str) and value and not keeper.keeps(value)):
                    continue
                stream.write(line if line.endswith(b"\n") else line + b"\n")
    else:
        with open(file, encoding="utf-8-sig", newline="") as rows:
            reader = csv.reader(rows)
            header = next(row for row in reader if row)
            column = header.index(field)
            out = io.TextIOWrapper(stream, encoding="utf-8", newline="")
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            for row in reader:
                document = row[column] if column < len(row) else ""
                if row and (not document or keeper.keeps(document)):
                    writer.writerow(row)
            out.detach()  # flushed into ``stream``, which stays open
    return True


def _write_folder(dataset: Dataset, keeper: _Keeper, out: Path) -> None:
    """Write the folder's files under a temporary folder beside ``out``, then rename it into place."""
    temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for file in dataset.files:
            target = temporary / file.relative_to(dataset.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as stream:
                kept = _write_file(file, dataset.field or DEFAULT_FIELD, keeper, stream)
            if not kept:
                target.unlink()
        os.rename(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _write_jsonl_documents(dataset: Dataset, keeper: _Keeper, stream: typing.BinaryIO) -> None:
    """Each kept document as a JSONL record with a "text" field (for formats dedupe cannot write back)."""
    for text in dataset.documents():
        if keeper.keeps(text):
            stream.write((json.dumps({DEFAULT_FIELD: text}, ensure_ascii=False) + "\n").encode("utf-8"))
