"""Where the model looked: each head's attention, at every layer, as it predicted a token.

Fused attention kernels (PyTorch's SDPA, which transformers uses by default)
never form the attention weights; only the "eager" implementation returns
them (``output_attentions=True``). Switching the loaded model to eager would
change it under a generation running at the same moment, and loading it
again would double its memory, so the model gets an eager twin: a copy of
its modules and config that shares every parameter and buffer (nothing is
copied), switched with ``set_attn_implementation``. It is made once per
model (15 ms at ``scratch:tiny``, 40 ms at GPT-2 124M) and kept for as long
as the model is.

A look costs one forward pass over the text up to the token, with the
attention matrices of every layer formed on the way: 0.1 s for 256 tokens at
``scratch:tiny`` and 2.3 s for 300 tokens at GPT-2 124M on one CPU thread of
the shared development box (load average 5).
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.errors import SettingsError
from engine.generation import encode_prompt
from engine.models import context_length

_twins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_twins_lock = threading.Lock()


@dataclass
class TokenAttention:
    """Where each head looked as the model wrote one token of a generation."""

    token: str  # the text of the token written
    weights: torch.Tensor  # [layers, heads, earlier tokens]; each row sums to 1
    tokens: list[str]  # the earlier tokens' texts, oldest first: the prompt's, then the generation's


def attention_in_generation(model, tokenizer, prompt: str, token_ids: Sequence[int], index: int) -> TokenAttention:
    """The attention as the model wrote generated token ``index`` after ``prompt`` (as ``TokenStream`` read it)."""
    if not 0 <= index < len(token_ids):
        raise SettingsError("position", f"token {index} is past the end of a generation of {len(token_ids)} tokens")
    ids = encode_prompt(tokenizer, prompt, context_length(model.config)) + list(token_ids[:index])
    weights = attention_before(model, ids, len(ids))
    texts = [str(tokenizer.decode([token_id])) for token_id in [*ids, token_ids[index]]]
    return TokenAttention(texts[-1], weights, texts[:-1])


def attention_before(model, ids: Sequence[int], position: int) -> torch.Tensor:
    """How each head spread its attention over ``ids[:position]`` when the model predicted ``ids[position]``.

    Returns a float tensor ``[layers, heads, position]``: the attention of
    the last token read before it (the query at ``position - 1``), so each
    row covers exactly the earlier tokens and sums to 1. ``position`` may be
    ``len(ids)``: the token the model would write next.
    """
    if not 1 <= position <= len(ids):
        raise SettingsError(
            "position",
            f"token {position} has no earlier tokens to look at in a text of {len(ids)}; "
            f"use a position from 1 to {len(ids)}",
        )
    limit = context_length(model.config)
    if limit is not None and position > limit:
        raise SettingsError("position", f"token {position} is past this model's context of {limit} tokens")
    twin = _eager_twin(model)
    input_ids = torch.tensor([list(ids[:position])], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        output = twin(input_ids=input_ids, output_attentions=True, use_cache=False, logits_to_keep=1)
    if not output.attentions:
        raise SettingsError("model", f"{type(model).__name__} does not report its attention weights")
    return torch.stack([layer[0, :, -1, :] for layer in output.attentions]).float().cpu()


def _eager_twin(model):
    """The model's modules again, sharing its tensors, with attention that returns its weights."""
    with _twins_lock:
        twin = _twins.get(model)
        if twin is None:
            shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
            twin = copy.deepcopy(model, shared)
            twin.set_attn_implementation("eager")
            twin.eval()
            _twins[model] = twin
        return twin
