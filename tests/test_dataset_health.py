"""The dataset check and its fixes, on data each test makes with a known answer.

A user points `lmwb datasets check` (or the Datasets screen's Check view) at
their data before training: copies, near copies, validation text that also
sits in training, broken encodings and too little text for the model are
reported, and a clean file says so. `lmwb datasets dedupe` writes a copy
without the copies, never touching the original; training can hold out whole
documents (split_by document) so no document sits on both sides.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from engine.dataset_health import (
    LONG_LINE_CHARACTERS,
    NEAR_THRESHOLD,
    check_dataset,
    checked_model,
    dedupe_dataset,
)
from engine.datasets import VALIDATION_FRACTION, open_dataset, tokenize_dataset
from engine.errors import DatasetError, SettingsError
from engine.home import health_cache_dir
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


def with_one_word_changed(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    words[rng.randrange(len(words))] = "changed"
    return " ".join(words)


# --- exact duplicates ------------------------------------------------------------------------


def test_thirty_percent_copied_documents_give_0_30(tmp_path: Path):
    unique = documents(70)
    texts = unique + [unique[n % 70] for n in range(30)]  # each copy after its original
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "d.jsonl", texts))))

    assert report.documents == 100
    assert report.duplicates.documents == 30
    assert report.duplicates.document_fraction == 0.30
    # Each document has 4 lines, each line unique to its document: 120 of 400 lines are copies.
    assert report.duplicates.line_fraction == 0.30
    assert [item.count for item in report.duplicates.top_documents] == [2] * 5
    assert report.duplicates.top_documents[0].text.startswith(unique[0].split()[0])
    assert not report.clean
    assert any("30.0% of documents copy an earlier one" in line for line in report.findings())


def test_duplicate_lines_are_counted_among_non_blank_lines_whitespace_at_their_ends_aside(tmp_path: Path):
    text = "the fox\nthe crow\n\n   \nthe fox\n  the fox  \nthe mill\n"
    report = check_dataset(open_dataset(str(write_file(tmp_path / "lines.txt", text))))

    assert report.lines == 5  # blank and space-only lines are not counted
    assert report.duplicates.lines == 2
    assert report.duplicates.line_fraction == 0.4
    assert [(item.text, item.count) for item in report.duplicates.top_lines] == [("the fox", 3)]
    assert report.duplicates.documents == 0  # a .txt file is one document


def write_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- near duplicates -------------------------------------------------------------------------


def test_near_duplicates_are_found_and_exact_copies_are_not_counted_twice(tmp_path: Path):
    rng = random.Random(3)
    unique = documents(60, seed=1)
    near = [with_one_word_changed(unique[n], rng) for n in (2, 11, 25, 40, 59)]
    copies = [unique[5], unique[30], near[0]]  # an exact copy of a near duplicate is an exact copy
    texts = unique + near + copies
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "near.jsonl", texts))))

    assert report.duplicates.documents == 3
    assert report.near_duplicates.documents == 5
    assert report.near_duplicates.fraction == 5 / 68
    pairs = {(pair.first, pair.second) for pair in report.near_duplicates.examples}
    assert pairs == {(3, 61), (12, 62), (26, 63), (41, 64), (60, 65)}  # documents count from 1
    assert all(pair.similarity >= NEAR_THRESHOLD for pair in report.near_duplicates.examples)
    assert report.near_duplicates.examples[0].first_text.split()[:5] == unique[2].split()[:5]


# --- leakage ---------------------------------------------------------------------------------


def test_a_clean_file_reports_clean(tmp_path: Path):
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "clean.jsonl", documents(100)))))

    assert report.leakage.fraction == 0.0 and report.leakage.windows > 50  # 200 bytes each, in the last 10 documents
    assert report.leakage.tokenizer == "bytes" and report.leakage.ngram == 200
    assert report.duplicates.documents == report.duplicates.lines == report.near_duplicates.documents == 0
    assert report.encoding == []
    assert report.findings() == [] and report.clean
    assert report.as_dict()["clean"] is True


def test_validation_text_planted_in_training_is_found(tmp_path: Path):
    texts = documents(100)
    planted = texts[-10:] + texts  # the last ten documents, which validation holds, copied to the start
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "leaky.jsonl", planted))))

    # Validation (the last tenth of the bytes) is the last ten documents and a little of the one before.
    assert report.leakage.fraction > 0.85
    assert report.leakage.document_split_fraction == 0.0  # copies stay on one side when split by document
    assert any("validation windows also occur in training: --split-by document" in f for f in report.findings())


def test_short_records_copied_across_the_split_leak_whole(tmp_path: Path):
    records = [f"Question: what is {n} plus {n}? Answer: {2 * n}." for n in range(300)]  # each under 200 bytes
    clean = check_dataset(open_dataset(str(write_jsonl(tmp_path / "qa.jsonl", records))))
    assert clean.leakage.fraction == 0.0 and clean.leakage.windows >= 30  # a window per short record

    copied = check_dataset(open_dataset(str(write_jsonl(tmp_path / "copied.jsonl", records + records[:40]))))
    assert copied.leakage.fraction > 0.9  # the validation tenth is copies of earlier records
    assert copied.leakage.document_split_fraction == 0.0


def test_leakage_with_a_model_is_measured_in_its_tokens(tmp_path: Path, tiny_model_dir: Path):
    texts = documents(100)
    dataset = open_dataset(str(write_jsonl(tmp_path / "leaky.jsonl", texts[-10:] + texts)))
    report = check_dataset(dataset, checked_model(str(tiny_model_dir), dataset))

    assert report.leakage.tokenizer == str(tiny_model_dir)
    assert report.leakage.ngram == 50
    assert report.leakage.fraction > 0.85


def test_a_short_validation_split_gets_shorter_ngrams_and_says_so(tmp_path: Path):
    texts = documents(8, words=40)
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "short.jsonl", texts))))

    assert 8 <= report.leakage.ngram < 200
    assert f"{report.leakage.ngram} bytes, not 200: the validation split is short" == report.leakage.ngram_note


# --- encoding --------------------------------------------------------------------------------


def test_encoding_problems_are_found_with_their_places(tmp_path: Path):
    long_line = "x" * (LONG_LINE_CHARACTERS + 1)
    texts = [
        "Café, naïve, façade and a\ttab are fine.\nSo is 日本語.",
        "line one\nline two\nthe cafÃ© was closed, donâ€™t go",
        "a lost byte: \ufffd here\nand a bell \x07 there",
        f"short\n{long_line}\nshort again",
    ]
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "broken.jsonl", texts))))

    problems = {problem.kind: problem for problem in report.encoding}
    assert set(problems) == {"mojibake", "replacement", "control", "long_line"}
    assert problems["mojibake"].count == 2
    assert [(place.document, place.line) for place in problems["mojibake"].locations] == [(2, 3), (2, 3)]
    assert problems["replacement"].count == 1 and problems["replacement"].locations[0].document == 3
    assert [(place.document, place.line) for place in problems["control"].locations] == [(3, 2)]
    assert [(place.document, place.line) for place in problems["long_line"].locations] == [(4, 2)]
    assert "mojibake (UTF-8 read as cp1252" in " ".join(report.findings())


# --- lengths ---------------------------------------------------------------------------------


def test_the_length_histogram_covers_every_document_in_half_decades(tmp_path: Path):
    texts = ["ab", "abcd", "x" * 12, "y" * 29, "z" * 30, "w" * 5_000]
    report = check_dataset(open_dataset(str(write_jsonl(tmp_path / "lengths.jsonl", texts))))

    buckets = [(bucket.low, bucket.high, bucket.documents) for bucket in report.lengths]
    assert buckets == [
        (1, 3, 1),
        (3, 10, 1),
        (10, 30, 2),
        (30, 100, 1),
        (100, 300, 0),
        (300, 1000, 0),
        (1000, 3000, 0),
        (3000, 10000, 1),
    ]
    assert sum(bucket.documents for bucket in report.lengths) == report.documents
    assert report.lengths[-1].label() == "3K-10K"


# --- tokens against the model ----------------------------------------------------------------


def test_tokens_per_parameter_say_when_a_model_will_memorise(tmp_path: Path, tiny_model_dir: Path):
    dataset = open_dataset(str(write_jsonl(tmp_path / "d.jsonl", documents(30))))
    model = checked_model(str(tiny_model_dir), dataset)
    report = check_dataset(dataset, model)

    fit = report.model
    assert fit is not None and fit.parameters == model.parameters > 10_000
    assert fit.tokens == len(tokenize_dataset(dataset, model.tokenizer).ids)
    assert fit.tokens_per_parameter == fit.tokens / fit.parameters < 2
    assert fit.bytes_per_token == pytest.approx(report.bytes / fit.tokens)
    assert fit.advice == f"{fit.tokens_per_parameter:.2g} tokens per parameter: expect memorising; more text would help"
    assert fit.advice in report.findings()


def test_a_scratch_preset_is_pointed_at_a_smaller_one_by_the_plans_rule(tmp_path: Path):
    dataset = open_dataset(str(write_jsonl(tmp_path / "d.jsonl", documents(30))))
    model = checked_model("scratch:tiny", dataset)  # its tokenizer is trained, the model never built
    report = check_dataset(dataset, model)

    assert model.preset == "tiny" and report.model is not None
    assert report.model.advice.endswith("tokens per parameter: scratch:nano may do better")


# --- the cache -------------------------------------------------------------------------------


def test_a_second_check_of_the_same_data_is_read_from_the_cache(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", documents(40))
    phases: list[str] = []
    first = check_dataset(open_dataset(str(path)), progress=lambda phase, done, total: phases.append(phase))
    assert {"reading", "near duplicates", "leakage"} <= set(phases)
    assert list(health_cache_dir().iterdir())

    phases.clear()
    second = check_dataset(open_dataset(str(path)), progress=lambda phase, done, total: phases.append(phase))
    assert phases == [] and second == first

    write_jsonl(path, documents(40) + documents(1))  # a changed file is checked again
    third = check_dataset(open_dataset(str(path)), progress=lambda phase, done, total: phases.append(phase))
    assert "reading" in phases and third.duplicates.documents == 1


# --- dedupe ----------------------------------------------------------------------------------


def test_dedupe_writes_a_jsonl_copy_without_copies_keeping_the_records(tmp_path: Path):
    unique = documents(20)
    path = write_jsonl(tmp_path / "d.jsonl", unique + unique[:5], source="web")
    before = path.read_bytes()

    result = dedupe_dataset(open_dataset(str(path)), tmp_path / "clean.jsonl")

    assert path.read_bytes() == before
    assert (result.documents, result.exact_removed, result.near_removed, result.kept) == (25, 5, 0, 20)
    records = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert [record["text"] for record in records] == unique
    assert [record["n"] for record in records] == list(range(20)) and records[0]["source"] == "web"
    assert check_dataset(open_dataset(str(tmp_path / "clean.jsonl"))).duplicates.documents == 0


def test_dedupe_near_also_leaves_out_near_copies(tmp_path: Path):
    rng = random.Random(5)
    unique = documents(30)
    near = [with_one_word_changed(unique[n], rng) for n in (4, 9)]
    path = write_jsonl(tmp_path / "d.jsonl", unique + near + [unique[0]])

    result = dedupe_dataset(open_dataset(str(path)), tmp_path / "clean.jsonl", near=True)

    assert (result.exact_removed, result.near_removed, result.kept) == (1, 2, 30)
    kept = [json.loads(line)["text"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert kept == unique


def test_dedupe_keeps_csv_rows_and_a_folder_of_text_files(tmp_path: Path):
    unique = documents(6, words=40)
    table = tmp_path / "d.csv"
    with open(table, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "text"])
        writer.writerows([[n, text] for n, text in enumerate(unique + unique[:2])])
    dedupe_dataset(open_dataset(str(table)), tmp_path / "clean.csv")
    with open(tmp_path / "clean.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    assert rows == [["id", "text"], *([str(n), text] for n, text in enumerate(unique))]

    folder = tmp_path / "stories"
    (folder / "more").mkdir(parents=True)
    for name, text in (("a.txt", unique[0]), ("b.txt", unique[1]), ("more/c.txt", unique[0])):
        write_file(folder / name, text)
    result = dedupe_dataset(open_dataset(str(folder)), tmp_path / "stories-clean")
    written = sorted(str(path.relative_to(result.out)) for path in result.out.rglob("*.txt"))
    assert written == ["a.txt", "b.txt"] and (folder / "more" / "c.txt").exists()


def test_a_parquet_dataset_is_checked_and_its_copy_written_as_jsonl(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    unique = documents(12, words=40)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": list(range(16)), "text": unique + unique[:4]}), path, row_group_size=5)
    assert check_dataset(open_dataset(str(path))).duplicates.documents == 4

    with pytest.raises(DatasetError, match="written as JSONL with a 'text' field .*ending in .jsonl"):
        dedupe_dataset(open_dataset(str(path)), tmp_path / "clean.parquet")
    result = dedupe_dataset(open_dataset(str(path)), tmp_path / "clean.jsonl")
    assert result.kept == 12 and "JSONL" in result.note
    assert [json.loads(line)["text"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()] == unique


def test_dedupe_refuses_an_output_at_or_in_the_input_or_one_that_exists(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", documents(5))
    folder = tmp_path / "folder"
    folder.mkdir()
    write_file(folder / "a.txt", "some text")
    (tmp_path / "taken.jsonl").write_text("{}\n")
    cases = [
        (path, path, "is the input dataset"),
        (folder, folder / "inside", "is the input dataset, or inside it"),
        (path, tmp_path / "taken.jsonl", "already exists"),
        (path, tmp_path / "missing" / "out.jsonl", "does not exist"),
        (path, tmp_path / "out.txt", "give it that suffix"),
    ]
    for source, out, words in cases:
        with pytest.raises(DatasetError, match=words):
            dedupe_dataset(open_dataset(str(source)), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "folder", "taken.jsonl"]
    assert [p.name for p in folder.iterdir()] == ["a.txt"]


def test_dedupe_of_a_corrupt_input_writes_nothing(tmp_path: Path):
    lines = [json.dumps({"text": text}) for text in documents(300, words=40)]
    lines[250] = '{"text": "cut off'
    path = tmp_path / "corrupt.jsonl"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(DatasetError, match="line 251"):
        dedupe_dataset(open_dataset(str(path)), tmp_path / "clean.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.jsonl"]


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


# --- the command line ------------------------------------------------------------------------


def test_lmwb_datasets_check_prints_each_section_and_says_clean(tmp_path: Path, capsys):
    path = write_jsonl(tmp_path / "clean.jsonl", documents(50))
    status, out, err = lmwb_in_process(capsys, "datasets", "check", str(path))

    assert status == 0, err
    titles = ["Exact duplicates", "Near duplicates", "Train/validation leakage", "Encoding", "Document lengths"]
    assert [out.index(title) for title in titles] == sorted(out.index(title) for title in titles)
    assert out.count("clean:") == 4
    assert "Clean: nothing here needs fixing before training." in out


def test_lmwb_datasets_check_json_has_every_section_and_the_findings(tmp_path: Path, capsys):
    texts = documents(20)
    path = write_jsonl(tmp_path / "d.jsonl", texts + texts[:5])
    status, out, err = lmwb_in_process(capsys, "datasets", "check", str(path), "--json")

    assert status == 0, err
    report = json.loads(out)
    assert report["duplicates"]["document_fraction"] == 0.2
    assert sum(bucket["documents"] for bucket in report["lengths"]) == report["documents"] == 25
    assert report["clean"] is False and report["findings"][0].startswith("20.0% of documents copy")
    for section in ("near_duplicates", "leakage", "encoding", "model"):
        assert section in report

    status, out, _ = lmwb_in_process(capsys, "datasets", "check", str(path))
    assert status == 0 and "5 of 25 documents (20.0%) copy an earlier one" in out and "findings:" in out


def test_lmwb_datasets_dedupe_and_its_refusals(tmp_path: Path, capsys):
    texts = documents(10)
    path = write_jsonl(tmp_path / "d.jsonl", texts + texts[:3])
    status, out, err = lmwb_in_process(capsys, "datasets", "dedupe", str(path), "--out", str(tmp_path / "c.jsonl"))
    assert status == 0, err
    assert f"Removed 3 exact copies of 13 documents; wrote the other 10 to {tmp_path / 'c.jsonl'}." in out

    status, _, err = lmwb_in_process(capsys, "datasets", "dedupe", str(path), "--out", str(path))
    assert_one_line_error(status, err, "is the input dataset")
    status, _, err = lmwb_in_process(capsys, "datasets", "dedupe", str(path))
    assert_one_line_error(status, err, "--out")
    status, _, err = lmwb_in_process(capsys, "datasets", "check", str(tmp_path / "nothing.jsonl"))
    assert_one_line_error(status, err, "No dataset")


def test_lmwb_datasets_path_still_inspects_a_dataset(tmp_path: Path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", documents(3))
    status, out, err = lmwb_in_process(capsys, "datasets", str(path), "--json")
    assert status == 0, err
    assert json.loads(out)["documents"] == 3


def test_lmwb_train_refuses_an_unknown_split_by(capsys):
    status, _, err = lmwb_in_process(
        capsys, "train", "--model", "scratch:nano", "--dataset", "fables", "--split-by", "x"
    )
    assert_one_line_error(status, err, "--split-by", "use position or document")


def bad_sources(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    """Issue 17's bad input, each with the words its one line says: a Parquet file without text, and a saved
    dataset with several splits when none is named."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.test_dataset_sources import save_dataset

    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"id": [1, 2], "score": [0.5, 0.7]}), numbers)
    datasets.disable_progress_bars()
    saved = save_dataset(tmp_path / "saved", {"train": {"text": documents(20)}, "test": {"text": documents(5)}})
    return {
        "no text column": (numbers, [str(numbers), "no text column", "'id' (int64)"]),
        "several splits": (saved, ["--split:", "'train', 'test'", "pick one"]),
    }


@pytest.mark.parametrize("source", ["no text column", "several splits"])
def test_bad_input_is_one_line_for_every_command_and_leaves_nothing_behind(tmp_path: Path, capsys, source: str):
    from engine.home import token_cache_dir, tokenizer_cache_dir
    from engine.store import RunStore

    path, words = bad_sources(tmp_path)[source]
    out = tmp_path / "copy.jsonl"
    commands = [
        ("datasets", "check", str(path), "--model", "scratch:nano"),
        ("datasets", "dedupe", str(path), "--out", str(out)),
        ("datasets", "tokenizers", str(path)),
        ("train", "--model", "scratch:nano", "--dataset", str(path), "--detach"),
    ]
    for command in commands:
        status, _, err = lmwb_in_process(capsys, *command)
        assert_one_line_error(status, err, *words)
    assert not out.exists()
    assert RunStore().list_runs() == []
    for cache in (health_cache_dir(), token_cache_dir(), tokenizer_cache_dir()):
        assert not list(cache.iterdir())


# --- the Datasets screen's Check view --------------------------------------------------------


def test_the_check_view_shows_the_report_with_its_plot_and_an_error_in_place(tmp_path: Path, tiny_model_dir: Path):
    from tests.test_tui_app import SIZE, shown_text, story, wait_until
    from tui.app import WorkbenchApp
    from tui.widgets.health_view import LengthChart

    texts = documents(20)
    path = write_jsonl(tmp_path / "mine.jsonl", [*texts, *texts[:5], "the cafÃ© was closed"])

    @story
    async def check_it() -> None:
        app = WorkbenchApp()
        notices: list[str] = []
        app.notify = lambda message, **options: notices.append(str(message))  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            app.model = str(tiny_model_dir)
            await pilot.press("o")
            app.screen.query_one("#path-input").value = str(path)
            status = app.screen.query_one("#path-status")
            await wait_until(pilot, lambda: "✓" in shown_text(status))
            await pilot.press("enter")
            stats = app.screen.query_one("#dataset-stats")
            await wait_until(pilot, lambda: "mine.jsonl" in shown_text(stats))

            await pilot.press("h")
            assert app.screen.query_one("#datasets-tabs").active == "check"
            line = app.screen.query_one("#health-status")
            await wait_until(pilot, lambda: "findings · h checks again" in shown_text(line))
            report = " ".join(shown_text(app.screen.query_one("#health-report")).split())
            assert "5 of 26 documents (19.2%) copy an earlier one" in report
            assert "mojibake" in report and f"Tokens against {tiny_model_dir}" in report
            assert app.screen.query_one(LengthChart).display

            app.model = "./no-such-model"  # a new model clears the report; its check fails in place
            await wait_until(pilot, lambda: "h checks the chosen dataset" in shown_text(line))
            await pilot.press("h")
            await wait_until(pilot, lambda: "no-such-model" in shown_text(line))
            assert "Exact duplicates" in shown_text(app.screen.query_one("#health-report"))  # the data's part stays
            assert notices == []  # shown in place, not as a notification

    check_it()
