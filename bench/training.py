"""How fast the engine trains, and how far a scratch model gets in minutes.

1. Throughput. On the same model, batch and data, the engine's training loop
   (a real TrainingJob: store writes on, evaluation and samples off) against
   a bare PyTorch loop (forward, backward, AdamW step, nothing else). Each is
   timed over the same steps after a warm-up, the two alternate (taking turns
   to go first) over several repeats, and the medians are compared. Target: engine / bare >= 0.97.
   Two clocks: wall time, and this process's CPU time. On a machine whose
   cores are shared with other work, wall time mostly measures the others;
   CPU time (with --threads 1) measures the work each loop does.
2. Compute. Achieved FLOP/s, estimated as 6 * N * tokens/s (N = parameters
   without the position embeddings; attention's own FLOPs are left out, so
   this slightly under-counts), against a measured peak: a large torch.matmul
   timed on the same device and precision.
3. With --bpb (about 7 more minutes): scratch:tiny trained on a bundled
   dataset, its validation bits per byte after 2 and after 5 minutes of
   training (a run stopped by --max-time at 2 minutes, then resumed for 3).
4. With --probes (instead of 1-3): what probe prompts cost a run. The same
   seeded TrainingJob with and without four probe prompts (default probe
   length and evaluation interval, so the timed steps hold two evaluations,
   each completing the four prompts), the two alternating over the repeats;
   every repeat's time and the median ratio with / without (target <= 1.05).
   Each run's loss must fall, and the two runs' losses must be the same.
   Then the finer figure: the probes alone, timed back to back on the
   trained weights, as a share of the time between two evaluations, three
   ways (the trainer's batch; one prompt at a time; the engine's TokenStream).

    .venv/bin/python bench/training.py            # 1 and 2, a few minutes on a laptop CPU
    .venv/bin/python bench/training.py --bpb      # 1, 2 and 3
    .venv/bin/python bench/training.py --probes   # 4 alone, 10-20 minutes on one CPU thread

Runs go to a temporary LMWB_HOME (not your workbench) unless --home is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="scratch:tiny", help="model source (default scratch:tiny)")
    parser.add_argument("--dataset", default="fables", help="bundled name, file or folder (default fables)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a machine whose cores are shared",
    )
    parser.add_argument("--bpb", action="store_true", help="also train scratch:tiny for 2 + 3 minutes")
    parser.add_argument(
        "--probes", action="store_true", help="only measure what four probe prompts cost a run (instead of the rest)"
    )
    parser.add_argument("--home", help="LMWB_HOME for the runs (default: a temporary directory)")
    return parser.parse_args()


# -----------------------------------------------------------------------------
# The two loops


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds)."""
    return time.perf_counter(), time.process_time()


def tokens_per_second(args, start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """Tokens/s of the timed steps by wall time and by CPU time."""
    tokens = args.steps * args.batch_size * args.block_size
    return tokens / (end[0] - start[0]), tokens / (end[1] - start[1])


def engine_tokens_per_second(args, store) -> tuple[float, float]:
    """One TrainingJob run; tokens/s over the timed steps, measured from outside the loop."""
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    # One step past the timed ones, so the final checkpoint is not timed.
    config = TrainingConfig(
        model=args.model,
        dataset=args.dataset,
        max_steps=args.warmup + args.steps + 1,
        batch_size=args.batch_size,
        block_size=args.block_size,
        warmup_steps=0,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        device=args.device,
        seed=1337,
    )
    marks: dict[int, tuple[float, float]] = {}

    def mark(progress) -> None:
        if progress.step in (args.warmup, args.warmup + args.steps) and progress.step not in marks:
            marks[progress.step] = clocks()

    TrainingJob(config, store, on_progress=mark).run()
    return tokens_per_second(args, marks[args.warmup], marks[args.warmup + args.steps])


def bare_tokens_per_second(args, store) -> tuple[float, float]:
    """The same model, data and batches, trained by the plainest loop PyTorch allows."""
    import torch
    import torch.nn.functional as F

    from engine.checkpoints import seed_everything
    from engine.datasets import WindowSampler, open_dataset, tokenize_dataset
    from engine.evaluation import VALIDATION_FRACTION
    from engine.models import load_model
    from engine.precision import autocast_context, resolve_precision

    dataset = open_dataset(args.dataset)
    seed_everything(1337)
    loaded = load_model(args.model, device=args.device, dataset=dataset, store=store)
    model, device = loaded.model, loaded.device
    precision = resolve_precision("auto", device)
    train_split, _ = tokenize_dataset(dataset, loaded.tokenizer).split(VALIDATION_FRACTION)
    sampler = WindowSampler(train_split, args.block_size, args.batch_size, seed=1337)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True if device.type == "cuda" else None
    )
    model.train()

    def step() -> None:
        x, y = (t.to(device) for t in sampler.next_batch())
        with autocast_context(device, precision):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    synchronize(device)
    start = clocks()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return tokens_per_second(args, start, clocks())


# -----------------------------------------------------------------------------
# Compute: achieved against a measured matmul peak


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device, precision: str) -> tuple[list[float], int]:
    """FLOP/s of a large square matmul, by wall clock and by CPU time (the fastest of 10 each).

    The practical ceiling for this device and precision; the CPU-time figure
    is the one to compare CPU-time throughput with (on one thread it is the
    core's own speed, whatever else the machine is doing).
    """
    import torch

    size = 8192 if device.type == "cuda" else 2048
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        synchronize(device)
        start = clocks()
        a @ b
        synchronize(device)
        end = clocks()
        times.append((end[0] - start[0], end[1] - start[1]))
    return [2 * size**3 / min(t[clock] for t in times) for clock in (0, 1)], size


def model_parameters(args, store) -> tuple[int, str, str]:
    """(parameters without position embeddings, device, precision) of the benchmarked model."""
    from engine.datasets import open_dataset
    from engine.models import load_model
    from engine.precision import resolve_precision

    loaded = load_model(args.model, device=args.device, dataset=open_dataset(args.dataset), store=store)
    total = sum(p.numel() for p in loaded.model.parameters())
    positions = loaded.model.get_input_embeddings().weight.shape[1] * loaded.info().context_length
    return total - positions, loaded.device, resolve_precision("auto", loaded.device)


# -----------------------------------------------------------------------------
# Bits per byte after 2 and 5 minutes


def bits_per_byte_after_minutes(args, store) -> None:
    """scratch:tiny on the dataset: 2 minutes, stop, resume for 3 more; val bpb at each stop.

    The time limit ends each session, so the recipe does not depend on the
    machine's speed: 20 warmup steps, then a constant learning rate (min =
    peak), and evaluation only where the time runs out.
    """
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    config = TrainingConfig(
        model="scratch:tiny",
        dataset=args.dataset,
        max_steps=1_000_000,
        max_time=120,
        batch_size=16,
        block_size=128,
        learning_rate=1e-3,
        min_learning_rate=1e-3,
        warmup_steps=20,
        eval_every=1_000_000,
        eval_batches=20,
        sample_every=0,
        checkpoint_every=0,
        device=args.device,
    )
    print(
        f"\nscratch:tiny on {args.dataset}: batch 16 x block 128, learning rate 1e-3 after 20 warmup steps; "
        "2 minutes, then resumed for 3 more"
    )
    run = TrainingJob(config, store).run()
    report_bpb(store, run, "after 2 minutes")
    config.max_time = 180
    run = TrainingJob(config, store, resume_run=run.id).run()
    report_bpb(store, run, "after 5 minutes")


def report_bpb(store, run, when: str) -> None:
    last = [row for row in store.metrics(run.id) if row["val_bpb"] is not None][-1]
    print(
        f"  {when} ({run.status}): step {last['step']}, {last['tokens']:,} tokens, {last['elapsed']:.0f} s of "
        f"training, val loss {last['val_loss']:.3f}, val bits per byte {last['val_bpb']:.3f}"
    )


# -----------------------------------------------------------------------------
# What probe prompts cost


PROBES = ["Once upon a time", "The fox said to the crow,", "Moral:", "A heavy badger made its home"]


def timed_run(args, store, probes: list[str]) -> tuple[tuple[float, float], str]:
    """One seeded run at the default evaluation interval: (wall, CPU) seconds of its timed steps, its id.

    Timed from step --warmup to step 2 * eval_every, so two evaluations fall inside; one step more keeps
    the final checkpoint out.
    """
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    defaults = TrainingConfig(model=args.model, dataset=args.dataset)
    last = 2 * defaults.eval_every
    config = dataclasses.replace(
        defaults, max_steps=last + 1, sample_every=0, checkpoint_every=0, probes=probes, device=args.device
    )
    marks: dict[int, tuple[float, float]] = {}

    def mark(progress) -> None:
        if progress.step in (args.warmup, last) and progress.step not in marks:
            marks[progress.step] = clocks()

    run = TrainingJob(config, store, on_progress=mark).run()
    start, end = marks[args.warmup], marks[last]
    return (end[0] - start[0], end[1] - start[1]), run.id


def probe_decodings(args, store, run_id: str, new_tokens: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of one evaluation's probes on the run's final weights, three ways (medians of 10).

    The trainer's way (engine.probes: the prompts in one left-padded batch through generate), the same
    one prompt at a time, and one prompt at a time through the engine's TokenStream (greedy; its own
    GPT-2 decoder on the CPU). All three write the same text, which is checked.
    """
    from engine.generation import GenerationSettings, generate_text
    from engine.models import load_model
    from engine.probes import complete_probes

    loaded = load_model(f"run:{run_id}", device=args.device, store=store)
    model, tokenizer = loaded.model, loaded.tokenizer
    greedy = GenerationSettings(max_new_tokens=new_tokens, temperature=0, alternatives=0)
    ways = {
        "batched (the trainer's)": lambda: complete_probes(model, tokenizer, PROBES, new_tokens),
        "one prompt at a time": lambda: {p: complete_probes(model, tokenizer, [p], new_tokens)[p] for p in PROBES},
        "one at a time, TokenStream": lambda: {p: generate_text(model, tokenizer, p, greedy).text for p in PROBES},
    }
    texts = {name: way() for name, way in ways.items()}  # and a warm-up
    if len({tuple(text.values()) for text in texts.values()}) != 1:
        raise SystemExit(f"the three ways wrote different texts: {texts}")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(10):
        for name, way in ways.items():  # taking turns, so the machine's drift hits all three alike
            start = clocks()
            way()
            end = clocks()
            times[name].append((end[0] - start[0], end[1] - start[1]))
    return {
        name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for name, runs in times.items()
    }


def probe_overhead(args, store) -> None:
    """The same run with and without PROBES, alternating over the repeats; every repeat, then the medians."""
    from engine.training_config import TrainingConfig

    defaults = TrainingConfig(model=args.model, dataset=args.dataset)
    print(
        f"Probe cost: {args.model} on {args.dataset}, batch {defaults.batch_size} x block {defaults.block_size}, "
        f"evaluation every {defaults.eval_every} steps ({defaults.eval_batches} batches), {len(PROBES)} probe "
        f"prompts of {defaults.probe_tokens} tokens; steps {args.warmup}-{2 * defaults.eval_every} timed "
        f"(2 evaluations), {args.repeats} repeats"
    )
    times: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    for repeat in range(args.repeats):
        order = ("without", "with") if repeat % 2 == 0 else ("with", "without")
        losses, runs = {}, {}
        for name in order:
            seconds, runs[name] = timed_run(args, store, PROBES if name == "with" else [])
            times[name].append(seconds)
            losses[name] = [row["train_loss"] for row in store.metrics(runs[name])]
        if len(store.probes(runs["with"])) != 3 * len(PROBES):  # evaluated at eval_every, 2 * eval_every, the end
            raise SystemExit(f"repeat {repeat + 1}: the run with probes recorded {store.probes(runs['with'])}")
        if losses["with"] != losses["without"] or not losses["with"][-1] < losses["with"][0]:
            raise SystemExit(f"repeat {repeat + 1}: the runs did not train alike: {losses}")
        without, with_probes = times["without"][-1], times["with"][-1]
        print(
            f"  repeat {repeat + 1}: without {without[0]:.1f} s / {without[1]:.1f} s CPU, with {with_probes[0]:.1f} s"
            f" / {with_probes[1]:.1f} s CPU; ratio {with_probes[0] / without[0]:.3f} wall, "
            f"{with_probes[1] / without[1]:.3f} CPU; train loss {losses['with'][0]:.2f} -> "
            f"{losses['with'][-1]:.2f} in both",
            flush=True,
        )
    for clock, label in ((0, "wall clock"), (1, "CPU time")):
        ratios = [w[clock] / wo[clock] for w, wo in zip(times["with"], times["without"], strict=True)]
        print(
            f"  median ratio with / without probes by {label}: {statistics.median(ratios):.3f} "
            f"(spread {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.05)"
        )
    # Whole runs on a shared machine differ by more than the probes cost; the probes alone, timed back to
    # back on the same weights, against the median time between two evaluations, is the finer measure.
    decodings = probe_decodings(args, store, runs["with"], defaults.probe_tokens)
    timed_steps = 2 * defaults.eval_every - args.warmup
    between = [
        statistics.median(t[clock] for t in times["without"]) / timed_steps * defaults.eval_every for clock in (0, 1)
    ]
    print(
        f"  The probes alone, on the final weights (median of 10), against the time between two evaluations "
        f"without them ({between[0]:.1f} s wall, {between[1]:.1f} s CPU):"
    )
    for name, seconds in decodings.items():
        print(
            f"    {name:<28} {seconds[0] * 1000:>6.0f} ms wall ({seconds[0] / between[0]:.1%}), "
            f"{seconds[1] * 1000:>6.0f} ms CPU ({seconds[1] / between[1]:.1%})"
        )


# -----------------------------------------------------------------------------


def compare_throughput(args, store) -> dict[str, list[float]]:
    """Alternate the two loops over the repeats; print each and the medians; return {loop: [wall, cpu]}."""
    results: dict[str, list[tuple[float, float]]] = {"bare PyTorch loop": [], "engine TrainingJob": []}
    for repeat in range(args.repeats):
        # Interleave, and swap which goes first, so drift in the machine's load hits both alike.
        if repeat % 2 == 0:
            bare, engine = bare_tokens_per_second(args, store), engine_tokens_per_second(args, store)
        else:
            engine, bare = engine_tokens_per_second(args, store), bare_tokens_per_second(args, store)
        results["bare PyTorch loop"].append(bare)
        results["engine TrainingJob"].append(engine)
        print(
            f"  repeat {repeat + 1}: bare {bare[0]:,.0f} / {bare[1]:,.0f}, "
            f"engine {engine[0]:,.0f} / {engine[1]:,.0f} tokens/s (wall / CPU)",
            flush=True,
        )
    print(f"  {'median tokens/s':<22} {'wall clock':>12} {'CPU time':>12}")
    medians = {}
    for name, runs in results.items():
        medians[name] = [statistics.median(run[clock] for run in runs) for clock in (0, 1)]
        print(f"  {name:<22} {medians[name][0]:>12,.0f} {medians[name][1]:>12,.0f}")
    ratios = [e / b for e, b in zip(medians["engine TrainingJob"], medians["bare PyTorch loop"], strict=True)]
    print(f"  {'ratio engine / bare':<22} {ratios[0]:>12.3f} {ratios[1]:>12.3f}   (target >= 0.97)")
    return medians


def report_compute(parameters: int, engine: list[float], device, precision: str) -> None:
    peaks, size = matmul_peak_flops(device, precision)
    print(
        f"Compute: ~6*N*tokens/s achieved by the engine against a {size}x{size} {precision} matmul on {device} "
        "(the fastest of 10)"
    )
    for clock, tokens_per_second, peak in zip(("wall clock", "CPU time"), engine, peaks, strict=True):
        achieved = 6 * parameters * tokens_per_second
        print(f"  by {clock:<10} {achieved / 1e9:>8,.1f} GFLOP/s of {peak / 1e9:,.1f} peak = {achieved / peak:.0%}")


def main() -> int:
    args = parse_args()
    os.environ["LMWB_HOME"] = args.home or tempfile.mkdtemp(prefix="lmwb-bench-")
    import torch

    from engine.models import quiet_transformers
    from engine.store import RunStore

    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_transformers()
    store = RunStore()
    if args.probes:
        probe_overhead(args, store)
        return 0
    parameters, device, precision = model_parameters(args, store)
    print(
        f"Training throughput: {args.model} ({parameters / 1e6:.1f}M parameters without position "
        f"embeddings) on {args.dataset}, batch {args.batch_size} x block {args.block_size} = "
        f"{args.batch_size * args.block_size} tokens/step, {device} {precision} ({torch.get_num_threads()} "
        f"CPU threads); {args.repeats} repeats of {args.steps} timed steps after {args.warmup} warm-up steps"
    )
    medians = compare_throughput(args, store)
    report_compute(parameters, medians["engine TrainingJob"], device, precision)
    if args.bpb:
        bits_per_byte_after_minutes(args, store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
