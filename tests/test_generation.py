"""Streaming generation: what a user watching a model write must be able to rely on.

Real small models are built here from configs (GPT-2 for the fast road,
Llama and GPT-NeoX for the general one) and compared with ``model.generate``.
Where a test needs exact control of the tokens (split UTF-8 characters, stop
strings, end-of-text), ``ScriptedLM`` — a causal LM that writes a given list
of token ids — drives the same TokenStream.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
)
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper
from transformers.modeling_outputs import CausalLMOutputWithPast

from engine.errors import SettingsError
from engine.generation import (
    GenerationResult,
    GenerationSettings,
    TokenStream,
    _GPT2Decoder,
    _NewGELU,
    apply_repetition_penalty,
    generate_text,
    record_generation,
    sampling_distribution,
)
from engine.store import RunStore

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def gpt2(tokenizer, *, n_positions: int = 64, **config) -> GPT2LMHeadModel:
    """A small random GPT-2; a wide initialisation makes its greedy text varied rather than one token repeated."""
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=n_positions,
            n_embd=32,
            n_layer=2,
            n_head=2,
            initializer_range=0.3,
            bos_token_id=eos,
            eos_token_id=eos,
            **config,
        )
    ).eval()


def llama(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            initializer_range=0.3,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    ).eval()


def gpt_neox(tokenizer) -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            initializer_range=0.3,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    ).eval()


def generate_ids(model, tokenizer, prompt: str, max_new_tokens: int, **kwargs) -> list[int]:
    """What Hugging Face's own generate makes: the reference for greedy decoding."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids if prompt else torch.tensor([[tokenizer.bos_token_id]])
    output = model.generate(
        input_ids, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id, do_sample=False, **kwargs
    )
    return output[0, input_ids.shape[1] :].tolist()


def stream(model, tokenizer, prompt: str, settings: GenerationSettings):
    """Run a stream to the end; return its events and result."""
    token_stream = TokenStream(model, tokenizer, prompt, settings)
    events = list(token_stream)
    return events, token_stream.result


class ScriptedLM(torch.nn.Module):
    """A causal LM that writes ``script`` token by token (then end-of-text), certain of every token.

    It follows the Hugging Face calling convention (``cache`` in, ``.logits``
    and ``.cache`` out), so it takes the general road like any model would.
    """

    def __init__(self, script: list[int], vocab_size: int, eos_token_id: int, seconds_per_token: float = 0.0) -> None:
        super().__init__()
        self.config = PretrainedConfig(max_position_embeddings=256, eos_token_id=eos_token_id)
        self.script, self.vocab_size, self.eos_token_id = script, vocab_size, eos_token_id
        self.seconds_per_token = seconds_per_token
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.forward_calls = 0

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, input_ids, cache=None, use_cache=True, **kwargs):
        self.forward_calls += 1
        time.sleep(self.seconds_per_token)
        written = 0 if cache is None else cache + 1  # the cache counts the tokens the model has written
        token = self.script[written] if written < len(self.script) else self.eos_token_id
        logits = torch.full((1, input_ids.shape[1], self.vocab_size), -20.0)
        logits[0, -1, token] = 20.0
        return CausalLMOutputWithPast(logits=logits, cache=written)


def byte_token_ids(tokenizer, text: str) -> list[int]:
    """Ids spelling ``text`` one UTF-8 byte per token, so every multi-byte character is split."""
    # GPT-2's byte-to-symbol table: printable bytes stand for themselves, the rest map from U+0100 on.
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + shifted)
            shifted += 1
    return tokenizer.convert_tokens_to_ids([symbols[byte] for byte in text.encode("utf-8")])


def scripted(tokenizer, pieces: list[str | list[int]], **kwargs) -> ScriptedLM:
    """A ScriptedLM writing each piece: text as the tokenizer splits it, or a list of ids as given."""
    script: list[int] = []
    for piece in pieces:
        script += piece if isinstance(piece, list) else tokenizer(piece)["input_ids"]
    return ScriptedLM(script, len(tokenizer), tokenizer.eos_token_id, **kwargs)


# ---------------------------------------------------------------------------
# Greedy decoding gives exactly the tokens generate gives, on both roads


@pytest.mark.parametrize("prompt", ["The fox and the crow", "日本語のテキスト", ""])
def test_greedy_on_the_gpt2_fast_road_is_token_for_token_generate(tokenizer, prompt):
    model = gpt2(tokenizer)
    assert _GPT2Decoder.supports(model)
    events, result = stream(model, tokenizer, prompt, GREEDY)
    assert result.token_ids == generate_ids(model, tokenizer, prompt, GREEDY.max_new_tokens)
    assert len(set(result.token_ids)) > 5, "a varied text, not one token repeated"
    assert [event.token_id for event in events] == result.token_ids


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"activation_function": "relu", "n_inner": 48},
        {"scale_attn_by_inverse_layer_idx": True, "layer_norm_epsilon": 1e-3},
    ],
    ids=["default", "relu-activation", "scaled-attention"],
)
def test_the_gpt2_fast_road_computes_the_models_logits_bit_for_bit(tokenizer, config):
    model = gpt2(tokenizer, **config)
    prompt_ids = tokenizer("The fox and the crow", return_tensors="pt").input_ids
    with torch.inference_mode():
        decoder = _GPT2Decoder(model, capacity=40)
        ours = decoder.prefill(prompt_ids[0].tolist())
        output = model(prompt_ids, use_cache=True, logits_to_keep=1)
        for _ in range(20):
            assert torch.equal(ours, output.logits[0, -1])
            token = torch.tensor([[int(ours.argmax())]])
            ours = decoder.step(token.item())
            output = model(token, cache=output.cache, use_cache=True)


def test_the_fast_roads_gelu_is_bit_for_bit_the_models():
    from transformers.activations import NewGELUActivation

    torch.manual_seed(0)
    for scale in (0.1, 1.0, 5.0, 30.0):
        x = torch.randn(4, 3072) * scale
        assert torch.equal(_NewGELU()(x), NewGELUActivation()(x))


@pytest.mark.parametrize(
    "build",
    [llama, gpt_neox, lambda t: gpt2(t, attn_implementation="eager")],
    ids=["llama", "gpt-neox", "gpt2-eager-attention"],
)
def test_greedy_on_the_general_road_is_token_for_token_generate(tokenizer, build):
    model = build(tokenizer)
    assert not _GPT2Decoder.supports(model)
    _, result = stream(model, tokenizer, "The fox and the crow", GREEDY)
    assert result.token_ids == generate_ids(model, tokenizer, "The fox and the crow", GREEDY.max_new_tokens)


def test_greedy_with_a_repetition_penalty_matches_generate_on_both_roads(tokenizer):
    settings = GenerationSettings(temperature=0.0, max_new_tokens=24, repetition_penalty=1.5)
    for model in (gpt2(tokenizer), llama(tokenizer)):
        _, result = stream(model, tokenizer, "the the the fox", settings)
        assert result.token_ids == generate_ids(model, tokenizer, "the the the fox", 24, repetition_penalty=1.5)


def test_a_gpt2_being_watched_by_a_hook_takes_the_general_road_and_the_hook_runs(tokenizer):
    model = gpt2(tokenizer)
    calls = []
    handle = model.transformer.h[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        assert not _GPT2Decoder.supports(model)
        _, result = stream(model, tokenizer, "The fox", GenerationSettings(temperature=0.0, max_new_tokens=5))
    finally:
        handle.remove()
    assert len(calls) == 5  # the prompt once, then one call per further token
    assert result.token_ids == generate_ids(model, tokenizer, "The fox", 5)


# ---------------------------------------------------------------------------
# Probabilities and alternatives


def test_each_event_reports_the_probability_of_its_token_and_the_likeliest_alternatives(tokenizer):
    model = gpt2(tokenizer)
    prompt_ids = tokenizer("The fox", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = torch.softmax(model(prompt_ids).logits[0, -1], dim=0)
    events, _ = stream(
        model, tokenizer, "The fox", GenerationSettings(temperature=0.0, max_new_tokens=3, alternatives=4)
    )
    first = events[0]
    assert first.probability == pytest.approx(expected[first.token_id].item(), rel=1e-5)
    assert [a.token_id for a in first.alternatives] == torch.topk(expected, 4).indices.tolist()
    assert first.alternatives[0].token_id == first.token_id  # greedy takes the likeliest
    assert first.alternatives[0].text == tokenizer.decode([first.token_id])
    assert all(a.probability >= b.probability for a, b in itertools.pairwise(first.alternatives))
    assert [e.index for e in events] == [0, 1, 2]
    assert events[0].elapsed <= events[1].elapsed <= events[2].elapsed


def test_a_sampled_token_reports_its_probability_under_the_truncated_distribution(tokenizer):
    settings = GenerationSettings(temperature=0.7, top_k=5, max_new_tokens=1, seed=3, alternatives=20)
    events, _ = stream(gpt2(tokenizer), tokenizer, "The fox", settings)
    alternatives = events[0].alternatives
    assert len(alternatives) == 5  # only top-k tokens can be drawn, so only they are listed
    assert sum(a.probability for a in alternatives) == pytest.approx(1.0, abs=1e-5)
    assert events[0].probability == next(a.probability for a in alternatives if a.token_id == events[0].token_id)


def test_the_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    penalised = apply_repetition_penalty(logits, torch.tensor([0, 1, 1]), 2.0)
    assert penalised.tolist() == [1.0, -2.0, 0.5, 3.0]
    assert logits.tolist() == [2.0, -1.0, 0.5, 3.0], "the model's logits are left alone"


def test_the_repetition_penalty_lowers_the_reported_probability_of_repeated_tokens(tokenizer):
    model = gpt2(tokenizer)
    prompt = "fox fox fox"
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(prompt_ids).logits[0, -1]
    unpenalised = torch.softmax(logits, dim=0)
    expected = torch.softmax(apply_repetition_penalty(logits, prompt_ids[0], 3.0), dim=0)
    settings = GenerationSettings(temperature=0.0, max_new_tokens=1, repetition_penalty=3.0, alternatives=20)
    events, _ = stream(model, tokenizer, prompt, settings)
    assert events[0].token_id == expected.argmax().item()
    assert events[0].probability == pytest.approx(expected.max().item(), rel=1e-5)
    for alternative in events[0].alternatives:
        assert alternative.probability == pytest.approx(expected[alternative.token_id].item(), rel=1e-5)
    assert not torch.allclose(expected, unpenalised)


# ---------------------------------------------------------------------------
# Top-k and top-p keep exactly the right tokens


def test_top_k_keeps_the_k_likeliest_tokens_and_renormalises():
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    ids, probabilities = sampling_distribution(logits, temperature=1.0, top_k=2, top_p=1.0)
    assert ids.tolist() == [1, 3]
    assert probabilities.tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8])


@pytest.mark.parametrize(("top_p", "kept"), [(0.4, [1]), (0.6, [1, 3]), (0.85, [1, 3, 2]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_fewest_likeliest_tokens_holding_p(top_p, kept):
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    ids, probabilities = sampling_distribution(logits, temperature=1.0, top_k=0, top_p=top_p)
    assert sorted(ids.tolist()) == sorted(kept)
    assert probabilities.sum().item() == pytest.approx(1.0)


def test_temperature_then_top_k_then_top_p_as_hugging_face_applies_them():
    torch.manual_seed(0)
    for _ in range(20):
        logits = torch.randn(300) * 3
        reference = logits[None] / 0.7
        reference = TopKLogitsWarper(top_k=40)(None, reference)
        reference = TopPLogitsWarper(top_p=0.8)(None, reference)[0]
        ids, probabilities = sampling_distribution(logits, temperature=0.7, top_k=40, top_p=0.8)
        assert sorted(ids.tolist()) == torch.isfinite(reference).nonzero().flatten().tolist()
        assert probabilities.tolist() == pytest.approx(torch.softmax(reference, 0)[ids].tolist(), rel=1e-5)


def test_the_same_seed_gives_the_same_text_and_another_seed_another(tokenizer):
    model = gpt2(tokenizer)
    settings = GenerationSettings(temperature=1.0, top_k=0, max_new_tokens=20, seed=42)
    first = generate_text(model, tokenizer, "The fox", settings)
    again = generate_text(model, tokenizer, "The fox", settings)
    other = generate_text(
        model, tokenizer, "The fox", GenerationSettings(temperature=1.0, top_k=0, max_new_tokens=20, seed=43)
    )
    assert first.token_ids == again.token_ids and first.text == again.text
    assert other.token_ids != first.token_ids


# ---------------------------------------------------------------------------
# Text pieces


def test_split_utf8_characters_are_held_back_until_complete_and_pieces_join_to_decode(tokenizer):
    script = [" The fox", byte_token_ids(tokenizer, " 🦊 日本 Café"), " and", byte_token_ids(tokenizer, "é!")]
    model = scripted(tokenizer, script)
    events, result = stream(model, tokenizer, "Hi", GenerationSettings(temperature=0.0, max_new_tokens=100))
    generated = [event.token_id for event in events if event.token_id != tokenizer.eos_token_id]
    assert "".join(event.text for event in events) == tokenizer.decode(generated) == result.text
    assert result.text == " The fox 🦊 日本 Café andé!"
    assert all("\ufffd" not in event.text for event in events)
    assert [e.text for e in events[:3]] == [" ", "The", " fox"], "leading spaces kept"
    assert sum(1 for e in events if e.text == "") >= 8, "bytes of split characters release nothing on their own"
    assert result.finish_reason == "eos"


def sentencepiece_style_tokenizer():
    """A Llama-style tokenizer: "▁" marks spaces, unknown characters fall back to one token per byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import TOKENIZER_TEXTS

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{byte:02X}>" for byte in range(256)]
    backend.train_from_iterator(
        TOKENIZER_TEXTS,
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>", *byte_tokens], show_progress=False),
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")


def test_pieces_join_to_decode_on_a_sentencepiece_style_tokenizer():
    tokenizer = sentencepiece_style_tokenizer()
    fox_bytes = tokenizer.convert_tokens_to_ids([f"<0x{byte:02X}>" for byte in "🐺".encode()])
    words = tokenizer.convert_tokens_to_ids(["▁", "The", "▁fox", "▁"])
    script = [words, fox_bytes, tokenizer.convert_tokens_to_ids(["▁and", "▁the", "▁c", "row"])]
    events, result = stream(
        scripted(tokenizer, script), tokenizer, "x", GenerationSettings(temperature=0.0, max_new_tokens=100)
    )
    generated = [event.token_id for event in events if event.token_id != tokenizer.eos_token_id]
    assert "".join(event.text for event in events) == result.text == tokenizer.decode(generated)
    assert result.text == "The fox 🐺 and the crow"
    assert [event.text for event in events[:3]] == ["", "The", " fox"], "the start's space is dropped, as decode does"


def test_an_invalid_byte_comes_out_as_the_decoder_shows_it(tokenizer):
    lone_lead_byte = byte_token_ids(tokenizer, "é")[:1]
    script = [" a", lone_lead_byte, " b", lone_lead_byte]
    events, result = stream(
        scripted(tokenizer, script), tokenizer, "x", GenerationSettings(temperature=0.0, max_new_tokens=4)
    )
    ids = [event.token_id for event in events]
    assert result.text == tokenizer.decode(ids) == " a\ufffd b\ufffd"
    assert result.finish_reason == "length"


def test_end_of_text_ends_the_stream_and_its_text_is_not_shown(tokenizer):
    events, result = stream(
        scripted(tokenizer, [" The fox"]), tokenizer, "x", GenerationSettings(temperature=0.0, max_new_tokens=50)
    )
    assert result.finish_reason == "eos"
    assert result.token_ids[-1] == tokenizer.eos_token_id
    assert events[-1].text == "" and result.text == " The fox"


# ---------------------------------------------------------------------------
# Stop strings


def test_a_one_token_stop_string_ends_the_text_and_is_cut(tokenizer):
    model = scripted(tokenizer, [" The fox and the crow met"])
    settings = GenerationSettings(temperature=0.0, max_new_tokens=50, stop=(" the",))
    events, result = stream(model, tokenizer, "x", settings)
    assert result.finish_reason == "stop"
    assert result.text == " The fox and"
    assert "".join(event.text for event in events) == result.text
    assert model.forward_calls == len(result.token_ids), "nothing is computed after the stop"


def test_a_stop_string_spanning_several_tokens_is_never_shown_in_part(tokenizer):
    model = scripted(tokenizer, [" The fox", byte_token_ids(tokenizer, " said: 日本"), " and"])
    settings = GenerationSettings(temperature=0.0, max_new_tokens=50, stop=("d: 日",))
    events, result = stream(model, tokenizer, "x", settings)
    assert result.finish_reason == "stop"
    assert result.text == " The fox sai"
    assert "".join(event.text for event in events) == result.text
    assert not any("d" in event.text for event in events[2:])


def test_text_held_back_as_a_possible_stop_string_is_released_when_it_is_not_one(tokenizer):
    model = scripted(tokenizer, [" The fox and the crow"])
    settings = GenerationSettings(temperature=0.0, max_new_tokens=50, stop=(" the fox", "crow!"))
    events, result = stream(model, tokenizer, "x", settings)
    assert result.finish_reason == "eos"
    assert result.text == " The fox and the crow"
    assert "".join(event.text for event in events) == result.text


def test_the_earliest_of_several_stop_strings_wins(tokenizer):
    model = scripted(tokenizer, [" The fox and the crow"])
    settings = GenerationSettings(temperature=0.0, max_new_tokens=50, stop=("crow", "and"))
    _, result = stream(model, tokenizer, "x", settings)
    assert (result.text, result.finish_reason) == (" The fox ", "stop")


# ---------------------------------------------------------------------------
# Limits: length, context, cancellation, errors


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2-fast-road", "llama-general-road"])
def test_reaching_the_context_length_ends_with_a_reason(tokenizer, build):
    model = build(tokenizer)  # 64 positions
    prompt = " fox" * 60
    prompt_length = len(tokenizer(prompt)["input_ids"])
    events, result = stream(model, tokenizer, prompt, GenerationSettings(temperature=0.0, max_new_tokens=50))
    assert result.finish_reason == "context"
    assert len(result.token_ids) == 64 - prompt_length == len(events)
    assert result.token_ids == generate_ids(model, tokenizer, prompt, 64 - prompt_length)


def test_a_prompt_longer_than_the_context_is_refused_clearly(tokenizer):
    with pytest.raises(SettingsError) as error:
        TokenStream(gpt2(tokenizer), tokenizer, " fox" * 100, GREEDY)
    assert error.value.field == "prompt"
    assert "at most 64" in str(error.value) and "shorten" in str(error.value)


def test_max_new_tokens_ends_with_length(tokenizer):
    events, result = stream(gpt2(tokenizer), tokenizer, "The fox", GenerationSettings(max_new_tokens=7, seed=1))
    assert result.finish_reason == "length"
    assert len(result.token_ids) == len(events) == 7
    assert result.tokens_per_second > 0 and 0 < result.time_to_first_token <= result.elapsed


def test_cancel_from_another_thread_ends_the_stream_at_the_next_token(tokenizer):
    model = gpt2(tokenizer, n_positions=4096)
    token_stream = TokenStream(model, tokenizer, "The fox", GenerationSettings(max_new_tokens=4000, seed=1))
    third_token = threading.Event()
    canceller = threading.Thread(target=lambda: (third_token.wait(), token_stream.cancel()))
    canceller.start()
    events = []
    for event in token_stream:
        events.append(event)
        if event.index == 2:
            third_token.set()
            canceller.join()
    result = token_stream.result
    assert result.finish_reason == "cancelled"
    assert 3 <= len(result.token_ids) < 4000
    assert [event.token_id for event in events] == result.token_ids
    assert "".join(event.text for event in events) == result.text


def test_a_consumer_that_stops_iterating_ends_the_generation(tokenizer):
    model = scripted(tokenizer, [" a b c d e f g h i j k l m n o p"], seconds_per_token=0.05)
    token_stream = TokenStream(model, tokenizer, "x", GenerationSettings(temperature=0.0, max_new_tokens=100))
    for _ in token_stream:
        break
    assert token_stream.result.finish_reason == "cancelled"
    assert model.forward_calls < len(model.script)


def test_an_exception_inside_generation_reaches_the_consumer(tokenizer):
    model = gpt2(tokenizer)

    calls = []

    def fail_on_the_third_forward(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the model broke on step 3")

    handle = model.register_forward_pre_hook(fail_on_the_third_forward)
    token_stream = TokenStream(model, tokenizer, "The fox", GenerationSettings(max_new_tokens=20, seed=1))
    received = []
    try:
        with pytest.raises(RuntimeError, match="broke on step 3"):
            for event in token_stream:
                received.append(event)
    finally:
        handle.remove()
    assert len(received) == 2
    assert token_stream.result is None


def test_a_stream_can_be_iterated_only_once(tokenizer):
    token_stream = TokenStream(gpt2(tokenizer), tokenizer, "x", GenerationSettings(max_new_tokens=2))
    list(token_stream)
    with pytest.raises(RuntimeError, match="only once"):
        iter(token_stream)


def test_an_empty_prompt_starts_from_the_start_token(tokenizer):
    model = gpt2(tokenizer)
    _, result = stream(model, tokenizer, "", GREEDY)
    assert result.token_ids == generate_ids(model, tokenizer, "", GREEDY.max_new_tokens)
    assert result.prompt == ""


# ---------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("temperature", -0.1, "at least 0.0001"),
        ("temperature", math.nan, "at least 0.0001"),
        ("temperature", 5e-324, "0 (greedy) or at least 0.0001"),
        ("top_k", -1, "of at least 0"),
        ("top_k", 2.5, "of at least 0"),
        ("top_p", 0.0, "above 0 and at most 1"),
        ("top_p", 1.5, "above 0 and at most 1"),
        ("repetition_penalty", 0.0, "at least 0.01"),
        ("repetition_penalty", 5e-324, "at least 0.01"),
        ("max_new_tokens", 0, "of at least 1"),
        ("alternatives", 21, "from 0 to 20"),
        ("alternatives", -1, "from 0 to 20"),
        ("seed", "seven", "a whole number"),
        ("seed", -1, f"from 0 to {2**63 - 1}"),
        ("stop", ("",), "non-empty"),
        ("stop", "\n", "list of strings"),
        ("stop", None, "list of strings"),
        ("stop", 3, "list of strings"),
    ],
)
def test_invalid_settings_name_the_field_and_the_allowed_range(field, value, allowed):
    settings = GenerationSettings(**{field: value})
    with pytest.raises(SettingsError) as error:
        settings.validate()
    assert error.value.field == field
    assert allowed in str(error.value)


def test_valid_settings_pass_and_read_as_plain_values():
    settings = GenerationSettings(temperature=0, top_k=0, top_p=1, seed=None, stop=("\n\n",), alternatives=0)
    settings.validate()
    GenerationSettings().validate()
    assert settings.as_dict()["stop"] == ["\n\n"]


def test_a_stream_refuses_invalid_settings_before_starting(tokenizer):
    with pytest.raises(SettingsError, match="top_p"):
        TokenStream(gpt2(tokenizer), tokenizer, "x", GenerationSettings(top_p=2.0))


# ---------------------------------------------------------------------------
# The generation log


def test_generations_are_recorded_and_found_by_full_text_search(tokenizer):
    store = RunStore()
    settings = GenerationSettings(temperature=0.0, max_new_tokens=50, stop=(" met",))
    result = generate_text(scripted(tokenizer, [" The fox and the crow met"]), tokenizer, "A fable:", settings)
    cancelled = GenerationResult(
        prompt="Question: why?",
        text=" Because",
        token_ids=[5, 6],
        finish_reason="cancelled",
        time_to_first_token=0.1,
        elapsed=0.2,
    )
    first_id = record_generation(store, "scratch:tiny", result, settings)
    record_generation(store, "gpt2", cancelled, GenerationSettings())

    [row] = store.generations(search="crow")
    assert row["id"] == first_id
    assert (row["model"], row["prompt"], row["text"]) == ("scratch:tiny", "A fable:", " The fox and the crow")
    assert (row["finish_reason"], row["token_count"]) == ("stop", len(result.token_ids))
    assert row["settings"]["stop"] == [" met"] and row["settings"]["temperature"] == 0.0
    assert [r["finish_reason"] for r in store.generations()] == ["cancelled", "stop"]
    assert [r["model"] for r in store.generations(search="Question")] == ["gpt2"]
