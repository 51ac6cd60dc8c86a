"""The tokenizer lab: BPE tokenizers of a few sizes trained on a dataset, measured against GPT-2's and the model's.

The text is made here: made-up words drawn with a long tail, as real words
are, so a byte-level BPE finds merges for a few thousand entries and the rare
ones are really rare. GPT-2's tokenizer is "cached" by laying a small
tokenizer out under models--gpt2 in the test's own Hugging Face cache.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from textual.screen import Screen
from textual.widgets import Input, Static, TabbedContent

from engine.datasets import open_dataset
from engine.errors import SettingsError
from engine.home import token_cache_dir, tokenizer_cache_dir
from engine.models import train_tokenizer
from engine.planning import plan_run
from engine.tokenizer_lab import RARE_BELOW, check_sizes, compare_tokenizers, parse_sizes
from tests.conftest import assert_one_line_error, lmwb_in_process, put_in_hf_cache
from tests.test_tui_app import SIZE, open_train_screen, shown_text, story, wait_until
from tui.app import WorkbenchApp

SIZES = (300, 600, 1200)
NOT_CACHED = "GPT-2's tokenizer is not cached here"


def write_words(path: Path, words: int = 30_000, seed: int = 0) -> Path:
    """Lines of made-up words from syllables, Zipf-like: a few common words and a long tail of rare ones."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "tu", "sha", "vo", "pel", "dri", "an", "es", "or", "qui", "zen", "ba"]
    lexicon = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)]
    weights = [1 / rank for rank in range(1, len(lexicon) + 1)]
    chosen = rng.choices(lexicon, weights=weights, k=words)
    lines = [" ".join(chosen[i : i + 12]).capitalize() + "." for i in range(0, len(chosen), 12)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def words(tmp_path: Path) -> Path:
    return write_words(tmp_path / "words.txt")


def test_a_larger_vocabulary_packs_more_bytes_into_each_token_of_the_training_text(words):
    comparison = compare_tokenizers(open_dataset(str(words)), SIZES)

    assert comparison is not None
    trained = [measure for measure in comparison.measures if measure.kind == "trained"]
    assert [measure.vocabulary for measure in trained] == sorted({*SIZES, comparison.recommended})
    per_token = [measure.bytes_per_token for measure in trained]
    assert per_token == sorted(per_token) and len(set(per_token)) == len(per_token)
    # A bigger vocabulary costs embedding rows: at tiny's width (the default preset) 256 parameters each.
    assert comparison.preset == "tiny" and comparison.width == 256
    assert [measure.embedding_parameters for measure in trained] == [m.vocabulary * 256 for m in trained]


def test_the_rare_token_counts_equal_a_direct_count(words):
    dataset = open_dataset(str(words))
    comparison = compare_tokenizers(dataset, SIZES)

    assert comparison is not None
    text = words.read_text(encoding="utf-8")
    for measure in comparison.measures:
        tokenizer = train_tokenizer(dataset, int(measure.name.removeprefix("BPE ")))  # the lab's, from its cache
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        seen = Counter(ids)
        assert measure.tokens == len(ids)
        assert measure.bytes_per_token == pytest.approx(len(text.encode("utf-8")) / len(ids))
        assert measure.rare == sum(1 for token in range(len(tokenizer)) if seen[token] < RARE_BELOW)
        assert measure.unseen == sum(1 for token in range(len(tokenizer)) if seen[token] == 0)
        assert measure.rare_fraction == measure.rare / len(tokenizer)


def test_the_recommendation_is_the_vocabulary_a_scratch_run_is_planned_with(words):
    comparison = compare_tokenizers(open_dataset(str(words)), SIZES, model="scratch:nano")

    assert comparison is not None
    planned = plan_run({"model": "scratch:nano", "dataset": str(words)}).config.vocab_size
    assert comparison.recommended == planned
    assert comparison.recommendation.startswith(f"Use a vocabulary of {planned} for scratch:nano")
    assert [measure.name for measure in comparison.measures if measure.recommended] == [f"BPE {planned}"]
    # A scratch model's own tokenizer is one of the trained ones; its preset prices the embeddings.
    assert comparison.preset == "nano" and comparison.width == 96
    assert {measure.kind for measure in comparison.measures} == {"trained"}


def test_gpt2_is_compared_when_its_tokenizer_is_cached_and_a_line_says_so_when_not(words, tiny_model_dir):
    dataset = open_dataset(str(words))
    without = compare_tokenizers(dataset, SIZES[:1])
    assert without is not None
    assert "gpt2" not in [measure.name for measure in without.measures]
    assert any(note.startswith(NOT_CACHED) for note in without.notes)

    put_in_hf_cache(tiny_model_dir, "gpt2")
    with_gpt2 = compare_tokenizers(dataset, SIZES[:1])
    assert with_gpt2 is not None
    gpt2 = next(measure for measure in with_gpt2.measures if measure.name == "gpt2")
    assert gpt2.kind == "gpt2" and gpt2.vocabulary == 300  # the small tokenizer laid out as GPT-2's
    assert gpt2.tokens > 0 and gpt2.rare <= gpt2.vocabulary
    assert not any(note.startswith(NOT_CACHED) for note in with_gpt2.notes)


def test_the_chosen_models_tokenizer_is_measured_unless_it_is_gpt2s(words, tiny_model_dir, tmp_path):
    dataset = open_dataset(str(words))
    comparison = compare_tokenizers(dataset, SIZES[:1], model=str(tiny_model_dir))
    assert comparison is not None
    assert [measure.kind for measure in comparison.measures][-1] == "model"

    put_in_hf_cache(tiny_model_dir, "gpt2")  # now the model's tokenizer is GPT-2's: one row, and a line
    shared = compare_tokenizers(dataset, SIZES[:1], model=str(tiny_model_dir))
    assert shared is not None
    assert [measure.kind for measure in shared.measures].count("model") == 0
    assert any("uses GPT-2's tokenizer" in note for note in shared.notes)


def test_a_cancelled_comparison_returns_nothing_and_leaves_no_half_written_cache(words):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 3  # part of the way through

    assert compare_tokenizers(open_dataset(str(words)), SIZES, cancelled=cancelled) is None
    assert not list(token_cache_dir().glob(".*.tmp"))


def test_a_cancel_ends_a_tokenizer_training_part_way_through_the_text(tmp_path):
    big = write_words(tmp_path / "big.txt", words=500_000)  # about 3.5 MB
    lines: list[str] = []

    def cancelled() -> bool:
        return any("MB read" in line for line in lines)  # once training has read a megabyte or so

    assert compare_tokenizers(open_dataset(str(big)), (300,), progress=lines.append, cancelled=cancelled) is None
    assert lines[-1] == "BPE 300 (1 of 2): Training a 300-token BPE tokenizer on big.txt: 1 MB read…"
    assert not list(tokenizer_cache_dir().iterdir())  # nothing half trained is kept


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("256", ["256", "at least 257", "<|endoftext|>"]),
        ("1000,abc", ["'abc'", "1000,4000,16000"]),
        ("", ["''", "1000,4000,16000"]),
        ("1k,-4", ["'-4'"]),
    ],
)
def test_sizes_that_are_too_small_or_not_numbers_are_refused(text, words):
    with pytest.raises(SettingsError) as refused:
        parse_sizes(text)
    assert refused.value.field == "sizes"
    for word in words:
        assert word in str(refused.value)


def test_sizes_are_read_with_k_for_thousands_sorted_and_each_once():
    assert parse_sizes("16k, 1000,4k,1k") == (1000, 4000, 16000)
    with pytest.raises(SettingsError, match="at least one"):
        check_sizes([])


# --- lmwb datasets tokenizers ------------------------------------------------------------------


def test_the_command_prints_the_table_and_the_recommendation(capsys, words):
    status, out, err = lmwb_in_process(capsys, "datasets", "tokenizers", str(words), "--sizes", "300,600")

    assert status == 0, err
    for heading in ("tokenizer", "vocabulary", "bytes/token", f"seen <{RARE_BELOW}", "embedding"):
        assert heading in out
    assert "BPE 300" in out and "BPE 600" in out
    assert "Use a vocabulary of" in out
    assert NOT_CACHED in out


def test_the_command_prints_json_for_scripts(capsys, words):
    status, out, err = lmwb_in_process(
        capsys, "datasets", "tokenizers", str(words), "--sizes", "300,600", "--model", "scratch:nano", "--json"
    )

    assert status == 0, err
    answer = json.loads(out)
    assert answer["preset"] == "nano" and answer["width"] == 96
    planned = plan_run({"model": "scratch:nano", "dataset": str(words)}).config.vocab_size
    assert [row["name"] for row in answer["tokenizers"]] == [f"BPE {size}" for size in sorted({300, 600, planned})]
    assert answer["recommended_vocab_size"] == planned
    assert [row["recommended"] for row in answer["tokenizers"]].count(True) == 1
    assert all(
        0 <= row["rare_fraction"] <= 1 and row["embedding_parameters"] == row["vocabulary"] * 96
        for row in answer["tokenizers"]
    )
    assert answer["recommendation"].startswith(f"Use a vocabulary of {planned}")


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--sizes", "100"], ["--sizes", "100", "257"]),
        (["--sizes", "1000,many"], ["--sizes", "'many'"]),
        (["--model", "scratch:huge"], ["scratch:huge", "no preset"]),
    ],
)
def test_bad_sizes_or_model_are_one_line_and_train_nothing(capsys, words, arguments, named):
    status, _, err = lmwb_in_process(capsys, "datasets", "tokenizers", str(words), *arguments)

    assert_one_line_error(status, err, *named)
    assert not list(tokenizer_cache_dir().iterdir())


def test_an_empty_dataset_is_one_line(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")

    status, _, err = lmwb_in_process(capsys, "datasets", "tokenizers", str(empty))

    assert_one_line_error(status, err, "empty.txt", "empty")


def saved_splits(tmp_path: Path) -> Path:
    """A saved DatasetDict whose splits hold different made-up words, the validation split a tenth of the train's."""
    import datasets

    from tests.test_dataset_sources import save_dataset

    datasets.disable_progress_bars()
    train = write_words(tmp_path / "train.txt", words=30_000, seed=1).read_text(encoding="utf-8").splitlines()
    validation = write_words(tmp_path / "validation.txt", words=3_000, seed=2).read_text(encoding="utf-8")
    return save_dataset(tmp_path / "saved", {"train": {"text": train}, "validation": {"text": validation.splitlines()}})


def test_the_command_trains_and_measures_on_the_split_named(capsys, tmp_path):
    saved = saved_splits(tmp_path)
    status, _, err = lmwb_in_process(capsys, "datasets", "tokenizers", str(saved), "--sizes", "300")
    assert_one_line_error(status, err, "--split:", "'train', 'validation'", "pick one")

    answers = {}
    for split in ("train", "validation"):
        status, out, err = lmwb_in_process(
            capsys, "datasets", "tokenizers", str(saved), "--split", split, "--sizes", "300", "--json"
        )
        assert status == 0, err
        answers[split] = json.loads(out)
        dataset = open_dataset(str(saved), split=split)
        assert answers[split]["bytes"] == dataset.text_bytes()
        expected = compare_tokenizers(dataset, [300])
        assert expected is not None
        assert answers[split]["tokenizers"] == [measure.as_dict() for measure in expected.measures]
    assert answers["train"]["bytes"] > 5 * answers["validation"]["bytes"]


# --- the Datasets screen -----------------------------------------------------------------------


@story
async def test_the_lab_on_the_datasets_screen_recommends_a_vocabulary_that_train_then_uses(words) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        app.screen.query_one("#path-input", Input).value = str(words)
        status = app.screen.query_one("#path-status", Static)
        await wait_until(pilot, lambda: "✓" in shown_text(status))
        await pilot.press("enter")
        assert app.dataset == str(words)
        screen = app.screen
        await wait_until(pilot, lambda: "documents" in shown_text(screen.query_one("#dataset-stats", Static)))
        lab_status = screen.query_one("#lab-status", Static)
        lab_box = screen.query_one("#lab-box")

        screen.action_compare_tokenizers()  # what l does; while the lab runs, the same key cancels it
        assert screen.query_one("#datasets-tabs", TabbedContent).active == "tokenizer"
        assert "Cancel lab" in footer_keys(screen) and "Tokenizer lab" not in footer_keys(screen)
        await pilot.press("l")
        await wait_until(pilot, lambda: "cancelled" in shown_text(lab_status))
        assert not lab_box.display

        await pilot.press("l")
        lab_report = screen.query_one("#lab-report", Static)
        await wait_until(pilot, lambda: "Use a vocabulary" in shown_text(lab_report), timeout=120)
        planned = plan_run({"model": "scratch:nano", "dataset": str(words)}).config.vocab_size
        report = shown_text(lab_report)
        assert f"Use a vocabulary of {planned} for scratch:nano" in report
        for row in ("BPE 1000", "BPE 4000", "BPE 16000", f"BPE {planned} ★"):
            assert row in report
        assert NOT_CACHED in report
        assert f"u gives Train vocab {planned}" in shown_text(lab_status)
        await pilot.pause()
        assert "Use vocab" in footer_keys(screen) and "Tokenizer lab" in footer_keys(screen)

        await pilot.press("u")
        assert app.vocab_size == planned
        train = await open_train_screen(pilot)
        vocab_size = train.query_one("#field-vocab_size", Input)
        assert vocab_size.value == str(planned)
        max_steps = train.query_one("#field-max_steps", Input)
        max_steps.value = "7"
        await pilot.press("escape", "ctrl+n")  # a new form: the defaults, and what the other screens chose
        assert max_steps.value == "200" and vocab_size.value == str(planned)


@story
async def test_the_lab_on_the_datasets_screen_reads_the_split_picked(tmp_path) -> None:
    from textual.widgets import OptionList

    from tui.widgets.formatting import human_bytes

    saved = saved_splits(tmp_path)
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        app.screen.query_one("#path-input", Input).value = str(saved)
        await wait_until(pilot, lambda: "✓" in shown_text(app.screen.query_one("#path-status", Static)))
        await pilot.press("enter")
        screen = app.screen
        stats = screen.query_one("#dataset-stats", Static)
        await wait_until(pilot, lambda: "pick one above" in shown_text(stats))
        await pilot.press("l")  # no split yet: nothing to train on
        assert "starting" not in shown_text(screen.query_one("#lab-status", Static))

        await pilot.press("s")  # the choice opens: blank, train, validation
        await pilot.press("down", "down", "down", "enter")
        await wait_until(pilot, lambda: "documents" in shown_text(stats))
        assert app.dataset_split == "validation"
        screen.query_one("#dataset-list", OptionList).focus()
        await pilot.press("l")
        lab_report = screen.query_one("#lab-report", Static)
        await wait_until(pilot, lambda: "Use a vocabulary" in shown_text(lab_report), timeout=120)

        expected = compare_tokenizers(open_dataset(str(saved), split="validation"))  # from the caches the lab filled
        assert expected is not None
        report = " ".join(shown_text(lab_report).split())
        assert f"Tokenizers on saved ({human_bytes(expected.data_bytes)})" in report
        for measure in expected.measures:
            assert f"{measure.name}{' ★' if measure.recommended else ''} {measure.vocabulary:,} " in report
            assert f"{measure.bytes_per_token:.2f}" in report
        assert "Lab on saved (validation)" in shown_text(screen.query_one("#lab-status", Static))


def footer_keys(screen: Screen) -> list[str]:
    """The descriptions of the keys the screen offers now (what its footer shows)."""
    return [active.binding.description for active in screen.active_bindings.values() if active.enabled]
