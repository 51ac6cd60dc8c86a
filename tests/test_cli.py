"""The `lmwb` command line, used the way a person at a shell or a script would use it.

Most stories call ``main([...])`` in this process and read what it printed;
a few run the real command in a child process (start-up, signals, pipes).
Every test has its own empty LMWB_HOME (see conftest.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import (
    REPO_ROOT,
    assert_one_line_error,
    build_tiny_gpt2,
    lmwb_command,
    lmwb_in_process,
    lmwb_in_subprocess,
)
from tui.cli import main
from tui.cli.common import device_name, non_negative_int, number, positive_int, whole_number


@pytest.fixture(autouse=True)
def piped_output_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables go to a pipe here: lmwb picks its own width unless COLUMNS says otherwise."""
    monkeypatch.delenv("COLUMNS", raising=False)


# --- starting up -----------------------------------------------------------------------------


def test_version_and_help_work_without_loading_torch_or_textual() -> None:
    version = lmwb_in_subprocess("--version")
    assert version.returncode == 0
    assert version.stdout.strip().startswith("lmwb ")

    overview = lmwb_in_subprocess("--help")
    assert overview.returncode == 0
    for command in ("datasets", "models", "runs", "generate", "history", "train", "eval"):
        assert command in overview.stdout

    train_help = lmwb_in_subprocess("train", "--help")
    assert train_help.returncode == 0 and "--resume" in train_help.stdout and "--max-time" in train_help.stdout

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tui.cli import main; main(['--help']); "
            "print(sorted(m for m in ('torch', 'textual', 'transformers') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]"


def test_no_command_opens_the_app(monkeypatch) -> None:
    import tui.app

    opened = []
    monkeypatch.setattr(tui.app, "run_app", lambda: opened.append(True))
    assert main([]) == 0
    assert opened == [True]


@pytest.mark.parametrize(
    "args, flag",
    [
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--steps", "-3"], "--steps"),
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--batch-size", "2.5"], "--batch-size"),
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--lr", "0"], "--lr"),
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--max-time", "inf"], "--max-time"),
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--device", "gpu"], "--device"),
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--beta2", "1.5"], "--beta2"),
        (["train", "--model", "scratch:nano", "--dataset", "fables", "--weight-decay", "-0.1"], "--weight-decay"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--temperature", "abc"], "--temperature"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--temperature", "-1"], "--temperature"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--top-p", "1.5"], "--top-p"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--top-p", "0"], "--top-p"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--top-k", "-1"], "--top-k"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--repetition-penalty", "nan"], "--repetition-penalty"),
        (["generate", "--model", "gpt2", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["generate", "--model", "scratch:nano", "--prompt", "hi"], "--dataset"),
        (["datasets", "fables", "--tokens", "--model", "scratch:nano", "--vocab-size", "5"], "--vocab-size"),
        (["history", "--limit", "many"], "--limit"),
        (["runs", "--status", "sleeping"], "--status"),
        (["eval", "--model", "gpt2", "--dataset", "fables", "--split", "test"], "--split"),
    ],
)
def test_nonsense_numbers_and_choices_get_one_line_naming_the_flag(capsys, args, flag) -> None:
    status, out, err = lmwb_in_process(capsys, *args)
    assert_one_line_error(status, err, flag)
    assert out == ""


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.integers().map(str), st.floats().map(str)))
def test_any_text_for_a_number_flag_is_a_valid_number_or_a_clear_refusal(text: str) -> None:
    checks = {
        whole_number: lambda value: isinstance(value, int),
        number: lambda value: isinstance(value, float) and math.isfinite(value),
        positive_int: lambda value: isinstance(value, int) and value >= 1,
        non_negative_int: lambda value: isinstance(value, int) and value >= 0,
        device_name: lambda value: value == text,
    }
    for parse, valid in checks.items():
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as error:
            assert repr(text) in str(error)
        else:
            assert valid(value), (parse.__name__, text, value)


def test_a_mistake_in_a_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = lmwb_in_subprocess("datasets", str(tmp_path / "no-such-file.txt"))
    assert_one_line_error(result.returncode, result.stderr, "no-such-file.txt")

    result = lmwb_in_subprocess("train", "--steps", "-3")
    assert_one_line_error(result.returncode, result.stderr, "lmwb train needs --model and --dataset")


def test_a_bad_training_setting_is_refused_before_torch_loads() -> None:
    # The range is TrainingConfig's to check (argparse only reads a whole number), and it checks before torch.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tui.cli import main; "
            "status = main(['train', '--model', 'scratch:nano', '--dataset', 'fables', '--steps', '-3']); "
            "print(status, sorted(m for m in ('torch', 'transformers') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert probe.stdout.strip().splitlines()[-1] == "2 []"
    assert_one_line_error(2, probe.stderr, "--steps: -3 is out of range; use a whole number of at least 1")


# --- datasets and models ---------------------------------------------------------------------


def test_datasets_lists_the_bundled_datasets_for_people_and_scripts(capsys) -> None:
    from engine.datasets import bundled_datasets

    bundled = bundled_datasets()
    assert len(bundled) >= 3

    status, out, _ = lmwb_in_process(capsys, "datasets", "--json")
    assert status == 0
    listed = json.loads(out)
    assert [entry["name"] for entry in listed] == [dataset.name for dataset in bundled]
    for entry, dataset in zip(listed, bundled, strict=True):
        stats = dataset.stats()
        assert entry["path"] == str(dataset.path)
        assert entry["bytes"] == stats.bytes and entry["bytes"] > 0
        assert entry["documents"] == stats.documents and entry["documents"] > 0

    status, out, _ = lmwb_in_process(capsys, "datasets")
    assert status == 0
    for dataset in bundled:
        assert dataset.name in out


def test_datasets_with_a_path_shows_its_stats_and_preview(capsys, fables: Path) -> None:
    status, out, _ = lmwb_in_process(capsys, "datasets", str(fables), "--json")
    assert status == 0
    shown = json.loads(out)
    assert shown["name"] == "fables.txt"
    assert shown["bytes"] == fables.stat().st_size
    assert shown["files"] == 1 and shown["documents"] == 1
    assert shown["characters"] == len(fables.read_text(encoding="utf-8"))
    first_line = fables.read_text(encoding="utf-8").splitlines()[0]
    assert first_line in shown["preview"]

    status, out, _ = lmwb_in_process(capsys, "datasets", str(fables))
    assert status == 0
    assert first_line in " ".join(out.split())


def test_datasets_reads_a_named_jsonl_field(capsys, tmp_path: Path) -> None:
    records = tmp_path / "qa.jsonl"
    records.write_text(
        "\n".join(json.dumps({"body": f"Question {n}? Answer {n}."}) for n in range(5)) + "\n", encoding="utf-8"
    )
    status, out, _ = lmwb_in_process(capsys, "datasets", str(records), "--field", "body", "--json")
    assert status == 0
    shown = json.loads(out)
    assert shown["documents"] == 5
    assert "Question 0? Answer 0." in shown["preview"]

    status, _, err = lmwb_in_process(capsys, "datasets", str(records))  # no "text" field in these records
    assert_one_line_error(status, err, "qa.jsonl")


def test_datasets_counts_tokens_with_a_models_tokenizer(capsys, fables: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    status, out, _ = lmwb_in_process(
        capsys, "datasets", str(fables), "--tokens", "--model", str(tiny_model_dir), "--json"
    )
    assert status == 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = len(tokenizer(fables.read_text(encoding="utf-8"))["input_ids"])
    assert abs(json.loads(out)["tokens"] - expected) <= 1  # the engine may end the document with EOS

    # A scratch model's tokenizer is trained on the dataset itself: it packs the text tighter than bytes.
    status, out, _ = lmwb_in_process(
        capsys, "datasets", str(fables), "--tokens", "--model", "scratch:nano", "--vocab-size", "400", "--json"
    )
    assert status == 0
    assert 0 < json.loads(out)["tokens"] < fables.stat().st_size / 2

    status, _, err = lmwb_in_process(capsys, "datasets", str(fables), "--tokens")
    assert_one_line_error(status, err, "--model")


def test_models_lists_presets_and_cached_models_as_json(capsys) -> None:
    status, out, err = lmwb_in_process(capsys, "models", "--json")
    assert status == 0, err
    choices = json.loads(out)
    sources = {choice["source"] for choice in choices}
    assert {"scratch:nano", "scratch:tiny", "scratch:small"} <= sources
    assert all(set(choice) >= {"source", "kind", "description"} for choice in choices)

    status, out, _ = lmwb_in_process(capsys, "models")
    assert status == 0 and "scratch:nano" in out


# --- runs ------------------------------------------------------------------------------------


def record_run(store, name: str, status: str, losses: list[float]) -> str:
    """A finished run as a training job would have written it: metrics, a sample, a checkpoint."""
    run = store.create_run(name=name, model="scratch:nano", dataset="fables", config={"max_steps": len(losses)})
    store.set_status(run.id, "running")
    store.add_metrics(
        run.id,
        [
            {
                "step": step,
                "train_loss": loss,
                "val_loss": loss + 0.1 if step % 2 == 0 else None,
                "lr": 1e-3,
                "tokens_per_sec": 1000.0,
                "tokens": 64 * step,
                "elapsed": 0.1 * step,
            }
            for step, loss in enumerate(losses, start=1)
        ],
    )
    store.add_sample(run.id, len(losses), "The fox", " ran to the mill.")
    checkpoint = store_run_dir(run.id) / "checkpoints" / f"step-{len(losses)}"
    checkpoint.mkdir(parents=True)
    store.add_checkpoint(run.id, len(losses), str(checkpoint), val_loss=min(losses) + 0.1)
    store.update_run(run.id, steps=len(losses), tokens=64 * len(losses), best_val_loss=min(losses) + 0.1)
    store.set_status(run.id, status)
    return run.id


def store_run_dir(run_id: str) -> Path:
    from engine.home import run_dir

    return run_dir(run_id)


@pytest.fixture
def two_runs():
    from engine.store import RunStore

    store = RunStore()
    fox = record_run(store, "fox-fables", "completed", [4.0, 3.5, 3.1, 2.9])
    owl = record_run(store, "owl-sayings", "stopped", [4.2, 3.9])
    return store, fox, owl


def test_runs_lists_filters_and_sorts(capsys, two_runs) -> None:
    _, fox, owl = two_runs
    status, out, _ = lmwb_in_process(capsys, "runs", "--json")
    assert status == 0
    runs = json.loads(out)
    assert [run["id"] for run in runs] == [owl, fox]  # newest first
    for run in runs:
        assert set(run) >= {"id", "name", "status", "model", "dataset", "steps", "best_val_loss", "created_at"}

    status, out, _ = lmwb_in_process(capsys, "runs", "--status", "completed", "--json")
    assert [run["id"] for run in json.loads(out)] == [fox]

    status, out, _ = lmwb_in_process(capsys, "runs", "--search", "owl", "--json")
    assert [run["id"] for run in json.loads(out)] == [owl]

    status, out, _ = lmwb_in_process(capsys, "runs", "--sort", "steps", "--json")
    assert [run["id"] for run in json.loads(out)] == [fox, owl]  # most trained first

    status, out, _ = lmwb_in_process(capsys, "runs")
    assert status == 0 and "fox-fables" in out and "owl-sayings" in out


def test_runs_list_shows_lora_and_distributed_runs_beside_their_model(capsys) -> None:
    from engine.store import RunStore

    run = RunStore().create_run(name="adapters", model="gpt2", dataset="fables", config={}, lora=True, world_size=4)
    status, out, _ = lmwb_in_process(capsys, "runs")
    assert status == 0 and "gpt2 +LoRA ×4" in out
    status, out, _ = lmwb_in_process(capsys, "runs", "--json")
    assert json.loads(out)[0] | {"lora": True, "world_size": 4} == json.loads(out)[0]
    assert json.loads(out)[0]["id"] == run.id


def test_runs_show_gives_config_metrics_samples_and_checkpoints(capsys, two_runs) -> None:
    _, fox, _ = two_runs
    status, out, _ = lmwb_in_process(capsys, "runs", "show", fox[:6], "--json")  # a unique prefix is enough
    assert status == 0
    shown = json.loads(out)
    assert shown["id"] == fox and shown["status"] == "completed" and shown["steps"] == 4
    assert shown["config"] == {"max_steps": 4}
    summary = shown["metrics_summary"]
    assert summary["first_train_loss"] == 4.0 and summary["last_train_loss"] == 2.9
    assert summary["best_val_loss"] == pytest.approx(3.0)  # evaluated at steps 2 and 4: 3.6, then 3.0
    assert [sample["text"] for sample in shown["samples"]] == [" ran to the mill."]
    assert [checkpoint["step"] for checkpoint in shown["checkpoints"]] == [4]

    status, out, _ = lmwb_in_process(capsys, "runs", "show", fox)
    assert status == 0
    assert "fox-fables" in out and "ran to the mill." in out


def test_runs_show_gives_each_probe_prompts_latest_completion_and_its_step(capsys, two_runs) -> None:
    store, fox, owl = two_runs
    store.add_probes(fox, 2, {"The fox": " ran ran ran", "A moral:": " the the"})  # as the trainer writes them
    store.add_probes(fox, 4, {"The fox": " ran to the mill", "A moral:": " look before you leap"})
    status, out, _ = lmwb_in_process(capsys, "runs", "show", fox, "--json")
    assert status == 0
    assert json.loads(out)["probes"] == [
        {"prompt": "The fox", "step": 4, "text": " ran to the mill"},
        {"prompt": "A moral:", "step": 4, "text": " look before you leap"},
    ]
    status, out, _ = lmwb_in_process(capsys, "runs", "show", fox)
    assert status == 0
    probes = out[out.index("Probes: each prompt's latest completion") :].splitlines()[1:]
    assert [" ".join(line.split()) for line in probes] == [
        "The fox",
        "step 4 ran to the mill",
        "A moral:",
        "step 4 look before you leap",
    ]
    # A run given no probe prompts has none, and no heading for them.
    status, out, _ = lmwb_in_process(capsys, "runs", "show", owl, "--json")
    assert json.loads(out)["probes"] == []
    status, out, _ = lmwb_in_process(capsys, "runs", "show", owl)
    assert status == 0 and "Probes" not in out


def test_runs_export_writes_csv_and_json(capsys, two_runs, tmp_path: Path) -> None:
    _, fox, _ = two_runs
    target = tmp_path / "fox.csv"
    status, _, err = lmwb_in_process(capsys, "runs", "export", fox, "--format", "csv", "--output", str(target))
    assert status == 0 and str(target) in err
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [float(row["train_loss"]) for row in rows] == [4.0, 3.5, 3.1, 2.9]

    status, out, _ = lmwb_in_process(capsys, "runs", "export", fox, "--format", "json")
    assert status == 0
    assert "3.1" in out
    json.loads(out)


def test_runs_delete_asks_refuses_live_runs_and_deletes_with_yes(capsys, two_runs) -> None:
    store, fox, owl = two_runs
    checkpoint_dir = store_run_dir(owl)

    # Not on a terminal and no --yes: nothing is deleted.
    result = lmwb_in_subprocess("runs", "delete", owl)
    assert_one_line_error(result.returncode, result.stderr, "--yes")
    assert store.get_run(owl).id == owl

    # A run that is training right now (this process is alive) cannot be deleted.
    store.set_status(fox, "running")
    status, _, err = lmwb_in_process(capsys, "runs", "delete", fox, "--yes")
    assert_one_line_error(status, err, fox, "running")

    status, _, err = lmwb_in_process(capsys, "runs", "delete", owl, "--yes")
    assert status == 0, err
    assert not checkpoint_dir.exists()
    status, out, _ = lmwb_in_process(capsys, "runs", "--json")
    assert [run["id"] for run in json.loads(out)] == [fox]


class TerminalInput(io.StringIO):
    """What a person types at a terminal, for commands that ask before acting."""

    def isatty(self) -> bool:
        return True


def test_runs_delete_on_a_terminal_asks_first(capsys, monkeypatch, two_runs) -> None:
    store, fox, _ = two_runs
    monkeypatch.setattr(sys, "stdin", TerminalInput("n\n"))
    status, out, err = lmwb_in_process(capsys, "runs", "delete", fox)
    assert status == 0 and "Delete run" in out and "Nothing deleted" in err
    assert store.get_run(fox).id == fox

    monkeypatch.setattr(sys, "stdin", TerminalInput("y\n"))
    status, _, err = lmwb_in_process(capsys, "runs", "delete", fox)
    assert status == 0 and f"Deleted run {fox}" in err
    assert fox not in [run.id for run in store.list_runs()]


def test_a_bug_prints_one_line_and_keeps_the_traceback_in_a_log(capsys, monkeypatch, lmwb_home: Path) -> None:
    from engine.store import RunStore

    def broken_list_runs(self, **filters):
        raise RuntimeError("the list fell over")

    monkeypatch.setattr(RunStore, "list_runs", broken_list_runs)
    status, out, err = lmwb_in_process(capsys, "runs")
    assert status == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("lmwb: internal error: RuntimeError: the list fell over")
    [log] = (lmwb_home / "logs").iterdir()
    assert str(log) in line
    assert "Traceback" in log.read_text() and "broken_list_runs" in log.read_text()


def test_an_unknown_run_id_is_one_line(capsys, two_runs) -> None:
    for args in (
        ["runs", "show", "zz-not-a-run"],
        ["runs", "export", "zz-not-a-run"],
        ["runs", "delete", "zz-not-a-run", "--yes"],
        ["train", "--resume", "zz-not-a-run"],
    ):
        status, _, err = lmwb_in_process(capsys, *args)
        assert_one_line_error(status, err, "zz-not-a-run")


# --- generate and history --------------------------------------------------------------------


class FlushCountingStdout(io.StringIO):
    """A stdout that remembers what had been written at each flush, to see text stream."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())

    def isatty(self) -> bool:
        return False


def test_generate_streams_each_token_as_it_arrives(monkeypatch, tiny_model_dir: Path) -> None:
    stdout = FlushCountingStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    status = main(
        [
            "generate",
            "--model",
            str(tiny_model_dir),
            "--prompt",
            "The fox",
            "--max-new-tokens",
            "12",
            "--seed",
            "3",
            "--json",
        ]
    )
    assert status == 0
    events = [json.loads(line) for line in stdout.getvalue().splitlines()]
    tokens, summary = events[:-1], events[-1]
    assert summary["type"] == "summary" and summary["tokens"] == len(tokens) > 0
    assert "".join(event["text"] for event in tokens) == summary["text"]
    assert all(event["type"] == "token" and 0 < event["probability"] <= 1 for event in tokens)
    # Every token reached the pipe on its own flush, before the next one was made.
    for count in range(1, len(tokens) + 1):
        assert any(snapshot.count('"type": "token"') == count for snapshot in stdout.flushed)


def test_generate_prints_text_and_records_it_in_history(capsys, tiny_model_dir: Path) -> None:
    status, out, err = lmwb_in_process(
        capsys,
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        "Question: what",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0",
    )
    assert status == 0, err
    assert "tokens" in err and "tok/s" in err and "finish" in err

    status, again, _ = lmwb_in_process(
        capsys,
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        "Question: what",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0",
    )
    assert again == out  # greedy decoding: same text

    status, out, _ = lmwb_in_process(capsys, "history", "--json")
    assert status == 0
    history = json.loads(out)
    assert len(history) == 2 and all(row["prompt"] == "Question: what" for row in history)

    status, out, _ = lmwb_in_process(
        capsys, "generate", "--model", str(tiny_model_dir), "--prompt", "Emoji test", "--max-new-tokens", "3"
    )
    status, out, _ = lmwb_in_process(capsys, "history", "--search", "Emoji", "--json")
    assert [row["prompt"] for row in json.loads(out)] == ["Emoji test"]
    status, out, _ = lmwb_in_process(capsys, "history", "--limit", "1", "--json")
    assert len(json.loads(out)) == 1
    status, out, _ = lmwb_in_process(capsys, "history")
    assert status == 0 and "Emoji test" in out


def test_generate_reads_the_prompt_from_a_pipe_or_a_file(
    capsys, monkeypatch, tmp_path: Path, tiny_model_dir: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Once upon"))  # `echo Once upon | lmwb generate ...`
    status, out, err = lmwb_in_process(
        capsys, "generate", "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--json"
    )
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["prompt"] == "Once upon"

    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("Café au lait", encoding="utf-8")
    status, out, err = lmwb_in_process(
        capsys,
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompt-file",
        str(prompt_file),
        "--max-new-tokens",
        "4",
        "--json",
    )
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["prompt"] == "Café au lait"

    status, _, err = lmwb_in_process(
        capsys, "generate", "--model", str(tiny_model_dir), "--prompt-file", str(tmp_path / "nope.txt")
    )
    assert_one_line_error(status, err, "nope.txt")


def test_generate_mistakes_are_one_line(capsys, tmp_path: Path, fables: Path) -> None:
    status, _, err = lmwb_in_process(capsys, "generate", "--model", "scratch:nano", "--prompt", "hi")
    assert_one_line_error(status, err, "--dataset")
    status, _, err = lmwb_in_process(capsys, "generate", "--model", str(tmp_path), "--prompt", "hi")
    assert_one_line_error(status, err)
    status, _, err = lmwb_in_process(capsys, "generate", "--model", "scratch:huge", "--prompt", "hi")
    assert_one_line_error(status, err, "huge")


# A scratch model's tokenizer is trained on --dataset; --split names the split of one that has several, as for train.
SCRATCH_TEXT_COMMANDS = {
    "generate": ("generate", "--prompt", "The fox", "--max-new-tokens", "2", "--json"),
    "score": ("score", "--text", "The fox and the crow.", "--json"),
    "lens": ("lens", "--text", "The fox and the crow.", "--json"),
}


def saved_stories(tmp_path: Path) -> Path:
    """A saved DatasetDict whose two splits hold different text."""
    import datasets

    from tests.test_dataset_sources import save_dataset

    datasets.disable_progress_bars()  # save_to_disk draws none on stderr, where the command's line is read
    return save_dataset(
        tmp_path / "stories",
        {
            "train": {"text": ["The fox and the crow met by the old mill."] * 40},
            "validation": {"text": ["An owl, a hare and a heron sat under the oak tree."] * 40},
        },
    )


@pytest.mark.parametrize("command", list(SCRATCH_TEXT_COMMANDS))
def test_a_scratch_models_tokenizer_is_trained_on_the_split_named(capsys, tmp_path: Path, command: str) -> None:
    from engine.datasets import open_dataset
    from engine.home import tokenizer_cache_dir

    saved = saved_stories(tmp_path)
    arguments = (*SCRATCH_TEXT_COMMANDS[command], "--model", "scratch:nano", "--dataset", str(saved), "--device", "cpu")
    status, _, err = lmwb_in_process(capsys, *arguments)
    assert_one_line_error(status, err, "--split:", "'train', 'validation'", "pick one")

    status, _, err = lmwb_in_process(capsys, *arguments, "--split", "validation")
    assert status == 0, err
    validation = open_dataset(str(saved), split="validation").content_hash()[:16]
    assert [entry.name.split("-")[0] for entry in tokenizer_cache_dir().iterdir()] == [validation]


@pytest.mark.slow
def test_ctrl_c_stops_generation_cleanly_and_records_it(tmp_path: Path) -> None:
    long_context = build_tiny_gpt2(tmp_path / "long-context", n_positions=4096)
    # Greedy: this random model's greedy path never reaches end-of-text (checked to 4000 tokens), while
    # sampling drew it by chance now and then before the Ctrl+C landed.
    child = subprocess.Popen(
        lmwb_command(
            "generate",
            "--model",
            str(long_context),
            "--prompt",
            "The fox",
            "--max-new-tokens",
            "4000",
            "--temperature",
            "0",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
    )
    first = child.stdout.readline()
    assert json.loads(first)["type"] == "token"
    child.send_signal(signal.SIGINT)
    rest, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    summary = json.loads(rest.splitlines()[-1])
    assert summary["finish_reason"] == "cancelled" and 0 < summary["tokens"] < 4000
    assert "Traceback" not in err

    history = json.loads(lmwb_in_subprocess("history", "--json").stdout)
    assert [row["finish_reason"] for row in history] == ["cancelled"]


# --- train and eval --------------------------------------------------------------------------

NANO_RUN = (
    "--model",
    "scratch:nano",
    "--batch-size",
    "2",
    "--block-size",
    "16",
    "--vocab-size",
    "300",
    "--eval-every",
    "3",
    "--sample-every",
    "3",
    "--checkpoint-every",
    "3",
    "--warmup",
    "1",
)


def started_run_id(out: str) -> str:
    """The run id from the 'Started run ID: ...' line `lmwb train` prints first."""
    first = out.splitlines()[0]
    assert first.startswith(("Started run ", "Resuming run ")), out
    return first.split()[2].rstrip(":")


def test_train_with_evaluation_samples_and_periodic_checkpoints_off(capsys, fables: Path) -> None:
    status, out, err = lmwb_in_process(
        capsys,
        "train",
        "--model",
        "scratch:nano",
        "--batch-size",
        "2",
        "--block-size",
        "16",
        "--vocab-size",
        "300",
        "--warmup",
        "1",
        "--dataset",
        str(fables),
        "--steps",
        "4",
        "--eval-every",
        "0",
        "--sample-every",
        "0",
        "--checkpoint-every",
        "0",
    )
    assert status == 0, err
    status, out, _ = lmwb_in_process(capsys, "runs", "show", started_run_id(out), "--json")
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["samples"] == []
    assert [checkpoint["step"] for checkpoint in shown["checkpoints"]] == [4]  # only the final one


def test_the_optimizer_settings_are_flags_and_the_run_records_them(capsys, fables: Path) -> None:
    optimizer = ("--weight-decay", "0.3", "--beta1", "0.8", "--beta2", "0.99", "--grad-clip", "0.5")
    status, out, err = lmwb_in_process(
        capsys, "train", *NANO_RUN, "--dataset", str(fables), "--steps", "3", "--eval-batches", "2", *optimizer
    )
    assert status == 0, err
    status, out, _ = lmwb_in_process(capsys, "runs", "show", started_run_id(out), "--json")
    config = json.loads(out)["config"]
    assert (config["weight_decay"], config["beta1"], config["beta2"], config["grad_clip"]) == (0.3, 0.8, 0.99, 0.5)
    assert config["eval_batches"] == 2


@pytest.mark.slow
def test_train_records_a_run_that_resumes_and_evaluates(capsys, fables: Path) -> None:
    status, out, err = lmwb_in_process(
        capsys, "train", *NANO_RUN, "--dataset", str(fables), "--steps", "6", "--name", "fable-nano"
    )
    assert status == 0, err
    run_id = started_run_id(out)
    assert "step 6/6" in out  # plain progress lines when stdout is not a terminal
    assert f"Run {run_id} completed at step 6" in out

    status, out, _ = lmwb_in_process(capsys, "runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["steps"] == 6 and shown["name"] == "fable-nano"
    assert shown["metrics_summary"]["last_step"] == 6 and shown["metrics_summary"]["best_val_loss"] is not None
    assert [checkpoint["step"] for checkpoint in shown["checkpoints"]][-1] == 6
    assert shown["samples"]

    status, out, err = lmwb_in_process(capsys, "train", "--resume", run_id, "--steps", "9")
    assert status == 0, err
    assert started_run_id(out) == run_id
    status, out, _ = lmwb_in_process(capsys, "runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["steps"] == 9

    status, _, err = lmwb_in_process(capsys, "train", "--resume", run_id, "--steps", "9")
    assert_one_line_error(status, err, "--steps")

    status, out, err = lmwb_in_process(capsys, "eval", "--model", f"run:{run_id}", "--dataset", str(fables), "--json")
    assert status == 0, err
    evaluation = json.loads(out)
    assert evaluation["loss"] > 0 and evaluation["bits_per_byte"] > 0
    assert evaluation["perplexity"] == pytest.approx(2.718281828 ** evaluation["loss"], rel=1e-3)

    status, out, _ = lmwb_in_process(capsys, "models", "--json")
    assert f"run:{run_id}@9" in {choice["source"] for choice in json.loads(out)}


def test_train_mistakes_are_one_line(capsys, fables: Path, tmp_path: Path) -> None:
    status, _, err = lmwb_in_process(capsys, "train", "--dataset", str(fables))
    assert_one_line_error(status, err, "--model")
    status, _, err = lmwb_in_process(capsys, "train", *NANO_RUN, "--dataset", str(tmp_path / "missing.txt"))
    assert_one_line_error(status, err, "missing.txt")
    # The model's context is read from its config before the run is created.
    status, out, err = lmwb_in_process(capsys, "train", *NANO_RUN, "--dataset", str(fables), "--block-size", "100000")
    assert_one_line_error(status, err, "--block-size", "context of 256 tokens")
    status, out, err = lmwb_in_process(
        capsys, "train", *NANO_RUN[2:], "--model", str(tmp_path / "nope"), "--dataset", str(fables)
    )
    assert_one_line_error(status, err, "nope", "no such directory")
    status, out, _ = lmwb_in_process(capsys, "runs", "--json")
    assert json.loads(out) == []  # no run left behind by a refused configuration


def test_max_time_stops_with_a_checkpoint_and_says_how_to_resume(capsys, fables: Path) -> None:
    status, out, err = lmwb_in_process(
        capsys, "train", *NANO_RUN, "--dataset", str(fables), "--steps", "100000", "--max-time", "2"
    )
    assert status == 0, err
    run_id = started_run_id(out)
    assert f"lmwb train --resume {run_id} --steps 100000" in out
    status, out, _ = lmwb_in_process(capsys, "runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "stopped" and 0 < shown["steps"] < 100000
    assert shown["checkpoints"][-1]["step"] == shown["steps"]


def test_a_budget_with_max_epochs_ends_after_its_passes_and_says_so(capsys, fables: Path) -> None:
    status, out, err = lmwb_in_process(
        capsys, "train", *NANO_RUN, "--dataset", str(fables), "--max-time", "600", "--max-epochs", "0.002"
    )
    assert status == 0, err
    assert "for 10:00 of training or 0.002 passes over the data, if sooner (planned on time)" in out.splitlines()[0]
    assert "or 0.002 epochs of the data if sooner" in out.splitlines()[1]  # the plan line
    status, out, _ = lmwb_in_process(capsys, "runs", "show", started_run_id(out), "--json")
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["config"]["max_epochs"] == 0.002
    assert 0 < shown["steps"] < 100 and shown["checkpoints"][-1]["step"] == shown["steps"]


@pytest.mark.slow
def test_sigterm_stops_a_headless_run_cleanly(fables: Path) -> None:
    child = subprocess.Popen(
        lmwb_command("train", *NANO_RUN, "--dataset", str(fables), "--steps", "100000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
    )
    started = child.stdout.readline()
    assert child.stdout.readline().startswith("Plan: 100000 steps · picked lr")  # what was picked, and why
    progress = child.stdout.readline()
    assert progress.startswith("step "), progress
    child.send_signal(signal.SIGTERM)
    rest, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    run_id = started_run_id(started)
    assert f"Resume with: lmwb train --resume {run_id} --steps 100000" in rest

    shown = json.loads(lmwb_in_subprocess("runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "stopped"
    assert shown["checkpoints"][-1]["step"] == shown["steps"] > 0


def test_an_automatic_batch_is_refused_on_the_cpu_with_what_to_give_instead(capsys, fables: Path) -> None:
    status, _, err = lmwb_in_process(
        capsys, "train", "--model", "scratch:nano", "--dataset", str(fables), "--batch-size", "auto", "--device", "cpu"
    )
    assert_one_line_error(status, err, "--batch-size", "auto sizes the batch to a GPU's memory", "trains on cpu")
    status, out, _ = lmwb_in_process(capsys, "runs", "--json")
    assert json.loads(out) == []  # refused before a run was recorded
