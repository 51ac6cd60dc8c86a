"""Attention as the model predicted a token: every layer's heads over the earlier tokens.

Compared with what plain transformers returns from a model loaded with eager
attention; the loaded (SDPA) model itself is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from engine.attention import attention_before, attention_in_generation
from engine.errors import SettingsError
from engine.generation import GenerationSettings, _GPT2Decoder, generate_text
from tests.test_generation import gpt2, llama


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def eager_attentions(model, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Plain transformers: the same weights loaded with eager attention, every layer's attention matrices."""
    config = type(model.config).from_dict(model.config.to_dict(), attn_implementation="eager")
    eager = type(model)(config)
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        return eager.eval()(torch.tensor([ids]), output_attentions=True).attentions


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_each_heads_attention_over_the_earlier_tokens_sums_to_one_and_is_the_models(tokenizer, build):
    model = build(tokenizer)
    ids = tokenizer("The fox and the crow met by the old mill")["input_ids"]
    position = 7
    weights = attention_before(model, ids, position)

    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert weights.shape == (layers, heads, position)
    assert torch.allclose(weights.sum(-1), torch.ones(layers, heads), atol=1e-5)
    reference = eager_attentions(model, ids[:position])
    assert len(reference) == layers
    for layer, matrices in enumerate(reference):
        assert torch.allclose(weights[layer], matrices[0, :, -1, :], atol=1e-6)
    assert model.config._attn_implementation == "sdpa", "the loaded model is left as it was"


def test_looking_at_attention_leaves_generation_on_its_fast_road(tokenizer):
    model = gpt2(tokenizer)
    settings = GenerationSettings(temperature=0.0, max_new_tokens=8)
    before = generate_text(model, tokenizer, "The fox", settings)
    attention_before(model, before.token_ids, 4)
    assert _GPT2Decoder.supports(model)
    assert generate_text(model, tokenizer, "The fox", settings).token_ids == before.token_ids


@pytest.mark.parametrize(("position", "words"), [(0, "no earlier tokens"), (5, "use a position from 1 to 4")])
def test_a_position_without_earlier_tokens_or_past_the_text_is_refused(tokenizer, position, words):
    with pytest.raises(SettingsError) as error:
        attention_before(gpt2(tokenizer), [5, 6, 7, 8], position)
    assert error.value.field == "position" and words in str(error.value)


def test_a_generated_tokens_attention_covers_the_prompt_and_the_tokens_before_it(tokenizer):
    model = gpt2(tokenizer)
    result = generate_text(model, tokenizer, "The fox", GenerationSettings(temperature=0.0, max_new_tokens=6))
    prompt_ids = tokenizer("The fox")["input_ids"]
    looked = attention_in_generation(model, tokenizer, "The fox", result.token_ids, 3)

    assert looked.weights.shape == (2, 2, len(prompt_ids) + 3)
    assert torch.equal(looked.weights, attention_before(model, prompt_ids + result.token_ids, len(prompt_ids) + 3))
    assert looked.tokens == [tokenizer.decode([i]) for i in prompt_ids + result.token_ids[:3]]
    assert looked.token == tokenizer.decode([result.token_ids[3]])
    with pytest.raises(SettingsError, match="token 6 is past the end of a generation of 6 tokens"):
        attention_in_generation(model, tokenizer, "The fox", result.token_ids, 6)
