"""Streaming speed: lm-workbench's TokenStream against Hugging Face generate + TextIteratorStreamer.

    .venv/bin/python -m bench.generation            # full run, about 2 minutes on 2 cores
    .venv/bin/python -m bench.generation --quick    # a smoke run, under a minute

See bench/README.md for what it measures, the thread setting and results.

Both sides get the same model, prompt and settings, and the same definition
of speed: generated tokens over the wall time from the prompt string to the
last piece of text, prompt processing included; time to first token is until
the consumer holds the first piece (an event for us, a queue item for HF).
The Hugging Face side is streamed the way its documentation shows: generate
in a thread, the consumer iterating a TextIteratorStreamer. The two sides
alternate within each repeat so a busy machine slows both alike. Weights are
random (speed does not depend on them); the tokenizer is a byte-level BPE
trained on the Python standard library's source, which every machine has.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    TextIteratorStreamer,
)
from transformers import (
    logging as transformers_logging,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.generation import GenerationSettings, TokenStream
from engine.model_source import SCRATCH_PRESETS

END_OF_TEXT = "<|endoftext|>"
PROMPT = "Once upon a time, in a small village by the river, there lived an old fisherman who"


@dataclass(frozen=True)
class ModelSize:
    """A model to measure: its GPT2Config sizes, how many tokens to generate and how many timed runs."""

    name: str
    config: dict
    vocab_size: int
    new_tokens: int
    repeats: int


SIZES = {
    "tiny": ModelSize("scratch:tiny", SCRATCH_PRESETS["tiny"], vocab_size=8192, new_tokens=200, repeats=5),
    "124m": ModelSize(
        "GPT-2 124M",
        {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024},
        vocab_size=50257,
        new_tokens=64,
        repeats=3,
    ),
}
DECODINGS = {
    "greedy": {"temperature": 0.0},
    "sampled": {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 1234},
}


@dataclass
class Timing:
    """One generation: how many tokens, how long, how soon the first arrived, which tokens."""

    tokens: int
    seconds: float
    first_token: float
    cpu_seconds: float  # CPU time of the whole process (all its threads) during the run
    token_ids: list[int]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_ms_per_token(self) -> float:
        return self.cpu_seconds / self.tokens * 1000


def standard_library_texts(max_characters: int = 12_000_000) -> list[str]:
    """Python source files from the standard library: real text, on every machine, no download."""
    texts, total = [], 0
    for path in sorted(Path(os.__file__).parent.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        total += len(text)
        if total >= max_characters:
            break
    return texts


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with exactly ``vocab_size`` tokens, as a scratch model or GPT-2 would have."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        standard_library_texts(),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT)
    if len(tokenizer) != vocab_size:
        raise SystemExit(f"the tokenizer learned {len(tokenizer)} tokens, not {vocab_size}")
    return tokenizer


def build_model(size: ModelSize, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of this size (the same weights every run), in eval mode."""
    torch.manual_seed(0)
    config = GPT2Config(
        **size.config,
        vocab_size=size.vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def time_token_stream(model, tokenizer, settings: GenerationSettings) -> Timing:
    """Our side: iterate a TokenStream, as the CLI and the app do."""
    cpu, start = time.process_time(), time.perf_counter()
    first_token = None
    stream = TokenStream(model, tokenizer, PROMPT, settings)
    for _ in stream:
        if first_token is None:
            first_token = time.perf_counter() - start
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Timing(len(stream.result.token_ids), seconds, first_token, cpu, stream.result.token_ids)


def time_hf_streamer(model, tokenizer, settings: GenerationSettings) -> Timing:
    """Hugging Face's side: generate in a thread, iterate its TextIteratorStreamer (the documented way)."""
    cpu, start = time.process_time(), time.perf_counter()
    first_token = None
    inputs = tokenizer(PROMPT, return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=600)  # no endless wait if it fails
    kwargs = dict(
        **inputs, streamer=streamer, max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.eos_token_id
    )
    if settings.temperature == 0:
        kwargs.update(do_sample=False)
    else:
        torch.manual_seed(settings.seed)
        kwargs.update(do_sample=True, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    outputs = []
    thread = threading.Thread(target=lambda: outputs.append(model.generate(**kwargs)))
    thread.start()
    for _ in streamer:
        if first_token is None:
            first_token = time.perf_counter() - start
    thread.join()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    token_ids = outputs[0][0, inputs["input_ids"].shape[1] :].tolist()
    return Timing(len(token_ids), seconds, first_token, cpu, token_ids)


def measure(size: ModelSize, new_tokens: int, repeats: int) -> list[dict]:
    """Both sides, every decoding, ``repeats`` alternating runs after a warm-up of each side."""
    print(f"\n{size.name}: training a {size.vocab_size}-token tokenizer, building the model…", flush=True)
    tokenizer = build_tokenizer(size.vocab_size)
    model = build_model(size, tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{size.name}: {parameters / 1e6:.1f}M parameters, {new_tokens} new tokens, {repeats} repeats", flush=True)
    warm_up = GenerationSettings(max_new_tokens=8, temperature=0.0)
    time_token_stream(model, tokenizer, warm_up)
    time_hf_streamer(model, tokenizer, warm_up)
    rows = []
    for decoding, values in DECODINGS.items():
        settings = GenerationSettings(max_new_tokens=new_tokens, **values)
        ours, theirs = [], []
        for _ in range(repeats):
            ours.append(time_token_stream(model, tokenizer, settings))
            theirs.append(time_hf_streamer(model, tokenizer, settings))
        row = {
            "size": size.name,
            "decoding": decoding,
            "ours": statistics.median(t.tokens_per_second for t in ours),
            "hf": statistics.median(t.tokens_per_second for t in theirs),
            "ours_first": statistics.median(t.first_token for t in ours),
            "hf_first": statistics.median(t.first_token for t in theirs),
            "ours_cpu": statistics.median(t.cpu_ms_per_token for t in ours),
            "hf_cpu": statistics.median(t.cpu_ms_per_token for t in theirs),
        }
        if decoding == "greedy":
            row["identical"] = ours[0].token_ids == theirs[0].token_ids
            row["compared"] = len(theirs[0].token_ids)
        rows.append(row)
        each = ", ".join(
            f"{a.tokens_per_second:.0f}/{b.tokens_per_second:.0f} = {a.tokens_per_second / b.tokens_per_second:.2f}x"
            for a, b in zip(ours, theirs, strict=True)
        )
        print(
            f"  {decoding}: ours {row['ours']:.1f} tok/s, HF {row['hf']:.1f} tok/s; each repeat ours/HF: {each}",
            flush=True,
        )
    return rows


def print_table(rows: list[dict], targets: dict[str, float]) -> None:
    """The medians side by side, the ratio against the issue's target, and the greedy identity check."""
    print()
    print(
        f"{'model':<13} {'decoding':<8} {'ours tok/s':>10} {'HF tok/s':>9} {'ratio':>6} {'target':>7}"
        f" {'ours TTFT':>10} {'HF TTFT':>9} {'CPU ms/tok ours':>16} {'HF':>6}"
    )
    for row in rows:
        ratio = row["ours"] / row["hf"]
        target = targets[row["size"]]
        mark = "met" if ratio >= target else "MISSED"
        print(
            f"{row['size']:<13} {row['decoding']:<8} {row['ours']:>10.1f} {row['hf']:>9.1f} {ratio:>5.2f}x"
            f" {f'{target:.2f}x':>7} {row['ours_first'] * 1000:>8.1f}ms {row['hf_first'] * 1000:>7.1f}ms"
            f" {row['ours_cpu']:>16.2f} {row['hf_cpu']:>6.2f}  {mark}"
        )
    print()
    for row in rows:
        if "identical" in row:
            verdict = "identical" if row["identical"] else "DIFFERENT"
            print(f"{row['size']}: greedy tokens vs generate ({row['compared']} tokens): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,124m", help="comma-separated: tiny, 124m (default: both)")
    parser.add_argument("--repeats", type=int, help="timed runs per side and decoding (default: 5 tiny, 3 124M)")
    parser.add_argument("--new-tokens", type=int, help="tokens per generation (default: 200 tiny, 64 124M)")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 32 new tokens: a smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, for both sides (default 1; 0: torch's choice); see bench/README.md",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    sizes = [SIZES[name.strip()] for name in args.sizes.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
        "speed = generated tokens / wall time from prompt to last text, medians over the repeats"
    )
    rows = []
    for size in sizes:
        new_tokens = 32 if args.quick else (args.new_tokens or size.new_tokens)
        repeats = 1 if args.quick else (args.repeats or size.repeats)
        rows += measure(size, new_tokens, repeats)
    print_table(rows, {"scratch:tiny": 2.0, "GPT-2 124M": 1.05})
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes slow both sides alike)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
