"""Looking inside a model: how surprised it is by each token of a text, and what each of its layers predicts.

``score_text`` reads a text the way the model's own loss does and says, for
every token, how likely the model found it given the tokens before it: its
log-probability (natural log), its rank among all tokens (1: the model's own
first choice), the entropy of the model's prediction there and the surprise
(both in bits). Totals are the summed log-probability, the mean loss per token
and bits per byte of the text's UTF-8. With ``against`` a second model that
shares the tokenizer scores the same tokens, for an A/B comparison (a base
model against its fine-tuned checkpoint).

``logit_lens`` reads out what the model predicts at one place of the text
after every layer: the final layer norm and the LM head applied to the
hidden state of the embeddings and of each block (nostalgebraist's logit
lens), with each layer's likeliest tokens and its entropy. GPT-2 family
models only.

Conventions, one for both:

- The first token is scored from the tokenizer's start-of-text token (its BOS,
  else its end-of-text token: ``<|endoftext|>`` for GPT-2), as GPT-2 scoring
  usually does, so every token of the text has a score. The model's own loss
  on ``[start] + ids`` (``model(ids, labels=ids).loss``) times the number of
  tokens is minus the summed log-probability.
- Position P of the lens is token P's place: the lens reads the hidden state
  of the token before it (the start token for P = 0), so each layer's guess
  for token P shows beside the token that is there. P = the number of tokens
  is the place after the text (what comes next); negative positions count
  from there (-1).
- A text longer than the model's context is read in sliding windows of the
  whole context, each starting half a context after the one before: every
  token is scored once, in the first window that holds it after at least
  half a context of the tokens before it (the first window's tokens with
  what precedes them). The lens at a position reads the window its token
  was scored in.

Both use batched forward passes, never a loop over tokens; the statistics
over the vocabulary are computed a few rows at a time, so they stay in the
CPU's cache and the logits of a long text never sit in memory whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import GPT2LMHeadModel

from engine.checks import check_int
from engine.datasets import tokenizer_fingerprint
from engine.errors import SettingsError
from engine.generation import TokenAlternative
from engine.models import context_length

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LN2 = math.log(2)
DEFAULT_TOP = 5  # the lens's likeliest tokens per layer, unless asked for more
MAX_TOP = 100
# At most this many logits (float32) per batch of windows: 256 MB; one window of GPT-2's 1024 tokens is 206 MB.
LOGITS_PER_BATCH = 2**26
# Rows of logits whose statistics are computed together: 32 x 50257 float32s (6 MB) stay in the CPU's cache.
ROWS_AT_A_TIME = 32
# A score keeps the hidden states the lens reads (layers x tokens x width float32s) only up to this size.
MAX_KEPT_STATES_BYTES = 512 * 2**20

Progress = Callable[[int, int], None]  # (windows read, windows in all)


# ---------------------------------------------------------------------------
# Scoring a text


@dataclass(frozen=True)
class ScoredToken:
    """One token of a scored text and how likely the model found it there."""

    id: int
    text: str  # the piece of the text it covers; the pieces join to the text
    logprob: float  # natural log of its probability given the tokens before it
    rank: int  # 1: the model's likeliest token there; n: n - 1 tokens were likelier
    entropy: float  # bits: how spread out the model's prediction there was

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)

    @property
    def surprise(self) -> float:
        """Bits: -log2 of its probability (0 for a certain token, 10 for one in a thousand)."""
        return -self.logprob / LN2

    def as_dict(self) -> dict[str, Any]:
        """The token as ``lmwb score --json`` writes it."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "rank": self.rank, "entropy": self.entropy}


@dataclass(frozen=True)
class TextScore:
    """A text as one model scored it, token by token, with its totals; ``against``: the second model's score."""

    text: str
    tokens: tuple[ScoredToken, ...]
    num_bytes: int  # UTF-8 bytes of the text
    windows: int  # forward passes over the text: 1 unless it is longer than the model's context
    against: TextScore | None = None
    # Each position's hidden state after every layer ([tokens + 1, layers + 1, width]; position 0 is the
    # start token's), when asked for (keep_states) and the model has a lens: the lens reads them.
    states: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def total_logprob(self) -> float:
        """The summed natural log-probability of every token: minus the model's loss times the token count."""
        return math.fsum(token.logprob for token in self.tokens)

    @property
    def loss(self) -> float:
        """Mean loss per token, in nats (the training loss's unit)."""
        return -self.total_logprob / len(self.tokens)

    @property
    def bits_per_byte(self) -> float:
        """Bits to encode the text's UTF-8 under the model: comparable across tokenizers, unlike the loss."""
        return -self.total_logprob / LN2 / self.num_bytes

    def as_dict(self) -> dict[str, Any]:
        """Every token and the totals, as ``lmwb score --json`` writes them (with ``against``, its logprobs too)."""
        tokens = [token.as_dict() for token in self.tokens]
        if self.against is not None:
            for row, other in zip(tokens, self.against.tokens, strict=True):
                row["against_logprob"] = other.logprob
        totals = {"total_logprob": self.total_logprob, "loss": self.loss, "bits_per_byte": self.bits_per_byte}
        if self.against is not None:
            totals |= {
                "against_total_logprob": self.against.total_logprob,
                "against_loss": self.against.loss,
                "against_bits_per_byte": self.against.bits_per_byte,
            }
        return {"tokens": tokens, **totals, "bytes": self.num_bytes, "windows": self.windows}


def score_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    against: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    keep_states: bool = False,
    progress: Progress | None = None,
) -> TextScore:
    """Score every token of ``text`` under ``model``; with ``against`` (model, tokenizer), under that one too.

    ``keep_states`` keeps the hidden states the logit lens reads (GPT-2
    family models, texts whose states fit in MAX_KEPT_STATES_BYTES), so
    ``logit_lens(..., score=...)`` answers for any position without running
    the model again. SettingsError: an empty text ("text"), models that
    tokenize differently ("against"), a tokenizer with no start token ("model").
    """
    if against is not None and tokenizer_fingerprint(against[1]) != tokenizer_fingerprint(tokenizer):
        raise SettingsError("against", "these models tokenize differently; compare models that share a tokenizer.")
    ids, pieces = text_tokens(tokenizer, text)
    sequence = [start_token(tokenizer), *ids]
    windows = reading_windows(len(sequence), context_length(model.config))
    keep = keep_states and lens_supported(model) and _states_fit(model, len(sequence))
    logprobs, ranks, entropies, states = _read(model, sequence, windows, keep, progress)
    score = TextScore(
        text=text,
        tokens=tuple(
            ScoredToken(token_id, piece, logprob, rank, entropy)
            for token_id, piece, logprob, rank, entropy in zip(ids, pieces, logprobs, ranks, entropies, strict=True)
        ),
        num_bytes=len(text.encode("utf-8")),
        windows=len(windows),
        states=states,
    )
    if against is None:
        return score
    return dataclasses.replace(score, against=score_text(against[0], against[1], text))


def text_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[str]]:
    """The text's token ids (no special tokens added) and the piece of the text each one covers.

    The pieces join to the text. A token that ends inside a character (a
    byte-level BPE splits some emoji) covers nothing; the token that
    completes the character covers it. SettingsError("text") for a text
    with no tokens.
    """
    if not text:
        raise SettingsError("text", "is empty; give some text to read.")
    if not tokenizer.is_fast:  # only a fast tokenizer knows where each token is in the text
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        pieces = [cast(str, tokenizer.decode([token_id])) for token_id in ids]  # ids in: text out
    else:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoding["input_ids"])
        pieces = _pieces(text, encoding["offset_mapping"])
    if not ids:
        raise SettingsError("text", "has no tokens; give some text to read.")
    return ids, pieces


def _pieces(text: str, offsets: list[tuple[int, int]]) -> list[str]:
    """The piece of ``text`` each token covers, from the tokenizer's (start, end) offsets; they join to the text."""
    pieces, done = [], 0
    for _, end in offsets:
        pieces.append(text[done:end] if end > done else "")
        done = max(done, end)
    if pieces:
        pieces[-1] += text[done:]
    return pieces


def start_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token the first token of a text is scored from: the tokenizer's BOS, else its end-of-text token."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise SettingsError(
        "model",
        "its tokenizer has no start-of-text or end-of-text token to read the first token from; "
        "use a model whose tokenizer has one.",
    )


@dataclass(frozen=True)
class Window:
    """A stretch ``[start, end)`` of the token sequence read in one forward pass; it scores ``[first, end)``."""

    start: int
    first: int
    end: int


def reading_windows(length: int, context: int | None) -> list[Window]:
    """The windows a sequence of ``length`` tokens (the start token first) is read in, under ``context``.

    One window when it fits. Otherwise windows of the whole context, each
    starting half a context after the one before (the last one ending at the
    end); each scores the tokens the one before did not, so every token after
    the first window is scored with at least half a context before it.
    """
    if context is None or length <= context:
        return [Window(0, 1, length)]
    if context < 2:
        raise SettingsError("model", f"its context is {context} token; it cannot predict anything from it.")
    stride = context // 2
    starts = [*range(0, length - context, stride), length - context]
    windows, first = [], 1
    for start in starts:
        windows.append(Window(start, first, start + context))
        first = start + context
    return windows


def _read(
    model: PreTrainedModel, sequence: list[int], windows: list[Window], keep: bool, progress: Progress | None
) -> tuple[list[float], list[int], list[float], torch.Tensor | None]:
    """Every token's logprob, rank and entropy after the start token, in batches of windows; the states if ``keep``."""
    width = windows[0].end - windows[0].start
    per_batch = max(1, LOGITS_PER_BATCH // (width * model.config.vocab_size))
    logprobs: list[float] = []
    ranks: list[int] = []
    entropies: list[float] = []
    states: list[torch.Tensor] = []
    with _evaluating(model):
        for done in range(0, len(windows), per_batch):
            batch = windows[done : done + per_batch]
            input_ids = torch.tensor([sequence[w.start : w.end] for w in batch], device=model.device)
            output = model(input_ids=input_ids, use_cache=False, output_hidden_states=keep)
            for row, window in enumerate(batch):
                # The logits at i predict token i + 1: those of [first - 1, end - 1) score [first, end).
                predicting = slice(window.first - 1 - window.start, window.end - 1 - window.start)
                targets = torch.tensor(sequence[window.first : window.end], device=model.device)
                window_logprobs, window_ranks, window_entropies = token_statistics(
                    output.logits[row, predicting], targets
                )
                logprobs += window_logprobs
                ranks += window_ranks
                entropies += window_entropies
                if keep:
                    last = window is windows[-1]  # its final position reads what would come after the text
                    kept = slice(predicting.start, predicting.stop + 1 if last else predicting.stop)
                    states.append(torch.stack([h[row, kept] for h in output.hidden_states], dim=1))
            if progress is not None:
                progress(min(done + per_batch, len(windows)), len(windows))
    return logprobs, ranks, entropies, torch.cat(states) if keep else None


def token_statistics(logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[int], list[float]]:
    """For each row of ``logits`` ([tokens, vocab]): the target's natural logprob and rank, and the entropy in bits.

    Computed in float32, ROWS_AT_A_TIME rows at a time. The rank counts the
    tokens strictly likelier than the target, plus one: a tie for first is
    rank 1.
    """
    logprobs: list[float] = []
    ranks: list[int] = []
    entropies: list[float] = []
    for start in range(0, logits.shape[0], ROWS_AT_A_TIME):
        rows = logits[start : start + ROWS_AT_A_TIME].float()
        wanted = targets[start : start + ROWS_AT_A_TIME, None]
        logp = torch.log_softmax(rows, dim=-1)
        logprobs += logp.gather(1, wanted).squeeze(1).tolist()
        ranks += ((rows > rows.gather(1, wanted)).sum(dim=-1) + 1).tolist()
        entropies += (_entropy_nats(logp) / LN2).tolist()
    return logprobs, ranks, entropies


def _entropy_nats(logp: torch.Tensor) -> torch.Tensor:
    """The entropy of each row's distribution from its log-probabilities (a token of -inf counts as 0)."""
    return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(dim=-1)


def _states_fit(model: PreTrainedModel, positions: int) -> bool:
    layers, width = model.config.num_hidden_layers + 1, model.config.hidden_size
    return positions * layers * width * 4 <= MAX_KEPT_STATES_BYTES


@contextlib.contextmanager
def _evaluating(model: PreTrainedModel) -> Iterator[None]:
    """No dropout and no gradients while reading; the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------
# The logit lens


@dataclass(frozen=True)
class LayerReadout:
    """What one layer predicts at a position: the LM head applied to its hidden state (after the final norm)."""

    layer: int  # 0: the embeddings; i: the output of block i (the last: the model's own output)
    top: tuple[TokenAlternative, ...]  # the likeliest tokens, likeliest first
    entropy: float  # bits
    target_probability: float | None  # the probability it gives the token at the position (None after the text)
    target_rank: int | None

    @property
    def name(self) -> str:
        return "embeddings" if self.layer == 0 else f"block {self.layer}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "name": self.name,
            "entropy": self.entropy,
            "top": [{"id": t.token_id, "text": t.text, "probability": t.probability} for t in self.top],
            "target_probability": self.target_probability,
            "target_rank": self.target_rank,
        }


@dataclass(frozen=True)
class LensReadout:
    """Every layer's prediction at one position of a text, from the embeddings to the model's output."""

    position: int  # 0 to tokens: the place of token `position` (tokens: the place after the text)
    tokens: int  # how many tokens the text has
    after: str  # the piece of text of the token the prediction is read at ("" for the start token)
    target: tuple[int, str] | None  # (id, text) of the token at the position; None after the text
    layers: tuple[LayerReadout, ...]

    def as_dict(self) -> dict[str, Any]:
        """As ``lmwb lens --json`` writes it."""
        target = None if self.target is None else {"id": self.target[0], "text": self.target[1]}
        return {
            "position": self.position,
            "tokens": self.tokens,
            "after": self.after,
            "target": target,
            "layers": [layer.as_dict() for layer in self.layers],
        }


def lens_supported(model: PreTrainedModel) -> bool:
    """Whether ``logit_lens`` can read this model: a GPT-2 family model (GPT2LMHeadModel or a subclass)."""
    return isinstance(model, GPT2LMHeadModel)


def lens_model(model: PreTrainedModel) -> GPT2LMHeadModel:
    """The model, if the lens can read it; SettingsError("model") naming the architecture of one it cannot."""
    if not isinstance(model, GPT2LMHeadModel):
        raise SettingsError(
            "model",
            f"the logit lens is not supported for {model.config.model_type} models; it works for GPT-2 family models.",
        )
    return model


def logit_lens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    position: int = -1,
    top: int = DEFAULT_TOP,
    *,
    score: TextScore | None = None,
) -> LensReadout:
    """Each layer's ``top`` likeliest tokens and entropy at ``position`` of ``text`` (see the module's conventions).

    One forward pass of the model's body over the window the position's
    token is scored in, up to the position; or none, given the ``score`` of
    this text made with ``keep_states``. The last layer's readout is the
    model's own output there. SettingsError: a model that is not GPT-2
    family ("model"), ``top`` out of 1 to MAX_TOP ("top"), an empty text
    ("text"), a position outside the text ("position").
    """
    gpt2 = lens_model(model)
    check_int("top", top, 1, min(MAX_TOP, gpt2.config.vocab_size))
    if score is not None and score.text != text:
        raise ValueError("the score given is of another text")
    ids, pieces = text_tokens(tokenizer, text)
    place = lens_position(position, len(ids))
    sequence = [start_token(tokenizer), *ids]
    if score is not None and score.states is not None:
        states = score.states[place]
    else:
        states = _states_at(gpt2, sequence, place)
    target = (ids[place], pieces[place]) if place < len(ids) else None
    return LensReadout(
        position=place,
        tokens=len(ids),
        after=pieces[place - 1] if place > 0 else "",
        target=target,
        layers=_readouts(gpt2, tokenizer, states, top, None if target is None else target[0]),
    )


def lens_position(position: int, tokens: int) -> int:
    """``position`` as an index from 0 to ``tokens`` (negative ones count from the end: -1 is ``tokens``)."""
    if not -(tokens + 1) <= position <= tokens:
        where = "past the end" if position > tokens else "before the start"
        raise SettingsError(
            "position",
            f"{position} is {where}: this text has {tokens} token{'' if tokens == 1 else 's'}, so use 0 to {tokens} "
            f"({tokens}: the place after the text), or -1 to -{tokens + 1} to count back from there.",
        )
    return position if position >= 0 else tokens + 1 + position


def _states_at(model: GPT2LMHeadModel, sequence: list[int], place: int) -> torch.Tensor:
    """The hidden state after every layer ([layers + 1, width]) at ``place`` of the sequence, as a score reads it.

    The window is the one that scores the token after ``place``, cut at
    ``place`` (nothing later changes a state). Only the body runs: the LM
    head is applied to one position per layer later.
    """
    windows = reading_windows(len(sequence), context_length(model.config))
    window = next((w for w in windows if w.first - 1 <= place < w.end - 1), windows[-1])
    input_ids = torch.tensor([sequence[window.start : place + 1]], device=model.device)
    with _evaluating(model):
        output = model.transformer(input_ids=input_ids, use_cache=False, output_hidden_states=True)
    return torch.stack([h[0, -1] for h in output.hidden_states])


def _readouts(
    model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, states: torch.Tensor, top: int, target: int | None
) -> tuple[LayerReadout, ...]:
    """Each layer's readout of its hidden state ([layers + 1, width]): the final norm, then the LM head.

    The last state has the final norm applied already (transformers returns
    it so), so it goes to the LM head as it is: its readout is the model's
    output.
    """
    with _evaluating(model):
        normed = torch.cat([model.transformer.ln_f(states[:-1]), states[-1:]])
        logp = torch.log_softmax(model.lm_head(normed).float(), dim=-1)
        entropies = (_entropy_nats(logp) / LN2).tolist()
        best = logp.topk(top, dim=-1)
        target_ranks = None if target is None else ((logp > logp[:, target, None]).sum(dim=-1) + 1).tolist()
        target_logps = None if target is None else logp[:, target].tolist()
    texts = {token_id: cast(str, tokenizer.decode([token_id])) for token_id in best.indices.unique().tolist()}
    return tuple(
        LayerReadout(
            layer=layer,
            top=tuple(
                TokenAlternative(token_id, texts[token_id], math.exp(value))
                for token_id, value in zip(best.indices[layer].tolist(), best.values[layer].tolist(), strict=True)
            ),
            entropy=entropies[layer],
            target_probability=None if target_logps is None else math.exp(target_logps[layer]),
            target_rank=None if target_ranks is None else target_ranks[layer],
        )
        for layer in range(states.shape[0])
    )
