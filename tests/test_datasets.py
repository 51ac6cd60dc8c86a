"""Datasets: what a user points the workbench at, what they are told when it is wrong,
and the token ids and training windows that come out of it.

Every test writes real files into its temporary directory; tokenization uses
the small byte-level BPE tokenizer of the ``tiny_model_dir`` fixture.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.datasets import (
    Dataset,
    DatasetStats,
    WindowSampler,
    bundled_datasets,
    count_tokens,
    iter_texts,
    open_dataset,
    tokenize_dataset,
    tokenizer_fingerprint,
)
from engine.errors import DatasetError, TrainingError
from engine.home import SAMPLE_TEXTS_DIR, token_cache_dir
from tests.conftest import REPO_ROOT

STORIES = [
    "The heron waited by the pond all morning.\nAt noon a fish came by.\n",
    "A wren built a nest in the hedge.\nThe wind could not shake it loose.\n",
    "The mole dug a tunnel under the meadow, and came up in the farmer's boot.\n",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def story_text(sentences: int, seed: int = 0) -> str:
    """Plain ASCII prose of any length, different for each seed."""
    rng = np.random.default_rng(seed)
    animals = ["fox", "heron", "badger", "wren", "otter", "mole", "hare", "crow"]
    verbs = ["found", "watched", "followed", "helped", "warned", "thanked"]
    lines = []
    for _ in range(sentences):
        a, b = rng.choice(animals, 2, replace=False)
        lines.append(f"The {a} {rng.choice(verbs)} the {b} by the river.\n")
    return "".join(lines)


# ---------------------------------------------------------------------------
# Reading files and folders


def test_a_text_file_is_one_document_read_exactly(tmp_path: Path):
    text = "Café au lait for the fox.\n日本語 and emoji 🦊 too.\r\nNo newline at the end"
    dataset = open_dataset(str(write(tmp_path / "notes.txt", text)))

    assert dataset.name == "notes.txt"
    assert dataset.files == (tmp_path / "notes.txt",)
    assert list(dataset.documents()) == [text]


def test_a_markdown_file_reads_like_text(tmp_path: Path):
    path = write(tmp_path / "guide.md", "# Title\n\nSome *markdown* text.\n")
    assert list(open_dataset(str(path)).documents()) == ["# Title\n\nSome *markdown* text.\n"]


def test_jsonl_reads_the_text_field_and_skips_blank_lines(tmp_path: Path):
    records = [{"text": story, "id": i} for i, story in enumerate(STORIES)]
    path = write(tmp_path / "stories.jsonl", jsonl(records[:2]) + "\n  \n" + jsonl(records[2:]))

    assert list(open_dataset(str(path)).documents()) == STORIES


def test_jsonl_reads_a_named_field(tmp_path: Path):
    path = write(
        tmp_path / "qa.jsonl",
        jsonl([{"question": "Why?", "answer": "Because."}, {"question": "Who?", "answer": "The fox."}]),
    )
    dataset = open_dataset(str(path), field="answer")

    assert dataset.field == "answer"
    assert list(dataset.documents()) == ["Because.", "The fox."]


def test_csv_reads_the_text_column_with_quoted_newlines(tmp_path: Path):
    path = write(tmp_path / "rows.csv", 'id,text\n1,"First line\nsecond line"\n2,"Commas, too"\n3,\n')
    assert list(open_dataset(str(path)).documents()) == ["First line\nsecond line", "Commas, too"]


def test_csv_cells_may_hold_long_documents(tmp_path: Path):
    chapter = "The fox ran on. " * 20_000  # longer than the csv module's default cell limit
    path = write(tmp_path / "chapters.csv", f'title,text\nOne,"{chapter}"\n')
    assert list(open_dataset(str(path)).documents()) == [chapter]


def test_csv_reads_a_named_column_and_a_spreadsheet_byte_order_mark(tmp_path: Path):
    path = write(tmp_path / "export.csv", "\ufeffbody,author\nHello there,Ann\nGood night,Bo\n")
    assert list(open_dataset(str(path), field="body").documents()) == ["Hello there", "Good night"]


def test_a_folder_holds_its_supported_files_recursively_in_order(tmp_path: Path):
    folder = tmp_path / "corpus"
    write(folder / "b.txt", "second")
    write(folder / "a.md", "first")
    write(folder / "deeper" / "c.jsonl", jsonl([{"text": "third"}, {"text": "fourth"}]))
    write(folder / "picture.png", b"\x89PNG\r\n\x1a\n\0\0")
    write(folder / ".hidden" / "secret.txt", "not read")
    write(folder / ".notes.txt", "not read either")

    dataset = open_dataset(str(folder))

    assert dataset.name == "corpus"
    assert [file.relative_to(folder).as_posix() for file in dataset.files] == ["a.md", "b.txt", "deeper/c.jsonl"]
    assert list(dataset.documents()) == ["first", "second", "third", "fourth"]


def test_stats_count_files_bytes_documents_and_characters(tmp_path: Path):
    folder = tmp_path / "two"
    write(folder / "one.txt", "héllo\n")  # 7 bytes, 6 characters
    write(folder / "two.jsonl", jsonl([{"text": "ab"}, {"text": "cde"}]))

    stats = open_dataset(str(folder)).stats()

    assert stats == DatasetStats(
        files=2, bytes=7 + (tmp_path / "two" / "two.jsonl").stat().st_size, documents=3, characters=6 + 2 + 3
    )


def test_preview_shows_the_first_lines_of_the_first_documents(tmp_path: Path):
    long_line = "x" * 500
    path = write(tmp_path / "many.jsonl", jsonl([{"text": f"Story {i}\nline two\n{long_line}"} for i in range(50)]))

    preview = open_dataset(str(path)).preview(max_lines=8)

    lines = preview.split("\n")
    assert lines[:4] == ["Story 0", "line two", lines[2], ""]
    assert lines[2].startswith("xxx") and lines[2].endswith("…") and len(lines[2]) < 250
    assert lines[4:8] == ["Story 1", "line two", lines[2], ""]
    assert len(lines) == 8


def test_iter_texts_gives_all_the_text_for_tokenizer_training(tmp_path: Path):
    text = story_text(5000)  # bigger than one read block, so it comes in pieces
    dataset = open_dataset(str(write(tmp_path / "big.txt", text)))

    pieces = list(iter_texts(dataset))

    assert len(pieces) > 1 and "".join(pieces) == text


# ---------------------------------------------------------------------------
# Bundled datasets


def test_the_bundled_datasets_are_found_by_name_and_are_big_enough():
    bundled = {dataset.name: dataset for dataset in bundled_datasets()}

    assert {"fables", "qa", "code", "weather"} <= set(bundled)
    assert "README" not in bundled
    for dataset in bundled.values():
        stats = dataset.stats()
        assert stats.bytes >= 100_000, dataset.name
        assert stats.documents >= 1
    assert open_dataset("fables").path == SAMPLE_TEXTS_DIR / "fables.txt"
    assert open_dataset("code").files == bundled["code"].files
    assert "Question:" in open_dataset("qa").preview(2)


def test_the_bundled_datasets_are_exactly_what_the_generator_writes():
    script = REPO_ROOT / "scripts" / "make_sample_texts.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_bundled_file_opened_by_path_keeps_its_short_name():
    assert open_dataset(str(SAMPLE_TEXTS_DIR / "weather.csv")).name == "weather"


# ---------------------------------------------------------------------------
# Bad input: each gets a DatasetError that names the file and says what to do


def error_for(path_or_name: str | Path, *, field: str | None = None, read_all: bool = False) -> str:
    with pytest.raises(DatasetError) as caught:
        dataset = open_dataset(str(path_or_name), field=field)
        if read_all:
            list(dataset.documents())
    return str(caught.value)


def test_a_missing_path_lists_the_bundled_datasets(tmp_path: Path):
    message = error_for(tmp_path / "nowhere.txt")
    assert "nowhere.txt" in message and "no such file or folder" in message and "fables" in message


def test_an_empty_name_asks_for_a_dataset():
    assert "No dataset given" in error_for("  ")


def test_an_unsupported_suffix_says_which_suffixes_work(tmp_path: Path):
    message = error_for(write(tmp_path / "report.pdf", "%PDF-1.7"))
    assert "report.pdf" in message and "'.pdf'" in message and ".jsonl" in message


def test_a_binary_file_is_refused(tmp_path: Path):
    message = error_for(write(tmp_path / "weights.txt", b"PK\x03\x04\x00\x00binary"))
    assert "weights.txt" in message and "binary" in message and "offset 4" in message


def test_latin1_bytes_are_reported_with_their_offset_and_line(tmp_path: Path):
    message = error_for(write(tmp_path / "old.txt", "line one\ncaf\xe9 au lait\n".encode("latin-1")))
    assert "old.txt" in message and "not UTF-8" in message
    assert "0xE9" in message and "byte offset 12" in message and "line 2" in message and "iconv" in message


def test_bad_bytes_far_into_a_big_file_are_caught_while_reading(tmp_path: Path):
    good = story_text(10_000).encode()  # far past the start that open_dataset checks
    path = write(tmp_path / "big.txt", good + b"then \xff\xfe garbage\n")

    dataset = open_dataset(str(path))
    with pytest.raises(DatasetError, match=f"byte offset {len(good) + 5}"):
        list(dataset.documents())


@pytest.mark.parametrize("content", ["", "   \n\n\t  \n"], ids=["zero-bytes", "only-whitespace"])
def test_an_empty_file_is_refused(tmp_path: Path, content: str):
    message = error_for(write(tmp_path / "blank.txt", content))
    assert "blank.txt" in message and "empty" in message


def test_a_jsonl_line_that_is_not_json_gives_its_line_number(tmp_path: Path):
    path = write(tmp_path / "broken.jsonl", jsonl([{"text": "fine"}, {"text": "also fine"}]) + "{'text': oops}\n")
    message = error_for(path)
    assert "broken.jsonl, line 3" in message and "not valid JSON" in message


def test_a_jsonl_line_without_the_field_names_the_fields_it_has(tmp_path: Path):
    path = write(tmp_path / "qa.jsonl", jsonl([{"text": "ok"}, {"question": "Why?", "answer": "So."}]))
    message = error_for(path)
    assert "qa.jsonl, line 2" in message and "no field 'text'" in message
    assert "'question'" in message and "'answer'" in message and "--field" in message


def test_a_jsonl_field_that_is_not_text_is_refused(tmp_path: Path):
    message = error_for(write(tmp_path / "nums.jsonl", jsonl([{"text": 42}])))
    assert "nums.jsonl, line 1" in message and "a number, not text" in message


def test_a_jsonl_line_that_is_not_an_object_is_refused(tmp_path: Path):
    message = error_for(write(tmp_path / "list.jsonl", '["text", "here"]\n'))
    assert "list.jsonl, line 1" in message and "a list where a JSON object was expected" in message


def test_a_csv_without_the_column_lists_its_columns(tmp_path: Path):
    message = error_for(write(tmp_path / "table.csv", "title,body\nA,B\n"))
    assert "table.csv" in message and "no column 'text'" in message
    assert "'title', 'body'" in message and "--field" in message


def test_an_empty_folder_is_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    message = error_for(tmp_path / "empty")
    assert "empty" in message and str(tmp_path / "empty") in message


def test_a_folder_without_text_files_says_what_it_found(tmp_path: Path):
    write(tmp_path / "pics" / "cat.png", b"\x89PNG")
    message = error_for(tmp_path / "pics")
    assert "no .txt, .md, .jsonl or .csv files" in message and "cat.png" in message


def test_a_bad_file_inside_a_folder_is_named(tmp_path: Path):
    write(tmp_path / "mixed" / "good.txt", "fine text")
    write(tmp_path / "mixed" / "bad.txt", b"\xff\xfe\x00h\x00i")
    message = error_for(tmp_path / "mixed")
    assert "bad.txt" in message and "binary" in message


def test_an_empty_field_name_is_refused(tmp_path: Path):
    assert "field name is empty" in error_for(write(tmp_path / "a.jsonl", jsonl([{"text": "x"}])), field=" ")


# ---------------------------------------------------------------------------
# Tokenizing once, into the cache


def test_documents_are_tokenized_and_joined_by_the_eos_id(tmp_path: Path, tokenizer):
    dataset = open_dataset(str(write(tmp_path / "stories.jsonl", jsonl([{"text": s} for s in STORIES]))))

    tokens = tokenize_dataset(dataset, tokenizer)

    eos = tokenizer.eos_token_id
    expected: list[int] = []
    for story in STORIES:
        expected += ([eos] if expected else []) + tokenizer.encode(story, add_special_tokens=False)
    assert tokens.ids.dtype == np.uint16
    assert tokens.ids.tolist() == expected
    assert tokens.num_bytes == sum(len(story.encode()) for story in STORIES)
    assert count_tokens(dataset, tokenizer) == len(expected)


def test_a_big_file_is_tokenized_with_progress_and_cached(tmp_path: Path, tokenizer):
    text = story_text(12_000)  # about 500 KB: several batches
    dataset = open_dataset(str(write(tmp_path / "big.txt", text)))
    reports: list[tuple[int, int]] = []

    tokens = tokenize_dataset(dataset, tokenizer, progress=lambda done, total: reports.append((done, total)))

    total = len(text.encode())
    assert len(reports) > 2
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert reports[-1] == (total, total) and all(t == total for _, t in reports)
    assert tokenizer.decode(tokens.ids.tolist()) == text
    assert tokens.num_bytes == total


def test_the_second_tokenization_is_a_cache_hit(tmp_path: Path, tokenizer):
    dataset = open_dataset(str(write(tmp_path / "fox.txt", story_text(300))))
    first = tokenize_dataset(dataset, tokenizer)
    cached = sorted(token_cache_dir().iterdir())
    modified = [path.stat().st_mtime_ns for path in cached]
    reports: list[tuple[int, int]] = []

    second = tokenize_dataset(open_dataset(str(dataset.path)), tokenizer, progress=lambda *r: reports.append(r))

    assert reports == []
    assert sorted(token_cache_dir().iterdir()) == cached
    assert [path.stat().st_mtime_ns for path in cached] == modified
    assert np.array_equal(first.ids, second.ids) and first.num_bytes == second.num_bytes


def test_a_changed_file_is_tokenized_again(tmp_path: Path, tokenizer):
    path = write(tmp_path / "fox.txt", story_text(200, seed=1))
    before = tokenize_dataset(open_dataset(str(path)), tokenizer)
    write(path, story_text(220, seed=2))
    reports: list[tuple[int, int]] = []

    after = tokenize_dataset(open_dataset(str(path)), tokenizer, progress=lambda *r: reports.append(r))

    assert reports and len(after.ids) != len(before.ids)
    assert tokenizer.decode(after.ids.tolist()) == path.read_text()
    assert len(list(token_cache_dir().glob("*.tokens"))) == 2


def test_another_field_of_the_same_file_is_another_cache_entry(tmp_path: Path, tokenizer):
    path = write(tmp_path / "qa.jsonl", jsonl([{"question": "Why is the sky blue?", "answer": "Light scatters."}]))
    questions = tokenize_dataset(open_dataset(str(path), field="question"), tokenizer)
    answers = tokenize_dataset(open_dataset(str(path), field="answer"), tokenizer)
    assert tokenizer.decode(questions.ids.tolist()) == "Why is the sky blue?"
    assert tokenizer.decode(answers.ids.tolist()) == "Light scatters."


def test_a_failed_tokenization_leaves_no_cache_entry_or_temporary_file(tmp_path: Path, tokenizer):
    good = jsonl([{"text": story_text(3, seed=i)} for i in range(2000)])  # bad line past open_dataset's check
    dataset = open_dataset(str(write(tmp_path / "late-error.jsonl", good + "not json\n")))

    with pytest.raises(DatasetError, match="line 2001"):
        tokenize_dataset(dataset, tokenizer)

    assert list(token_cache_dir().iterdir()) == []


def test_the_fingerprint_follows_the_vocabulary_not_transformers_settings(tiny_model_dir: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # its own copy: this test changes its settings
    fingerprint = tokenizer_fingerprint(tokenizer)
    tokenizer(["a long sentence about a fox"], truncation=True, max_length=3)  # leaves truncation on
    assert tokenizer_fingerprint(tokenizer) == fingerprint

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(STORIES * 5, vocab_size=280, special_tokens=["<|endoftext|>"], show_progress=False)
    other = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    assert tokenizer_fingerprint(other) != fingerprint


def test_a_fresh_scratch_tokenizer_and_its_saved_copy_share_one_cache_entry(tmp_path: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    dataset = open_dataset(str(write(tmp_path / "fox.txt", story_text(400))))
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(iter_texts(dataset), vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    fresh = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")  # as just trained
    tokens = tokenize_dataset(dataset, fresh)
    fresh.save_pretrained(tmp_path / "tokenizer")
    reports: list[tuple[int, int]] = []

    reloaded = tokenize_dataset(
        dataset, AutoTokenizer.from_pretrained(tmp_path / "tokenizer"), progress=lambda *r: reports.append(r)
    )

    assert reports == [] and np.array_equal(tokens.ids, reloaded.ids)
    assert fresh.decode(tokens.ids.tolist()) == dataset.path.read_text()


def test_tokenizing_ignores_truncation_left_on_by_transformers(tmp_path: Path, tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer(["a long sentence about a fox"], truncation=True, max_length=3)
    text = story_text(50)
    tokens = tokenize_dataset(open_dataset(str(write(tmp_path / "t.txt", text))), tokenizer)
    assert tokenizer.decode(tokens.ids.tolist()) == text


# ---------------------------------------------------------------------------
# Train/validation split


def test_the_split_is_deterministic_and_counts_bytes_exactly(tmp_path: Path, tokenizer):
    text = "Ünïcödé fox 🦊 and crow.\n" * 300
    tokens = tokenize_dataset(open_dataset(str(write(tmp_path / "u.txt", text))), tokenizer)

    train, val = tokens.split()
    train_again, val_again = tokens.split(0.1)

    assert np.array_equal(train.ids, train_again.ids) and np.array_equal(val.ids, val_again.ids)
    assert len(val.ids) == round(len(tokens.ids) * 0.1)
    assert np.array_equal(np.concatenate([train.ids, val.ids]), tokens.ids)
    assert train.num_bytes + val.num_bytes == tokens.num_bytes == len(text.encode())
    assert val.num_bytes == len(_byte_level(tokenizer, val.ids))
    assert "validation split" in val.name


def _byte_level(tokenizer, ids) -> bytes:
    """The exact bytes a run of byte-level BPE ids stands for, even where it cuts a character in two."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    return bytes(byte_of[char] for token in tokenizer.convert_ids_to_tokens([int(i) for i in ids]) for char in token)


# ---------------------------------------------------------------------------
# Training windows


def small_split(tmp_path: Path, tokenizer, sentences: int = 400):
    tokens = tokenize_dataset(open_dataset(str(write(tmp_path / "s.txt", story_text(sentences)))), tokenizer)
    return tokens.split()


def test_windows_are_packed_and_shifted_by_one(tmp_path: Path, tokenizer):
    train, _ = small_split(tmp_path, tokenizer)
    x, y = WindowSampler(train, block_size=16, batch_size=4, seed=7).next_batch()

    assert x.shape == y.shape == (4, 16) and str(x.dtype) == "torch.int64"
    assert (x[:, 1:] == y[:, :-1]).all()
    stream = train.ids.tolist()
    for x_row, y_row in zip(x.tolist(), y.tolist(), strict=True):
        window = x_row + y_row[-1:]
        assert any(stream[i : i + 17] == window for i in range(len(stream) - 16))


def test_the_same_seed_gives_the_same_batches_and_ranks_differ(tmp_path: Path, tokenizer):
    train, _ = small_split(tmp_path, tokenizer)

    def batches(**kwargs):
        sampler = WindowSampler(train, block_size=16, batch_size=4, **kwargs)
        return [sampler.next_batch()[0].tolist() for _ in range(3)]

    assert batches(seed=1) == batches(seed=1)
    assert batches(seed=1) != batches(seed=2)
    assert batches(seed=1, rank=0, world_size=2) != batches(seed=1, rank=1, world_size=2)


def test_a_resumed_sampler_continues_the_same_data_order(tmp_path: Path, tokenizer):
    train, _ = small_split(tmp_path, tokenizer)
    uninterrupted = WindowSampler(train, block_size=16, batch_size=4, seed=3)
    expected = [uninterrupted.next_batch()[0].tolist() for _ in range(5)]

    first = WindowSampler(train, block_size=16, batch_size=4, seed=3)
    seen = [first.next_batch()[0].tolist() for _ in range(3)]
    saved = json.loads(json.dumps(first.state_dict()))  # as a checkpoint would keep it
    resumed = WindowSampler(train, block_size=16, batch_size=4, seed=3)
    resumed.load_state_dict(saved)
    seen += [resumed.next_batch()[0].tolist() for _ in range(2)]

    assert seen == expected
    assert resumed.batches_drawn == 5


def test_a_damaged_or_foreign_sampler_state_is_refused(tmp_path: Path, tokenizer):
    train, _ = small_split(tmp_path, tokenizer)
    sampler = WindowSampler(train, block_size=16, batch_size=2, seed=0)
    with pytest.raises(TrainingError, match="damaged"):
        sampler.load_state_dict({"rank": 0, "world_size": 1, "batches_drawn": 1, "generator": [1, 2, 3]})
    other_rank = WindowSampler(train, block_size=16, batch_size=2, seed=0, rank=1, world_size=2).state_dict()
    with pytest.raises(TrainingError, match="rank 1 of 2"):
        sampler.load_state_dict(other_rank)


def test_a_dataset_shorter_than_one_block_says_how_many_tokens_it_has(tmp_path: Path, tokenizer):
    train, val = small_split(tmp_path, tokenizer, sentences=12)

    with pytest.raises(DatasetError) as caught:
        WindowSampler(val, block_size=128, batch_size=4, seed=0)

    message = str(caught.value)
    assert f"has {len(val.ids)} tokens" in message and "validation split of 's.txt'" in message
    assert f"lower block_size to at most {len(val.ids) - 1}" in message
    WindowSampler(train, block_size=len(train.ids) - 1, batch_size=2, seed=0).next_batch()


# ---------------------------------------------------------------------------
# Fuzzing: whatever is in the file, the answer is documents or a DatasetError


def read_or_refuse(name: str, content: bytes, field: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(content)
        try:
            dataset = open_dataset(str(path), field=field)
            documents = list(dataset.documents())
            dataset.stats()
            dataset.preview()
        except DatasetError as exc:
            assert str(exc)
            return
        assert documents and all(isinstance(document, str) and document for document in documents)


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=st.binary(max_size=400), name=st.sampled_from(["f.txt", "f.md", "f.jsonl", "f.csv"]))
def test_arbitrary_bytes_give_documents_or_a_dataset_error(content: bytes, name: str):
    read_or_refuse(name, content)


@FUZZ
@given(content=st.text(max_size=300), name=st.sampled_from(["f.txt", "f.jsonl", "f.csv"]))
def test_arbitrary_text_gives_documents_or_a_dataset_error(content: str, name: str):
    read_or_refuse(name, content.encode("utf-8", "surrogatepass"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(records=st.lists(json_values, max_size=6), field=st.sampled_from([None, "text", "body"]))
def test_arbitrary_json_lines_give_documents_or_a_dataset_error(records: list, field: str | None):
    read_or_refuse("f.jsonl", "".join(json.dumps(record) + "\n" for record in records).encode(), field)


@FUZZ
@given(rows=st.lists(st.lists(st.text(max_size=12), max_size=4), max_size=6), field=st.sampled_from([None, "text", ""]))
def test_arbitrary_csv_rows_give_documents_or_a_dataset_error(rows: list, field: str | None):
    import csv
    import io

    out = io.StringIO()
    csv.writer(out).writerows(rows)
    read_or_refuse("f.csv", out.getvalue().encode("utf-8", "surrogatepass"), field)


def test_dataset_is_a_value():
    """Datasets compare and hash by what they are, so screens can keep them in sets and dicts."""
    first, second = open_dataset("fables"), open_dataset("fables")
    assert first == second and hash(first) == hash(second) and isinstance(first, Dataset)
