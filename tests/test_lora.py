"""LoRA: adapters trained on a frozen model, saved small, loaded back onto their base, exported merged.

The story: a user fine-tunes a model with ``--lora``; its checkpoints hold
only the adapters and the tokenizer; ``run:<id>`` generates with base +
adapters; ``lmwb runs export-model`` writes a directory that plain
transformers loads, with the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from engine.errors import ModelSourceError, SettingsError
from engine.lora import LoraSettings, adapter_base, add_adapters, is_adapter_directory
from engine.models import export_model, load_model

PROMPT_IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 61]])


def logits_of(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=PROMPT_IDS).logits


def nudge_adapters(model) -> None:
    """Stand in for training: fresh adapters are a no-op (B = 0), so give them weights."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


@pytest.fixture
def adapter_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """An adapter directory as a LoRA run's checkpoint holds it: adapters + tokenizer."""
    loaded = load_model(str(tiny_model_dir), device="cpu")
    model = add_adapters(loaded.model, LoraSettings(rank=4, alpha=8, dropout=0.0))
    nudge_adapters(model)
    directory = tmp_path / "step-3"
    model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


def test_fresh_adapters_train_a_few_parameters_and_start_as_the_base_model(tiny_model_dir: Path):
    base_logits = logits_of(load_model(str(tiny_model_dir), device="cpu").model)
    model = add_adapters(load_model(str(tiny_model_dir), device="cpu").model, LoraSettings(rank=2))

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any(".c_attn." in name for name in trainable) and any(".c_proj." in name for name in trainable)
    assert torch.equal(logits_of(model), base_logits)


def test_an_adapter_checkpoint_holds_only_adapters_and_names_its_base(adapter_dir: Path, tiny_model_dir: Path):
    assert is_adapter_directory(adapter_dir)
    assert not (adapter_dir / "model.safetensors").exists() and not (adapter_dir / "config.json").exists()
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in key for key in weights)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve()) == adapter_base(adapter_dir)
    assert config["r"] == 4 and config["lora_alpha"] == 8


def test_an_adapter_directory_loads_as_its_base_with_the_adapters_merged(adapter_dir: Path, tiny_model_dir: Path):
    from peft import PeftModel

    expected = logits_of(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter_dir))
    )
    loaded = load_model(str(adapter_dir), device="cpu")

    assert type(loaded.model).__name__ == "GPT2LMHeadModel"  # plain, so generation takes the fast road
    assert torch.allclose(logits_of(loaded.model), expected, atol=1e-5)
    assert not torch.allclose(expected, logits_of(load_model(str(tiny_model_dir), device="cpu").model), atol=1e-3)
    assert loaded.info().parameters == load_model(str(tiny_model_dir), device="cpu").info().parameters


def test_the_export_is_a_plain_model_directory_with_the_same_outputs(adapter_dir: Path, tmp_path: Path):
    expected = logits_of(load_model(str(adapter_dir), device="cpu").model)
    exported = export_model(str(adapter_dir), tmp_path / "merged")

    assert (exported / "config.json").is_file() and (exported / "model.safetensors").is_file()
    plain = AutoModelForCausalLM.from_pretrained(exported)
    assert torch.allclose(logits_of(plain), expected, atol=1e-6)

    with pytest.raises(ModelSourceError, match="not an empty directory"):
        export_model(str(adapter_dir), exported)


def test_adapters_whose_base_is_gone_or_whose_weights_are_pickles_are_refused(adapter_dir: Path, tmp_path: Path):
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "no-such-model")
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match="no-such-model"):
        load_model(str(adapter_dir), device="cpu")

    (adapter_dir / "adapter_model.safetensors").rename(adapter_dir / "adapter_model.bin")
    with pytest.raises(ModelSourceError, match="only from safetensors"):
        load_model(str(adapter_dir), device="cpu")


def test_new_adapters_need_a_pretrained_base_that_is_not_itself_adapters(adapter_dir: Path):
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(SettingsError, match="random weights"):
        add_adapters(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2)), LoraSettings())
    merged = load_model(str(adapter_dir), device="cpu").model
    with pytest.raises(SettingsError, match="export-model"):
        add_adapters(merged, LoraSettings())


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (LoraSettings(rank=0), "lora_rank"),
        (LoraSettings(alpha=0), "lora_alpha"),
        (LoraSettings(dropout=1.0), "lora_dropout"),
        (LoraSettings(targets=" , "), "lora_targets"),
        (LoraSettings(targets="c_attn;rm"), "lora_targets"),
    ],
)
def test_bad_lora_settings_name_their_field(settings: LoraSettings, field: str):
    with pytest.raises(SettingsError) as caught:
        settings.validate()
    assert caught.value.field == field


def test_targets_that_match_no_layer_list_the_layers_there_are(tiny_model_dir: Path):
    model = load_model(str(tiny_model_dir), device="cpu").model
    with pytest.raises(SettingsError, match="c_attn") as caught:
        add_adapters(model, LoraSettings(targets="q_proj,v_proj"))
    assert caught.value.field == "lora_targets"


# -----------------------------------------------------------------------------
# A LoRA run: lmwb train --lora, as the user meets it


def lora_settings(model: Path, dataset: Path, **overrides):
    from engine.training_config import TrainingConfig

    values = dict(
        model=str(model),
        dataset=str(dataset),
        lora=True,
        lora_rank=4,
        lora_alpha=8,
        lora_dropout=0.1,
        max_steps=6,
        batch_size=4,
        block_size=32,
        learning_rate=1e-2,
        min_learning_rate=1e-3,
        warmup_steps=1,
        eval_every=3,
        eval_batches=2,
        sample_every=3,
        sample_length=8,
        checkpoint_every=3,
        device="cpu",
        seed=5,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def test_a_lora_run_trains_adapters_only_and_its_checkpoint_is_base_plus_adapters(
    tiny_model_dir: Path, fables_excerpt: Path, tmp_path: Path, capsys
):
    from engine.store import RunStore
    from engine.training import TrainingJob
    from tui.cli import main

    store = RunStore()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_before = {name: parameter.clone() for name, parameter in base.named_parameters()}
    job = TrainingJob(lora_settings(tiny_model_dir, fables_excerpt), store)
    run = job.run()

    assert run.lora and run.status == "completed" and run.steps == 6
    losses = [row["train_loss"] for row in store.metrics(run.id)]
    assert losses[-1] < losses[0]
    assert [row["step"] for row in store.samples(run.id)] == [3, 6]  # samples come from base + adapters
    checkpoint = Path(store.checkpoints(run.id)[-1]["path"])
    assert is_adapter_directory(checkpoint) and (checkpoint / "tokenizer.json").is_file()
    assert all("lora_" in key for key in load_file(checkpoint / "adapter_model.safetensors"))
    for name, parameter in job.model.get_base_model().named_parameters():
        if "lora_" not in name and "base_layer" not in name:
            assert torch.equal(parameter, base_before[name]), name  # the base stayed frozen

    trained = logits_of(job.model)
    assert torch.allclose(logits_of(load_model(f"run:{run.id}", device="cpu").model), trained, atol=1e-5)

    assert main(["runs", "export-model", run.id[:6], str(tmp_path / "merged")]) == 0
    assert "from_pretrained" in capsys.readouterr().err
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits_of(plain), trained, atol=1e-5)

    assert main(["runs", "show", run.id]) == 0
    assert "LoRA" in capsys.readouterr().out


@pytest.mark.slow
def test_a_resumed_lora_run_matches_one_that_was_never_stopped(tiny_model_dir: Path, fables_excerpt: Path):
    from engine.store import RunStore
    from engine.training import TrainingJob

    store = RunStore()
    config = lora_settings(tiny_model_dir, fables_excerpt, sample_every=0)  # adapter dropout on: RNG resumes too
    whole = TrainingJob(config, store).run()

    def stop_after_step_2(progress) -> None:
        if progress.step == 2 and progress.status == "running":
            first_part.stop()

    first_part = TrainingJob(config, store, on_progress=stop_after_step_2)
    first = first_part.run()
    assert first.status == "stopped" and first.steps == 2
    TrainingJob(config, store, resume_run=first.id).run()

    expected, got = store.metrics(whole.id), store.metrics(first.id)
    assert [row["train_loss"] for row in got] == pytest.approx([row["train_loss"] for row in expected], rel=1e-5)


def test_lora_needs_a_pretrained_model_and_a_lora_run_resumes_as_lora(tiny_model_dir: Path, fables_excerpt: Path):
    from engine.store import RunStore
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    with pytest.raises(SettingsError, match="random weights") as caught:
        lora_settings("scratch:nano", fables_excerpt).validate()
    assert caught.value.field == "lora"

    store = RunStore()
    config = lora_settings(tiny_model_dir, fables_excerpt, max_steps=2, eval_every=0, sample_every=0)
    run = TrainingJob(config, store).run()
    without = TrainingConfig.from_dict({**config.as_dict(), "lora": False, "max_steps": 4})
    with pytest.raises(SettingsError, match="trained with LoRA"):
        TrainingJob(without, store, resume_run=run.id).run()


def test_gradient_checkpointing_saves_memory_without_changing_the_run(tiny_model_dir: Path, fables_excerpt: Path):
    from engine.store import RunStore
    from engine.training import TrainingJob, failure_message
    from engine.training_config import TrainingConfig

    store = RunStore()
    config = lora_settings(tiny_model_dir, fables_excerpt, max_steps=4, eval_every=0, sample_every=0)
    plain = TrainingJob(config, store).run()
    checkpointed_job = TrainingJob(
        TrainingConfig.from_dict({**config.as_dict(), "gradient_checkpointing": True}), store
    )
    checkpointed = checkpointed_job.run()

    assert checkpointed_job.model.get_base_model().is_gradient_checkpointing
    assert [row["train_loss"] for row in store.metrics(checkpointed.id)] == pytest.approx(
        [row["train_loss"] for row in store.metrics(plain.id)], rel=1e-5
    )
    assert checkpointed_job.progress.gpu_memory_bytes is None  # on the CPU there is no GPU memory to show

    out_of_memory = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "gradient_checkpointing" in failure_message(out_of_memory, config, 3)
    assert "gradient_checkpointing" not in failure_message(out_of_memory, checkpointed_job.config, 3)
