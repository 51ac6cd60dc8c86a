"""Bad input: every mistake a user can make gets one clear line, no traceback, and loses nothing.

One test (or one parametrized family) per row of the table in
docs/reliability.md, in the same order. Most rows are met the way a user meets
them, through ``lmwb`` (``tui.cli.main`` in this process, so stderr is
captured): exit status 2 and exactly one line, ``lmwb: error: ...``, that names
the file, line, flag or field and says what to do. The TUI shows the same
engine messages. The rows about forms check the engine validators the forms
call. The last section fuzzes the settings validators with hypothesis.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.datasets import open_dataset, tokenize_dataset
from engine.errors import SettingsError, StoreError, TrainingError
from engine.generation import GenerationSettings
from engine.store import RunStore
from engine.training_config import TrainingConfig
from tests.conftest import FABLES, REPO_ROOT, assert_one_line_error, lmwb_command, lmwb_in_process
from tui.cli import build_parser, main
from tui.cli.common import whole_number


def quick_training(model: Path, dataset: Path, *more: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--block-size",
        "16",
        "--warmup",
        "1",
        "--device",
        "cpu",
        *more,
    ]


# -----------------------------------------------------------------------------
# Datasets


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"], ids=["empty", "only-whitespace"])
def test_an_empty_file(capsys, tmp_path, tiny_model_dir, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(code, stderr, f"{path} is empty (no text in it)", "Add text")
    code, _, stderr = lmwb_in_process(capsys, *quick_training(tiny_model_dir, path))
    assert_one_line_error(code, stderr, f"{path} is empty")
    assert RunStore().list_runs() == []  # refused before a run was recorded


def test_a_binary_file(capsys, tmp_path, tiny_model_dir):
    path = tmp_path / "photo.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000))
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(
        code, stderr, str(path), "binary file, not text", "NUL byte at offset 8", "Use a UTF-8 text file"
    )
    code, _, stderr = lmwb_in_process(capsys, *quick_training(tiny_model_dir, path))
    assert_one_line_error(code, stderr, "binary file")
    assert RunStore().list_runs() == []


def test_non_utf8_text(capsys, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Le corbeau et le renard\nCafé au lait\n".encode("latin-1"))
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(
        code, stderr, str(path), "not UTF-8 text", "byte 0xE9", "(line 2)", "iconv -f latin1 -t utf-8"
    )


def test_non_utf8_bytes_deep_in_a_big_file_fail_the_run_with_the_line(capsys, tmp_path, tiny_model_dir):
    # Opening checks only the start of a file; bad bytes past it are found while tokenizing.
    path = tmp_path / "long.txt"
    good = FABLES.read_bytes()[:200_000]
    path.write_bytes(good + b"\nthe crow said \xff\xfe hello\n" + good[:20_000])
    bad_line = good.count(b"\n") + 2
    code, _, stderr = lmwb_in_process(capsys, *quick_training(tiny_model_dir, path))
    line = assert_one_line_error(code, stderr, str(path), "not UTF-8 text", "byte 0xFF", f"(line {bad_line})")
    [run] = RunStore().list_runs()
    assert run.status == "failed" and run.error in line


@pytest.mark.slow
def test_a_huge_file_is_tokenized_with_progress_in_flat_memory(tmp_path, tiny_model_dir):
    """Tokenizing ten times more text takes no more memory: the text is streamed, never held whole."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = FABLES.read_text(encoding="utf-8")

    def peak_python_memory(megabytes: int) -> tuple[int, int, list]:
        path = tmp_path / f"huge-{megabytes}.txt"
        with path.open("w", encoding="utf-8") as out:
            for copy in range(megabytes * 1_000_000 // len(text) + 1):
                out.write(text.replace("fox", f"fox{copy}"))
        reports: list[tuple[int, int]] = []
        dataset = open_dataset(str(path))
        tracemalloc.start()
        try:
            tokens = tokenize_dataset(dataset, tokenizer, progress=lambda done, total: reports.append((done, total)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(tokens.ids) > path.stat().st_size // 4
        return peak, path.stat().st_size, reports

    small_peak, _, _ = peak_python_memory(1)
    huge_peak, huge_size, reports = peak_python_memory(10)
    print(f"peak traced memory: {small_peak:,} bytes for 1 MB, {huge_peak:,} bytes for {huge_size:,} bytes")
    assert huge_peak < 1.5 * small_peak + 1_000_000
    assert huge_peak < huge_size / 2
    done = [d for d, _ in reports]
    assert len(reports) > 10 and done == sorted(done) and reports[-1] == (huge_size, huge_size)


def test_a_dataset_shorter_than_one_block(capsys, tmp_path, tiny_model_dir):
    path = tmp_path / "note.txt"
    path.write_text("A fox. A crow. " * 4, encoding="utf-8")
    code, _, stderr = lmwb_in_process(capsys, *quick_training(tiny_model_dir, path, "--block-size", "32"))
    line = assert_one_line_error(
        code,
        stderr,
        "--dataset",
        str(path),
        "fewer than one window of block_size + 1 = 33",
        "use more text or a smaller block_size",
    )
    [run] = RunStore().list_runs()
    assert run.status == "failed" and run.error in line


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"text": "a fox"}\n{"text": "a crow"\n', "line 2: not valid JSON"),
        ('{"text": "a fox"}\n\n{"body": "a crow"}\n', "line 3: no field 'text' (the fields are 'body')"),
        ('{"text": "a fox"}\n["a crow"]\n', "line 2: a list where a JSON object was expected"),
        ('{"text": "a fox"}\n{"text": 42}\n', "line 2: the field 'text' is a number, not text"),
    ],
    ids=["not-json", "no-field", "not-an-object", "not-text"],
)
def test_a_jsonl_line_that_is_not_json_or_lacks_the_field(capsys, tmp_path, lines, message):
    path = tmp_path / "records.jsonl"
    path.write_text(lines, encoding="utf-8")
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(code, stderr, f"{path}, {message}")


def test_a_jsonl_field_that_is_named_is_used_and_a_wrong_name_says_which_fields_exist(capsys, tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"body": "a fox"}\n{"body": "a crow"}\n', encoding="utf-8")
    assert lmwb_in_process(capsys, "datasets", str(path), "--field", "body")[0] == 0
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path), "--field", "story")
    assert_one_line_error(code, stderr, "line 1: no field 'story' (the fields are 'body')", "--field NAME")


def test_a_csv_without_the_column(capsys, tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("title,body\nThe fox,A fox met a crow.\n", encoding="utf-8")
    code, _, stderr = lmwb_in_process(capsys, "datasets", str(path))
    assert_one_line_error(
        code, stderr, f"{path} has no column 'text'", "its columns are 'title', 'body'", "--field NAME"
    )


# -----------------------------------------------------------------------------
# Nonsense numbers: every flag of lmwb train, generate and eval; every form field


def numeric_flags() -> list[tuple[str, str, object]]:
    """(command, flag, argument type) for every flag of train/generate/eval that takes a number or a choice."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    found = []
    for command in ("train", "generate", "eval"):
        for action in commands[command]._actions:
            checked = action.type not in (None, str, Path) or action.choices is not None
            if action.option_strings and checked and action.nargs != 0:
                found.append((command, action.option_strings[0], action.type))
    return found


NUMERIC_FLAGS = numeric_flags()
# What a user might mistype: words, signs, special floats, overflow; fractions where whole numbers go.
NONSENSE = ("abc", "-1", "nan", "inf", "1e999", "", "0x1g")
MORE_NONSENSE = {whole_number: ("1.5",)}
# Zero where a count or a size goes, and a probability above 1: numbers that parse, refused by the settings.
ZERO_REFUSED = {
    "train": ("--steps", "--max-time", "--batch-size", "--block-size", "--grad-accum", "--lr", "--vocab-size"),
    "generate": ("--max-new-tokens", "--top-p", "--repetition-penalty"),
    "eval": ("--block-size", "--batch-size", "--max-batches"),
}
FLAG_NONSENSE = {(command, flag): ("0",) for command, flags in ZERO_REFUSED.items() for flag in flags} | {
    ("train", "--lora-rank"): ("0",),
    ("train", "--lora-alpha"): ("0",),
    ("train", "--lora-dropout"): ("1",),
    ("generate", "--top-p"): ("0", "1.5"),
}


def required_arguments(command: str, tmp_path: Path) -> list[str]:
    return {
        "train": ["--model", "scratch:nano", "--dataset", "fables"],
        "generate": ["--model", str(tmp_path), "--prompt", "Once"],
        "eval": ["--model", str(tmp_path), "--dataset", "fables"],
    }[command]


def test_the_flag_list_covers_train_generate_and_eval():
    flags = {(command, flag) for command, flag, _ in NUMERIC_FLAGS}
    assert {
        ("train", "--steps"),
        ("train", "--lr"),
        ("train", "--batch-size"),
        ("train", "--device"),
        ("generate", "--temperature"),
        ("generate", "--top-p"),
        ("generate", "--seed"),
        ("eval", "--split"),
        ("eval", "--device"),
    } <= flags
    assert len(flags) >= 25


@pytest.mark.parametrize(("command", "flag", "kind"), NUMERIC_FLAGS, ids=[f"{c}{f}" for c, f, _ in NUMERIC_FLAGS])
def test_nonsense_in_every_flag(capsys, tmp_path, command, flag, kind):
    for value in NONSENSE + MORE_NONSENSE.get(kind, ()) + FLAG_NONSENSE.get((command, flag), ()):
        code, _, stderr = lmwb_in_process(capsys, command, *required_arguments(command, tmp_path), f"{flag}={value}")
        # A value that does not parse is quoted as typed; one the settings refuse is shown as a number.
        assert_one_line_error(code, stderr, flag, value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "99999999999"], "--seed: 99999999999 is out of range; use a whole number from 0 to 4294967295"),
        (["--warmup", "50"], "--warmup: 50 warmup steps is more than the 4 steps of the run"),
        (["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr: 0.001 is above learning_rate (0.0001)"),
        (["--vocab-size", "5"], "--vocab-size: 5 is out of range"),
        (["--block-size", "4096"], "--block-size: 4096 is more than the model's context of 64 tokens"),
    ],
    ids=["seed", "warmup", "min-lr", "vocab-size", "block-size"],
)
def test_numbers_that_parse_but_the_engine_refuses_name_their_flag(
    capsys, tiny_model_dir, fables_excerpt, args, message
):
    code, _, stderr = lmwb_in_process(capsys, *quick_training(tiny_model_dir, fables_excerpt, *args))
    assert_one_line_error(code, stderr, message)


def test_generation_numbers_the_engine_refuses_name_their_flag(capsys, tiny_model_dir):
    code, _, stderr = lmwb_in_process(
        capsys, "generate", "--model", str(tiny_model_dir), "--prompt", "Once", "--alternatives", "999"
    )
    assert_one_line_error(code, stderr, "alternatives", "999", "0 to 20")


FORM_NONSENSE = [None, "", "abc", "3", math.nan, math.inf, -math.inf, -1, -1.5, 0, 10**30, 1e308, True, [], {}]


def form_fields(settings_class) -> list[str]:
    return [field.name for field in dataclasses.fields(settings_class)]


def check_form_value(settings, name: str, value: object) -> bool:
    """Validate one field set to ``value``: True if accepted; a refusal must be a SettingsError naming it."""
    candidate = dataclasses.replace(settings, **{name: value})
    try:
        candidate.validate()
    except SettingsError as error:
        assert error.field == name and str(error).startswith(f"{name}: ")
        return False
    return True


@pytest.mark.parametrize("name", form_fields(TrainingConfig))
def test_nonsense_in_every_training_form_field(name):
    valid = TrainingConfig(model="scratch:nano", dataset="fables")
    valid.validate()
    accepted = [value for value in FORM_NONSENSE if check_form_value(valid, name, value)]
    assert None not in accepted or name in (
        "dataset_field",
        "dataset_split",
        "epochs",
        "max_epochs",
        "max_time",
        "dropout",
    )
    assert len(accepted) < len(FORM_NONSENSE) // 2, f"{name} accepts {accepted}"


@pytest.mark.parametrize("name", form_fields(GenerationSettings))
def test_nonsense_in_every_generation_form_field(name):
    valid = GenerationSettings()
    valid.validate()
    accepted = [value for value in FORM_NONSENSE if check_form_value(valid, name, value)]
    assert None not in accepted or name == "seed"
    assert len(accepted) < len(FORM_NONSENSE) // 2, f"{name} accepts {accepted}"


GENERATION_EDGES = [
    pytest.param({"temperature": math.inf}, id="temperature-inf"),
    pytest.param({"temperature": 1e308}, id="temperature-huge"),
    pytest.param({"temperature": 0}, id="temperature-greedy"),
    pytest.param({"temperature": 5e-324}, id="temperature-denormal"),
    pytest.param({"repetition_penalty": math.inf}, id="penalty-inf"),
    pytest.param({"repetition_penalty": 5e-324}, id="penalty-denormal"),
    pytest.param({"top_k": 10**30}, id="top-k-huge"),
    pytest.param({"top_p": 5e-324}, id="top-p-denormal"),
    pytest.param({"seed": -5}, id="seed-negative"),
    pytest.param({"seed": 2**70}, id="seed-huge"),
    pytest.param({"max_new_tokens": 10**30}, id="max-new-tokens-huge"),
    pytest.param({"stop": ("\x00",)}, id="stop-nul"),
]


@pytest.mark.parametrize("values", GENERATION_EDGES)
def test_generation_settings_the_form_accepts_generate_text(tiny_model_dir, values):
    """What validate() lets through must generate (or be refused by validate() in the first place)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.generation import generate_text

    settings = GenerationSettings(**{"max_new_tokens": 4, **values})
    try:
        settings.validate()
    except SettingsError:
        return
    if settings.max_new_tokens > 4:
        settings = dataclasses.replace(settings, max_new_tokens=4)  # the same code path; a test needs an end
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    result = generate_text(model, AutoTokenizer.from_pretrained(tiny_model_dir), "Once upon", settings)
    assert result.finish_reason in ("length", "eos", "stop")


# -----------------------------------------------------------------------------
# Models and checkpoints


def test_a_model_id_not_cached_while_offline(capsys):
    code, _, stderr = lmwb_in_process(capsys, "generate", "--model", "openai-community/gpt2", "--prompt", "Once")
    assert_one_line_error(
        code,
        stderr,
        "'openai-community/gpt2' is not in the Hugging Face cache",
        "HF_HUB_OFFLINE is set",
        "hf download openai-community/gpt2",
        "./my-model",
    )


def test_a_directory_that_is_not_a_model(capsys, tmp_path, fables_excerpt):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model", encoding="utf-8")
    for command in (
        ["generate", "--model", str(folder), "--prompt", "Once"],
        ["eval", "--model", str(folder), "--dataset", str(fables_excerpt)],
    ):
        code, _, stderr = lmwb_in_process(capsys, *command)
        assert_one_line_error(
            code, stderr, f"{folder} is not a Hugging Face model directory", "no config.json", "save_pretrained"
        )


@pytest.fixture
def trained_run(capsys, tiny_model_dir, fables_excerpt):
    """A completed 4-step run with one checkpoint, trained through lmwb."""
    assert lmwb_in_process(capsys, *quick_training(tiny_model_dir, fables_excerpt))[0] == 0
    [run] = RunStore().list_runs()
    [checkpoint] = RunStore().checkpoints(run.id)
    return run, Path(checkpoint["path"])


def test_a_truncated_checkpoint_is_refused_when_loaded(capsys, trained_run):
    run, checkpoint = trained_run
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, stderr = lmwb_in_process(capsys, "generate", "--model", f"run:{run.id}", "--prompt", "Once")
    assert_one_line_error(code, stderr, "truncated or corrupt")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_a_corrupt_trainer_state_is_refused_when_resumed_and_the_run_is_untouched(capsys, trained_run, damage):
    from engine.checkpoints import TRAINER_STATE_FILE

    run, checkpoint = trained_run
    state = checkpoint / TRAINER_STATE_FILE
    {
        "truncated": lambda: state.write_bytes(state.read_bytes()[:300]),
        "garbage": lambda: state.write_bytes(os.urandom(4096)),
        "missing": state.unlink,
    }[damage]()
    code, _, stderr = lmwb_in_process(capsys, "train", "--resume", run.id, "--steps", "8")
    expected = "has no trainer_state.pt" if damage == "missing" else "is corrupt or truncated"
    assert_one_line_error(code, stderr, str(checkpoint), expected)
    after = RunStore().get_run(run.id)
    assert (after.status, after.steps) == ("completed", 4)
    assert [Path(c["path"]) for c in RunStore().checkpoints(run.id)] == [checkpoint] and checkpoint.is_dir()


# -----------------------------------------------------------------------------
# The database and the data directory


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "newer",
    ["PRAGMA user_version = 99", "INSERT INTO _migrations VALUES ('m042_future_feature', '2031-01-01')"],
    ids=["user-version", "unknown-migration"],
)
def test_a_database_from_a_newer_version_is_refused_untouched(capsys, lmwb_home, newer):
    RunStore().create_run(name="precious", model="gpt2", dataset="fables", config={})
    database = lmwb_home / "workbench.db"
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute(newer)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the file, so its bytes tell any write
    connection.close()
    before = digest(database)
    for command in (["runs"], ["history"], ["train", "--model", "scratch:nano", "--dataset", "fables"]):
        code, _, stderr = lmwb_in_process(capsys, *command)
        assert_one_line_error(
            code,
            stderr,
            f"The database {database} was written by a newer version",
            "Upgrade lm-workbench, or set LMWB_HOME to another directory",
        )
    assert digest(database) == before


def test_a_corrupt_database_file_is_refused_untouched(capsys, lmwb_home):
    lmwb_home.mkdir(parents=True)
    database = lmwb_home / "workbench.db"
    database.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    before = digest(database)
    code, _, stderr = lmwb_in_process(capsys, "runs")
    assert_one_line_error(
        code, stderr, f"{database} is not a usable lm-workbench database", "rename it to workbench.db.broken"
    )
    assert digest(database) == before


def unwritable_homes(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """Places LMWB_HOME cannot be written, as far as this user can make them: (case, path, message)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder", encoding="utf-8")
    homes = [
        ("a regular file", a_file, "is a file, not a directory"),
        ("a folder that cannot be created", Path("/proc/lmwb-home"), "Cannot create the data directory"),
        ("an existing folder no one may write", Path("/proc/self"), "is not writable"),
    ]
    if os.geteuid() != 0:  # root writes through permissions; for anyone else a chmod is enough
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o500)
        homes.append(("a read-only folder", read_only, "is not writable"))
    return homes


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc for places even root cannot write")
def test_lmwb_home_that_cannot_be_written(capsys, monkeypatch, tmp_path):
    for _case, home, message in unwritable_homes(tmp_path):
        monkeypatch.setenv("LMWB_HOME", str(home))
        for command in (["runs"], ["generate", "--model", "./nowhere", "--prompt", "x"]):
            code, _, stderr = lmwb_in_process(capsys, *command)
            assert_one_line_error(code, stderr, message, str(home), "LMWB_HOME")


def test_disk_full_during_a_checkpoint_fails_the_run_and_keeps_the_previous_checkpoint(
    monkeypatch, tiny_model_dir, fables_excerpt
):
    import torch

    from engine.checkpoints import load_trainer_state
    from engine.training import TrainingJob

    config = TrainingConfig(
        model=str(tiny_model_dir),
        dataset=str(fables_excerpt),
        max_steps=6,
        batch_size=2,
        block_size=16,
        warmup_steps=1,
        eval_every=0,
        sample_every=0,
        checkpoint_every=3,
        device="cpu",
    )
    real_save = torch.save
    saves = []

    def save_until_the_disk_fills(state, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 1:
            return real_save(state, path, *args, **kwargs)
        with open(path, "wb") as half:
            half.write(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    store = RunStore()
    job = TrainingJob(config, store)
    with pytest.raises(TrainingError) as failed:
        job.run()
    message = str(failed.value)
    assert "Could not write the checkpoint for step 6" in message and "No space left on device" in message
    assert "Free disk space" in message and "resume the run" in message

    run = store.get_run(job.run_id)
    assert run.status == "failed" and run.error == message
    checkpoints_dir = Path(os.environ["LMWB_HOME"]) / "runs" / run.id / "checkpoints"
    assert sorted(p.name for p in checkpoints_dir.iterdir()) == ["step-3"]  # no half checkpoint
    [kept] = store.checkpoints(run.id)
    assert kept["step"] == 3 and load_trainer_state(Path(kept["path"]))["step"] == 3

    monkeypatch.setattr(torch, "save", real_save)  # space was freed
    resumed = TrainingJob(config, store, resume_run=run.id).run()
    assert (resumed.status, resumed.steps) == ("completed", 6)


def test_disk_full_while_writing_metrics_says_so_and_keeps_what_was_written(lmwb_home):
    store = RunStore()
    run_id = store.create_run(name="filling up", model="gpt2", dataset="fables", config={}).id
    store.add_metrics(run_id, [{"step": 1, "train_loss": 3.0}])
    # SQLite's own page limit makes this connection's disk "full": the error SQLite gives on a full disk.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError) as full:
        store.add_metrics(run_id, [{"step": step, "train_loss": 2.0, "note": "x" * 2000} for step in range(2, 400)])
    assert str(full.value) == (f"The disk holding {lmwb_home / 'workbench.db'} is full; free some space and try again.")
    store.close()
    assert [row["step"] for row in RunStore().metrics(run_id)] == [1]
    with sqlite3.connect(lmwb_home / "workbench.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_a_second_lmwb_on_the_same_home_works_beside_the_first(capsys, tiny_model_dir, fables_excerpt):
    """While one lmwb trains, another lists, trains and reads the same home; it may not resume or delete the live
    run."""
    first = subprocess.Popen(
        lmwb_command(
            "train",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(fables_excerpt),
            "--steps",
            "100000",
            "--batch-size",
            "2",
            "--block-size",
            "16",
            "--device",
            "cpu",
        ),
        cwd=REPO_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    run_id = first.stdout.readline().split()[2].rstrip(":")
    threading.Thread(target=first.stdout.read, daemon=True).start()
    try:
        store = RunStore()
        while not store.metrics(run_id):
            assert first.poll() is None, first.stderr.read()
        assert main(["runs", "--json"]) == 0
        listed = {run["id"]: run for run in json.loads(capsys.readouterr().out)}
        assert listed[run_id]["status"] == "running"  # the start-up sweep leaves a live run alone

        code, _, stderr = lmwb_in_process(capsys, "train", "--resume", run_id, "--steps", "200000")
        assert_one_line_error(
            code, stderr, f"Run {run_id} is still running (process {first.pid} on", "stop it before resuming it"
        )
        code, _, stderr = lmwb_in_process(capsys, "runs", "delete", run_id, "--yes")
        assert_one_line_error(code, stderr, f"Run {run_id} is running (process {first.pid}", "stop it first")

        assert lmwb_in_process(capsys, *quick_training(tiny_model_dir, fables_excerpt, "--name", "second"))[0] == 0
        assert first.poll() is None
    finally:
        first.terminate()  # SIGTERM: stops with a checkpoint
        first.wait(timeout=120)
    assert first.returncode == 0 and "locked" not in first.stderr.read()
    statuses = {run.name: run.status for run in RunStore().list_runs()}
    assert statuses["second"] == "completed" and list(statuses.values()).count("stopped") == 1


# -----------------------------------------------------------------------------
# Fuzzing: any input gives a result or one of our errors, never another exception.
# (The dataset readers are fuzzed in test_datasets.py, model sources in test_models.py.)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
    st.tuples(st.text(max_size=5)),
)


@FUZZ
@given(data=st.data())
def test_fuzz_the_training_form(data):
    values = {
        name: data.draw(anything, label=name)
        for name in data.draw(st.sets(st.sampled_from(form_fields(TrainingConfig)), max_size=4))
    }
    try:
        TrainingConfig.from_dict({"model": "scratch:nano", "dataset": "fables", **values}).validate()
    except SettingsError as error:
        assert error.field in form_fields(TrainingConfig) and str(error)


@FUZZ
@given(data=st.data())
def test_fuzz_the_generation_form(data):
    values = {
        name: data.draw(anything, label=name)
        for name in data.draw(st.sets(st.sampled_from(form_fields(GenerationSettings)), max_size=4))
    }
    try:
        GenerationSettings(**values).validate()
    except SettingsError as error:
        assert error.field in values and str(error)


@FUZZ
@given(keys=st.dictionaries(st.text(max_size=12), anything, max_size=4))
def test_fuzz_a_stored_training_config_with_unknown_or_missing_keys(keys):
    try:
        TrainingConfig.from_dict(keys).validate()
    except SettingsError as error:
        assert str(error)
