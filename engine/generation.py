"""Streaming generation: one event per token, with its probability and alternatives.

A user watches a model write and sees how sure it was of each token. The
``TokenStream`` below does that for any Hugging Face causal language model:

1. the prompt is encoded once and run through the model once (the prefill);
2. each step picks one token from the last logits (greedy or sampled, after
   the repetition penalty, temperature, top-k and top-p), turns it into text,
   and runs that single token through the model with the key/value cache.

The model runs in a thread of the stream's own; the consumer iterates the
events. GPT-2 models on the CPU take a shorter road through step 2
(``_GPT2Decoder``): the very same arithmetic as ``GPT2LMHeadModel`` on a
preallocated key/value buffer, without the per-module Python overhead that
dominates small models. Every other model takes the general road
(``_CachedForward``). Both are exact: greedy decoding gives the tokens
``model.generate`` gives.

Text is released incrementally: a piece is held back while it ends in an
incomplete UTF-8 character or could be the start of a stop string, so the
pieces always join to ``tokenizer.decode`` of the generated ids (cut at the
stop string).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F

from engine.checks import check_int, check_number
from engine.errors import SettingsError
from engine.models import context_length

if TYPE_CHECKING:
    from engine.store import RunStore

FINISH_REASONS = ("length", "stop", "eos", "context", "cancelled")
MAX_ALTERNATIVES = 20
# Below these the float32 arithmetic overflows (logits / 1e-300 is inf); they are greedy and "no repeats" in effect.
MIN_TEMPERATURE = 1e-4
MIN_REPETITION_PENALTY = 0.01
_END = object()  # the generation thread's last word when nothing went wrong


@dataclass
class GenerationSettings:
    """How to pick each token, and when to stop: what the user sets in the Generate form or on the command line."""

    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 means greedy: always the most likely token
    top_k: int = 50  # sample among the k likeliest tokens; 0 turns it off
    top_p: float = 1.0  # sample among the fewest tokens holding this much probability
    repetition_penalty: float = 1.0
    seed: int | None = None  # same seed, same text; None draws a fresh one
    stop: tuple[str, ...] = ()  # generation ends when one appears; it is cut from the text
    alternatives: int = 5  # how many likeliest tokens each event lists

    def validate(self) -> None:
        """Raise ``SettingsError`` naming the first field outside its allowed range."""
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_number("temperature", self.temperature, 0, hint=f" (0 is greedy; else at least {MIN_TEMPERATURE:g})")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise SettingsError(
                "temperature",
                f"{self.temperature:g} is too close to 0 to sample; use 0 (greedy) or at least {MIN_TEMPERATURE:g}.",
            )
        check_int("top_k", self.top_k, 0, hint=" (0 turns top-k off)")
        check_number("top_p", self.top_p, 0, above=True, maximum=1, hint=" (1 turns top-p off)")
        check_number(
            "repetition_penalty",
            self.repetition_penalty,
            MIN_REPETITION_PENALTY,
            hint=" (1 means no penalty, above 1 discourages repeats)",
        )
        check_int("alternatives", self.alternatives, 0, MAX_ALTERNATIVES)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**63 - 1, hint=", or none for a fresh random seed")
        if not isinstance(self.stop, (tuple, list)) or not all(isinstance(s, str) and s for s in self.stop):
            raise SettingsError(
                "stop", "each stop string must be a non-empty piece of text; give a list of strings such as ['\\n\\n']"
            )

    def as_dict(self) -> dict:
        """Plain values for JSON and the generation log."""
        values = dataclasses.asdict(self)
        values["stop"] = list(self.stop)
        return values


@dataclass
class TokenAlternative:
    """One of the likeliest tokens at a step, under the distribution the token was drawn from."""

    token_id: int
    text: str
    probability: float


@dataclass
class TokenEvent:
    """One generated token.

    ``text`` is the text this token releases. It may be empty (half of a
    UTF-8 character, a possible stop string, the end-of-text token) and may
    carry text held back from earlier tokens; joined, the pieces are the text.
    """

    index: int
    token_id: int
    text: str
    probability: float
    alternatives: list[TokenAlternative]
    elapsed: float  # seconds since the stream started


@dataclass
class GenerationResult:
    """What a finished stream produced; ``text`` is exactly the events' pieces joined."""

    prompt: str
    text: str
    token_ids: list[int]  # every generated token, an end-of-text or stop-string token included
    finish_reason: str  # one of FINISH_REASONS
    time_to_first_token: float
    elapsed: float
    prefix_tokens: int = 0  # the first token_ids were written before this stream (a branch's shared start)

    @property
    def tokens_per_second(self) -> float:
        """Tokens this stream generated over its whole time, prompt processing included."""
        generated = len(self.token_ids) - self.prefix_tokens
        return generated / self.elapsed if self.elapsed > 0 else 0.0


class TokenStream:
    """Iterate for TokenEvents; .result after the end; .cancel() from any thread.

    The model runs in a thread of the stream's own, like ``generate`` with a
    streamer but without its pitfalls: the consumer's iteration receives the
    events, an exception raised while generating is raised again in the
    consumer, and a consumer that stops iterating ends the generation. The
    thread keeps computing the next token while the consumer shows the last.

    A cancel is honoured before the next token is computed; events already
    made still arrive. Text held back at a cancel (half a character, a
    possible stop string) is dropped, so ``result.text`` is always exactly
    what the events delivered.

    A stream can also go on from tokens written before (a branch, see
    ``engine.branches``): ``prefix`` is the tokens a stream of the same prompt
    and settings wrote, read with the prompt and counted in
    ``max_new_tokens``; they get no events, but their text starts
    ``result.text`` and ``result.token_ids``. ``first_token``, if given, is
    taken as the next token instead of picking one; its event reports its
    probability and the alternatives as if it had been picked. Then tokens
    are picked as usual, the seed's draws starting after it.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str,
        settings: GenerationSettings,
        *,
        prefix: Sequence[int] = (),
        first_token: int | None = None,
    ) -> None:
        settings.validate()
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.settings = settings
        self.result: GenerationResult | None = None
        self._context_length = context_length(model.config)
        self._prompt_ids = encode_prompt(tokenizer, prompt, self._context_length)
        self._prefix = _check_prefix(prefix, len(self._prompt_ids), settings.max_new_tokens, self._context_length)
        self._first_token = first_token
        self._end_ids = _end_of_text_ids(model, tokenizer)
        self._cancelled = threading.Event()
        self._started = False
        self._token_texts: dict[int, str] = {}

    def cancel(self) -> None:
        """Ask the stream to end before its next token; safe from any thread."""
        self._cancelled.set()

    def __iter__(self) -> Iterator[TokenEvent]:
        if self._started:
            raise RuntimeError("A TokenStream can be iterated only once; make a new one to generate again.")
        self._started = True
        return self._receive()

    def _receive(self) -> Iterator[TokenEvent]:
        """The consumer's side: events from the generation thread, then its end or its exception."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        producer = threading.Thread(target=self._produce, args=(events,), name="lmwb-generation", daemon=True)
        producer.start()
        try:
            while (item := events.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._cancelled.set()  # a no-op after the end; ends the thread when the consumer left early
            producer.join()

    def _produce(self, events: queue.SimpleQueue) -> None:
        """The generation thread: every event, then the end marker or the exception that stopped it."""
        try:
            with torch.inference_mode():
                for event in self._generate():
                    events.put(event)
            events.put(_END)
        except BaseException as error:  # noqa: BLE001 - whatever it is, the consumer must hear of it rather than wait
            events.put(error)

    def _generate(self) -> Iterator[TokenEvent]:
        """The generation loop: prefill, then one token per step until a finish reason."""
        settings = self.settings
        start = time.perf_counter()
        first_token_at = None
        token_ids = list(self._prefix)
        text_out = _TextPieces(self.tokenizer, settings.stop, self._token_text)
        pieces = [text_out.add(token_id)[0] for token_id in token_ids]  # the text they gave when written
        context_ids = self._prompt_ids + token_ids
        capacity = len(self._prompt_ids) + settings.max_new_tokens
        if self._context_length is not None:
            capacity = min(capacity, self._context_length)
        chooser = _TokenChooser(settings, context_ids, capacity, self.model.device)
        decoder = _decoder_for(self.model, capacity)
        finish_reason = None
        first_index = len(token_ids)
        for index in range(first_index, settings.max_new_tokens):
            if self._cancelled.is_set():
                finish_reason = "cancelled"
                break
            if index == first_index:
                logits = decoder.prefill(context_ids)
                token_id, probability, alternatives = chooser.choose(logits, take=self._first_token)
            else:
                token_id, probability, alternatives = chooser.choose(decoder.step(token_ids[-1]))
            token_ids.append(token_id)
            ends_text = token_id in self._end_ids
            text, stopped = ("", False) if ends_text else text_out.add(token_id)
            finish_reason = self._finish_reason(len(token_ids), ends_text, stopped)
            if finish_reason in ("eos", "length", "context"):
                tail, stopped = text_out.finish()
                text += tail
                finish_reason = "stop" if stopped else finish_reason
            pieces.append(text)
            now = time.perf_counter() - start
            if first_token_at is None:
                first_token_at = now
            yield TokenEvent(
                index,
                token_id,
                text,
                probability,
                [TokenAlternative(i, self._token_text(i), p) for i, p in alternatives],
                now,
            )
            if finish_reason is not None:
                break
        elapsed = time.perf_counter() - start
        self.result = GenerationResult(
            prompt=self.prompt,
            text="".join(pieces),
            token_ids=token_ids,
            finish_reason=finish_reason or "length",  # None only if max_new_tokens ran out first
            time_to_first_token=first_token_at if first_token_at is not None else elapsed,
            elapsed=elapsed,
            prefix_tokens=len(self._prefix),
        )

    def _finish_reason(self, generated: int, ends_text: bool, stopped: bool) -> str | None:
        """Why generation ends after this token, or None to go on."""
        if ends_text:
            return "eos"
        if stopped:
            return "stop"
        if generated == self.settings.max_new_tokens:
            return "length"
        if self._context_length is not None and len(self._prompt_ids) + generated >= self._context_length:
            return "context"  # no position left to feed this token back in
        return None

    def _token_text(self, token_id: int) -> str:
        """A token's text on its own, for the alternatives list (decoded once per stream)."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id])
        return text


def generate_text(model, tokenizer, prompt: str, settings: GenerationSettings) -> GenerationResult:
    """Generate without watching: drain a TokenStream and return its result."""
    stream = TokenStream(model, tokenizer, prompt, settings)
    for _ in stream:
        pass
    if stream.result is None:  # the stream ended without finishing: its error was raised above
        raise RuntimeError("The token stream ended without a result.")
    return stream.result


def record_generation(store: RunStore, source: str, result: GenerationResult, settings: GenerationSettings) -> int:
    """Write a finished, stopped or cancelled generation to the store's log; returns its id."""
    return store.add_generation(
        model=source,
        prompt=result.prompt,
        settings=settings.as_dict(),
        text=result.text,
        token_count=len(result.token_ids),
        tokens_per_second=result.tokens_per_second,
        finish_reason=result.finish_reason,
    )


# ---------------------------------------------------------------------------
# The prompt and the model's limits


def encode_prompt(tokenizer, prompt: str, context_length: int | None) -> list[int]:
    """The prompt's token ids; an empty prompt starts from the start (or end-of-text) token."""
    ids = list(tokenizer(prompt)["input_ids"]) if prompt else []
    if not ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise SettingsError(
                "prompt", "this model's tokenizer has no start token to begin from; write a prompt for it to continue"
            )
        ids = [start]
    if context_length is not None and len(ids) > context_length:
        raise SettingsError(
            "prompt",
            f"the prompt is {len(ids)} tokens but this model reads at most {context_length}; shorten the prompt",
        )
    return ids


def _check_prefix(prefix: Sequence[int], prompt_length: int, max_new_tokens: int, context: int | None) -> list[int]:
    """The tokens a stream goes on from, if it has room to write at least one more."""
    if len(prefix) >= max_new_tokens:
        raise SettingsError(
            "max_new_tokens",
            f"{len(prefix)} tokens are written already and max_new_tokens is {max_new_tokens}; raise it to write more",
        )
    if context is not None and prompt_length + len(prefix) >= context:
        raise SettingsError(
            "prompt", f"the prompt and the {len(prefix)} tokens written fill this model's context of {context} tokens"
        )
    return list(prefix)


def _end_of_text_ids(model, tokenizer) -> frozenset[int]:
    """The token ids that end generation, as ``model.generate`` sees them."""
    generation_config = getattr(model, "generation_config", None)
    for value in (getattr(generation_config, "eos_token_id", None), model.config.eos_token_id, tokenizer.eos_token_id):
        if value is not None:
            return frozenset([value] if isinstance(value, int) else value)
    return frozenset()


# ---------------------------------------------------------------------------
# Choosing a token


def apply_repetition_penalty(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens already in the text less likely, as Hugging Face does.

    A seen token's logit is divided by the penalty when positive and
    multiplied by it when negative, so a penalty above 1 always lowers it.
    """
    seen = logits.gather(0, previous_ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(0, previous_ids, seen)


def sampling_distribution(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens sampling may draw and their probabilities, for temperature > 0.

    Temperature divides the logits; top-k keeps the k likeliest tokens; top-p
    then keeps the fewest likeliest tokens whose probability adds up to at
    least ``top_p``; the kept tokens' probabilities are renormalised (the
    order Hugging Face applies them in). Returns ``(token_ids, probabilities)``,
    likeliest first when top-k or top-p cut the vocabulary, every token in id
    order when neither does.

    Dividing by a positive temperature keeps the logits' order, so it is done
    after the cut, on the kept logits only: the same numbers, less work.
    """
    vocab_size = logits.shape[0]
    if 0 < top_k < vocab_size:
        scores, token_ids = torch.topk(logits, top_k)
    elif top_p < 1.0:
        scores, token_ids = torch.sort(logits, descending=True)
    else:
        return torch.arange(vocab_size, device=logits.device), torch.softmax(logits / temperature, dim=0)
    scores = scores / temperature
    probabilities = torch.softmax(scores, dim=0)
    if top_p < 1.0:
        # Token i is kept when the likelier tokens before it hold less than top_p.
        kept = min(int((probabilities.cumsum(0) < top_p).sum()) + 1, token_ids.shape[0])
        scores, token_ids = scores[:kept], token_ids[:kept]
        probabilities = torch.softmax(scores, dim=0)
    return token_ids, probabilities


class _TokenChooser:
    """Picks each token from the logits and reports its probability and the likeliest alternatives.

    Greedy (temperature 0) takes the arg-max of the penalised logits, exactly
    as ``generate`` does, and reports probabilities under their softmax.
    """

    def __init__(
        self, settings: GenerationSettings, prompt_ids: Sequence[int], capacity: int, device: torch.device
    ) -> None:
        self._settings = settings
        self._alternatives = settings.alternatives
        self._greedy = settings.temperature == 0
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(settings.seed if settings.seed is not None else random.randrange(2**63))
        # Every id in the text so far, kept only when a repetition penalty needs them.
        self._seen: torch.Tensor | None = None
        if settings.repetition_penalty != 1.0:
            self._seen = torch.empty(capacity + 1, dtype=torch.long, device=device)
            self._seen[: len(prompt_ids)] = torch.tensor(prompt_ids, dtype=torch.long)
        self._seen_count = len(prompt_ids)

    def choose(self, logits: torch.Tensor, take: int | None = None) -> tuple[int, float, list[tuple[int, float]]]:
        """(token id, its probability, [(alternative id, probability), ...] likeliest first).

        ``take`` is a token to take instead of picking one (no draw is made);
        its probability is read from the same distribution: 0 if sampling
        could not have drawn it.
        """
        settings = self._settings
        scores = logits.float()
        if take is not None and not 0 <= take < scores.shape[0]:
            raise SettingsError("token", f"{take} is not a token id of this model (0 to {scores.shape[0] - 1})")
        if self._seen is not None:
            scores = apply_repetition_penalty(scores, self._seen[: self._seen_count], settings.repetition_penalty)
        if self._greedy:
            token_id = int(scores.argmax()) if take is None else take
            probabilities = torch.softmax(scores, dim=0)
            probability = float(probabilities[token_id])
            token_ids = None
        else:
            token_ids, probabilities = sampling_distribution(
                scores, settings.temperature, settings.top_k, settings.top_p
            )
            if take is None:
                drawn = int(torch.multinomial(probabilities, 1, generator=self._generator))
                token_id = int(token_ids[drawn])
                probability = float(probabilities[drawn])
            else:
                token_id = take
                probability = float(probabilities[token_ids == take].sum())
        if self._seen is not None:
            self._seen[self._seen_count] = token_id
            self._seen_count += 1
        return token_id, probability, self._likeliest(token_ids, probabilities, scores.shape[0])

    def _likeliest(
        self, token_ids: torch.Tensor | None, probabilities: torch.Tensor, vocab_size: int
    ) -> list[tuple[int, float]]:
        """The likeliest tokens: the first kept ones where a top-k or top-p cut listed them likeliest first."""
        count = min(self._alternatives, probabilities.shape[0])
        if count == 0:
            return []
        if token_ids is not None and token_ids.shape[0] < vocab_size:
            top_probabilities, ids = probabilities[:count], token_ids[:count]
        else:
            top_probabilities, positions = torch.topk(probabilities, count)
            ids = positions if token_ids is None else token_ids[positions]
        return [(i, p) for i, p in zip(ids.tolist(), top_probabilities.tolist(), strict=True) if p > 0]


# ---------------------------------------------------------------------------
# Turning tokens into text


class _IncrementalText:
    """Token ids in, text pieces out; the pieces join to ``tokenizer.decode`` of all the ids.

    Each push decodes a short window: the tokens released last time (so a
    leading space or a merge with them comes out as the full decode has it)
    plus the new ones. A window ending in U+FFFD holds an incomplete UTF-8
    character, so nothing is released until a later token completes it.
    The context's own text is decoded once, when it is released; it is
    usually one token, whose text the stream has often decoded already.
    """

    def __init__(self, tokenizer, token_text: Callable[[int], str]) -> None:
        self._decode = tokenizer.decode
        self._token_text = token_text
        self._ids: list[int] = []
        self._window_start = 0  # context tokens, already released
        self._released = 0  # tokens before this index are in the text already
        self._context = ""  # the context tokens' text

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes (may be empty)."""
        self._ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end: whatever is held back, an incomplete character included."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._released == len(self._ids):
            return ""
        text = self._decode(self._ids[self._window_start :])
        if not final and (text.endswith("\ufffd") or len(text) <= len(self._context)):
            return ""
        piece = text[len(self._context) :]
        released = self._ids[self._released :]
        self._window_start, self._released = self._released, len(self._ids)
        self._context = self._token_text(released[0]) if len(released) == 1 else self._decode(released)
        return piece


class _TextPieces:
    """The text each token releases: only complete characters, never a part of a stop string."""

    def __init__(self, tokenizer, stop: Sequence[str], token_text: Callable[[int], str]) -> None:
        self._characters = _IncrementalText(tokenizer, token_text)
        self._stop_strings = _StopStringFilter(stop)

    def add(self, token_id: int) -> tuple[str, bool]:
        """(text to show now, whether a stop string was reached)."""
        return self._stop_strings.feed(self._characters.push(token_id))

    def finish(self) -> tuple[str, bool]:
        """At the end: the held-back text, unless it completes a stop string after all."""
        tail, stopped = self._stop_strings.feed(self._characters.flush())
        return (tail, True) if stopped else (tail + self._stop_strings.flush(), False)


class _StopStringFilter:
    """Holds back text that could be the start of a stop string; spots a stop string across tokens."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(stop)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to show, whether a stop string was reached)."""
        if not self._stop:
            return text, False
        pending = self._pending + text
        found = [index for index in (pending.find(s) for s in self._stop) if index >= 0]
        if found:
            self._pending = ""
            return pending[: min(found)], True
        held = max(self._partial_match(pending, s) for s in self._stop)
        self._pending = pending[len(pending) - held :]
        return pending[: len(pending) - held], False

    def flush(self) -> str:
        """At the end without a stop string: the held-back text is ordinary text."""
        text, self._pending = self._pending, ""
        return text

    @staticmethod
    def _partial_match(text: str, stop: str) -> int:
        """Length of the longest end of ``text`` that begins ``stop``."""
        for length in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:length]):
                return length
        return 0


# ---------------------------------------------------------------------------
# Running the model one token at a time


def _decoder_for(model, capacity: int):
    """The fastest exact way to run this model: the GPT-2 road where it applies, else the general one."""
    if _GPT2Decoder.supports(model):
        return _GPT2Decoder(model, capacity)
    return _CachedForward(model)


class _CachedForward:
    """Any Hugging Face causal LM: the model's own forward and its own key/value cache."""

    def __init__(self, model) -> None:
        self._model = model
        parameters = inspect.signature(model.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache`; accept either.
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        self._cache = None

    def prefill(self, prompt_ids: list[int]) -> torch.Tensor:
        """Run the whole prompt once; return the logits for the first new token."""
        return self._forward(prompt_ids)

    def step(self, token_id: int) -> torch.Tensor:
        """Run one token against the cache; return the logits for the next."""
        return self._forward([token_id])

    def _forward(self, ids: list[int]) -> torch.Tensor:
        input_ids = torch.tensor([ids], dtype=torch.long, device=self._model.device)
        cache: dict[str, Any] = {} if self._cache is None else {self._cache_argument: self._cache}
        output = self._model(input_ids=input_ids, use_cache=True, **cache, **self._last_logits_only)
        self._cache = output.get(self._cache_argument)
        return output.logits[0, -1]


class _GPT2Decoder:
    """GPT-2 on the CPU: ``GPT2LMHeadModel``'s arithmetic without its per-module overhead.

    On a small model a step is a few dozen tiny matrix products, and the
    Python around them (module calls, cache objects, masks, output classes)
    costs as much as the arithmetic. Here each layer is the same sequence of
    torch calls on the model's own weights — layer norms, the fused QKV
    product of the Conv1D weight, ``scaled_dot_product_attention``, the
    model's own activation module — so the logits are bit-for-bit the
    model's (the tests check them, and the tokens against ``generate``).

    The QKV product of each position is written straight into a preallocated
    buffer, ``[capacity, 3, heads, head size]``; the keys and values that
    attention reads are strided views of it, so nothing is copied or
    concatenated per step. The prompt goes through the model's own forward.
    """

    @staticmethod
    def supports(model) -> bool:
        """Only plain GPT-2 in eval mode with SDPA attention on the CPU, where exactness is tested.

        A model with forward hooks (someone is watching its activations) or
        spread over devices or quantized takes the general road.
        """
        from transformers import GPT2LMHeadModel

        config = model.config
        return (
            type(model) is GPT2LMHeadModel
            and not model.training
            and model.device.type == "cpu"
            and config._attn_implementation == "sdpa"
            and not config.add_cross_attention
            and getattr(model, "hf_device_map", None) is None
            and not getattr(model, "is_quantized", False)
            and not _has_hooks(model)
        )

    def __init__(self, model, capacity: int) -> None:
        self._model = model
        transformer = model.transformer
        self._width = model.config.n_embd
        self._layers = [_GPT2Layer.of(block, capacity) for block in transformer.h]
        self._token_embedding = transformer.wte.weight
        self._position_embedding = transformer.wpe.weight
        final_norm = transformer.ln_f
        self._final_norm = (final_norm.weight, final_norm.bias, final_norm.eps)
        self._head = (model.lm_head.weight, model.lm_head.bias)
        self._position = 0

    def prefill(self, prompt_ids: list[int]) -> torch.Tensor:
        """Run the prompt through the model's forward, keep its keys and values."""
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        output = self._model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        length = len(prompt_ids)
        for layer, cached in zip(self._layers, output.cache.layers, strict=True):
            layer.keys[:, :, :length] = cached.keys
            layer.values[:, :, :length] = cached.values
        self._position = length
        return output.logits[0, -1]

    def step(self, token_id: int) -> torch.Tensor:
        """One token through every block; the logits for the next token."""
        position = self._position
        seen = position + 1
        shape = (self._width,)
        hidden = (self._token_embedding[token_id] + self._position_embedding[position]).view(1, -1)
        for (
            norm_1,
            qkv_weight,
            qkv_bias,
            qkv_rows,
            queries,
            keys,
            values,
            scale,
            out_weight,
            out_bias,
            norm_2,
            fc_weight,
            fc_bias,
            activation,
            proj_weight,
            proj_bias,
        ) in self._layers:
            x = torch.layer_norm(hidden, shape, *norm_1)
            torch.addmm(qkv_bias, x, qkv_weight, out=qkv_rows[position:seen])  # this position's q, k and v
            attended = F.scaled_dot_product_attention(
                queries[position:seen], keys[:, :, :seen], values[:, :, :seen], scale=scale
            )
            hidden = torch.addmm(out_bias, attended.view(1, -1), out_weight) + hidden
            x = activation(torch.addmm(fc_bias, torch.layer_norm(hidden, shape, *norm_2), fc_weight))
            hidden = torch.addmm(proj_bias, x, proj_weight) + hidden
        self._position = seen
        hidden = torch.layer_norm(hidden, shape, *self._final_norm)
        return F.linear(hidden, *self._head)[0]


def _has_hooks(model) -> bool:
    """Whether anything would run around a module's forward (a road of our own would skip it)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class _GPT2Layer(NamedTuple):
    """One GPT-2 block's tensors, fetched once (module attribute lookups cost more than tiny ops)."""

    norm_1: tuple
    qkv_weight: torch.Tensor  # the Conv1D weight [width, 3 * width]: q, k and v in one product
    qkv_bias: torch.Tensor
    qkv_rows: torch.Tensor  # [capacity, 3 * width]: row p is position p's q, k and v
    queries: torch.Tensor  # views of qkv_rows: [capacity, heads, 1, head size]
    keys: torch.Tensor  # [1, heads, capacity, head size]
    values: torch.Tensor  # [1, heads, capacity, head size]
    scale: float
    out_weight: torch.Tensor
    out_bias: torch.Tensor
    norm_2: tuple
    fc_weight: torch.Tensor
    fc_bias: torch.Tensor
    activation: Any  # the model's own activation module, for the same arithmetic
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor

    @classmethod
    def of(cls, block, capacity: int) -> _GPT2Layer:
        attention, mlp = block.attn, block.mlp
        weight = attention.c_attn.weight
        qkv = torch.empty(capacity, 3, attention.num_heads, attention.head_dim, dtype=weight.dtype)
        return cls(
            (block.ln_1.weight, block.ln_1.bias, block.ln_1.eps),
            weight,
            attention.c_attn.bias,
            qkv.view(capacity, -1),
            qkv[:, 0].unsqueeze(2),
            qkv[:, 1].transpose(0, 1).unsqueeze(0),
            qkv[:, 2].transpose(0, 1).unsqueeze(0),
            attention.scaling,
            attention.c_proj.weight,
            attention.c_proj.bias,
            (block.ln_2.weight, block.ln_2.bias, block.ln_2.eps),
            mlp.c_fc.weight,
            mlp.c_fc.bias,
            _exact_activation(mlp.act, weight.dtype),
            mlp.c_proj.weight,
            mlp.c_proj.bias,
        )


def _exact_activation(activation, dtype: torch.dtype):
    """The model's activation; GPT-2's own ``gelu_new`` in float32 as the same steps, dispatched faster."""
    from transformers.activations import NewGELUActivation

    if type(activation) is NewGELUActivation and dtype == torch.float32:
        return _NewGELU()
    return activation


class _NewGELU:
    """``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`` exactly as NewGELUActivation computes it.

    The same float32 operations in the same order give the same bits (the
    logits test checks it); holding the constants as float32 tensors and
    working in place spares the conversions of Python numbers and the
    temporaries, about half the activation's cost on a small model.
    """

    def __init__(self) -> None:
        self._cubic = torch.tensor(0.044715)
        self._scale = torch.tensor(math.sqrt(2.0 / math.pi))
        self._one = torch.tensor(1.0)
        self._half = torch.tensor(0.5)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        inner = torch.pow(x, 3.0).mul_(self._cubic).add_(x).mul_(self._scale).tanh_().add_(self._one)
        return x.mul(self._half).mul_(inner)
