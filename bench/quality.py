"""How good a model `lmwb train --max-time T` makes, against nanoGPT's recipe given the same T.

Issue 14 asks the workbench to get the most model out of a time budget. This
bench measures that on text that is in no bundled dataset: Python's own
`pydoc_data.topics` (about 460 KB of English technical prose, on every
Python install). In each repeat it trains, one after the other:

(a) the reference: a character-level GPT-2 (transformers' GPT2LMHeadModel)
    with nanoGPT's published CPU recipe for shakespeare_char (4 layers,
    4 heads, 128 wide, context 64, batch 12, learning rate 1e-3 after 100
    warmup steps with cosine decay to 1e-4 at 2,000 iterations, AdamW with
    betas (0.9, 0.99) and weight decay 0.1 on matrices and embeddings, grad
    clip 1.0, no dropout), in a plain PyTorch loop written out below. Its
    training wall time T is measured (the final evaluation is not in it);
(b) ours: `lmwb train --model scratch:<preset> --dataset <file> --max-time T`,
    the real command in a process of its own, with the workbench's defaults.

The corpus is split once, by bytes: the first 90% is the training text of
both, the last 10% is held out, and both models are scored on it by the same
code here, as validation bits per byte (the sum of next-token negative
log-likelihoods in nats over the held-out text, divided by ln 2 times its
UTF-8 bytes), which does not depend on the tokenizer as long as every
held-out byte is predicted exactly once. Target: ours / reference <= 0.80.

    .venv/bin/python -m bench.quality                  # 3 repeats, about 30 minutes on one CPU thread
    .venv/bin/python -m bench.quality --quick          # reference 200 iterations, 1 repeat: 1-2 minutes
    .venv/bin/python -m bench.quality --repeats 0 --check-bundled   # only the bundled datasets' check

With --check-bundled it also runs `lmwb train --model scratch:<preset>
--dataset <name> --max-time <--bundled-seconds>` on each bundled dataset and
reports the run's status and validation loss, to see that the defaults give a
sensible run on each. Runs go to a temporary LMWB_HOME, never your workbench.
See bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from engine.datasets import bundled_datasets  # noqa: E402 - needs the repository on the path
from engine.models import quiet_transformers  # noqa: E402
from engine.store import RunStore  # noqa: E402

TRAIN_FRACTION = 0.9  # the first 90% of the corpus's bytes train both models; the rest is held out
TARGET_RATIO = 0.80  # ours / reference, in held-out bits per byte


@dataclass(frozen=True)
class Recipe:
    """nanoGPT's shakespeare_char recipe as its README runs it on a CPU (config/train_shakespeare_char.py)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    max_iters: int = 2000  # and lr_decay_iters: the cosine reaches min_lr at the last iteration
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0


QUICK_RECIPE = replace(Recipe(), max_iters=200, warmup_iters=10)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", default="nano", help="our model: scratch:<preset> (default nano, what the plan advises here)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="reference + ours pairs, seeds --seed, --seed+1, ...")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the first repeat (both models)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both (OMP_NUM_THREADS for ours); default 1, steadier on shared cores",
    )
    parser.add_argument(
        "--device", default="cpu", help="device of both (default cpu: the reference recipe is nanoGPT's CPU one)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: reference 200 iterations, 1 repeat")
    parser.add_argument("--check-bundled", action="store_true", help="also train ours on each bundled dataset")
    parser.add_argument("--bundled-seconds", type=float, default=60, help="--max-time of each bundled run")
    parser.add_argument("--home", type=Path, help="LMWB_HOME for our runs (default: a temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 1)
    return args


# -----------------------------------------------------------------------------
# The corpus, split once by bytes


def load_corpus() -> str:
    """Python's pydoc topics: the help text of every statement, operator and type, in English prose."""
    from pydoc_data.topics import topics

    return "\n".join(topics.values())


def split_by_bytes(text: str, fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """(first part, held-out rest): cut at ``fraction`` of the UTF-8 bytes, moved back to a line start.

    Moving the cut to the start of a line keeps it out of the middle of a
    character (and a word); the held-out text is the continuation of the
    training text.
    """
    data = text.encode()
    cut = data.rfind(b"\n", 0, round(len(data) * fraction)) + 1
    return data[:cut].decode(), data[cut:].decode()


# -----------------------------------------------------------------------------
# Scoring: bits per byte of the held-out text, the same code for both models


@torch.no_grad()
def held_out_nats(model, context_ids: list[int], target_ids: list[int], window: int, batch_size: int = 32) -> float:
    """Sum of -log p(token | the tokens before it), in nats, over every token of ``target_ids``, each once.

    The tokens are scored in windows of ``window`` tokens (the context the
    model trained on), sliding by half a window: each window scores only its
    last ``window // 2`` targets, so every target is predicted exactly once,
    with at least half a window of context. ``context_ids`` are the tokens
    just before the held-out text (the end of the training text, which it
    continues), so even the first held-out token has a full context.
    """
    if len(context_ids) < window:
        raise ValueError(f"need {window} context tokens before the held-out text, got {len(context_ids)}")
    ids = torch.tensor(context_ids[-window:] + target_ids, dtype=torch.long)
    first, end, stride = window, window + len(target_ids), window // 2
    spans = [(start, min(start + stride, end)) for start in range(first, end, stride)]
    device = next(model.parameters()).device
    model.eval()
    total = 0.0
    for i in range(0, len(spans), batch_size):
        batch = spans[i : i + batch_size]
        # The window whose last target is token `stop - 1`: inputs are the `window` tokens before each target.
        x = torch.stack([ids[stop - 1 - window : stop - 1] for _, stop in batch]).to(device)
        y = torch.stack([ids[stop - window : stop] for _, stop in batch]).to(device)
        logits = model(input_ids=x, use_cache=False).logits.float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none").view(y.shape)
        for row, (start, stop) in enumerate(batch):
            total += nll[row, window - (stop - start) :].sum().item()
    return total


def bits_per_byte(nats: float, text: str) -> float:
    """Nats over a text in bits per UTF-8 byte of it: comparable across tokenizers."""
    return nats / (math.log(2) * len(text.encode()))


# -----------------------------------------------------------------------------
# (a) The reference: nanoGPT's recipe, character level, in a plain loop


def reference_lr(it: int, recipe: Recipe) -> float:
    """nanoGPT's get_lr: linear warmup, then cosine decay to min_lr at max_iters."""
    if it < recipe.warmup_iters:
        return recipe.learning_rate * (it + 1) / (recipe.warmup_iters + 1)
    if it > recipe.max_iters:
        return recipe.min_lr
    decay_ratio = (it - recipe.warmup_iters) / (recipe.max_iters - recipe.warmup_iters)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return recipe.min_lr + coefficient * (recipe.learning_rate - recipe.min_lr)


def train_reference(
    train_ids: torch.Tensor, vocab_size: int, recipe: Recipe, seed: int, device: str
) -> tuple[GPT2LMHeadModel, float]:
    """Train the character-level GPT-2; return it and its training wall time in seconds."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=recipe.block_size,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config).to(device)
    # As nanoGPT: weight decay on matrices and embeddings, none on biases and LayerNorm gains.
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": recipe.weight_decay},
            {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=recipe.learning_rate,
        betas=(recipe.beta1, recipe.beta2),
    )
    batches = torch.Generator().manual_seed(seed)
    log_every = max(1, recipe.max_iters // 8)
    model.train()
    start = time.perf_counter()
    for it in range(recipe.max_iters):
        for group in optimizer.param_groups:
            group["lr"] = reference_lr(it, recipe)
        # nanoGPT's get_batch: random windows of the training text.
        starts = torch.randint(len(train_ids) - recipe.block_size, (recipe.batch_size,), generator=batches)
        x = torch.stack([train_ids[i : i + recipe.block_size] for i in starts]).to(device)
        y = torch.stack([train_ids[i + 1 : i + 1 + recipe.block_size] for i in starts]).to(device)
        logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if it % log_every == 0 or it == recipe.max_iters - 1:
            print(f"    reference iter {it:>5}: train loss {loss.item():.3f}, {time.perf_counter() - start:6.1f} s")
    return model, time.perf_counter() - start


def reference_bits_per_byte(
    train_text: str, held_out: str, recipe: Recipe, seed: int, device: str
) -> tuple[float, float]:
    """Train the reference and score it: (held-out bits per byte, training seconds)."""
    # nanoGPT's prepare.py: the characters of the whole corpus, so every held-out character has an id.
    characters = sorted(set(train_text + held_out))
    index = {character: i for i, character in enumerate(characters)}
    train_ids = torch.tensor([index[c] for c in train_text], dtype=torch.long)
    model, seconds = train_reference(train_ids, len(characters), recipe, seed, device)
    target_ids = [index[c] for c in held_out]
    nats = held_out_nats(model, train_ids[-recipe.block_size :].tolist(), target_ids, recipe.block_size)
    return bits_per_byte(nats, held_out), seconds


# -----------------------------------------------------------------------------
# (b) Ours: the real `lmwb train`, then its final checkpoint scored here


@dataclass
class OursRun:
    """One `lmwb train` run as the bench saw it."""

    run_id: str
    status: str
    steps: int
    training_seconds: float  # the run's own clock: training, its evaluations, samples and checkpoints
    process_seconds: float  # the whole command: start-up, tokenizer, tokenizing, training, final checkpoint
    block_size: int
    checkpoint: str
    val_losses: list[float]  # the run's own evaluations on its validation split, in order
    val_bpb: float | None  # the last of them in bits per byte
    plan: str  # the command's first "Plan:" line (what it picked for a run planned on time), or ""


def lmwb_train(home: Path, flags: list[str], threads: int, timeout: float) -> OursRun:
    """Run `lmwb train FLAGS` in a process of its own on ``home``; what the store then says of the run.

    Only the threads and the home go in through the environment; the flags are
    the caller's. Raises RuntimeError with the command's output if it fails.
    """
    store = RunStore(home / "workbench.db")
    before = {run.id for run in store.list_runs()}
    env = {**os.environ, "LMWB_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "tui.cli", "train", *flags]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"lmwb train did not end within {timeout:.0f} s") from exc
    process_seconds = time.perf_counter() - start
    new = [run for run in store.list_runs() if run.id not in before]
    if done.returncode != 0 or len(new) != 1:
        raise RuntimeError(f"lmwb train exited {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
    run = new[0]
    metrics = store.metrics(run.id)
    evaluations = [row for row in metrics if row["val_loss"] is not None]
    return OursRun(
        run_id=run.id,
        status=run.status,
        steps=run.steps,
        training_seconds=metrics[-1]["elapsed"] if metrics else 0.0,
        process_seconds=process_seconds,
        block_size=run.config["block_size"],
        checkpoint=store.checkpoints(run.id)[-1]["path"],
        val_losses=[row["val_loss"] for row in evaluations],
        val_bpb=evaluations[-1]["val_bpb"] if evaluations else None,
        plan=next((line for line in done.stdout.splitlines() if line.startswith("Plan:")), ""),
    )


def ours_bits_per_byte(run: OursRun, train_text: str, held_out: str, device: str) -> float:
    """Load the run's final checkpoint as any Hugging Face model and score the held-out text."""
    model = AutoModelForCausalLM.from_pretrained(run.checkpoint).to(device)
    tokenizer = AutoTokenizer.from_pretrained(run.checkpoint)
    target_ids = tokenizer.encode(held_out, add_special_tokens=False)
    if tokenizer.decode(target_ids) != held_out:
        raise RuntimeError("the tokenizer does not give the held-out text back, so bytes would be miscounted")
    # The tokens just before the held-out text; tokenized apart from it, so its own tokens are untouched.
    context_ids = tokenizer.encode(train_text[-16 * run.block_size :], add_special_tokens=False)
    nats = held_out_nats(model, context_ids, target_ids, run.block_size)
    return bits_per_byte(nats, held_out)


# -----------------------------------------------------------------------------
# The comparison, and the bundled datasets' check


def compare(args, home: Path, recipe: Recipe) -> list[float]:
    """Reference then ours, --repeats times; print every repeat; return the ratios of the repeats that ran."""
    corpus = load_corpus()
    train_text, held_out = split_by_bytes(corpus)
    dataset = home / "pydoc-topics-train.txt"
    dataset.write_text(train_text, encoding="utf-8")
    print(
        f"Corpus: pydoc_data.topics of Python {platform.python_version()}, {len(corpus.encode()):,} bytes; "
        f"training text {len(train_text.encode()):,} bytes, held out {len(held_out.encode()):,} bytes "
        f"(the last {1 - TRAIN_FRACTION:.0%})."
    )
    print(
        f"Reference: character-level GPT-2, nanoGPT's CPU recipe, {recipe.max_iters} iterations "
        f"(warmup {recipe.warmup_iters}), scored in windows of {recipe.block_size} characters."
    )
    print(f"Ours: lmwb train --model scratch:{args.preset} --dataset {dataset.name} --max-time <reference's seconds>")
    rows = []
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        print(f"\nRepeat {repeat + 1} (seed {seed}), load average {load_average()}", flush=True)
        reference_bpb, reference_seconds = reference_bits_per_byte(train_text, held_out, recipe, seed, args.device)
        print(f"  reference: {reference_bpb:.4f} bits per byte, {reference_seconds:.1f} s of training", flush=True)
        flags = [
            *("--model", f"scratch:{args.preset}"),
            *("--dataset", str(dataset)),
            *("--max-time", f"{reference_seconds:.1f}"),
            # Fair-bench flags only: the same seed as the reference, and the same device.
            *("--seed", str(seed)),
            *("--device", args.device),
        ]
        try:
            ours = lmwb_train(home, flags, args.threads, timeout=2 * reference_seconds + 600)
            ours_bpb = ours_bits_per_byte(ours, train_text, held_out, args.device)
        except RuntimeError as exc:
            print(f"  ours: FAILED: {exc}", flush=True)
            continue
        ratio = ours_bpb / reference_bpb
        print(
            f"  ours: run {ours.run_id} {ours.status} at step {ours.steps}, {ours.training_seconds:.1f} s of "
            f"training ({ours.process_seconds:.1f} s for the whole command), block {ours.block_size}; "
            f"{ours_bpb:.4f} bits per byte",
            flush=True,
        )
        if ours.plan:
            print(f"    {ours.plan}", flush=True)
        rows.append((repeat + 1, seed, reference_bpb, reference_seconds, ours_bpb, ours.training_seconds, ratio))

    print(f"\nHeld-out bits per byte, load average {load_average()}:")
    print(f"  {'repeat':>6} {'seed':>6} {'reference bpb':>14} {'ref s':>7} {'ours bpb':>9} {'ours s':>7} {'ratio':>6}")
    for repeat, seed, reference_bpb, reference_seconds, ours_bpb, ours_seconds, ratio in rows:
        print(
            f"  {repeat:>6} {seed:>6} {reference_bpb:>14.4f} {reference_seconds:>7.1f} "
            f"{ours_bpb:>9.4f} {ours_seconds:>7.1f} {ratio:>6.3f}"
        )
    ratios = [row[-1] for row in rows]
    if ratios:
        print(
            f"  median ratio ours / reference: {statistics.median(ratios):.3f} "
            f"(all: {', '.join(f'{r:.3f}' for r in ratios)})"
        )
    print(f"  target: ours / reference <= {TARGET_RATIO:.2f}")
    return ratios


def check_bundled(args, home: Path) -> bool:
    """Train ours on each bundled dataset for --bundled-seconds; print how each run went; False if one failed."""
    print(
        f"\nBundled datasets: lmwb train --model scratch:{args.preset} --dataset <name> "
        f"--max-time {args.bundled_seconds:g} (load average {load_average()})"
    )
    ok = True
    for dataset in bundled_datasets():
        flags = [
            *("--model", f"scratch:{args.preset}"),
            *("--dataset", dataset.name),
            *("--max-time", f"{args.bundled_seconds:g}"),
            *("--seed", str(args.seed)),
            *("--device", args.device),
        ]
        try:
            run = lmwb_train(home, flags, args.threads, timeout=2 * args.bundled_seconds + 600)
        except RuntimeError as exc:
            print(f"  {dataset.name:<10} FAILED: {exc}")
            ok = False
            continue
        losses = " -> ".join(f"{loss:.3f}" for loss in run.val_losses) or "none"
        falling = len(run.val_losses) >= 2 and run.val_losses[-1] < run.val_losses[0]
        sensible = run.status in ("completed", "stopped") and falling and math.isfinite(run.val_losses[-1])
        ok = ok and sensible
        bpb = f"{run.val_bpb:.3f}" if run.val_bpb is not None else "-"
        print(
            f"  {dataset.name:<10} {run.status} at step {run.steps}, {run.training_seconds:.0f} s of training; "
            f"val loss {losses}; final val bits per byte {bpb} (its own validation split); "
            f"{'sensible' if sensible else 'NOT SENSIBLE'}",
            flush=True,
        )
        if run.plan:
            print(f"    {run.plan}", flush=True)
    return ok


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet_transformers()
    recipe = QUICK_RECIPE if args.quick else Recipe()
    print(
        f"Quality bench, {datetime.now():%Y-%m-%d %H:%M}: {cpu_name()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {args.threads} thread(s), device {args.device}, load average {load_average()}"
    )
    with tempfile.TemporaryDirectory(prefix="lmwb-quality-") as scratch:
        home = args.home or Path(scratch)
        home.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        ratios = compare(args, home, recipe) if args.repeats > 0 else []
        bundled_ok = check_bundled(args, home) if args.check_bundled else True
        print(f"\nBench took {(time.perf_counter() - started) / 60:.1f} minutes.")
    failed = len(ratios) < args.repeats or not bundled_ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
