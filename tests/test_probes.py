"""Probe prompts, as a user meets them: fixed prompts a run completes at every evaluation, read back by step.

Real training runs (a scratch:nano model with its own tokenizer, or the
conftest's tiny GPT-2), a real store in the test's LMWB_HOME, the real `lmwb`
command line and the real app under Pilot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.errors import SettingsError
from engine.probes import complete_probes
from engine.store import RunStore
from engine.training import TrainingJob
from engine.training_config import MAX_PROBE_CHARACTERS, MAX_PROBE_TOKENS, MAX_PROBES, TrainingConfig

PROMPTS = ["The fox met", "Once upon a time, the crow", "A moral:"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread; on a shared machine, threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def settings(model: Path | str, dataset: Path, **overrides) -> TrainingConfig:
    """A few quick steps, evaluated every second step, with the probe prompts."""
    values = dict(
        model=str(model),
        dataset=str(dataset),
        max_steps=6,
        batch_size=4,
        block_size=32,
        learning_rate=3e-3,
        min_learning_rate=3e-4,
        warmup_steps=2,
        eval_every=2,
        eval_batches=2,
        sample_every=0,
        checkpoint_every=0,
        device="cpu",
        seed=7,
        probes=list(PROMPTS),
        probe_tokens=12,
    )
    values.update(overrides)
    return TrainingConfig(**values)


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
