"""Probe prompts: what the model being trained writes for a few fixed prompts, evaluation by evaluation.

A loss curve says how much a model has learned; the text it writes says
what. A run can carry a handful of prompts (``TrainingConfig.probes``); at
every evaluation the trainer completes each one greedily (always the likeliest
token, so the same weights always write the same text and no seed is
involved), and the store keeps each completion with its step. Reading them in
order shows the model's writing take shape.

The completions cost training time, so they are made in one batch: the
prompts are left-padded to one length with an attention mask and run through
``generate`` together with its key/value cache. ``bench/training.py
--probes`` measures it: on ``scratch:tiny`` on a CPU four prompts took about
1 % of the time between two evaluations, a third of what they take one after
another through ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch

from engine.models import context_length

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase


def complete_probes(
    model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], new_tokens: int
) -> dict[str, str]:
    """Each prompt's greedy completion of up to ``new_tokens`` tokens, without the prompt.

    The model is run in eval mode (no dropout: nothing random is drawn, so
    the training's random stream is untouched) and put back in the mode it
    was in. A completion ends early where the model ends its text. A prompt
    longer than the model's context leaves room for the completion by keeping
    its last tokens (those the completion follows).
    """
    ends = _end_of_text_ids(model, tokenizer)
    padding = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (ends[0] if ends else 0)
    context = context_length(model.config)
    rows = [_prompt_ids(tokenizer, prompt, None if context is None else context - new_tokens) for prompt in prompts]
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[padding] * (width - len(row)) + row for row in rows], device=model.device)
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=model.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # Greedy as `generate(do_sample=False)` writes it, under the model's own generation settings.
            # Every causal LM mixes generate in (transformers 5's PreTrainedModel alone lacks it).
            output = cast("GenerationMixin", model).generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=padding,
            )
    finally:
        model.train(was_training)
    completions = {}
    for prompt, row in zip(prompts, output[:, width:].tolist(), strict=True):
        written = next((row[:index] for index, token in enumerate(row) if token in ends), row)
        completions[prompt] = cast(str, tokenizer.decode(written, skip_special_tokens=True))  # ids in: text out
    return completions


def _end_of_text_ids(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token ids that end the model's text: its generation settings', else its tokenizer's (none: none do)."""
    end = model.generation_config.eos_token_id
    if end is None:
        end = tokenizer.eos_token_id
    if end is None:
        return []
    return list(end) if isinstance(end, list) else [end]


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, room: int | None) -> list[int]:
    """The prompt's token ids, its last ``room`` only when it has more (None: no limit)."""
    ids = list(tokenizer(prompt)["input_ids"])
    return ids if room is None else ids[-room:]
