"""More sources: Parquet, Arrow, saved ``datasets`` directories, the Hugging Face caches, .gz and .zst text.

Each test makes its own data with the libraries made for it (pyarrow, datasets'
``save_to_disk``, gzip, zstandard, a hub cache laid out as huggingface_hub lays
it out under the test's HF_HOME); nothing is downloaded. The story of each
source: it reads as the same records written as .jsonl read (documents, stats,
preview, token ids), and each bad input is one clear line that leaves nothing
behind.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from engine.datasets import (
    cached_datasets,
    dataset_splits,
    open_dataset,
    tokenize_dataset,
)
from engine.errors import DatasetError, SettingsError
from engine.home import token_cache_dir
from engine.store import RunStore
from tests.conftest import REPO_ROOT, assert_one_line_error, lmwb_in_process, put_in_hf_cache, write_fables
from tests.test_tui_app import SIZE, open_train_screen, shown_text, story, wait_until

DOCUMENTS = [
    "The heron waited by the pond all morning.\nAt noon a fish came by.",
    "A wren built a nest in the hedge. Café, naïve, 日本語 and 🦊 too.",
    "",  # an empty record is skipped, in every format
    "The mole dug a tunnel under the meadow,\nand came up in the farmer's boot.\n",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(autouse=True)
def quiet_datasets() -> None:
    """The tests write with datasets too: no progress bars from save_to_disk in the test output."""
    import datasets

    datasets.disable_progress_bars()


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({field: text}) + "\n" for text in texts), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list], **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, **options)
    return path


def parquet_bytes(columns: dict[str, list]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


def save_dataset(path: Path, splits: dict[str, dict[str, list]]) -> Path:
    """A directory as datasets' save_to_disk writes it: a Dataset for one unnamed split (""), else a DatasetDict."""
    import datasets

    if list(splits) == [""]:
        datasets.Dataset.from_dict(splits[""]).save_to_disk(str(path))
    else:
        datasets.DatasetDict({name: datasets.Dataset.from_dict(data) for name, data in splits.items()}).save_to_disk(
            str(path)
        )
    return path


def put_in_datasets_cache(name: str, splits: dict[str, list[str]], config: str = "default") -> Path:
    """Arrow files where load_dataset builds them: $HF_HOME/datasets/org___name/<config>/<version>/<hash>/.

    The files are the Arrow streams datasets writes (name-<split>.arrow), beside its dataset_info.json.
    """
    import datasets

    org, repo = name.split("/")
    build = Path(os.environ["HF_HOME"]) / "datasets" / f"{org}___{repo}" / config / "0.0.0" / "0123abcd"
    build.mkdir(parents=True)
    for split, texts in splits.items():
        saved = Path(os.environ["HF_HOME"]) / "staging" / split
        dataset = datasets.Dataset.from_dict({"text": texts})
        dataset.save_to_disk(str(saved))
        shutil.copy(saved / "data-00000-of-00001.arrow", build / f"{repo}-{split}.arrow")
        dataset.info.write_to_directory(str(build))
    return build


def write_arrow(path: Path, columns: dict[str, list], *, file_format: bool = False) -> Path:
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink:
        writer = pa.ipc.new_file(sink, table.schema) if file_format else pa.ipc.new_stream(sink, table.schema)
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
        writer.close()
    return path


def assert_reads_as(dataset, reference, tokenizer) -> None:
    """The dataset reads exactly as the reference: documents, stats, preview and token ids."""
    assert list(dataset.documents()) == list(reference.documents())
    stats, expected = dataset.stats(), reference.stats()
    assert (stats.documents, stats.characters) == (expected.documents, expected.characters)
    assert dataset.preview() == reference.preview()
    tokens, expected_tokens = tokenize_dataset(dataset, tokenizer), tokenize_dataset(reference, tokenizer)
    assert np.array_equal(tokens.ids, expected_tokens.ids) and tokens.num_bytes == expected_tokens.num_bytes


# ---------------------------------------------------------------------------
# Each source reads as the same records in a .jsonl file


def parquet_file(tmp: Path) -> tuple[str, str | None]:
    """A Parquet file in several row groups, its text in 'text' beside an id."""
    return str(write_parquet(tmp / "docs.parquet", {"id": [1, 2, 3, 4], "text": DOCUMENTS}, row_group_size=2)), None


def parquet_with_content(tmp: Path) -> tuple[str, str | None]:
    """No 'text' column: 'content' is picked over the title beside it."""
    titles = ["heron", "wren", "", "mole"]
    return str(write_parquet(tmp / "docs.parquet", {"title": titles, "content": DOCUMENTS, "n": [1, 2, 3, 4]})), None


def parquet_with_one_text_column(tmp: Path) -> tuple[str, str | None]:
    """The only text column, whatever its name, is the text."""
    return str(write_parquet(tmp / "docs.parquet", {"story": DOCUMENTS, "score": [0.1, 0.2, 0.3, 0.4]})), None


def parquet_folder(tmp: Path) -> tuple[str, str | None]:
    """A folder of Parquet files, read in the order of their names."""
    write_parquet(tmp / "shards" / "part-0.parquet", {"text": DOCUMENTS[:2]})
    write_parquet(tmp / "shards" / "part-1.parquet", {"text": DOCUMENTS[2:]})
    return str(tmp / "shards"), None


def arrow_stream(tmp: Path) -> tuple[str, str | None]:
    return str(write_arrow(tmp / "docs.arrow", {"text": DOCUMENTS})), None


def arrow_file_format(tmp: Path) -> tuple[str, str | None]:
    return str(write_arrow(tmp / "docs.arrow", {"text": DOCUMENTS}, file_format=True)), None


def saved_dataset(tmp: Path) -> tuple[str, str | None]:
    return str(save_dataset(tmp / "saved", {"": {"text": DOCUMENTS, "id": [1, 2, 3, 4]}})), None


def saved_dataset_dict(tmp: Path) -> tuple[str, str | None]:
    splits = {"train": {"text": DOCUMENTS}, "validation": {"text": ["other"]}, "test": {"text": ["more"]}}
    return str(save_dataset(tmp / "saved", splits)), "train"


def jsonl_gz(tmp: Path) -> tuple[str, str | None]:
    path = tmp / "docs.jsonl.gz"
    path.write_bytes(gzip.compress(write_jsonl(tmp / "plain.jsonl", DOCUMENTS).read_bytes()))
    return str(path), None


def jsonl_zst(tmp: Path) -> tuple[str, str | None]:
    path = tmp / "docs.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(write_jsonl(tmp / "plain.jsonl", DOCUMENTS).read_bytes()))
    return str(path), None


def csv_gz(tmp: Path) -> tuple[str, str | None]:
    import csv

    out = io.StringIO()
    csv.writer(out).writerows([["id", "text"], *[[n, text] for n, text in enumerate(DOCUMENTS)]])
    path = tmp / "docs.csv.gz"
    path.write_bytes(gzip.compress(out.getvalue().encode()))
    return str(path), None


def hub_cache_parquet(tmp: Path) -> tuple[str, str | None]:
    """A Hub dataset as `hf download` or load_dataset leaves it: data/<split>-00000-of-00001.parquet."""
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train-00000-of-00001.parquet").write_bytes(parquet_bytes({"text": DOCUMENTS}))
    (repo / "data" / "validation-00000-of-00001.parquet").write_bytes(parquet_bytes({"text": ["an owl"]}))
    (repo / "README.md").write_text("# acme/fables\n", encoding="utf-8")
    put_in_hf_cache(repo, "acme/fables", repo_type="dataset")
    return "acme/fables", "train"


def datasets_cache_arrow(tmp: Path) -> tuple[str, str | None]:
    put_in_datasets_cache("acme/stories", {"train": DOCUMENTS, "test": ["an owl"]})
    return "acme/stories", "train"


SOURCES = [
    parquet_file,
    parquet_with_content,
    parquet_with_one_text_column,
    parquet_folder,
    arrow_stream,
    arrow_file_format,
    saved_dataset,
    saved_dataset_dict,
    jsonl_gz,
    jsonl_zst,
    csv_gz,
    hub_cache_parquet,
    datasets_cache_arrow,
]


@pytest.mark.parametrize("source", SOURCES, ids=[source.__name__ for source in SOURCES])
def test_every_source_reads_as_the_same_records_in_jsonl(
    source: Callable[[Path], tuple[str, str | None]], tmp_path: Path, tokenizer
):
    reference = open_dataset(str(write_jsonl(tmp_path / "reference" / "docs.jsonl", DOCUMENTS)))
    name, split = source(tmp_path)
    dataset = open_dataset(name, split=split)
    assert dataset.split == split
    assert_reads_as(dataset, reference, tokenizer)


def test_compressed_text_and_markdown_read_as_the_plain_file(tmp_path: Path, tokenizer):
    text = "".join(f"Line {n}: the fox met the crow by the old mill. Café {n}.\n" for n in range(4000))  # 250 KB
    plain = tmp_path / "notes.txt"
    plain.write_text(text, encoding="utf-8")
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "notes.md.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    reference = open_dataset(str(plain))
    for name in ("notes.txt.gz", "notes.md.zst"):
        assert_reads_as(open_dataset(str(tmp_path / name)), reference, tokenizer)


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path: Path):
    """zstd -T0 and pzstd write a frame per block: every frame is read, not the first alone."""
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "notes.txt.zst"
    path.write_bytes(compressor.compress(b"First frame.\n") + compressor.compress(b"Second frame.\n"))
    assert list(open_dataset(str(path)).documents()) == ["First frame.\nSecond frame.\n"]


def test_null_and_empty_values_are_skipped_like_empty_csv_cells(tmp_path: Path):
    path = write_parquet(tmp_path / "gaps.parquet", {"text": ["a fox", None, "", "a crow"]})
    assert list(open_dataset(str(path)).documents()) == ["a fox", "a crow"]


def test_the_field_names_a_column_and_the_cache_keys_on_it(tmp_path: Path, tokenizer):
    path = write_parquet(tmp_path / "qa.parquet", {"question": ["Why?", "How?"], "answer": ["So.", "Thus."]})
    questions, answers = open_dataset(str(path), field="question"), open_dataset(str(path), field="answer")
    assert list(questions.documents()) == ["Why?", "How?"] and list(answers.documents()) == ["So.", "Thus."]
    assert questions.content_hash() != answers.content_hash()
    assert not np.array_equal(tokenize_dataset(questions, tokenizer).ids, tokenize_dataset(answers, tokenizer).ids)


def test_the_split_read_is_part_of_the_content_hash(tmp_path: Path):
    path = save_dataset(tmp_path / "saved", {"train": {"text": ["same"]}, "test": {"text": ["same"]}})
    assert open_dataset(str(path), split="train").content_hash() != open_dataset(str(path), split="test").content_hash()


def test_a_saved_dataset_with_one_split_needs_no_split(tmp_path: Path):
    path = save_dataset(tmp_path / "saved", {"train": {"text": DOCUMENTS}})
    assert dataset_splits(str(path)) == ("train",)
    assert open_dataset(str(path)).split == "train"


# ---------------------------------------------------------------------------
# Bad input: one clear line, nothing left behind


def test_a_parquet_file_without_a_text_column_names_the_columns_it_has(capsys, tmp_path: Path):
    path = write_parquet(tmp_path / "numbers.parquet", {"id": [1, 2], "score": [0.5, 0.7]})
    with pytest.raises(DatasetError, match="has no text column") as error:
        open_dataset(str(path))
    assert "'id' (int64)" in str(error.value) and "'score' (double)" in str(error.value)
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(code, stderr, str(path), "no text column", "'id' (int64)")


def test_a_named_column_that_is_missing_or_not_text_is_refused(capsys, tmp_path: Path):
    path = write_parquet(tmp_path / "mixed.parquet", {"id": [1, 2], "body": ["a", "b"]})
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path), "--field", "story")
    assert_one_line_error(code, stderr, "no column 'story'", "'id' (int64), 'body' (string)", "--field NAME")
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path), "--field", "id")
    assert_one_line_error(code, stderr, "the column 'id' holds int64, not text")


def test_several_text_columns_and_none_usual_asks_for_the_field(tmp_path: Path):
    path = write_parquet(tmp_path / "pairs.parquet", {"question": ["Why?"], "answer": ["So."]})
    with pytest.raises(DatasetError, match="several text columns .*'question', 'answer'.*--field NAME"):
        open_dataset(str(path))


def test_a_file_that_is_not_parquet_or_arrow_says_so(capsys, tmp_path: Path):
    for name in ("fake.parquet", "fake.arrow"):
        (tmp_path / name).write_text("just some text, not columns\n", encoding="utf-8")
        code, _, stderr = lmwb_in_process(capsys, "datasets", str(tmp_path / name))
        kind = "Parquet" if name.endswith("parquet") else "Arrow"
        assert_one_line_error(code, stderr, str(tmp_path / name), f"is not a{'n' * (kind == 'Arrow')} {kind} file")


def test_a_compressed_parquet_file_is_refused_with_why(tmp_path: Path):
    path = tmp_path / "docs.parquet.gz"
    path.write_bytes(gzip.compress(parquet_bytes({"text": ["a"]})))
    with pytest.raises(DatasetError, match="compress their own data"):
        open_dataset(str(path))


def random_text(lines: int) -> bytes:
    """Text that compresses poorly, so a cut file is cut in its middle."""
    rng = random.Random(0)
    return "".join(f"line {n} {rng.random()} {rng.random()}\n" for n in range(lines)).encode()


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_cut_short_compressed_file_is_one_line_and_leaves_no_token_cache(capsys, tmp_path: Path, tokenizer, suffix):
    text = random_text(60_000)
    whole = gzip.compress(text) if suffix == ".gz" else zstandard.ZstdCompressor().compress(text)
    path = tmp_path / f"notes.txt{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    dataset = open_dataset(str(path))  # its start is fine: the damage shows when it is read on
    with pytest.raises(DatasetError) as error:
        tokenize_dataset(dataset, tokenizer)
    message = str(error.value)
    assert str(path) in message and "cut short" in message and "bytes of text" in message
    assert list(token_cache_dir().iterdir()) == []  # no half-written cache, no temporary file
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(code, stderr, str(path), "is damaged", "cut short")


def test_a_damaged_or_fake_compressed_file_is_one_line(capsys, tmp_path: Path):
    whole = gzip.compress(random_text(20_000))
    damaged = tmp_path / "flipped.txt.gz"
    damaged.write_bytes(whole[:2000] + bytes([whole[2000] ^ 0xFF]) + whole[2001:])
    fake_gz, fake_zst = tmp_path / "fake.jsonl.gz", tmp_path / "fake.jsonl.zst"
    fake_gz.write_text('{"text": "not compressed at all"}\n', encoding="utf-8")
    fake_zst.write_text('{"text": "not compressed at all"}\n', encoding="utf-8")
    for path in (damaged, fake_gz, fake_zst):
        code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
        assert_one_line_error(code, stderr, str(path), "is damaged: it cannot be decompressed")


def test_a_saved_dataset_with_several_splits_asks_for_one(capsys, tmp_path: Path):
    path = save_dataset(
        tmp_path / "saved", {"train": {"text": ["a"]}, "validation": {"text": ["b"]}, "test": {"text": ["c"]}}
    )
    assert dataset_splits(str(path)) == ("train", "validation", "test")
    with pytest.raises(SettingsError) as error:
        open_dataset(str(path))
    assert error.value.field == "dataset_split"
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(code, stderr, "--split:", str(path), "'train', 'validation', 'test'", "pick one")

    code, out, _ = lmwb_in_process(capsys, "datasets", str(path), "--split", "validation", "--json")
    assert code == 0 and json.loads(out)["split"] == "validation" and json.loads(out)["preview"] == "b"


def test_an_unknown_split_lists_the_splits_there_are(capsys, tmp_path: Path):
    path = save_dataset(tmp_path / "saved", {"train": {"text": ["a"]}, "test": {"text": ["c"]}})
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path), "--split", "valid")
    assert_one_line_error(code, stderr, "--split:", "no split 'valid'", "its splits are 'train', 'test'")


def test_a_split_for_a_dataset_without_splits_is_refused(capsys, tmp_path: Path):
    path = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path), "--split", "train")
    assert_one_line_error(code, stderr, "--split:", "no splits to pick from")
    code, _, stderr = lmwb_in_process(capsys, "datasets", "--split", "train")
    assert_one_line_error(code, stderr, "--split applies to a dataset PATH")


def test_a_saved_dataset_without_its_data_files_is_one_line(capsys, tmp_path: Path):
    path = save_dataset(tmp_path / "saved", {"": {"text": ["a"]}})
    for arrow in path.glob("*.arrow"):
        arrow.unlink()
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(code, stderr, str(path), "no data-*.arrow files", "save_to_disk")


def test_training_on_several_splits_without_one_records_nothing(capsys, tmp_path: Path):
    path = save_dataset(tmp_path / "saved", {"train": {"text": ["a"]}, "test": {"text": ["c"]}})
    code, _, stderr = lmwb_in_process(capsys, "train", "--model", "scratch:nano", "--dataset", str(path), "--detach")
    assert_one_line_error(code, stderr, "--split:", "'train', 'test'", "pick one")
    assert RunStore().list_runs() == []


def test_the_split_flag_reaches_the_training_settings(tmp_path: Path):
    from engine.planning import plan_run
    from tui.cli import build_parser
    from tui.cli.training_commands import _training_settings

    path = save_dataset(tmp_path / "saved", {"train": {"text": [write_fables(tmp_path / "f.txt").read_text()]}})
    args = build_parser().parse_args(["train", "--model", "scratch:nano", "--dataset", str(path), "--split", "train"])
    settings = _training_settings(args)
    assert settings["dataset_split"] == "train"
    assert plan_run(settings).config.dataset_split == "train"
    eval_args = build_parser().parse_args(["eval", "--model", "gpt2", "--dataset", "x", "--dataset-split", "test"])
    assert eval_args.dataset_split == "test" and eval_args.split == "val"  # eval's --split is the held-out part


# ---------------------------------------------------------------------------
# Streaming: a big Parquet file is read a batch at a time

STREAM_CHECK = """
import json, sys, tracemalloc
import pyarrow as pa
from engine.datasets import open_dataset

tracemalloc.start()
dataset = open_dataset(sys.argv[1])
preview = dataset.preview()
after_preview = pa.default_memory_pool().max_memory()
stats = dataset.stats()
print(json.dumps({"preview_arrow": after_preview, "arrow": pa.default_memory_pool().max_memory(),
                  "python": tracemalloc.get_traced_memory()[1], "documents": stats.documents}))
"""


def test_a_big_parquet_file_is_counted_and_previewed_in_batches_not_whole(tmp_path: Path):
    """One 60 MB row group, uncompressed: read whole, it would take 60 MB of Arrow memory at once."""
    rng = np.random.default_rng(0)
    words = np.array(["fox", "crow", "heron", "mill", "river", "barley", "stone", "bridge", "owl", "meadow"])
    rows = [" ".join(rng.choice(words, 150)) for _ in range(60_000)]
    path = write_parquet(tmp_path / "big.parquet", {"text": rows}, row_group_size=len(rows), compression="none")
    assert path.stat().st_size > 50_000_000
    result = subprocess.run(
        [sys.executable, "-c", STREAM_CHECK, str(path)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["documents"] == len(rows)
    assert measured["preview_arrow"] < 8_000_000  # a batch of rows, not the 60 MB column
    assert measured["arrow"] < 16_000_000 and measured["python"] < 16_000_000


# ---------------------------------------------------------------------------
# The Hugging Face caches: listed with the bundled datasets, read offline


def test_cached_datasets_are_listed_by_their_hub_names_with_their_splits(capsys, tmp_path: Path):
    hub_cache_parquet(tmp_path)
    sharded = tmp_path / "sharded"
    (sharded / "en").mkdir(parents=True)
    for shard in range(2):
        name = f"en/train-0000{shard}-of-00002.parquet"
        (sharded / name).write_bytes(parquet_bytes({"text": [f"shard {shard}"]}))
    (sharded / "en" / "test.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a test"}\n'))
    put_in_hf_cache(sharded, "acme/sharded", repo_type="dataset")
    put_in_datasets_cache("acme/stories", {"train": ["a story"]})
    put_in_datasets_cache("acme/fables", {"train": ["built from the hub files"]})  # in both caches: listed once

    listed = {dataset.name: dataset for dataset in cached_datasets()}
    assert set(listed) == {"acme/fables", "acme/sharded", "acme/stories"}
    assert listed["acme/fables"].split_names == ("train", "validation") and listed["acme/fables"].cache == "hub"
    assert listed["acme/sharded"].split_names == ("en/test", "en/train")
    assert len(listed["acme/sharded"].files("en/train")) == 2
    assert listed["acme/stories"].split_names == ("train",) and listed["acme/stories"].cache == "datasets"
    assert list(open_dataset("acme/sharded", split="en/train").documents()) == ["shard 0", "shard 1"]

    code, out, _ = lmwb_in_process(capsys, "datasets", "--json")
    assert code == 0
    entries = {entry["name"]: entry for entry in json.loads(out)}
    assert entries["fables"]["kind"] == "bundled"
    assert entries["acme/fables"] == {
        "name": "acme/fables",
        "kind": "hf cache",
        "splits": ["train", "validation"],
        "files": 2,
        "bytes": listed["acme/fables"].bytes,
        "path": str(listed["acme/fables"].path),
    }
    code, out, _ = lmwb_in_process(capsys, "datasets")
    assert code == 0 and "Hugging Face cache" in out and "acme/sharded" in out


def test_a_cached_dataset_reads_without_the_network(capsys, tmp_path: Path, monkeypatch):
    hub_cache_parquet(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("a cached dataset must be read from the disk alone")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code, out, err = lmwb_in_process(capsys, "datasets", "acme/fables", "--split", "validation", "--json")
    assert code == 0, err
    assert json.loads(out)["preview"] == "an owl" and json.loads(out)["split"] == "validation"
    code, _, stderr = lmwb_in_process(capsys, "datasets", "acme/fables")
    assert_one_line_error(code, stderr, "--split:", "the cached dataset acme/fables", "'train', 'validation'")


def test_the_revision_main_points_at_is_read(tmp_path: Path):
    hub_cache_parquet(tmp_path)
    repo = Path(os.environ["HF_HOME"]) / "hub" / "datasets--acme--fables"
    old = repo / "snapshots" / ("0" * 40) / "data"
    old.mkdir(parents=True)
    (old / "train-00000-of-00001.parquet").write_bytes(parquet_bytes({"text": ["an older revision"]}))
    assert "an older revision" not in list(open_dataset("acme/fables", split="train").documents())


def test_a_name_in_no_cache_says_where_it_looked(tmp_path: Path):
    with pytest.raises(DatasetError, match="no bundled dataset has that name.*Hugging Face cache"):
        open_dataset("acme/missing")


# ---------------------------------------------------------------------------
# End to end: lmwb datasets and lmwb train on a Parquet file


@pytest.mark.slow
def test_lmwb_shows_a_parquet_dataset_and_trains_on_it(capsys, tmp_path: Path):
    lines = write_fables(tmp_path / "fables.txt").read_text(encoding="utf-8").splitlines()
    path = write_parquet(tmp_path / "fables.parquet", {"id": list(range(len(lines))), "sentence": lines})
    code, out, err = lmwb_in_process(capsys, "datasets", str(path), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["documents"] == len(lines) and shown["field"] == "sentence"
    assert lines[0] in shown["preview"]

    code, out, err = lmwb_in_process(
        capsys,
        "train",
        "--model",
        "scratch:nano",
        "--dataset",
        str(path),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        "--block-size",
        "16",
        "--vocab-size",
        "300",
        "--eval-every",
        "3",
        "--sample-every",
        "0",
    )
    assert code == 0, err
    [run] = RunStore().list_runs()
    assert run.status == "completed" and run.dataset == str(path)


# ---------------------------------------------------------------------------
# The Datasets screen: cached datasets in the list, a split picked in place


@story
async def test_the_datasets_screen_lists_a_cached_dataset_and_asks_for_its_split(tmp_path: Path) -> None:
    from textual.widgets import Input, OptionList, Select, Static

    from tui.app import WorkbenchApp

    hub_cache_parquet(tmp_path)
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        options = app.screen.query_one("#dataset-list", OptionList)
        await wait_until(pilot, lambda: options.option_count > 0)
        labels = {
            options.get_option_at_index(i).id: str(options.get_option_at_index(i).prompt)
            for i in range(options.option_count)
        }
        assert labels["acme/fables"] == "acme/fables  cached"

        options.highlighted = list(labels).index("acme/fables")
        stats, choice = app.screen.query_one("#dataset-stats", Static), app.screen.query_one("#split-select", Select)
        await wait_until(pilot, lambda: "pick one above" in shown_text(stats))
        assert choice.display and app.dataset == "acme/fables" and app.dataset_split is None
        assert "train, validation" in shown_text(stats)

        await pilot.press("s")  # the choice opens: blank, train, validation
        await pilot.press("down", "down", "down", "enter")
        await wait_until(pilot, lambda: "documents" in shown_text(stats))
        assert app.dataset_split == "validation"
        assert "validation" in shown_text(stats) and "an owl" in shown_text(app.screen.query_one("#preview"))

        train = await open_train_screen(pilot)
        assert train.query_one("#field-dataset_split", Input).value == "validation"
        await pilot.press("1")
        options.highlighted = list(labels).index("fables")  # a dataset without splits: the choice goes
        await wait_until(pilot, lambda: app.dataset_split is None and not choice.display)
        assert train.query_one("#field-dataset_split", Input).value == ""
