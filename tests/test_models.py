"""Model sources: naming a model, loading it safely, and what the user learns about it.

Every model here is real and small: built by ``build_tiny_gpt2`` or from a
scratch preset, saved with ``save_pretrained`` and loaded back. The hub is
never reached (``HF_HUB_OFFLINE=1``); a "cached hub model" is a real
Hugging Face cache folder laid out by the test.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2LMHeadModel,
)

from engine.datasets import bundled_datasets, open_dataset
from engine.errors import ModelSourceError, SettingsError
from engine.model_source import SCRATCH_PRESETS, ModelSource, scratch_parameter_count
from engine.models import (
    ModelRequest,
    cached_hub_tokenizer,
    list_model_choices,
    load_model,
    pick_device,
    quiet_transformers,
    resolve_checkpoint,
    set_dropout,
    train_tokenizer,
)
from engine.store import RunStore
from tests.conftest import TOKENIZER_TEXTS, build_tiny_gpt2, put_in_hf_cache

# --- naming a model ----------------------------------------------------------

GOOD_SOURCES = [
    ("gpt2", ModelSource("hub", "gpt2")),
    ("distilgpt2", ModelSource("hub", "distilgpt2")),
    ("  openai-community/gpt2 ", ModelSource("hub", "openai-community/gpt2")),
    ("./my-model", ModelSource("local", "./my-model")),
    ("./my-model/", ModelSource("local", "./my-model")),
    ("../models/a b", ModelSource("local", "../models/a b")),
    ("/srv/models/gpt", ModelSource("local", "/srv/models/gpt")),
    ("~/models/gpt", ModelSource("local", "~/models/gpt")),
    ("run:ab12cd34", ModelSource("run", "ab12cd34")),
    ("run:ab12@200", ModelSource("run", "ab12", 200)),
    ("run:ab12@0", ModelSource("run", "ab12", 0)),
    ("run:AB12@007", ModelSource("run", "ab12", 7)),
    ("scratch:nano", ModelSource("scratch", "nano")),
    ("scratch:tiny", ModelSource("scratch", "tiny")),
    ("scratch:Small", ModelSource("scratch", "small")),
]

BAD_SOURCES = [
    ("", "empty"),
    ("   ", "empty"),
    ("run:", "run id"),
    ("run:@5", "run id"),
    ("run:x@abc", "step number"),
    ("run:x@", "step number"),
    ("run:x@-1", "step number"),
    ("run:x@²", "step number"),
    ("run:a b", "run id"),
    ("scratch:huge", "no preset 'huge'"),
    ("scratch:", "no preset"),
    ("gpt 2", "Hugging Face id"),
    ("org/name/extra", "Hugging Face id"),
    ("org--name", "Hugging Face id"),
    ("https://huggingface.co/gpt2", "Hugging Face id"),
    ("./dir\x00evil", "control characters"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD_SOURCES)
def test_every_accepted_spelling_parses_and_prints_back_canonically(text, expected):
    source = ModelSource.parse(text)
    assert source == expected
    assert ModelSource.parse(str(source)) == source


@pytest.mark.parametrize(("text", "reason"), BAD_SOURCES)
def test_nonsense_sources_are_refused_with_the_accepted_forms(text, reason):
    with pytest.raises(ModelSourceError) as refused:
        ModelSource.parse(text)
    message = str(refused.value)
    assert reason in message
    for form in ("gpt2", "./path/to/model", "run:<id>@<step>", "scratch:nano, scratch:tiny, scratch:small"):
        assert form in message


def test_canonical_text_of_each_kind():
    assert str(ModelSource("hub", "gpt2")) == "gpt2"
    assert str(ModelSource("local", "./dir")) == "./dir"
    assert str(ModelSource("run", "ab12cd34", 200)) == "run:ab12cd34@200"
    assert str(ModelSource("run", "ab12cd34")) == "run:ab12cd34"
    assert str(ModelSource("scratch", "tiny")) == "scratch:tiny"


def test_an_existing_directory_is_local_even_without_dot_slash(tmp_path, monkeypatch):
    (tmp_path / "checkpoints" / "best").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    source = ModelSource.parse("checkpoints/best")
    assert source == ModelSource("local", "./checkpoints/best")
    # The canonical text stays a path even in a folder where it does not exist.
    monkeypatch.chdir(tmp_path / "checkpoints")
    assert ModelSource.parse(str(source)) == source


@given(st.text(max_size=60))
def test_any_text_parses_to_a_source_or_our_error(text):
    try:
        source = ModelSource.parse(text)
    except ModelSourceError:
        return
    assert ModelSource.parse(str(source)) == source


@given(st.from_regex(r"(run:[A-Za-z0-9_@:-]{0,12}|scratch:[a-z]{0,6}|[a-z0-9./~-]{1,12})", fullmatch=True))
def test_source_like_text_parses_to_a_source_or_our_error(text):
    try:
        source = ModelSource.parse(text)
    except ModelSourceError:
        return
    assert ModelSource.parse(str(source)) == source


# --- loading local directories ------------------------------------------------


def test_local_directory_loads_the_same_model_as_plain_transformers(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True).eval()
    ids = loaded.tokenizer("The fox and the crow", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, reference(ids).logits)
    assert not loaded.model.training
    assert loaded.device == torch.device("cpu")
    assert loaded.tokenizer.pad_token == "<|endoftext|>"  # the fixture saved none; eos stands in
    assert loaded.source == ModelSource("local", str(tiny_model_dir))


def test_model_info_describes_the_loaded_model(tiny_model_dir):
    info = load_model(str(tiny_model_dir)).info()
    expected_parameters = sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(tiny_model_dir).parameters())
    assert info.parameters == expected_parameters
    assert (info.layers, info.heads, info.context_length, info.vocab_size) == (2, 2, 64, 300)
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert info.memory_bytes >= 4 * info.parameters
    assert info.as_dict()["source"] == str(tiny_model_dir)


def test_progress_is_reported_in_words(tiny_model_dir):
    messages = []
    load_model(str(tiny_model_dir), progress=messages.append)
    assert messages[0] == "Loading tokenizer…"
    assert "Loading weights…" in messages


def test_transformers_progress_bars_never_reach_the_terminal(tiny_model_dir, tmp_path, capfd):
    import transformers

    # Another test may have quieted transformers already; start from its noisy defaults.
    transformers.utils.logging.enable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()

    loaded = load_model(str(tiny_model_dir))
    loaded.model.save_pretrained(tmp_path / "copy")  # the training loop saves checkpoints like this

    printed = capfd.readouterr()
    assert "Loading weights" not in printed.err + printed.out
    assert "Writing model shards" not in printed.err + printed.out
    assert "it/s" not in printed.err + printed.out


def test_quiet_transformers_silences_its_warnings(capfd):
    quiet_transformers()
    GPT2Config(vocab_size=100, bos_token_id=50256)  # transformers warns about the id out of range
    printed = capfd.readouterr()
    assert "bos_token_id" not in printed.err + printed.out


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match="no such directory"):
        load_model(str(tmp_path / "nowhere"))


def test_a_directory_that_is_not_a_model_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_model(str(tmp_path))


def test_a_model_without_its_tokenizer_says_how_to_save_one(tmp_path, tiny_model_dir):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, bare / name)
    with pytest.raises(ModelSourceError, match=r"no tokenizer files.*tokenizer.save_pretrained"):
        load_model(str(bare))


def test_pickle_only_weights_are_refused_because_pickles_run_code(tmp_path, tiny_model_dir):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    model = GPT2LMHeadModel.from_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")

    with pytest.raises(ModelSourceError) as refused:
        load_model(str(pickled))
    message = str(refused.value)
    assert "pytorch_model.bin" in message
    assert "run any code" in message
    assert "safe_serialization=True" in message


def test_config_without_any_weights_says_what_is_missing(tmp_path, tiny_model_dir):
    weightless = tmp_path / "weightless"
    shutil.copytree(tiny_model_dir, weightless)
    (weightless / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="no model.safetensors"):
        load_model(str(weightless))


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_safetensors_is_a_clear_error(tmp_path, tiny_model_dir, damage):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x08" + os.urandom(64))
    with pytest.raises(ModelSourceError, match="truncated or corrupt"):
        load_model(str(broken))


def test_corrupt_config_is_a_clear_error(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text('{"model_type": "gpt2", ')
    with pytest.raises(ModelSourceError, match="truncated or corrupt"):
        load_model(str(broken))


# --- Hugging Face ids ---------------------------------------------------------


def test_an_uncached_hub_id_offline_says_exactly_how_to_get_it(lmwb_home):
    with pytest.raises(ModelSourceError) as refused:
        load_model("gpt2")
    message = str(refused.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "hf download gpt2" in message
    assert str(Path(os.environ["HF_HOME"]) / "hub") in message  # HF_HOME as set now, not at import
    assert "./my-model" in message


def test_a_cached_hub_model_loads_offline_and_is_listed(tiny_model_dir):
    put_in_hf_cache(tiny_model_dir, "lmwb-test/tiny-gpt2")

    loaded = load_model("lmwb-test/tiny-gpt2")
    assert loaded.source == ModelSource("hub", "lmwb-test/tiny-gpt2")
    assert loaded.info().parameters > 0

    hub_choices = [choice for choice in list_model_choices(None) if choice.kind == "hub"]
    assert [choice.source for choice in hub_choices] == ["lmwb-test/tiny-gpt2"]
    assert "gpt2" in hub_choices[0].description


def test_a_cached_tokenizer_is_read_from_the_cache_alone_and_none_when_it_is_not_there(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # it never downloads, offline or not
    assert cached_hub_tokenizer("gpt2") is None
    put_in_hf_cache(tiny_model_dir, "gpt2")
    tokenizer = cached_hub_tokenizer("gpt2")
    assert tokenizer is not None
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()


def test_cached_models_that_cannot_generate_text_are_not_offered(tmp_path):
    encoder = DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=300))
    encoder.save_pretrained(tmp_path / "encoder")
    put_in_hf_cache(tmp_path / "encoder", "lmwb-test/encoder")

    assert [choice.kind for choice in list_model_choices(None)] == ["scratch"] * 3
    with pytest.raises(ModelSourceError, match="not a causal language model"):
        load_model("lmwb-test/encoder")


def test_cached_hub_model_with_only_pickle_weights_is_refused(tmp_path, tiny_model_dir):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(GPT2LMHeadModel.from_pretrained(pickled).state_dict(), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    put_in_hf_cache(pickled, "lmwb-test/pickled")

    with pytest.raises(ModelSourceError, match="no safetensors weights"):
        load_model("lmwb-test/pickled")
    listed = {choice.source: choice for choice in list_model_choices(None)}
    assert "cannot be loaded" in listed["lmwb-test/pickled"].description


def test_choices_without_a_hub_cache_or_store_are_the_presets():
    choices = list_model_choices(None)
    assert [choice.source for choice in choices] == ["scratch:nano", "scratch:tiny", "scratch:small"]
    assert choices[1].description.startswith("≈5M params, trained from scratch")
    assert choices[0].as_dict() == {"source": "scratch:nano", "kind": "scratch", "description": choices[0].description}


# --- checkpoints of earlier runs ----------------------------------------------


def _run_with_checkpoints(store: RunStore, steps: list[int], tmp_path: Path) -> str:
    run = store.create_run(name="fables nano", model="scratch:nano", dataset="fables", config={})
    for step in steps:
        directory = build_tiny_gpt2(tmp_path / run.id / f"step-{step}", seed=step)
        store.add_checkpoint(run.id, step, directory, val_loss=5.0 - step / 100)
    return run.id


def _first_logit(loaded) -> float:
    model = loaded.model
    with torch.no_grad():
        return model(torch.tensor([[1, 2, 3]], device=model.device)).logits[0, -1, 0].item()


def test_run_source_loads_the_latest_or_the_named_checkpoint(tmp_path):
    store = RunStore()
    run_id = _run_with_checkpoints(store, [10, 20], tmp_path)

    assert resolve_checkpoint(ModelSource.parse(f"run:{run_id}"), store) == tmp_path / run_id / "step-20"
    assert resolve_checkpoint(ModelSource.parse(f"run:{run_id[:4]}@10"), store) == tmp_path / run_id / "step-10"

    latest = load_model(f"run:{run_id}", store=store)
    step_ten = load_model(f"run:{run_id}@10", store=store)
    direct_ten = AutoModelForCausalLM.from_pretrained(tmp_path / run_id / "step-10").eval()
    with torch.no_grad():
        expected = direct_ten(torch.tensor([[1, 2, 3]])).logits[0, -1, 0].item()
    assert _first_logit(step_ten) == expected
    assert _first_logit(latest) != expected


def test_a_run_source_with_no_such_run_says_so_and_how_to_list_runs_once():
    with pytest.raises(ModelSourceError) as refused:
        resolve_checkpoint(ModelSource.parse("run:zzzz"), RunStore())
    assert str(refused.value) == "run:zzzz: No run has an id starting with 'zzzz'. Run `lmwb runs` to list run ids."


def test_run_source_uses_the_workbench_database_by_default(tmp_path):
    run_id = _run_with_checkpoints(RunStore(), [5], tmp_path)
    assert load_model(f"run:{run_id}").info().layers == 2


def test_run_checkpoints_are_offered_as_choices(tmp_path):
    store = RunStore()
    run_id = _run_with_checkpoints(store, [10, 20], tmp_path)
    runs = [choice for choice in list_model_choices(store) if choice.kind == "run"]
    assert [choice.source for choice in runs] == [f"run:{run_id}@10", f"run:{run_id}@20"]
    assert runs[1].description == "fables nano at step 20, val loss 4.800"


def test_a_step_that_was_not_saved_lists_the_steps_there_are(tmp_path):
    store = RunStore()
    run_id = _run_with_checkpoints(store, [10, 20], tmp_path)
    with pytest.raises(ModelSourceError, match="no checkpoint at step 15; it has steps 10, 20"):
        load_model(f"run:{run_id}@15", store=store)


def test_unknown_run_and_run_without_checkpoints_are_clear(tmp_path):
    store = RunStore()
    with pytest.raises(ModelSourceError, match="lmwb runs"):
        load_model("run:ffffffff", store=store)
    empty = store.create_run(name="just started", model="scratch:nano", dataset="fables", config={})
    with pytest.raises(ModelSourceError, match="no checkpoints yet"):
        load_model(f"run:{empty.id}", store=store)


def test_a_checkpoint_whose_files_were_deleted_is_named(tmp_path):
    store = RunStore()
    run_id = _run_with_checkpoints(store, [10], tmp_path)
    shutil.rmtree(tmp_path / run_id / "step-10")
    with pytest.raises(ModelSourceError, match="no such directory"):
        load_model(f"run:{run_id}", store=store)


# --- from scratch ---------------------------------------------------------------


@pytest.mark.parametrize(("preset", "nominal"), [("nano", 1e6), ("tiny", 5e6), ("small", 30e6)])
def test_scratch_presets_have_their_advertised_size(preset, nominal):
    # nano 1,146,720, tiny 5,322,240, small 29,676,544 parameters with the default vocabulary of 8192.
    model = GPT2LMHeadModel(GPT2Config(**SCRATCH_PRESETS[preset], vocab_size=8192))
    counted = sum(p.numel() for p in model.parameters())
    assert counted == scratch_parameter_count(preset)
    assert abs(counted - nominal) / nominal < 0.2


def _dataset_file(tmp_path: Path):
    path = tmp_path / "mixed.txt"
    path.write_text("\n\n".join(TOKENIZER_TEXTS), encoding="utf-8")
    return open_dataset(str(path))


def test_scratch_model_gets_a_tokenizer_trained_on_its_dataset(tmp_path):
    loaded = load_model("scratch:nano", dataset=_dataset_file(tmp_path), vocab_size=400)
    info = loaded.info()
    assert info.vocab_size == len(loaded.tokenizer) <= 400
    assert (info.layers, info.heads, info.context_length) == (3, 3, 256)
    assert loaded.tokenizer.eos_token_id == loaded.model.config.eos_token_id
    text = "Café au lait 🦊 and 日本語"
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(text)) == text


def test_scratch_model_saves_as_a_plain_hugging_face_directory(tmp_path):
    loaded = load_model("scratch:nano", dataset=_dataset_file(tmp_path), vocab_size=400)
    loaded.model.save_pretrained(tmp_path / "saved")
    loaded.tokenizer.save_pretrained(tmp_path / "saved")
    again = load_model(str(tmp_path / "saved"))
    assert again.tokenizer.encode("the fox") == loaded.tokenizer.encode("the fox")
    assert again.info().parameters == loaded.info().parameters


def test_scratch_without_a_dataset_asks_for_one():
    for load in (lambda: load_model("scratch:tiny"), ModelRequest.of("scratch:tiny").load):
        with pytest.raises(SettingsError, match="needs a dataset") as refused:
            load()
        assert refused.value.field == "dataset"


# --- a model as the CLI and the app ask for it ------------------------------------


def test_a_request_keeps_the_dataset_only_for_a_scratch_model(tiny_model_dir):
    # Any other model brings its own tokenizer: the chosen dataset changes nothing, so the app's cache reuses it.
    assert ModelRequest.of(str(tiny_model_dir), "fables") == ModelRequest.of(str(tiny_model_dir), "poems")
    assert ModelRequest.of("gpt2", "fables").dataset is None
    assert ModelRequest.of("run:AB12CD34", "fables") == ModelRequest.of("run:ab12cd34")  # one canonical spelling
    assert ModelRequest.of("scratch:nano", "fables") != ModelRequest.of("scratch:nano", "poems")
    assert ModelRequest.of("scratch:nano", "").dataset is None
    with pytest.raises(ModelSourceError, match="is not a model source"):
        ModelRequest.of("no such thing!")


def test_a_scratch_request_trains_its_tokenizer_on_the_named_dataset(tmp_path):
    dataset = _dataset_file(tmp_path)
    by_name = ModelRequest.of("scratch:nano", str(dataset.path), vocab_size=400).load(device="cpu")
    assert by_name.source == ModelSource("scratch", "nano")
    assert by_name.info().vocab_size == len(by_name.tokenizer) <= 400
    tokenizer = ModelRequest.of("scratch:nano", dataset, vocab_size=400).load_tokenizer()
    assert tokenizer.encode("the fox") == by_name.tokenizer.encode("the fox")


def test_a_tokenizer_loads_without_the_weights(tiny_model_dir, tmp_path):
    # No weights file at all: the tokenizer alone still loads, as load_model's would.
    bare = tmp_path / "tokenizer-and-config"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "model.safetensors").write_bytes(b"not weights")
    messages = []
    tokenizer = ModelRequest.of(str(bare)).load_tokenizer(progress=messages.append)
    expected = load_model(str(tiny_model_dir)).tokenizer
    assert tokenizer.encode("The fox and the crow") == expected.encode("The fox and the crow")
    assert tokenizer.pad_token == expected.pad_token == "<|endoftext|>"
    assert messages == ["Loading tokenizer…"]


def test_too_small_a_vocabulary_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError) as refused:
        train_tokenizer(_dataset_file(tmp_path), 100)
    assert refused.value.field == "vocab_size"
    assert "257" in str(refused.value)


def test_tokenizer_is_cached_per_dataset_and_vocabulary(tmp_path):
    dataset = _dataset_file(tmp_path)
    first_messages, second_messages = [], []
    first = train_tokenizer(dataset, 350, first_messages.append)
    started = time.perf_counter()
    second = train_tokenizer(dataset, 350, second_messages.append)
    assert time.perf_counter() - started < 2
    assert any("Training" in message for message in first_messages)
    assert second_messages == []  # nothing to train: it came from the cache
    assert second.get_vocab() == first.get_vocab()

    other_size = []
    train_tokenizer(dataset, 380, other_size.append)
    assert any("Training" in message for message in other_size)


def test_a_damaged_tokenizer_cache_is_rebuilt(tmp_path, lmwb_home):
    dataset = _dataset_file(tmp_path)
    train_tokenizer(dataset, 350)
    (cached,) = (lmwb_home / "cache" / "tokenizers").iterdir()
    (cached / "tokenizer.json").write_text("{ damaged")
    messages = []
    tokenizer = train_tokenizer(dataset, 350, messages.append)
    assert any("Training" in message for message in messages)
    assert tokenizer.decode(tokenizer.encode("the fox")) == "the fox"


@pytest.mark.parametrize("dataset", bundled_datasets(), ids=lambda dataset: dataset.name)
def test_scratch_tokenizer_round_trips_every_bundled_dataset(dataset):
    tokenizer = train_tokenizer(dataset, 2048)
    for document in dataset.documents():
        assert tokenizer.decode(tokenizer.encode(document)) == document


# --- devices --------------------------------------------------------------------


def test_auto_device_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_says_what_to_do():
    with pytest.raises(ModelSourceError, match="no CUDA.*'auto' or 'cpu'"):
        pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_device_that_does_not_exist_is_named():
    with pytest.raises(ModelSourceError, match="does not exist"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_info_on_cuda_counts_gpu_memory(tiny_model_dir):
    info = load_model(str(tiny_model_dir), device="cuda").info()
    assert info.device.startswith("cuda")
    assert info.memory_bytes >= torch.cuda.memory_allocated()


def test_an_unknown_device_lists_the_choices(tiny_model_dir):
    with pytest.raises(ModelSourceError, match="is not a device; use auto, cpu, cuda, cuda:N or mps"):
        load_model(str(tiny_model_dir), device="gpu")


def test_dropout_is_set_on_every_gpt2_layer_and_its_config_and_refused_elsewhere():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=300, n_positions=64))
    set_dropout(model, 0.2)
    rates = {module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)}
    assert rates == {0.2}
    assert (model.config.embd_pdrop, model.config.attn_pdrop, model.config.resid_pdrop) == (0.2, 0.2, 0.2)
    reloaded = GPT2LMHeadModel(model.config)  # what a checkpoint's config builds
    assert {module.p for module in reloaded.modules() if isinstance(module, torch.nn.Dropout)} == {0.2}

    llama = LlamaForCausalLM(
        LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=300)
    )
    with pytest.raises(SettingsError, match="dropout: can be set on GPT-2 family models only; a llama model"):
        set_dropout(llama, 0.1)
