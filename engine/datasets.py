"""Datasets: find text, read it into documents, tokenize it once, sample training windows.

A dataset is a bundled sample (``sample_texts/``), a file, or a folder of files.
Files are read as UTF-8 and streamed in chunks of whole lines, so a huge file is
never held in memory whole, and every problem (a binary file, bytes that are not
UTF-8, a ``.jsonl`` line that is not JSON, a CSV without the column) is a
``DatasetError`` that names the file, the line or byte, and what to do.

    .txt .md   each file is one document
    .jsonl     one JSON object a line; the document is its ``text`` field (or the field named)
    .csv       a header row, then one document a row from the ``text`` column (or the column named)

Tokenized datasets are cached in ``token_cache_dir()`` as a flat array of token
ids (nanoGPT's ``train.bin``, plus a small JSON description), keyed by the
dataset's content hash and the tokenizer's fingerprint: a changed file or
another tokenizer means a new entry, never a stale one.

Only numpy is imported at module level; torch loads when a sampler is built.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Generator, Iterator

import numpy as np

from engine.errors import DatasetError, TrainingError
from engine.home import SAMPLE_TEXTS_DIR, token_cache_dir

if TYPE_CHECKING:
    import torch

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
DEFAULT_FIELD = "text"
Progress = Callable[[int, int], None]

_BLOCK_BYTES = 1 << 16  # files are read (and open_dataset checks their start) in blocks this size
_BATCH_CHARS = 1 << 17  # text handed to the tokenizer at once; progress is reported per batch
_SUM_CHUNK = 1 << 24  # token ids summed at once when counting a split's bytes
_PREVIEW_LINE_CHARS = 200  # preview lines longer than this are cut
_CSV_CELL_LIMIT = 2**31 - 1  # characters in one CSV cell (the largest the csv module takes everywhere)
_CACHE_FORMAT = 1  # bump when the cache layout changes, so old entries are ignored
_STALE_TEMPORARY_SECONDS = 3600


# ---------------------------------------------------------------------------
# Datasets and their documents


@dataclass(frozen=True)
class DatasetStats:
    """What a dataset holds, measured without a tokenizer."""

    files: int
    bytes: int
    documents: int
    characters: int


@dataclass(frozen=True)
class _Piece:
    """A stretch of one document's text, as a reader produced it.

    Long documents come in several pieces of whole lines; ``end_offset`` is how
    far into its file the reader had got (for progress).
    """

    text: str
    starts_document: bool
    end_offset: int


@dataclass(frozen=True)
class Dataset:
    """Text to train on: one file or a folder of files, read into documents."""

    name: str  # "fables" for sample_texts/fables.txt, else the file or folder name
    path: Path  # the resolved file or folder
    files: tuple[Path, ...]  # the readable files it holds, sorted
    field: str | None = None  # the .jsonl field or .csv column holding the text (None: "text")

    def documents(self) -> Iterator[str]:
        """Every document in order; a DatasetError names the file (and line) of bad content."""
        parts: list[str] = []
        for piece, _ in self._pieces():
            if piece.starts_document and parts:
                yield "".join(parts)
                parts = []
            parts.append(piece.text)
        if parts:
            yield "".join(parts)

    def content_hash(self) -> str:
        """A sha256 over the files' relative names, sizes and bytes (and the field read).

        It keys the token cache: any change to any file gives a new hash.
        """
        digest = hashlib.sha256()
        for file in self.files:
            relative = file.name if file == self.path else file.relative_to(self.path).as_posix()
            digest.update(f"{relative}\0{_file_size(file)}\0".encode())
            with _open_binary(file) as stream:
                while block := stream.read(_BLOCK_BYTES):
                    digest.update(block)
        digest.update(f"\0field\0{self.field or DEFAULT_FIELD}".encode())
        return digest.hexdigest()

    def stats(self) -> DatasetStats:
        """Files, bytes, documents and characters, in one pass over the text."""
        documents = characters = 0
        for piece, _ in self._pieces():
            documents += piece.starts_document
            characters += len(piece.text)
        return DatasetStats(
            files=len(self.files), bytes=self._total_bytes(), documents=documents, characters=characters
        )

    def preview(self, max_lines: int = 20) -> str:
        """The first lines of the first documents, a blank line between documents.

        Lines longer than a screen are cut with an ellipsis; only as much of the
        dataset is read as the preview needs.
        """
        lines: list[str] = []
        pieces = self._pieces()
        try:
            for piece, _ in pieces:
                if len(lines) >= max_lines:
                    break
                if piece.starts_document and lines:
                    lines.append("")
                text = piece.text[:-1] if piece.text.endswith("\n") else piece.text
                lines.extend(_cut(line) for line in text.split("\n"))
        finally:
            pieces.close()
        return "\n".join(lines[:max_lines])

    def _total_bytes(self) -> int:
        """The size of its files on disk."""
        return sum(_file_size(file) for file in self.files)

    def _pieces(self) -> Generator[tuple[_Piece, int], None, None]:
        """Every piece of every file, with the bytes of the dataset read so far."""
        done = 0
        for file in self.files:
            for piece in _file_pieces(file, self.field or DEFAULT_FIELD):
                yield piece, done + piece.end_offset
            done += _file_size(file)


def bundled_datasets() -> list[Dataset]:
    """The datasets in ``sample_texts/``: each supported file (not README.md) and each folder."""
    return [_dataset_at(path, name, None) for name, path in _bundled_paths().items()]


def open_dataset(name_or_path: str, field: str | None = None) -> Dataset:
    """A bundled dataset by name ("fables"), or a file or folder by path.

    A bundled name wins over a file of the same name in the working directory
    (write ``./fables`` for that), so a run that names "fables" always means
    the bundled one. The files are checked as they are opened: the start of each
    is read, so an unsupported, binary, empty or non-UTF-8 file (or a missing
    field) is reported now, not half way through training.
    """
    if not name_or_path or not name_or_path.strip():
        raise DatasetError(
            f"No dataset given. Name a bundled dataset ({_bundled_listing()}) or give a file or folder path."
        )
    if field is not None and not field.strip():
        raise DatasetError(
            "The field name is empty. Give the .jsonl field or .csv column that holds "
            f"the text, or leave it out to read '{DEFAULT_FIELD}'."
        )
    bundled = _bundled_paths()
    if name_or_path in bundled:
        return _dataset_at(bundled[name_or_path], name_or_path, field)
    path = Path(name_or_path).expanduser()
    try:
        exists = path.exists()
        path = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"Cannot use '{name_or_path}' as a dataset path: {exc}.") from exc
    if not exists:
        raise DatasetError(
            f"No dataset '{name_or_path}': there is no such file or folder, and no bundled "
            f"dataset has that name (bundled: {_bundled_listing()})."
        )
    name = path.stem if path.parent == SAMPLE_TEXTS_DIR else path.name
    return _dataset_at(path, name, field)


def iter_texts(dataset: Dataset) -> Iterator[str]:
    """The dataset's text for tokenizer training: documents, long ones in pieces of whole lines.

    A tokenizer trainer splits text into words before counting them, so
    pieces learn the same merges as whole documents, while a huge file is never
    held in memory at once.
    """
    for piece, _ in dataset._pieces():
        yield piece.text


def _bundled_paths() -> dict[str, Path]:
    """Bundled dataset names and their paths, sorted by name."""
    if not SAMPLE_TEXTS_DIR.is_dir():
        return {}
    found = {}
    for path in sorted(SAMPLE_TEXTS_DIR.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            found[path.name] = path
        elif path.suffix.lower() in SUPPORTED_SUFFIXES and path.name.lower() != "readme.md":
            found[path.stem] = path
    return found


def _bundled_listing() -> str:
    return ", ".join(_bundled_paths()) or "none found"


def _dataset_at(path: Path, name: str, field: str | None) -> Dataset:
    """Check a file or folder and describe it as a Dataset."""
    if path.is_dir():
        files = _folder_files(path)
    elif path.is_file():
        _check_suffix(path)
        files = (path,)
    else:
        raise DatasetError(
            f"{path} is neither a file nor a folder. Give a .txt, .md, .jsonl or .csv file, or a folder of them."
        )
    for file in files:
        _check_start(file, field or DEFAULT_FIELD)
    return Dataset(name=name, path=path, files=files, field=field)


def _folder_files(folder: Path) -> tuple[Path, ...]:
    """The supported files under a folder, recursively, sorted; hidden files and folders skipped."""
    supported: list[Path] = []
    others: list[Path] = []
    try:
        for root, directories, names in os.walk(folder, onerror=_raise_walk_error):
            directories[:] = sorted(d for d in directories if not d.startswith("."))
            for file_name in sorted(names):
                if file_name.startswith("."):
                    continue
                file = Path(root) / file_name
                (supported if file.suffix.lower() in SUPPORTED_SUFFIXES else others).append(file)
    except OSError as exc:
        raise DatasetError(
            f"Cannot read the folder {folder}: {exc.strerror or exc}. Check that it exists and that you may read it."
        ) from exc
    if supported:
        return tuple(sorted(supported, key=lambda file: file.relative_to(folder).as_posix()))
    if not others:
        raise DatasetError(f"The folder {folder} is empty. Put .txt, .md, .jsonl or .csv files in it.")
    example = others[0].relative_to(folder)
    raise DatasetError(
        f"The folder {folder} has no .txt, .md, .jsonl or .csv files ({len(others)} other "
        f"file{'s' if len(others) != 1 else ''}, such as {example}). Add text files or "
        "choose another folder."
    )


def _raise_walk_error(error: OSError) -> None:
    raise error


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        kind = f"'{path.suffix}' files" if path.suffix else "files without a suffix"
        raise DatasetError(
            f"{path}: lm-workbench cannot read {kind}. It reads .txt, .md, .jsonl and "
            ".csv; save the text as one of these (UTF-8)."
        )


def _check_start(path: Path, field: str) -> None:
    """Read the start of a file (all of a small one), so bad files are reported when opened."""
    if _file_size(path) == 0:
        raise _empty_file_error(path)
    pieces = _file_pieces(path, field)
    try:
        for piece in pieces:
            if piece.end_offset >= _BLOCK_BYTES:
                break
    finally:
        pieces.close()


def _cut(line: str) -> str:
    return line if len(line) <= _PREVIEW_LINE_CHARS else line[: _PREVIEW_LINE_CHARS - 1] + "…"


# ---------------------------------------------------------------------------
# Readers: bytes to checked text, text to documents


def _file_pieces(path: Path, field: str) -> Generator[_Piece, None, None]:
    """The pieces of one file's documents, by the reader its suffix names."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_pieces(path, field)
    if suffix == ".csv":
        return _csv_pieces(path, field)
    return _text_pieces(path)


def _text_pieces(path: Path) -> Generator[_Piece, None, None]:
    """A .txt or .md file is one document."""
    has_text = False
    for number, (text, _, end) in enumerate(_text_chunks(path)):
        has_text = has_text or bool(text.strip())
        yield _Piece(text, starts_document=number == 0, end_offset=end)
    if not has_text:
        raise _empty_file_error(path)


def _jsonl_pieces(path: Path, field: str) -> Generator[_Piece, None, None]:
    """One document per non-blank line: the line's JSON object's ``field``."""
    found = False
    for number, line, end in _numbered_lines(path):
        if not line.strip():
            continue
        text = _jsonl_field(path, number, line, field)
        if text:
            found = True
            yield _Piece(text, starts_document=True, end_offset=end)
    if not found:
        raise DatasetError(
            f"{path} has no records with text in the field '{field}'. Add some, or name the field that holds the text."
        )


def _jsonl_field(path: Path, number: int, line: str, field: str) -> str:
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
        raise DatasetError(
            f"{where}: not valid JSON ({reason}). Each line of a .jsonl file must be one "
            f'JSON object, like {{"{field}": "..."}}.'
        ) from exc
    if not isinstance(record, dict):
        raise DatasetError(
            f"{where}: {_json_kind(record)} where a JSON object was expected. Each line of "
            f'a .jsonl file must be one object, like {{"{field}": "..."}}.'
        )
    if field not in record:
        raise DatasetError(
            f"{where}: no field '{field}' (the fields are {_listing(list(record))}). Name the "
            "field that holds the text (--field NAME)."
        )
    value = record[field]
    if not isinstance(value, str):
        raise DatasetError(
            f"{where}: the field '{field}' is {_json_kind(value)}, not text. Name a field "
            "that holds text (--field NAME)."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DatasetError(
            f"{where}: the field '{field}' has a \\u escape that is not a character (a lone "
            "surrogate). Fix or remove that record."
        ) from exc
    return value


def _csv_pieces(path: Path, column: str) -> Generator[_Piece, None, None]:
    """A header row, then one document per row: the cell in ``column`` (empty cells skipped)."""
    reached = [0]  # the byte offset of the last line the csv reader asked for

    def lines() -> Iterator[str]:
        for _, line, end in _numbered_lines(path):
            reached[0] = end
            yield line

    # A cell may hold a whole long document; the csv module's default limit is 128K characters.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_CELL_LIMIT))
    reader = csv.reader(lines())
    found = False
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise _empty_file_error(path)
        if column not in header:
            raise DatasetError(
                f"{path} has no column '{column}' (its columns are {_listing(header)}). "
                "Name the column that holds the text (--field NAME)."
            )
        index = header.index(column)
        for row in reader:
            if index < len(row) and row[index]:
                found = True
                yield _Piece(row[index], starts_document=True, end_offset=reached[0])
    except csv.Error as exc:
        raise DatasetError(
            f"{path}, line {reader.line_num}: not valid CSV ({exc}). Check the quoting on that line."
        ) from exc
    if not found:
        raise DatasetError(f"{path} has a '{column}' column, but no row has text in it.")


def _numbered_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, line with its newline, byte offset of its chunk's end), streamed."""
    number = 0
    for text, _, end in _text_chunks(path):
        lines = text.split("\n")
        last = lines.pop()
        for line in lines:
            number += 1
            yield number, line + "\n", end
        if last:
            number += 1
            yield number, last, end


def _text_chunks(path: Path) -> Iterator[tuple[str, int, int]]:
    """A file's text in chunks of whole lines: (text, start offset, end offset) in bytes.

    A NUL byte means a binary file; bytes that are not UTF-8 are reported with
    their offset and line. Chunks end at a newline byte, which is never inside
    a UTF-8 character, so each chunk decodes on its own. A UTF-8 byte order
    mark is dropped.
    """
    pending = bytearray()
    start = 0  # file offset of pending[0]
    lines_before = 0  # newlines before pending[0], for error messages
    with _open_binary(path) as stream:
        while block := stream.read(_BLOCK_BYTES):
            nul = block.find(b"\0")
            if nul >= 0:
                raise _binary_file_error(path, start + len(pending) + nul)
            last_newline = block.rfind(b"\n")
            pending += block
            if last_newline < 0:
                continue
            cut = len(pending) - len(block) + last_newline + 1
            yield _decode(path, bytes(pending[:cut]), start, lines_before), start, start + cut
            lines_before += pending.count(b"\n", 0, cut)
            del pending[:cut]
            start += cut
    if pending:
        yield _decode(path, bytes(pending), start, lines_before), start, start + len(pending)


def _decode(path: Path, data: bytes, start: int, lines_before: int) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02X} at byte offset {start + exc.start} "
            f"(line {line}) cannot be decoded. Save the file as UTF-8, e.g. "
            f"iconv -f latin1 -t utf-8 '{path.name}' > fixed{path.suffix}"
        ) from exc
    return text[1:] if start == 0 and text.startswith("\ufeff") else text


def _open_binary(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DatasetError(
            f"Cannot read {path}: {exc.strerror or exc}. Check that it exists and that you may read it."
        ) from exc


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DatasetError(
            f"Cannot read {path}: {exc.strerror or exc}. Check that it exists and that you may read it."
        ) from exc


def _empty_file_error(path: Path) -> DatasetError:
    return DatasetError(f"{path} is empty (no text in it). Add text, or remove it from the dataset.")


def _binary_file_error(path: Path, offset: int) -> DatasetError:
    return DatasetError(
        f"{path} looks like a binary file, not text (a NUL byte at offset {offset}). Use a "
        "UTF-8 text file; if it is UTF-16 text, save it again as UTF-8."
    )


def _json_kind(value: object) -> str:
    kinds = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true or false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)


def _listing(names: list[str]) -> str:
    """Names for an error message: quoted, shortened, at most ten of them."""
    shown = [repr(_cut_name(name)) for name in names[:10]]
    more = len(names) - len(shown)
    return (", ".join(shown) or "none") + (f" and {more} more" if more > 0 else "")


def _cut_name(name: str) -> str:
    return name if len(name) <= 40 else name[:39] + "…"


# ---------------------------------------------------------------------------
# Tokenized datasets and their cache

VALIDATION_FRACTION = 0.1  # the share of a dataset's tokens held out for validation
# How the validation tokens are chosen (TokenizedDataset.split, TrainingConfig.split_by):
#   position  the last VALIDATION_FRACTION of the tokens, in the dataset's order
#   document  whole documents, picked by a hash of their content, so no document (and no
#             copy of one) sits on both sides
SPLIT_CHOICES = ("position", "document")


@dataclass
class TokenSplit:
    """Token ids for training or validation, and the bytes of text they encode (for bits per byte)."""

    ids: np.ndarray
    num_bytes: int
    name: str = "split"  # for messages: "validation split of 'fables' (its last 10%)"


@dataclass
class TokenizedDataset:
    """All of a dataset's token ids, documents joined by the tokenizer's EOS id."""

    ids: np.ndarray  # uint16 or uint32; read-only, mapped from the cache file
    num_bytes: int  # UTF-8 bytes of the text those ids encode
    name: str = ""  # the dataset's name, for messages
    token_bytes: np.ndarray | None = None  # bytes of text each token id stands for, when known exactly
    eos_id: int | None = None  # the id joining documents (None: the tokenizer has none, so one run of text)

    def split(self, val_fraction: float = VALIDATION_FRACTION, by: str = "position") -> tuple[TokenSplit, TokenSplit]:
        """(train, validation), always the same for the same ids: ``by`` is one of SPLIT_CHOICES.

        By position the last ``val_fraction`` of the ids is validation. By
        document, validation is whole documents, taken in the order of a hash
        of their ids until they hold about ``val_fraction`` of the tokens; equal
        documents share a hash and go to the same side, so a duplicated
        document cannot flatter the validation loss.
        """
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be at least 0 and below 1, not {val_fraction}")
        if by == "document":
            in_validation = self._validation_documents(val_fraction)
            train_ids, val_ids = self.ids[~in_validation], self.ids[in_validation]
            held_out = f"whole documents, about {val_fraction:.0%} of its tokens"
        elif by == "position":
            cut = len(self.ids) - round(len(self.ids) * val_fraction)
            train_ids, val_ids = self.ids[:cut], self.ids[cut:]
            held_out = f"its last {val_fraction:.0%}"
        else:
            raise ValueError(f"by must be one of {SPLIT_CHOICES}, not {by!r}")
        val_bytes = self._bytes_in(val_ids)
        return (
            TokenSplit(train_ids, self.num_bytes - val_bytes, f"training split of '{self.name}'"),
            TokenSplit(val_ids, val_bytes, f"validation split of '{self.name}' ({held_out})"),
        )

    def _validation_documents(self, val_fraction: float) -> np.ndarray:
        """A mask over the ids: True on the documents (each with its EOS) that the document split holds out.

        Documents are ordered by a hash of their ids; each group of equal
        documents is taken whole if it still fits in ``val_fraction`` of the
        tokens, so the choice never depends on where a document sits.
        """
        if self.eos_id is None:
            raise DatasetError(
                f"'{self.name}' cannot be split by document: its tokenizer has no end-of-text token to "
                "tell documents apart. Split it by position."
            )
        ends = np.flatnonzero(np.asarray(self.ids) == self.eos_id)  # the EOS after each document but the last
        starts = np.concatenate(([0], ends + 1))
        stops = np.concatenate((ends + 1, [len(self.ids)]))  # a document's EOS goes with it
        content_stops = np.concatenate((ends, [len(self.ids)]))
        keys = np.array(
            [
                int.from_bytes(hashlib.blake2b(self.ids[start:stop].tobytes(), digest_size=8).digest(), "little")
                for start, stop in zip(starts, content_stops, strict=True)
            ],
            dtype=np.uint64,
        )
        lengths = stops - starts
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        group_starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
        target = round(len(self.ids) * val_fraction)
        taken = 0
        take = np.zeros(len(group_starts), dtype=bool)
        for group, size in enumerate(np.add.reduceat(lengths[order], group_starts).tolist()):
            if taken + size <= target:
                take[group] = True
                taken += size
        chosen = np.zeros(len(keys), dtype=bool)
        chosen[order] = np.repeat(take, np.diff(np.append(group_starts, len(keys))))
        if not taken and target:
            raise DatasetError(
                f"'{self.name}' cannot be split by document: it has {len(keys):,} document"
                f"{'s' if len(keys) != 1 else ''} and none fits in {val_fraction:.0%} of its tokens (a .txt or "
                ".md file is one document). Split it by position, or use more, smaller documents."
            )
        return np.repeat(chosen, lengths)

    def _bytes_in(self, ids: np.ndarray) -> int:
        """Bytes of text a run of ids encodes: exact with a byte-level vocabulary, else in proportion."""
        if self.token_bytes is None:
            return round(self.num_bytes * len(ids) / max(len(self.ids), 1))
        return sum(int(self.token_bytes[ids[i : i + _SUM_CHUNK]].sum()) for i in range(0, len(ids), _SUM_CHUNK))


def tokenize_dataset(dataset: Dataset, tokenizer, progress: Progress | None = None) -> TokenizedDataset:
    """Token ids for the whole dataset, from the cache or tokenized now (and cached).

    ``progress(done_bytes, total_bytes)`` is called as the files are tokenized;
    a cache hit tokenizes nothing and reports nothing.
    """
    cache_dir = token_cache_dir()
    _remove_stale_temporaries(cache_dir)
    content_hash, fingerprint = dataset.content_hash(), tokenizer_fingerprint(tokenizer)
    key = hashlib.sha256(f"{_CACHE_FORMAT}\0{content_hash}\0{fingerprint}".encode()).hexdigest()[:32]
    stem = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', dataset.name)[:40]}-{key}"
    ids_path, meta_path = cache_dir / f"{stem}.tokens", cache_dir / f"{stem}.json"
    meta = _read_cache_meta(ids_path, meta_path)
    if meta is None:
        meta = {
            "format": _CACHE_FORMAT,
            "dataset": dataset.name,
            "path": str(dataset.path),
            "content_hash": content_hash,
            "tokenizer": fingerprint,
            **_tokenize_into(dataset, tokenizer, ids_path, progress),
        }
        try:
            with atomic_output(meta_path) as stream:
                stream.write(json.dumps(meta, indent=2).encode())
        except OSError as exc:
            raise _cache_write_error(cache_dir, exc) from exc
    return TokenizedDataset(
        ids=np.memmap(ids_path, dtype=meta["dtype"], mode="r"),
        num_bytes=meta["bytes"],
        name=dataset.name,
        token_bytes=_token_byte_lengths(tokenizer) if meta["exact_bytes"] else None,
        eos_id=tokenizer.eos_token_id,
    )


def count_tokens(dataset: Dataset, tokenizer, progress: Progress | None = None) -> int:
    """How many tokens the dataset is under this tokenizer (tokenizing it once, into the cache)."""
    return len(tokenize_dataset(dataset, tokenizer, progress).ids)


def tokenizer_fingerprint(tokenizer) -> str:
    """A sha256 that changes when the tokenizer would turn text into different ids.

    It covers the backend tokenizer's full description (vocabulary, merges,
    normalizer, pre-tokenizer, added tokens), or the vocabulary of a tokenizer
    without one, and the EOS id that joins documents. Truncation and padding
    settings, which transformers changes as it is used, are left out.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        description = json.loads(backend.to_str())
        description.pop("truncation", None)
        description.pop("padding", None)
    else:
        description = sorted(tokenizer.get_vocab().items())
    text = json.dumps([description, tokenizer.eos_token_id], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _tokenize_into(dataset: Dataset, tokenizer, ids_path: Path, progress: Progress | None) -> dict:
    """Tokenize the dataset batch by batch into ``ids_path``; return what the cache records of it.

    Documents are joined by the EOS id (none if the tokenizer has no EOS). The
    bytes of text are counted exactly as they are read; when the vocabulary is
    byte-level, every batch also checks that its ids' byte lengths add up to
    its text, so splits can count their bytes exactly later.
    """
    encode = _batch_encoder(tokenizer)
    token_bytes = _token_byte_lengths(tokenizer)
    eos = tokenizer.eos_token_id
    dtype = np.dtype(np.uint16 if _vocabulary_size(tokenizer) <= 1 << 16 else np.uint32)
    total = dataset._total_bytes()
    tokens = text_bytes = documents = 0
    exact = token_bytes is not None
    try:
        with atomic_output(ids_path) as stream:
            for batch, done in _batches(dataset):
                ids: list[int] = []
                for piece, piece_ids in zip(batch, encode([piece.text for piece in batch]), strict=True):
                    if piece.starts_document:
                        if documents and eos is not None:
                            ids.append(eos)
                        documents += 1
                    ids.extend(piece_ids)
                array = np.asarray(ids, dtype=dtype)
                batch_bytes = sum(len(piece.text.encode("utf-8")) for piece in batch)
                if exact and token_bytes is not None:
                    exact = int(token_bytes[array].sum()) == batch_bytes
                array.tofile(stream)
                tokens += len(array)
                text_bytes += batch_bytes
                if progress is not None:
                    progress(done, total)
            if tokens == 0:
                raise DatasetError(
                    f"The tokenizer turned {dataset.path} into no tokens at all. Use a "
                    "dataset with more text, or another tokenizer."
                )
    except OSError as exc:
        raise _cache_write_error(ids_path.parent, exc) from exc
    return {
        "dtype": dtype.name,
        "tokens": tokens,
        "bytes": text_bytes,
        "documents": documents,
        "exact_bytes": exact,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _batches(dataset: Dataset) -> Iterator[tuple[list[_Piece], int]]:
    """Pieces in batches of about ``_BATCH_CHARS`` characters, with the dataset bytes read so far."""
    batch: list[_Piece] = []
    size = done = 0
    for piece, done in dataset._pieces():
        batch.append(piece)
        size += len(piece.text)
        if size >= _BATCH_CHARS:
            yield batch, done
            batch, size = [], 0
    if batch:
        yield batch, done


def _batch_encoder(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """A function from texts to their ids, with no special tokens added and no truncation.

    The Rust backend encodes a batch in parallel. It is copied (so the caller's
    tokenizer is untouched) when transformers left truncation or padding on, or
    when it is not a plain ``tokenizers.Tokenizer`` (a tokenizer built by other
    code may hold a wrapper such as ``ByteLevelBPETokenizer``).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]
    from tokenizers import Tokenizer

    if not isinstance(backend, Tokenizer) or backend.truncation is not None or backend.padding is not None:
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    return lambda texts: [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]


def _vocabulary_size(tokenizer) -> int:
    """One more than the largest token id, added tokens included."""
    return max(max(tokenizer.get_vocab().values()) + 1, len(tokenizer))


def _byte_level_alphabet() -> frozenset[str]:
    """The 256 characters byte-level BPE (GPT-2's tokenizer) writes bytes as, one character a byte.

    Printable Latin-1 characters stand for themselves; the other bytes are
    shifted to characters from U+0100 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [256 + n for n in range(256 - len(printable))]
    return frozenset(chr(code) for code in printable + shifted)


_BYTE_LEVEL_ALPHABET = _byte_level_alphabet()


def _token_byte_lengths(tokenizer) -> np.ndarray | None:
    """Bytes of text each token id stands for, if the vocabulary is byte-level; else None.

    In a byte-level vocabulary each character of a token is one byte of text.
    Special and added tokens count as no text (EOS joins documents; it is not
    in them). Tokenization checks these lengths against the real text, so a
    vocabulary that only looks byte-level is caught there.
    """
    vocabulary = tokenizer.get_vocab()
    added = set(getattr(tokenizer, "added_tokens_decoder", {}))
    if tokenizer.eos_token_id is not None:
        added.add(tokenizer.eos_token_id)
    lengths = np.zeros(_vocabulary_size(tokenizer), dtype=np.int64)
    for token, index in vocabulary.items():
        if index in added:
            continue
        if not set(token) <= _BYTE_LEVEL_ALPHABET:
            return None
        lengths[index] = len(token)
    return lengths


def _read_cache_meta(ids_path: Path, meta_path: Path) -> dict | None:
    """The cache entry's description, or None when it is missing, torn or does not match its ids file."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        complete = ids_path.stat().st_size == meta["tokens"] * np.dtype(meta["dtype"]).itemsize > 0
        usable = (
            meta["format"] == _CACHE_FORMAT and isinstance(meta["bytes"], int) and isinstance(meta["exact_bytes"], bool)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if complete and usable else None


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file renamed into place, so no reader sees half a file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete temporary files left by a tokenization that was killed (an hour old or more)."""
    cutoff = time.time() - _STALE_TEMPORARY_SECONDS
    for temporary in cache_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if temporary.stat().st_mtime < cutoff:
                temporary.unlink()


def _cache_write_error(cache_dir: Path, exc: OSError) -> DatasetError:
    return DatasetError(
        f"Cannot write the token cache in {cache_dir}: {exc.strerror or exc}. Free some "
        "disk space, or set LMWB_HOME to a writable place with room."
    )


# ---------------------------------------------------------------------------
# Training windows


class WindowSampler:
    """Random packed windows of block_size+1 tokens from one split, reproducible and resumable.

    Each batch is ``batch_size`` windows starting at random offsets; a window
    may cross document boundaries (the EOS ids between them teach the model
    where documents end). The offsets come from a torch generator seeded with
    ``seed``, and ``state_dict()`` captures the stream's position so a resumed
    run sees the same batches as one that never stopped.

    In a distributed run every rank draws the same global batch of
    ``batch_size * world_size`` offsets and keeps its own slice of it (rank r
    takes windows r*batch_size up to (r+1)*batch_size). So the ranks never
    train on the same windows, and together they see exactly the windows one
    process with ``batch_size * world_size`` would: the same run, spread over
    more devices.
    """

    def __init__(
        self, split: TokenSplit, block_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        import torch

        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be at least 1, not {block_size} and {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, not {rank}")
        available = len(split.ids)
        if available < block_size + 1:
            advice = (
                f"lower block_size to at most {available - 1}, or use a bigger dataset"
                if available > 1
                else "use a bigger dataset"
            )
            raise DatasetError(
                f"The {split.name} has {available} tokens, fewer than one window of "
                f"block_size + 1 = {block_size + 1} tokens: {advice}."
            )
        self.split = split
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batches_drawn = 0
        self._generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), both int64 [batch_size, block_size]; y is x shifted one token on."""
        import torch

        highest_start = len(self.split.ids) - self.block_size - 1
        global_starts = torch.randint(
            highest_start + 1, (self.batch_size * self.world_size,), generator=self._generator
        )
        starts = global_starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()
        rows = np.stack([self.split.ids[start : start + self.block_size + 1] for start in starts])
        windows = torch.from_numpy(rows.astype(np.int64))
        self.batches_drawn += 1
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict:
        """The stream's position: plain ints and lists, fit for JSON or ``torch.save``."""
        return {
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batches_drawn": self.batches_drawn,
            "generator": self._generator.get_state().tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream from a saved position (of the same rank)."""
        import torch

        try:
            rank, world_size = int(state["rank"]), int(state["world_size"])
            generator_state = torch.tensor(state["generator"], dtype=torch.uint8)
            batches_drawn = int(state["batches_drawn"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrainingError(
                f"The saved data position is damaged ({exc}). Resume from another checkpoint, or start a new run."
            ) from exc
        if (rank, world_size) != (self.rank, self.world_size):
            raise TrainingError(
                f"The saved data position belongs to rank {rank} of {world_size}, not rank "
                f"{self.rank} of {self.world_size}. Resume with the same number of processes."
            )
        try:
            self._generator.set_state(generator_state)
        except RuntimeError as exc:
            raise TrainingError(
                f"The saved data position is damaged ({exc}). Resume from another checkpoint, or start a new run."
            ) from exc
        self.batches_drawn = batches_drawn
