"""Scoring and logit-lens speed at GPT-2 124M: `lmwb score` on 1,000 tokens, the lens at one position.

    .venv/bin/python -m bench.inspection                # 5 repeats, 1 thread
    .venv/bin/python -m bench.inspection --threads 2 --repeats 3
    .venv/bin/python -m bench.inspection --quick        # 1 repeat of each

See bench/README.md for what it measures and the results.

The model is GPT-2 124M as ``GPT2Config()`` builds it (12 layers, 12 heads,
768 wide, vocabulary 50257, 1024 positions) with random weights: speed does
not depend on them. Its tokenizer is a byte-level BPE trained on the bundled
fables (only the token ids matter, and every id it makes is one of GPT-2's).
Both are saved with ``save_pretrained`` and loaded back through the engine's
``load_model`` on the CPU, as ``lmwb score --model DIR`` loads them; the
times below start after that load, as the targets do. The text is the start
of the fables, cut to ``--tokens`` tokens.

Timed, each ``--repeats`` times after one warm-up, every run printed (wall
time, and the process's CPU time beside it), then the median of the wall
times:

- **score**: ``score_text`` over the whole text (one forward pass, every
  token's logprob, rank and entropy): what ``lmwb score`` computes;
- **lens**: ``logit_lens`` at the place after the text (the hidden state of
  the last token: the body reads all of the text): what ``lmwb lens`` computes;
- **lens at 100**: the same at token 100's place (the body reads 100 tokens);
- **lens from a score**: ``logit_lens`` given a score made with
  ``keep_states``: no forward pass, as the Inspect screen reads it when the
  selection moves;
- **body's matrix products**: only the matrix products of the model's
  blocks over the whole text (random activations of the right shapes, the
  model's own weights), in the same run: the floor under any float32 forward
  pass of the body on this CPU, so under a fresh lens after the text.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.inspection import logit_lens, score_text
from engine.models import END_OF_TEXT, load_model

FABLES = Path(__file__).resolve().parent.parent / "sample_texts" / "fables.txt"
TARGETS = {"score": 3.0, "lens": 1.0}  # seconds, from issue 16


def build_model_directory(directory: Path) -> None:
    """GPT-2 124M with random weights and a fables BPE tokenizer, saved as a Hugging Face model directory."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        FABLES.read_text(encoding="utf-8").splitlines(),
        vocab_size=8192,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT)
    torch.manual_seed(0)
    config = GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def text_of(tokenizer, tokens: int) -> str:
    """The start of the fables, cut to ``tokens`` tokens."""
    ids = tokenizer(FABLES.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def body_matrix_products(model: GPT2LMHeadModel, tokens: int) -> Callable[[], None]:
    """A call doing only the matrix products of the model's blocks over ``tokens`` positions.

    GPT-2's Conv1D weights are stored [in, out], so activations multiply them
    as they are. Attention, GELU and the layer norms are left out: this is
    the part of a forward pass no implementation can skip.
    """
    width = model.config.n_embd
    x, inner = torch.randn(tokens, width), torch.randn(tokens, model.config.n_inner or 4 * width)
    weights = [
        (block.attn.c_attn.weight, block.attn.c_proj.weight, block.mlp.c_fc.weight, block.mlp.c_proj.weight)
        for block in model.transformer.h
    ]

    def products() -> None:
        with torch.inference_mode():
            for qkv, projection, up, down in weights:
                x @ qkv, x @ projection, x @ up, inner @ down

    return products


def timed(name: str, call: Callable[[], object], repeats: int) -> float:
    """Run ``call`` once to warm up, then ``repeats`` times; print every run and the median; return the median.

    Each run's process CPU time is printed beside its wall time: on a shared
    machine the gap between them is time spent waiting for a core.
    """
    call()
    seconds = []
    for repeat in range(1, repeats + 1):
        cpu, start = time.process_time(), time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
        print(f"  {name}: run {repeat}: {seconds[-1]:.3f} s ({time.process_time() - cpu:.3f} s of CPU)", flush=True)
    median = statistics.median(seconds)
    print(f"  {name}: median {median:.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f})", flush=True)
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000, help="tokens of text to score (default: 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1; see README)")
    parser.add_argument("--quick", action="store_true", help="1 repeat of each: a smoke run")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="lmwb-bench-inspection-") as directory:
        print("Building GPT-2 124M (random weights) and a tokenizer…", flush=True)
        build_model_directory(Path(directory))
        loaded = load_model(directory, device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    text = text_of(tokenizer, args.tokens)
    score = score_text(model, tokenizer, text, keep_states=True)
    print(
        f"GPT-2 124M ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters), "
        f"{len(score.tokens)} tokens, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    medians = {
        "score": timed("score", lambda: score_text(model, tokenizer, text), repeats),
        "lens": timed("lens", lambda: logit_lens(model, tokenizer, text, -1), repeats),
        "lens at 100": timed("lens at 100", lambda: logit_lens(model, tokenizer, text, 100), repeats),
        "lens from a score": timed(
            "lens from a score", lambda: logit_lens(model, tokenizer, text, -1, score=score), repeats
        ),
        "body's matrix products": timed(
            "body's matrix products", body_matrix_products(model, len(score.tokens)), repeats
        ),
    }
    print(f"\nmedians (load average now {os.getloadavg()[0]:.1f}):")
    for name, median in medians.items():
        target = TARGETS.get(name.split()[0])
        verdict = "" if target is None else f"  (target ≤ {target:g} s: {'met' if median <= target else 'NOT met'})"
        print(f"  {name:<22} {median:7.3f} s{verdict}")
    floor = medians["body's matrix products"]
    print(
        f"  a fresh lens after the text takes {medians['lens'] / floor:.2f}x the body's matrix products alone, "
        f"which no float32 forward pass can beat: at least {floor:.2f} s here"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
