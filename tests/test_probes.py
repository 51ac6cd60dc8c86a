"""Probe prompts, as a user meets them: fixed prompts a run completes at every evaluation, read back by step.

Real training runs (a scratch:nano model with its own tokenizer, or the
conftest's tiny GPT-2), a real store in the test's LMWB_HOME, the real `lmwb`
command line and the real app under Pilot.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from textual.geometry import Region
from textual.widgets import DataTable, Input, Static
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.errors import SettingsError
from engine.probes import complete_probes
from engine.store import RunStore
from engine.training import TrainingJob
from engine.training_config import MAX_PROBE_CHARACTERS, MAX_PROBE_TOKENS, MAX_PROBES, TrainingConfig
from tests.conftest import FABLES, assert_one_line_error, lmwb_in_process
from tests.test_training import settings as training_settings
from tests.test_tui_app import open_train_screen, shown_text, wait_until
from tui.app import WorkbenchApp
from tui.screens.run_detail import RunDetailScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.probe_timeline import ProbeTimeline

PROMPTS = ["The fox met", "Once upon a time, the crow", "A moral:"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread; on a shared machine, threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def settings(model: Path | str, dataset: Path, **overrides) -> TrainingConfig:
    """test_training's quick settings, a few steps evaluated every second step, with the probe prompts."""
    values = dict(max_steps=6, eval_every=2, probes=list(PROMPTS), probe_tokens=12)
    return training_settings(model, dataset, **(values | overrides))


# -- training records them ---------------------------------------------------------


def test_a_scratch_run_records_each_probe_at_each_evaluation_as_generate_writes_it(fables):
    """scratch:nano, 6 steps, evaluated at 2, 4 and 6: three completions a step, greedy as transformers' generate."""
    store = RunStore()
    run = TrainingJob(settings("scratch:nano", fables, vocab_size=512), store).run()

    rows = store.probes(run.id)
    assert [(row["step"], row["prompt"]) for row in rows] == [(step, p) for step in (2, 4, 6) for p in PROMPTS]
    assert all(isinstance(row["text"], str) and not row["text"].startswith(PROMPTS[0]) for row in rows)

    checkpoint = Path(store.checkpoints(run.id)[-1]["path"])  # the final checkpoint, at step 6
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    final = {row["prompt"]: row["text"] for row in rows if row["step"] == 6}
    for prompt in PROMPTS:
        inputs = tokenizer(prompt, return_tensors="pt")
        output = model.generate(**inputs, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.eos_token_id)
        written = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert final[prompt] == written, prompt


def test_probing_leaves_the_training_itself_unchanged(tiny_model_dir, fables_excerpt):
    """The same seeded run with and without probes: the same losses at every step (greedy draws nothing random)."""
    store = RunStore()
    with_probes = TrainingJob(settings(tiny_model_dir, fables_excerpt), store).run()
    without = TrainingJob(settings(tiny_model_dir, fables_excerpt, probes=[]), store).run()

    def losses(run_id: str) -> list[tuple]:
        return [(row["step"], row["train_loss"], row["val_loss"]) for row in store.metrics(run_id)]

    assert losses(with_probes.id) == losses(without.id)
    assert len(store.probes(with_probes.id)) == 3 * len(PROMPTS)
    assert store.probes(without.id) == []


def test_a_lora_run_probes_the_model_with_its_adapters(tiny_model_dir, fables_excerpt):
    """The model a LoRA run trains is its base with adapters (a PeftModel): probed like any other."""
    store = RunStore()
    run = TrainingJob(settings(tiny_model_dir, fables_excerpt, lora=True, lora_rank=4), store).run()
    assert [(row["step"], row["prompt"]) for row in store.probes(run.id)] == [
        (step, prompt) for step in (2, 4, 6) for prompt in PROMPTS
    ]


def test_completions_come_back_in_train_mode_and_a_long_prompt_keeps_its_end(tiny_model_dir):
    """The model goes back to the mode it was in; a prompt past the context keeps its last tokens."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # 64 positions
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    long = "the fox and the crow " * 40  # far more than 64 tokens
    completions = complete_probes(model, tokenizer, ["The fox", long], 8)
    assert model.training
    assert set(completions) == {"The fox", long}
    model.eval()
    tail = tokenizer.decode(tokenizer(long)["input_ids"][-(64 - 8) :])
    assert complete_probes(model, tokenizer, [long], 8) == {long: complete_probes(model, tokenizer, [tail], 8)[tail]}


def test_probe_tokens_must_leave_room_for_a_prompt_in_the_context(tiny_model_dir, fables_excerpt):
    job = TrainingJob(settings(tiny_model_dir, fables_excerpt, probe_tokens=64), RunStore())  # 64 positions
    with pytest.raises(SettingsError, match="probe_tokens: leaves no room for a prompt"):
        job.run()


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"probes": "Once upon a time"}, "must be a list of prompts"),
        ({"probes": ["fine", 3]}, "must be a list of prompts"),
        ({"probes": ["fine", "   "]}, "prompt 2 is blank"),
        ({"probes": ["two\nlines"]}, "prompt 1 holds a line break"),
        ({"probes": ["x" * (MAX_PROBE_CHARACTERS + 1)]}, f"at most {MAX_PROBE_CHARACTERS}"),
        ({"probes": [f"prompt {n}" for n in range(MAX_PROBES + 1)]}, f"keep at most {MAX_PROBES}"),
        ({"probes": ["The fox", "The crow", "The fox"]}, "prompt 3 repeats prompt 1 ('The fox')"),
        ({"eval_every": 0}, "eval_every is 0"),
        ({"probe_tokens": 0}, "probe_tokens: 0 is out of range"),
        ({"probe_tokens": MAX_PROBE_TOKENS + 1}, f"from 1 to {MAX_PROBE_TOKENS}"),
    ],
)
def test_bad_probe_settings_are_refused_by_name(overrides, words):
    config = settings("scratch:nano", Path("fables"), **overrides)
    with pytest.raises(SettingsError, match="probe") as refused:
        config.validate()
    assert words in str(refused.value)


def test_probes_keep_their_commas_and_spaces_and_survive_the_run_record():
    config = settings("scratch:nano", Path("fables"), probes=["Once upon a time, ", " the fox"])
    config.validate()
    again = TrainingConfig.from_dict(json.loads(json.dumps(config.as_dict())))
    again.validate()
    assert again.probes == ["Once upon a time, ", " the fox"]
    assert TrainingConfig(model="scratch:nano", dataset="fables").probes == []


# -- the command line ------------------------------------------------------------------


def test_lmwb_train_takes_probe_flags_and_lmwb_runs_probes_prints_them(
    tiny_model_dir, fables_excerpt, tmp_path, capsys
):
    """--probe and --probe-file lines, in the order given; `lmwb runs probes` as text, JSON and one prompt."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The crow said\n\n   \nOnce upon a time, the owl\n", encoding="utf-8")
    status, out, err = lmwb_in_process(
        capsys,
        "train",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(fables_excerpt),
        "--steps",
        "4",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        "--block-size",
        "16",
        "--eval-every",
        "2",
        "--probe",
        "The fox, at last,",
        "--probe-file",
        str(prompts),
        "--probe-tokens",
        "6",
        "--device",
        "cpu",
    )
    assert status == 0, err
    run_id = RunStore().list_runs()[0].id
    given = ["The fox, at last,", "The crow said", "Once upon a time, the owl"]

    status, out, err = lmwb_in_process(capsys, "runs", "probes", run_id, "--json")
    assert status == 0, err
    shown = json.loads(out)
    assert [item["prompt"] for item in shown["prompts"]] == given
    assert all([step["step"] for step in item["steps"]] == [2, 4] for item in shown["prompts"])
    stored = {(row["prompt"], row["step"]): row["text"] for row in RunStore().probes(run_id)}
    assert all(
        stored[item["prompt"], step["step"]] == step["text"] for item in shown["prompts"] for step in item["steps"]
    )

    status, out, err = lmwb_in_process(capsys, "runs", "probes", run_id)
    assert status == 0, err
    assert all(prompt in out for prompt in given) and "step 2" in out and "step 4" in out

    status, out, err = lmwb_in_process(capsys, "runs", "probes", run_id[:5], "--json", "--prompt", "The crow said")
    assert [item["prompt"] for item in json.loads(out)["prompts"]] == ["The crow said"]
    status, out, err = lmwb_in_process(capsys, "runs", "probes", run_id, "--prompt", "The hare")
    assert_one_line_error(status, err, "no completions of the probe prompt 'The hare'", "'The crow said'")

    # `lmwb runs show` gives each prompt's latest completion, with its step.
    status, out, err = lmwb_in_process(capsys, "runs", "show", run_id, "--json")
    assert json.loads(out)["probes"] == [{"prompt": prompt, "step": 4, "text": stored[prompt, 4]} for prompt in given]


def write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (lambda tmp: ["--probe-file", str(tmp / "missing.txt")], ["--probe-file", "there is no file", "missing.txt"]),
        (lambda tmp: ["--probe-file", str(tmp)], ["--probe-file", "is a folder"]),
        (
            lambda tmp: [
                "--probe-file",
                write_bytes(tmp / "latin1.txt", "Once upon\nCafé au lait\n".encode("latin-1")),
            ],
            ["--probe-file", "latin1.txt is not UTF-8", "line 2", "0xe9", "byte offset 13"],
        ),
        (lambda tmp: ["--probe-file", write_bytes(tmp / "empty.txt", b"")], ["empty.txt holds no prompt"]),
        (lambda tmp: ["--probe-file", write_bytes(tmp / "blank.txt", b"\n  \n\n")], ["blank.txt holds no prompt"]),
        (lambda tmp: ["--probe", "  "], ["--probe: prompt 1 is blank"]),
        (lambda tmp: ["--probe", "The fox", "--probe", "The fox"], ["--probe: prompt 2 repeats prompt 1"]),
        (
            lambda tmp: ["--probe", "The fox", "--eval-every", "0"],
            ["--probe: prompts are completed at each evaluation"],
        ),
        (lambda tmp: ["--probe", "The fox", "--probe-tokens", "0"], ["--probe-tokens: 0 is out of range"]),
    ],
)
def test_bad_probes_on_the_command_line_are_one_line_and_create_no_run(flags, words, tmp_path, capsys):
    status, out, err = lmwb_in_process(
        capsys, "train", "--model", "scratch:nano", "--dataset", "fables", "--steps", "30", *flags(tmp_path)
    )
    assert_one_line_error(status, err, *words)
    assert RunStore().list_runs() == []


def test_the_ranks_of_a_several_process_run_get_the_same_probes(tmp_path):
    """--nproc rebuilds the command line for its ranks: every prompt, the file's too, as one --probe each."""
    from tui.cli import build_parser
    from tui.cli.training_commands import _rank_arguments

    prompts = write_bytes(tmp_path / "prompts.txt", b"-starts with a dash\nThe crow, said\n")
    parser = build_parser()
    given = parser.parse_args(
        ["train", "--model", "scratch:nano", "--dataset", "fables", "--probe", "A", "--probe-file", prompts]
    )
    again = parser.parse_args(_rank_arguments(given))
    assert again.probes == given.probes == ["A", "-starts with a dash", "The crow, said"]


# -- the run detail screen ---------------------------------------------------------------


def highlighted_words(widget) -> list[str]:
    """The runs of words a widget shows in the changed-words style (underlined), as rendered on screen."""
    strips = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    runs: list[str] = []
    for strip in strips:
        run = ""
        for segment in [*strip, None]:
            if segment is not None and segment.style is not None and segment.style.underline:
                run += segment.text
            elif run.strip():
                runs.append(run.strip())
                run = ""
    return runs


def test_the_probe_timeline_moves_through_the_steps_with_the_arrows_and_follows_the_run():
    """Run detail, Probes tab: pick a prompt, ←/→ through the steps, what changed marked; new steps arrive live."""
    store = RunStore()
    run = store.create_run(
        name="probed", model="scratch:nano", dataset="fables", config={"probes": ["The fox", "Once, the crow"]}
    )
    store.set_status(run.id, "running")
    store.add_probes(run.id, 10, {"The fox": " the the the", "Once, the crow": " sat"})
    store.add_probes(run.id, 20, {"The fox": " met the hare", "Once, the crow": " sat on a branch"})
    store.add_probes(run.id, 30, {"The fox": " met the crow by the mill", "Once, the crow": " sat on a branch"})

    async def story() -> None:
        app = WorkbenchApp()
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("5")
            table = app.screen.query_one("#runs-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1)
            await pilot.press("enter")
            detail = app.screen
            assert isinstance(detail, RunDetailScreen)
            await pilot.press("p")
            timeline = detail.query_one("#run-probes", ProbeTimeline)
            position = timeline.query_one("#probe-position", Static)
            text = timeline.query_one("#probe-text", Static)
            await wait_until(pilot, lambda: timeline.step == 30)
            await pilot.pause()
            # The newest step first, the words changed since step 20 marked.
            assert "step 30 · 3 of 3 evaluated steps" in shown_text(position)
            assert "The fox met the crow by the mill" in shown_text(text)
            assert highlighted_words(text) == ["crow by the mill"]
            # The arrows are the screen's keys while the Probes tab shows: in the footer and the help.
            assert {"left", "right"} <= {key for key, item in detail.active_bindings.items() if item.binding.show}

            await pilot.press("left")
            assert timeline.step == 20 and "step 20 · 2 of 3" in shown_text(position)
            assert highlighted_words(text) == ["met", "hare"]
            await pilot.press("left", "left")  # stops at the first
            assert timeline.step == 10 and "the first evaluation" in shown_text(position)
            assert highlighted_words(text) == []
            await pilot.press("right")

            # Another prompt, at the same step.
            await pilot.press("down")
            assert timeline.prompt == "Once, the crow" and timeline.step == 20
            assert "Once, the crow sat on a branch" in shown_text(text)
            assert highlighted_words(text) == ["on a branch"]

            # The run evaluates again: the new step joins the timeline; the one chosen stays in sight.
            store.add_probes(run.id, 40, {"The fox": " met the crow", "Once, the crow": " sat on the mill"})
            await wait_until(pilot, lambda: "2 of 4" in shown_text(position))
            await pilot.press("right", "right")
            assert timeline.step == 40 and highlighted_words(text) == ["the mill"]

            await pilot.press("question_mark")
            assert "evaluated step" in shown_text(app.screen.query_one("#help-keys", Static))

    asyncio.run(story())


def test_the_train_form_takes_probe_prompts_separated_by_bars_never_as_a_sweep():
    """Prompts hold commas: the form's probes field splits on |, and a comma there makes no sweep."""

    async def story() -> None:
        app = WorkbenchApp()
        async with app.run_test(size=(100, 30)) as pilot:
            train = await open_train_screen(pilot)
            form = train.query_one("#config", ConfigForm)
            probes = form.query_one("#field-probes", Input)
            assert "|" in str(probes.placeholder)

            probes.value = "Once upon a time, the fox | The crow said,"
            await pilot.pause()
            config = form.settings()
            assert config is not None and config.probes == ["Once upon a time, the fox", "The crow said,"]
            assert form.varied == {} and "probes" not in form.errors

            probes.value = "The crow | The crow"
            await pilot.pause()
            assert form.settings() is None
            assert "prompt 2 repeats prompt 1" in shown_text(form.query_one("#error-probes", Static))

            form.set_values({"probes": ["A, b", "C"]})  # a run's settings, as resuming it fills the form
            assert probes.value == "A, b | C"

    asyncio.run(story())


@pytest.mark.slow
def test_two_processes_record_each_probe_once_per_evaluation(tmp_path):
    """lmwb train --nproc 2 --probe ...: rank 0 alone completes the probes and writes them; the ranks end together."""
    from tests.test_distributed import SETTINGS, as_flags, lmwb

    dataset = tmp_path / "fables.txt"
    dataset.write_text(FABLES.read_text(encoding="utf-8")[:24_000], encoding="utf-8")
    flags = as_flags({"dataset": dataset, "batch_size": 2, **SETTINGS})  # evaluated every 3 steps
    done = lmwb("train", "--nproc", "2", "--steps", "6", *flags, "--probe", "The fox", "--probe=-the crow, said")
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = RunStore().list_runs()
    assert (run.status, run.world_size) == ("completed", 2)
    assert [(row["step"], row["prompt"]) for row in RunStore().probes(run.id)] == [
        (step, prompt) for step in (3, 6) for prompt in ("The fox", "-the crow, said")
    ]


def test_the_spaces_a_completion_ends_with_show_so_a_blank_completion_is_seen() -> None:
    from tui.widgets.formatting import changed_words

    assert changed_words(None, "  \n   ").plain == "··↵···"  # an early model's completion of only whitespace
    shown = changed_words("the fox", "the fox ran  ")
    assert shown.plain == "the fox ran··"
    assert [shown.plain[span.start : span.end] for span in shown.spans if "yellow" in str(span.style)] == ["ran"]
    assert changed_words(None, "  the  fox").plain == "  the  fox"  # spaces between words stay spaces
