"""Datasets: find text, read it into documents, tokenize it once, sample training windows.

A dataset is a bundled sample (``sample_texts/``), a file, a folder of files, a
directory saved by the ``datasets`` library (``save_to_disk``), or a dataset
already in the local Hugging Face cache, named as on the Hub (``org/name``).
Everything is streamed: text files in chunks of whole lines (decompressed on
the way for ``.gz`` and ``.zst``), Parquet and Arrow in record batches, so a
huge file is never held in memory whole. Every problem (a binary file, bytes
that are not UTF-8, a ``.jsonl`` line that is not JSON, a CSV without the
column, a Parquet file without text, a damaged ``.gz``) is a ``DatasetError``
that names the file, the line, byte or row, and what to do.

    .txt .md        each file is one document
    .jsonl          one JSON object a line; the document is its ``text`` field (or the field named)
    .csv            a header row, then one document a row from the ``text`` column (or the column named)
    .gz .zst        any of these four, compressed (``notes.txt.gz``, ``data.jsonl.zst``)
    .parquet .arrow one document a row from the text column (``text_column``: named, or picked when obvious)
    save_to_disk    a saved Dataset, or one split of a saved DatasetDict, read memory-mapped by ``datasets``

A saved DatasetDict, or a cached dataset with several splits, is read one
split at a time: the split is named (``split``), or asked for.

Tokenized datasets are cached in ``token_cache_dir()`` as a flat array of token
ids (nanoGPT's ``train.bin``, plus a small JSON description), keyed by the
dataset's content hash and the tokenizer's fingerprint: a changed file or
another tokenizer means a new entry, never a stale one. The bytes of a
dataset's text (``Dataset.text_bytes``, what a plan sizes a run by) are kept
there too, under the content hash.

Only numpy is imported at module level; torch loads when a sampler is built.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import hashlib
import json
import os
import re
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Generator, Iterable, Iterator, Sequence

import numpy as np

from engine.errors import DatasetError, SettingsError, TrainingError
from engine.home import SAMPLE_TEXTS_DIR, hf_datasets_cache_dir, hf_hub_cache_dir, token_cache_dir

if TYPE_CHECKING:
    import datasets
    import pyarrow
    import torch

TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".csv")  # read as UTF-8 text, plain or compressed
RECORD_SUFFIXES = (".parquet", ".arrow")  # read in record batches by pyarrow
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + RECORD_SUFFIXES
COMPRESSED_SUFFIXES = (".gz", ".zst")  # a text file's last suffix when it is compressed: notes.txt.gz
DEFAULT_FIELD = "text"
# A Parquet or Arrow file's text column when none is named: the first of these it has, else its only text column.
TEXT_COLUMNS = ("text", "content", "body")
Progress = Callable[[int, int], None]

_BLOCK_BYTES = 1 << 16  # files are read (and open_dataset checks their start) in blocks this size
_BATCH_CHARS = 1 << 17  # text handed to the tokenizer at once; progress is reported per batch
_SUM_CHUNK = 1 << 24  # token ids summed at once when counting a split's bytes
_PREVIEW_LINE_CHARS = 200  # preview lines longer than this are cut
_CSV_CELL_LIMIT = 2**31 - 1  # characters in one CSV cell (the largest the csv module takes everywhere)
_RECORD_BATCH_ROWS = 256  # rows of a Parquet or Arrow column read at once
_READABLE = ".txt, .md, .jsonl or .csv files (also as .gz or .zst), .parquet or .arrow files"
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
    """Text to train on: a file, a folder of files, a saved dataset or a cached one, read into documents."""

    name: str  # "fables" for sample_texts/fables.txt, "org/name" from the HF cache, else the file or folder name
    path: Path  # the resolved file or folder (a cached dataset's snapshot or build folder)
    files: tuple[Path, ...]  # the readable files it holds, sorted (a saved dataset's: its split's .arrow files)
    field: str | None = None  # the .jsonl field, .csv or Parquet/Arrow column holding the text (None: "text")
    split: str | None = None  # the split read, of a saved DatasetDict or a cached dataset that has splits
    saved_dir: Path | None = None  # a save_to_disk directory, read by datasets.load_from_disk (None: file by file)

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
        """A sha256 over the files' relative names, sizes and bytes (and the field and split read).

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
        if self.split is not None:
            digest.update(f"\0split\0{self.split}".encode())
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

    def text_bytes(self) -> int:
        """The UTF-8 bytes of its documents' text: the size a plan scales a run by (see engine.planning).

        Not its files' size, which compression (.gz, .zst, Parquet) makes
        smaller than the text, and JSONL, CSV or Arrow markup larger. Counted in one
        streamed pass, then kept in the token cache under the content hash, so
        planning the same data again (each run of a sweep) only hashes its files.
        """
        record = token_cache_dir() / f"text-bytes-{self.content_hash()[:32]}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = json.loads(record.read_text(encoding="utf-8"))
            if cached["format"] == _CACHE_FORMAT and isinstance(cached["bytes"], int):
                return cached["bytes"]
        counted = sum(len(piece.text.encode("utf-8")) for piece, _ in self._pieces())
        try:
            with atomic_output(record) as stream:
                stream.write(json.dumps({"format": _CACHE_FORMAT, "bytes": counted}).encode())
        except OSError as exc:
            raise _cache_write_error(record.parent, exc) from exc
        return counted

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
        if self.saved_dir is not None:
            for piece in _saved_pieces(self.saved_dir, self.field, self._total_bytes()):
                yield piece, piece.end_offset
            return
        done = 0
        for file in self.files:
            for piece in _file_pieces(file, self.field):
                yield piece, done + piece.end_offset
            done += _file_size(file)


def bundled_datasets() -> list[Dataset]:
    """The datasets in ``sample_texts/``: each supported file (not README.md) and each folder."""
    return [_dataset_at(path, name, None, None) for name, path in _bundled_paths().items()]


def open_dataset(name_or_path: str, field: str | None = None, split: str | None = None) -> Dataset:
    """A bundled dataset by name ("fables"), a file or folder by path, or a cached dataset by its Hub name.

    A bundled name wins over a file of the same name in the working directory
    (write ``./fables`` for that), so a run that names "fables" always means
    the bundled one; a path wins over a cached dataset. The files are checked
    as they are opened: the start of each is read, so an unsupported, binary,
    empty or non-UTF-8 file (or a missing field) is reported now, not half way
    through training. A saved DatasetDict or a cached dataset with several
    splits is read one split at a time: without ``split``,
    ``SettingsError("dataset_split")`` lists them, so the user can pick one.
    """
    where = _locate(name_or_path, field, split)
    if isinstance(where, CachedDataset):
        return _cached_dataset(where, field, split)
    name, path = where
    return _dataset_at(path, name, field, split)


def dataset_splits(name_or_path: str) -> tuple[str, ...]:
    """The splits a dataset offers to pick from: a saved DatasetDict's or a cached dataset's; none for the rest.

    A screen asks this before it opens a dataset, to offer the choice instead of an error.
    """
    where = _locate(name_or_path, None, None)
    if isinstance(where, CachedDataset):
        return where.split_names
    return _saved_splits(where[1])


def iter_texts(dataset: Dataset) -> Iterator[str]:
    """The dataset's text for tokenizer training: documents, long ones in pieces of whole lines.

    A tokenizer trainer splits text into words before counting them, so
    pieces learn the same merges as whole documents, while a huge file is never
    held in memory at once.
    """
    for piece, _ in dataset._pieces():
        yield piece.text


def _locate(name_or_path: str, field: str | None, split: str | None) -> tuple[str, Path] | CachedDataset:
    """Where a dataset is: (its name, its path) for a bundled name or a path, else the cached dataset of that name."""
    if not name_or_path or not name_or_path.strip():
        raise DatasetError(
            f"No dataset given. Name a bundled dataset ({_bundled_listing()}) or give a file or folder path."
        )
    if field is not None and not field.strip():
        raise DatasetError(
            "The field name is empty. Give the .jsonl field or .csv column that holds "
            f"the text, or leave it out to read '{DEFAULT_FIELD}'."
        )
    if split is not None and not split.strip():
        raise SettingsError("dataset_split", "is empty: name the split to read, or leave it out.")
    bundled = _bundled_paths()
    if name_or_path in bundled:
        return name_or_path, bundled[name_or_path]
    path = Path(name_or_path).expanduser()
    try:
        exists = path.exists()
        path = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"Cannot use '{name_or_path}' as a dataset path: {exc}.") from exc
    if exists:
        return (path.stem if path.parent == SAMPLE_TEXTS_DIR else path.name), path
    cached = next((dataset for dataset in cached_datasets() if dataset.name == name_or_path), None)
    if cached is None:
        raise DatasetError(
            f"No dataset '{name_or_path}': there is no such file or folder, no bundled dataset has that "
            f"name (bundled: {_bundled_listing()}), and the Hugging Face cache ({hf_hub_cache_dir()}) holds "
            "no dataset of that name."
        )
    return cached


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


def _dataset_at(path: Path, name: str, field: str | None, split: str | None) -> Dataset:
    """Check a file, a folder or a saved dataset and describe it as a Dataset."""
    if _is_saved_dataset(path):
        return _saved_dataset(path, name, field, split)
    _pick_split(f"{name} (a file or folder)", (), split)  # it has no splits: naming one is a mistake
    if path.is_dir():
        files = _folder_files(path)
    elif path.is_file():
        _check_suffix(path)
        files = (path,)
    else:
        raise DatasetError(f"{path} is neither a file nor a folder. Give one of the {_READABLE}, or a folder of them.")
    return _checked(Dataset(name=name, path=path, files=files, field=_column_to_read(files, field)))


def _checked(dataset: Dataset) -> Dataset:
    """The dataset, once the start of each of its files has been read (all of a small one).

    So an empty, binary or non-UTF-8 file, or one without the field, is reported when
    the dataset is opened; a problem further in is raised while reading, saying where.
    """
    if dataset.saved_dir is not None:
        _check_start(_saved_pieces(dataset.saved_dir, dataset.field, dataset._total_bytes()))
        return dataset
    for file in dataset.files:
        if _file_size(file) == 0:
            raise _empty_file_error(file)
        _check_start(_file_pieces(file, dataset.field))
    return dataset


def _check_start(pieces: Generator[_Piece, None, None]) -> None:
    """Read pieces until a block's worth of the file is read, or the end."""
    try:
        for piece in pieces:
            if piece.end_offset >= _BLOCK_BYTES:
                break
    finally:
        pieces.close()


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
                (supported if _is_readable(file) else others).append(file)
    except OSError as exc:
        raise DatasetError(
            f"Cannot read the folder {folder}: {exc.strerror or exc}. Check that it exists and that you may read it."
        ) from exc
    if supported:
        return tuple(sorted(supported, key=lambda file: file.relative_to(folder).as_posix()))
    if not others:
        raise DatasetError(f"The folder {folder} is empty. Put {_READABLE} in it.")
    example = others[0].relative_to(folder)
    raise DatasetError(
        f"The folder {folder} has no {_READABLE} ({len(others)} other "
        f"file{'s' if len(others) != 1 else ''}, such as {example}). Add text files or "
        "choose another folder."
    )


def _raise_walk_error(error: OSError) -> None:
    raise error


def _format_of(path: Path) -> tuple[str, str]:
    """(the suffix naming its format, its compression suffix or ""): (".jsonl", ".gz") for data.jsonl.gz."""
    suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        return (suffixes[0] if len(suffixes) == 2 else ""), suffixes[-1]
    return path.suffix.lower(), ""


def _is_readable(path: Path) -> bool:
    """Whether a file's name says it is in a format lm-workbench reads (text formats may be compressed)."""
    suffix, compression = _format_of(path)
    return suffix in (TEXT_SUFFIXES if compression else SUPPORTED_SUFFIXES)


def _check_suffix(path: Path) -> None:
    if _is_readable(path):
        return
    suffix, compression = _format_of(path)
    if suffix in RECORD_SUFFIXES:
        raise DatasetError(
            f"{path}: {suffix} files compress their own data, so lm-workbench does not read them "
            f"{compression}-compressed. Decompress it first."
        )
    shown = "".join(path.suffixes[-2:]) if compression else path.suffix
    kind = f"'{shown}' files" if shown else "files without a suffix"
    raise DatasetError(
        f"{path}: lm-workbench cannot read {kind}. It reads {_READABLE}; save the text as one of these (UTF-8)."
    )


def _cut(line: str) -> str:
    return line if len(line) <= _PREVIEW_LINE_CHARS else line[: _PREVIEW_LINE_CHARS - 1] + "…"


# ---------------------------------------------------------------------------
# Splits, saved datasets and the Hugging Face caches


def _pick_split(where: str, splits: Sequence[str], split: str | None) -> str | None:
    """The split to read: the one named, else the only one; several and none named is the user's choice to make."""
    if split is None:
        if len(splits) > 1:
            raise SettingsError("dataset_split", f"{where} has the splits {_listing(list(splits))}: pick one.")
        return splits[0] if splits else None
    if not splits:
        raise SettingsError("dataset_split", f"{where} has no splits to pick from: leave the split out.")
    if split not in splits:
        raise SettingsError(
            "dataset_split", f"{where} has no split '{split}': its splits are {_listing(list(splits))}."
        )
    return split


def _is_saved_dataset(path: Path) -> bool:
    """A directory written by ``save_to_disk``: a DatasetDict (dataset_dict.json) or a Dataset (state.json)."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _saved_splits(path: Path) -> tuple[str, ...]:
    """A saved DatasetDict's splits, as its dataset_dict.json lists them; none for anything else."""
    index = path / "dataset_dict.json"
    if not index.is_file():
        return ()
    try:
        splits = json.loads(index.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        splits = exc
    if not isinstance(splits, list) or not splits or not all(isinstance(split, str) for split in splits):
        raise DatasetError(
            f"{index} is damaged: it should list the saved splits. Save the dataset again with save_to_disk."
        )
    return tuple(splits)


def _saved_dataset(path: Path, name: str, field: str | None, split: str | None) -> Dataset:
    """A save_to_disk directory: a Dataset, or one split of a DatasetDict (the one named, or the only one)."""
    chosen = _pick_split(f"the saved dataset {path}", _saved_splits(path), split)
    directory = path / chosen if chosen is not None else path
    files = tuple(sorted(directory.glob("data-*.arrow")))  # save_to_disk's shards (map() may add cache-*.arrow)
    if not files:
        raise DatasetError(
            f"{directory} holds no data-*.arrow files, so the saved dataset is incomplete. Save it again "
            "with save_to_disk."
        )
    column = field if field is not None else _text_column(str(directory), _load_saved(directory).data.schema, None)
    return _checked(Dataset(name, path, files, field=column, split=chosen, saved_dir=directory))


def _load_saved(directory: Path) -> datasets.Dataset:
    """A saved Dataset, memory-mapped by ``datasets.load_from_disk`` (its rows stay on disk)."""
    import datasets
    import pyarrow as pa

    datasets.disable_progress_bars()  # nothing drawn over the app's screen or into a pipe
    try:
        saved = datasets.load_from_disk(str(directory))
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise DatasetError(
            f"{directory} is not a saved dataset that can be read ({_reason(exc)}). Save it again with save_to_disk."
        ) from exc
    if not isinstance(saved, datasets.Dataset):
        raise DatasetError(f"{directory} holds saved splits inside a split. Save each split as a dataset of its own.")
    return saved


@dataclass(frozen=True)
class CachedDataset:
    """A dataset the Hugging Face libraries left on this machine, found on disk and read offline."""

    name: str  # "org/name", as the Hub names it
    path: Path  # the hub cache's snapshot, or the datasets cache's folder for it
    splits: tuple[tuple[str, tuple[Path, ...]], ...]  # (split, its files), by split
    cache: str  # "hub": the files as downloaded; "datasets": the Arrow files load_dataset built

    @property
    def split_names(self) -> tuple[str, ...]:
        """Its splits, in order: "train", "validation", or "en/train" where it has several configurations."""
        return tuple(split for split, _ in self.splits)

    @property
    def bytes(self) -> int:
        """The size of all its files on disk."""
        return sum(_file_size(file) for _, files in self.splits for file in files)

    def files(self, split: str) -> tuple[Path, ...]:
        """The files of one of its splits."""
        return dict(self.splits)[split]


def cached_datasets() -> list[CachedDataset]:
    """Datasets in the local Hugging Face caches: the hub cache's, then those only the datasets cache holds.

    Only the disk is read, never the network, so this is the same offline (with
    HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set, or no network at all). A dataset
    ``load_dataset`` fetched is in both caches, and listed once (from the hub cache).
    """
    found = _hub_datasets()
    listed = {_loose_name(dataset.name) for dataset in found}
    return found + [dataset for dataset in _built_datasets() if _loose_name(dataset.name) not in listed]


def _cached_dataset(cached: CachedDataset, field: str | None, split: str | None) -> Dataset:
    chosen = _pick_split(f"the cached dataset {cached.name}", cached.split_names, split)
    files = cached.files(chosen or "")
    return _checked(Dataset(cached.name, cached.path, files, field=_column_to_read(files, field), split=chosen))


def _hub_datasets() -> list[CachedDataset]:
    """Dataset repositories in the hub cache (datasets--org--name), at the revision "main" names (else the newest)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hf_hub_cache_dir())
    except (CacheNotFound, ValueError, OSError):
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda repo: repo.repo_id):
        if repo.repo_type != "dataset" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda revision: ("main" in revision.refs, revision.last_modified))
        snapshot = revision.snapshot_path
        splits = _by_split(
            (_hub_split(file.file_path.relative_to(snapshot)), file.file_path)
            for file in revision.files
            if _is_cached_data(file.file_path)
        )
        if splits:
            found.append(CachedDataset(repo.repo_id, revision.snapshot_path, splits, "hub"))
    return found


def _is_cached_data(path: Path) -> bool:
    """A data file of a dataset repository: a format lm-workbench reads, and not its README or other .md pages."""
    return _is_readable(path) and _format_of(path)[0] != ".md" and not path.name.startswith(".")


_SHARD = re.compile(r"-\d{5}-of-\d{5}$")  # train-00000-of-00004: one shard of a split


def _hub_split(relative: Path) -> str:
    """A hub dataset file's split: its path without a leading data/, its suffixes or a shard number.

    data/train-00000-of-00002.parquet -> train; en/test.jsonl.gz -> en/test; and in the
    Hub's Parquet conversions, default/validation/0000.parquet -> default/validation.
    """
    stem = relative.name
    for suffix in reversed(_format_of(relative)):
        stem = stem[: len(stem) - len(suffix)]
    parts = [*relative.parent.parts, _SHARD.sub("", stem)]
    if parts[0] == "data" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1].isdigit() and len(parts) > 1:  # 0000.parquet: a shard of the folder's split
        parts = parts[:-1]
    return "/".join(parts)


def _built_datasets() -> list[CachedDataset]:
    """Datasets ``load_dataset`` built in the datasets cache: org___name/<config>/<version>/<hash>/name-<split>.arrow.

    Each configuration's newest build; a dataset with several configurations names its splits "<config>/<split>".
    """
    root = hf_datasets_cache_dir()
    try:
        builders = sorted(path for path in root.iterdir() if path.is_dir() and "___" in path.name)
    except OSError:
        return []
    found = []
    for builder in builders:
        builds = [build for config in sorted(builder.iterdir()) if (build := _newest_build(config))]
        files = [file for build in builds for file in build.glob("*.arrow") if not file.name.startswith("cache-")]
        splits = _by_split((_built_split(file, configs=len(builds)), file) for file in files)
        if splits:
            found.append(CachedDataset(builder.name.replace("___", "/"), builder, splits, "datasets"))
    return found


def _built_split(file: Path, configs: int) -> str:
    """An Arrow file's split: <name>-<split>[-00000-of-00004].arrow, under its configuration where there are several."""
    split = _SHARD.sub("", file.stem).rsplit("-", 1)[-1]  # a split name has no "-"
    config = file.parent.parent.parent.name  # <config>/<version>/<hash>/<file>
    return f"{config}/{split}" if configs > 1 else split


def _newest_build(config: Path) -> Path | None:
    """A configuration's newest finished build: <version>/<hash>/ holding dataset_info.json."""
    builds = [
        info.parent for info in config.glob("*/*/dataset_info.json") if not info.parent.name.endswith(".incomplete")
    ]
    return max(builds, key=lambda build: (build / "dataset_info.json").stat().st_mtime, default=None)


def _by_split(files: Iterable[tuple[str, Path]]) -> tuple[tuple[str, tuple[Path, ...]], ...]:
    """(split, file) pairs gathered by split: (split, its files, sorted), by split."""
    groups: dict[str, list[Path]] = {}
    for split, file in files:
        groups.setdefault(split, []).append(file)
    return tuple((split, tuple(sorted(paths))) for split, paths in sorted(groups.items()))


def _loose_name(name: str) -> str:
    """A name as both caches spell it: the hub cache has "org/TinyStories", the datasets cache "org___tiny_stories"."""
    return re.sub(r"[-_]", "", name.lower())


# ---------------------------------------------------------------------------
# Readers: bytes to checked text, text to documents


def _file_pieces(path: Path, field: str | None) -> Generator[_Piece, None, None]:
    """The pieces of one file's documents, by the reader its suffix names (under a .gz or .zst)."""
    suffix = _format_of(path)[0]
    if suffix == ".parquet":
        return _parquet_pieces(path, field)
    if suffix == ".arrow":
        return _arrow_pieces(path, field)
    if suffix == ".jsonl":
        return _jsonl_pieces(path, field or DEFAULT_FIELD)
    if suffix == ".csv":
        return _csv_pieces(path, field or DEFAULT_FIELD)
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
    """A file's text in chunks of whole lines: (text, start offset, end offset).

    The start offset counts bytes of the text (decompressed, for a .gz or .zst
    file), for error messages; the end offset is how far into the file on disk
    the chunk reaches, for progress (the same for a plain file, in proportion
    for a compressed one). A NUL byte means a binary file; bytes that are not
    UTF-8 are reported with their offset and line. Chunks end at a newline byte,
    which is never inside a UTF-8 character, so each chunk decodes on its own.
    A UTF-8 byte order mark is dropped.
    """
    pending = bytearray()
    start = 0  # text offset of pending[0]
    lines_before = 0  # newlines before pending[0], for error messages
    read = on_disk = 0  # bytes of text read, and of the file they came from
    for block, on_disk in _blocks(path):
        read += len(block)
        nul = block.find(b"\0")
        if nul >= 0:
            raise _binary_file_error(path, start + len(pending) + nul)
        last_newline = block.rfind(b"\n")
        pending += block
        if last_newline < 0:
            continue
        cut = len(pending) - len(block) + last_newline + 1
        yield _decode(path, bytes(pending[:cut]), start, lines_before), start, (start + cut) * on_disk // read
        lines_before += pending.count(b"\n", 0, cut)
        del pending[:cut]
        start += cut
    if pending:
        yield _decode(path, bytes(pending), start, lines_before), start, on_disk


def _blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """A file's bytes in blocks, decompressed for .gz and .zst, each with how much of the file on disk is read by then.

    A compressed file that is damaged or cut short is a DatasetError saying how far it got.
    """
    compression = _format_of(path)[1]
    with _open_binary(path) as raw:
        if not compression:
            for block in iter(functools.partial(raw.read, _BLOCK_BYTES), b""):
                yield block, raw.tell()
            return
        text = 0
        try:
            for block in _gzip_blocks(raw) if compression == ".gz" else _zstd_blocks(raw):
                text += len(block)
                yield block, raw.tell()
        except _DamagedFile as exc:
            raise DatasetError(
                f"{path} is damaged: it cannot be decompressed after {text:,} bytes of text, about byte "
                f"{raw.tell():,} of {_file_size(path):,} ({exc}). Compress it again, or download it again."
            ) from exc


class _DamagedFile(Exception):
    """A compressed file that cannot be decompressed; the message says why, in a few words."""


_CUT_SHORT = "its compressed data ends early: the file is cut short"


def _gzip_blocks(raw: BinaryIO) -> Iterator[bytes]:
    """Decompressed blocks of a gzip file (every member of it)."""
    try:
        with gzip.GzipFile(fileobj=raw) as stream:
            while block := stream.read(_BLOCK_BYTES):
                yield block
    except EOFError as exc:
        raise _DamagedFile(_CUT_SHORT) from exc
    except (OSError, zlib.error) as exc:
        raise _DamagedFile(_reason(exc)) from exc


def _zstd_blocks(raw: BinaryIO) -> Iterator[bytes]:
    """Decompressed blocks of a Zstandard file, frame after frame.

    Fed frame by frame (not through the library's stream reader, which ends
    quietly where a file is cut short), so a truncated file is reported.
    """
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    frame, started = decompressor.decompressobj(), False
    try:
        while data := raw.read(_BLOCK_BYTES):
            while data:
                started = True
                if block := frame.decompress(data):
                    yield block
                data = b""
                if frame.eof:  # this frame is whole; what follows it starts the next one
                    data, frame, started = frame.unused_data, decompressor.decompressobj(), False
    except zstandard.ZstdError as exc:
        raise _DamagedFile(_reason(exc)) from exc
    if started:
        raise _DamagedFile(_CUT_SHORT)


def _decode(path: Path, data: bytes, start: int, lines_before: int) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + data.count(b"\n", 0, exc.start) + 1
        suffix, compression = _format_of(path)
        advice = (
            "Save the text as UTF-8 and compress it again."
            if compression
            else f"Save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 '{path.name}' > fixed{suffix}"
        )
        raise DatasetError(
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02X} at byte offset {start + exc.start}"
            f"{' of its decompressed text' if compression else ''} (line {line}) cannot be decoded. {advice}"
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
# Records: Parquet, Arrow and saved datasets, a column of text read in record batches


def _parquet_pieces(path: Path, field: str | None) -> Generator[_Piece, None, None]:
    """One document per row of a Parquet file, read a record batch at a time (never the whole file)."""
    import pyarrow as pa

    with _parquet_file(path) as parquet:
        column = _text_column(str(path), parquet.schema_arrow, field)
        batches = parquet.iter_batches(batch_size=_RECORD_BATCH_ROWS, columns=[column])
        positions = _by_rows(batches, parquet.metadata.num_rows, _file_size(path))
        yield from _rows_pieces(str(path), "Parquet", column, positions, (pa.ArrowException, OSError, ValueError))


def _arrow_pieces(path: Path, field: str | None) -> Generator[_Piece, None, None]:
    """One document per row of an Arrow file, memory-mapped and read a record batch at a time."""
    import pyarrow as pa

    with _arrow_file(path) as (schema, batches):
        column = _text_column(str(path), schema, field)
        index = schema.get_field_index(column)
        columns = ((batch.column(index), position) for batch, position in batches)
        yield from _rows_pieces(str(path), "Arrow", column, columns, (pa.ArrowException, OSError, ValueError))


def _saved_pieces(directory: Path, field: str | None, size: int) -> Generator[_Piece, None, None]:
    """One document per row of a dataset saved with ``save_to_disk``, memory-mapped and read in batches."""
    import pyarrow as pa

    saved = _load_saved(directory)
    column = _text_column(str(directory), saved.data.schema, field)
    batches = saved.with_format("arrow").select_columns([column]).iter(batch_size=_RECORD_BATCH_ROWS)
    positions = _by_rows(batches, saved.num_rows, size)
    yield from _rows_pieces(str(directory), "saved", column, positions, (pa.ArrowException, OSError, ValueError))


def _rows_pieces(
    where: str, kind: str, column: str, batches: Iterable[tuple[Any, int]], errors: tuple[type[Exception], ...]
) -> Generator[_Piece, None, None]:
    """One document per row: the text in the column (null and empty values skipped).

    ``batches`` gives (an Arrow array of the column, how far into the file on disk
    it ends). Each is made into Python strings ``_RECORD_BATCH_ROWS`` rows at a
    time, so a file written as one huge batch is still read a little at a time.
    """
    rows = found = 0
    try:
        for values, position in batches:
            for start in range(0, len(values), _RECORD_BATCH_ROWS):
                for text in values.slice(start, _RECORD_BATCH_ROWS).to_pylist():
                    rows += 1
                    if text:
                        found += 1
                        yield _Piece(text, starts_document=True, end_offset=position)
    except errors as exc:
        raise DatasetError(
            f"{where}: the {kind} data cannot be read after row {rows:,} ({_reason(exc)}). The file may be "
            "damaged or cut short: write it, or download it, again."
        ) from exc
    if not found:
        raise DatasetError(
            f"{where} has no rows with text in the column '{column}'. Add some, or name the column that holds "
            "the text (--field NAME)."
        )


def _by_rows(batches: Iterable[Any], rows: int, size: int) -> Iterator[tuple[Any, int]]:
    """Each record batch's (only) column, with how far into ``size`` bytes its last row is, in proportion of rows."""
    done = 0
    for batch in batches:
        done += batch.num_rows
        yield batch.column(0), size * done // max(rows, 1)


def _column_to_read(files: Sequence[Path], field: str | None) -> str | None:
    """The field named, else (for a dataset with Parquet or Arrow files) the first such file's text column.

    The column picked is the dataset's field, so .jsonl and .csv files beside it read that field too.
    """
    if field is not None:
        return field
    for file in files:
        suffix = _format_of(file)[0]
        if suffix == ".parquet":
            with _parquet_file(file) as parquet:
                return _text_column(str(file), parquet.schema_arrow, None)
        if suffix == ".arrow":
            with _arrow_file(file) as (schema, _):
                return _text_column(str(file), schema, None)
    return None


def _text_column(where: str, schema: pyarrow.Schema, field: str | None) -> str:
    """The column holding the text: the one named, else the first of TEXT_COLUMNS, else the only text column.

    Anything else is a DatasetError that names the columns there are.
    """
    texts = [name for name, kind in zip(schema.names, schema.types, strict=True) if _holds_text(kind)]
    if field is not None:
        if field not in schema.names:
            raise DatasetError(
                f"{where} has no column '{field}' (its columns are {_column_listing(schema)}). Name the column "
                "that holds the text (--field NAME)."
            )
        if field not in texts:
            raise DatasetError(
                f"{where}: the column '{field}' holds {schema.field(field).type}, not text. Name a column that "
                f"holds text (--field NAME); its columns are {_column_listing(schema)}."
            )
        return field
    preferred = [name for name in TEXT_COLUMNS if name in texts]
    if preferred:
        return preferred[0]
    if len(texts) == 1:
        return texts[0]
    if not texts:
        raise DatasetError(
            f"{where} has no text column (its columns are {_column_listing(schema)}). lm-workbench trains on a "
            "column of strings: add one, or use another file."
        )
    raise DatasetError(
        f"{where} has several text columns ({_listing(texts)}) and none is called "
        f"{', '.join(TEXT_COLUMNS[:-1])} or {TEXT_COLUMNS[-1]}: name the one to train on (--field NAME)."
    )


def _holds_text(kind: pyarrow.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):  # categorical strings, as pandas writes them
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _column_listing(schema: pyarrow.Schema) -> str:
    """Columns and their types for an error message, at most ten: 'id' (int64), 'text' (string)."""
    shown = [f"{_cut_name(name)!r} ({kind})" for name, kind in zip(schema.names[:10], schema.types[:10], strict=True)]
    more = len(schema.names) - len(shown)
    return (", ".join(shown) or "none") + (f" and {more} more" if more > 0 else "")


def _parquet_file(path: Path) -> pyarrow.parquet.ParquetFile:
    """A Parquet file opened to be read page by page, never a whole column chunk at once.

    pyarrow's defaults (``pre_buffer``, no ``buffer_size``) read each row group's column whole: for a file
    written as one row group, that is the whole file in memory.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(path), buffer_size=_BLOCK_BYTES, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(
            f"{path} is not a Parquet file that can be read ({_reason(exc)}). Write it again, or download it again."
        ) from exc


@contextlib.contextmanager
def _arrow_file(path: Path) -> Iterator[tuple[pyarrow.Schema, Iterator[tuple[pyarrow.RecordBatch, int]]]]:
    """An Arrow file, memory-mapped: its schema, and its record batches with how far into the file each ends.

    ``datasets`` writes Arrow's streaming format; the file format (Feather v2) is read too.
    """
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise _not_arrow_error(path, exc) from exc
    with source:
        batches: Iterator[tuple[pa.RecordBatch, int]]
        try:
            stream = pa.ipc.open_stream(source)
            schema, batches = stream.schema, ((batch, source.tell()) for batch in stream)
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                reader = pa.ipc.open_file(source)
            except (pa.ArrowException, OSError) as exc:
                raise _not_arrow_error(path, exc) from exc
            count, size = reader.num_record_batches, source.size()
            schema = reader.schema
            batches = ((reader.get_batch(index), size * (index + 1) // count) for index in range(count))
        yield schema, batches


def _not_arrow_error(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(
        f"{path} is not an Arrow file that can be read ({_reason(exc)}). Write it again, or download it again."
    )


def _reason(exc: BaseException) -> str:
    """An exception's message on one short line, for the parentheses of an error."""
    text = " ".join(str(exc).split())
    return (text[:160] + "…" if len(text) > 160 else text) or type(exc).__name__


# ---------------------------------------------------------------------------
# Tokenized datasets and their cache

VALIDATION_FRACTION = 0.1  # the share of a dataset's tokens held out for validation
# How the validation tokens are chosen (TokenizedDataset.split, TrainingConfig.split_by):
#   position  the last VALIDATION_FRACTION of the tokens, in the dataset's order
#   document  whole documents, picked by a hash of their content, so no document (and no
#             copy of one) sits on both sides
SPLIT_CHOICES = ("position", "document")


def check_split_by(by: str) -> str:
    """``by`` when it is one of SPLIT_CHOICES; SettingsError("split_by") saying the choices otherwise."""
    if by not in SPLIT_CHOICES:
        raise SettingsError(
            "split_by",
            f"{by!r} is not a choice; use {' or '.join(SPLIT_CHOICES)} (document keeps each document, and every "
            "copy of it, on one side).",
        )
    return by


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
        if check_split_by(by) == "document":
            in_validation = self._validation_documents(val_fraction)
            train_ids, val_ids = self.ids[~in_validation], self.ids[in_validation]
            held_out = f"whole documents, about {val_fraction:.0%} of its tokens"
        else:
            cut = len(self.ids) - round(len(self.ids) * val_fraction)
            train_ids, val_ids = self.ids[:cut], self.ids[cut:]
            held_out = f"its last {val_fraction:.0%}"
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
