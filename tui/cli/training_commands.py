"""`lmwb train`, `lmwb sweep`, `lmwb sweeps` and `lmwb eval`: training a model, and measuring one.

A run trained in this process, in the background, queued or under torchrun;
a grid of runs (a sweep) made, followed and listed; and a model's loss on a
dataset. TRAINING_FLAGS are the flags every training setting is given by,
TRAINING_FLAG_NAMES the flag each TrainingConfig field is named by in errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tui.cli.common import (
    AUTO,
    EXIT_OK,
    EXIT_RUN_FAILED,
    FIELD_HELP,
    SPLIT_BY_HELP,
    CommandError,
    add_flags,
    add_split_flag,
    device_name,
    flags_given,
    number,
    open_store,
    positive_int,
    precision_name,
    probe_file,
    settings_named_by_flags,
    stop_on_signals,
    whole_number,
    whole_number_or_auto,
)
from tui.cli.output import (
    key_value_panel,
    local_time,
    new_table,
    print_comparison,
    print_json,
    status_spinner,
    stdout_console,
    table_cell,
)
from tui.cli.progress import follow_training, print_training_summary
from tui.widgets.formatting import human_duration

if TYPE_CHECKING:
    from engine.store import RunStore


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`lmwb train`, `lmwb sweep`, `lmwb sweeps` and `lmwb eval`."""
    _add_train_parser(commands)
    _add_sweep_parser(commands)
    _add_sweeps_parser(commands)
    _add_eval_parser(commands)


# Training flags: (flag, the TrainingConfig field it sets, type, help). A flag
# left out keeps the config's default, or on --resume the run's own value, so
# the dataclass stays the one place defaults live.
TRAINING_FLAGS = (
    ("--steps", "max_steps", whole_number, "optimizer steps in all (with --resume: the new total)"),
    (
        "--max-time",
        "max_time",
        number,
        "seconds of training. Alone: the run's time budget (the learning rate decays over it, defaults are picked "
        "for it). With --steps: a limit on this session, then stop with a checkpoint",
    ),
    (
        "--max-epochs",
        "max_epochs",
        number,
        "with --max-time alone: end after this many passes over the training data if the budget lasts longer "
        "(the learning rate decays over whichever ends first; a scratch preset gets a cap for its size, 16 "
        "for nano: data seen more often is memorised)",
    ),
    (
        "--batch-size",
        "batch_size",
        whole_number_or_auto,
        "windows per micro-batch, or auto: on a GPU the largest micro-batch that fits its memory, with "
        "gradient accumulation keeping batch size x grad accum windows per step (the plan's or the default batch)",
    ),
    ("--block-size", "block_size", whole_number, "tokens per window"),
    ("--grad-accum", "grad_accum", whole_number, "micro-batches per optimizer step"),
    ("--lr", "learning_rate", number, "peak learning rate"),
    ("--min-lr", "min_learning_rate", number, "learning rate at the end of the cosine decay"),
    ("--warmup", "warmup_steps", whole_number, "steps of linear warmup"),
    ("--dropout", "dropout", number, "dropout of a GPT-2's layers (default: the model's own; 0 for scratch presets)"),
    ("--weight-decay", "weight_decay", number, "AdamW weight decay, on matrices and embeddings"),
    ("--beta1", "beta1", number, "AdamW's first-moment decay"),
    ("--beta2", "beta2", number, "AdamW's second-moment decay"),
    ("--grad-clip", "grad_clip", number, "clip the global gradient norm to this (0: no clipping)"),
    ("--eval-batches", "eval_batches", whole_number, "validation batches per evaluation"),
    ("--eval-every", "eval_every", whole_number, "steps between evaluations (0: none)"),
    ("--sample-every", "sample_every", whole_number, "steps between samples (0: none)"),
    ("--sample-prompt", "sample_prompt", str, "prompt for the samples"),
    (
        "--probe",
        "probes",
        list,
        "a probe prompt: the model completes it greedily at every evaluation, kept by step "
        "(lmwb runs probes ID); repeatable",
    ),
    ("--probe-tokens", "probe_tokens", whole_number, "tokens each probe completion runs to"),
    (
        "--checkpoint-every",
        "checkpoint_every",
        whole_number,
        "steps between checkpoints (0: only at the end or on stop)",
    ),
    ("--vocab-size", "vocab_size", whole_number, "tokenizer vocabulary of a scratch: model"),
    ("--split-by", "split_by", str, SPLIT_BY_HELP),
    ("--seed", "seed", whole_number, "same seed, same run"),
    ("--device", "device", device_name, "auto, cpu, cuda[:N] or mps"),
    (
        "--precision",
        "precision",
        precision_name,
        "auto (bf16 or fp16 autocast on a GPU, fp32 on the CPU), fp32, bf16 or fp16",
    ),
    (
        "--compile",
        "compile",
        str,
        "torch.compile the training step: auto (on CUDA for runs of 1000+ steps or 10+ minutes), on or off",
    ),
    (
        "--gradient-checkpointing",
        "gradient_checkpointing",
        bool,
        "recompute activations in the backward pass: less GPU memory for large models, about a third slower",
    ),
    ("--lora", "lora", bool, "train LoRA adapters on the frozen model instead of all its weights"),
    ("--lora-rank", "lora_rank", whole_number, "rank of the LoRA adapters"),
    ("--lora-alpha", "lora_alpha", number, "LoRA scale (the update is scaled by alpha / rank)"),
    ("--lora-dropout", "lora_dropout", number, "dropout on the LoRA adapters' input"),
    ("--lora-targets", "lora_targets", str, "modules to adapt, comma-separated (auto: c_attn,c_proj on GPT-2)"),
    ("--name", "name", str, "a name for the run"),
)


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train or fine-tune a model; the run is recorded in the store",
        description="Train or fine-tune a model headless. Ctrl+C or SIGTERM stops with a checkpoint; "
        "'lmwb train --resume ID --steps N' continues to N steps in all. With --detach (or --queue) the run "
        "is a background process of its own that outlives this terminal and an SSH connection.",
    )
    _add_training_flags(train)
    train.add_argument("--resume", metavar="RUN_ID", help="continue this run from its latest checkpoint")
    train.add_argument(
        "--nproc",
        type=positive_int,
        metavar="N",
        help="train as N processes under torchrun, one per GPU (global batch: batch size x grad accum x N)",
    )
    background = train.add_mutually_exclusive_group()
    background.add_argument(
        "--detach",
        action="store_true",
        help="start the run as a background process and return; follow it with 'lmwb runs follow ID'",
    )
    background.add_argument(
        "--queue",
        action="store_true",
        help="add the run to the queue: it starts in the background once the runs "
        "before it have ended (at once if none is going)",
    )
    train.set_defaults(handler=cmd_train)


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The model, the dataset and every training setting: the flags `lmwb train` and `lmwb sweep` share."""
    parser.add_argument("--model", metavar="SRC", help="model source, e.g. scratch:tiny or gpt2")
    parser.add_argument("--dataset", metavar="PATH_OR_NAME", help="a bundled or cached name, a file or a folder")
    parser.add_argument("--field", dest="dataset_field", metavar="FIELD", help=FIELD_HELP)
    add_split_flag(parser)
    settings = parser.add_argument_group("training settings (defaults: the engine's TrainingConfig)")
    add_flags(settings, TRAINING_FLAGS)
    settings.add_argument(
        "--probe-file",
        dest="probes",
        action="extend",
        type=probe_file,
        metavar="FILE",
        help="probe prompts from a UTF-8 file, one a line (blank lines skipped); with --probe, in the order given",
    )


def vary_option(text: str) -> tuple[str, list[str]]:
    """``NAME=V1,V2,...``: a setting's name and its values as typed (the engine converts and checks them)."""
    name, equals, values = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2,... (e.g. learning_rate=1e-3,3e-4), got {text!r}")
    return name.strip(), values.split(",")


# Flags of `lmwb train` that a sweep refuses, and why.
NOT_FOR_SWEEPS = {
    "--resume": "a sweep makes new runs; resume one of its runs with lmwb train --resume ID",
    "--nproc": "each run of a sweep is one process; --parallel N trains N of its runs at once",
    "--queue": "a sweep's runs are queued already; --detach returns once they are",
}


class _RefusedFlag(argparse.Action):
    """A flag this command knows and refuses, with the reason (rather than argparse's 'unrecognized')."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        parser.error(f"{option}: {NOT_FOR_SWEEPS[str(option)]}")


def _add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train a grid of runs: every combination of the values of the settings varied",
        description="Make one run per combination of the --vary values, queued in order (the first --vary "
        "varies slowest), each a background process named for its values; the other flags are those of "
        "'lmwb train' and every run shares them. Everything is checked before any run is made. Without "
        "--detach, follows the sweep until its runs end, then exits 1 if any of them failed or was interrupted; "
        "Ctrl+C stops its runs with a checkpoint and cancels those queued. --name names the sweep.",
    )
    _add_training_flags(sweep)
    sweep.add_argument(
        "--vary",
        action="append",
        type=vary_option,
        default=[],
        metavar="NAME=V1,V2,...",
        help="a training setting by its config name (lmwb runs show lists them) and its values, e.g. "
        "learning_rate=1e-3,3e-4 (repeatable)",
    )
    sweep.add_argument(
        "--parallel", type=positive_int, default=1, metavar="N", help="train N runs of the sweep at once (default: 1)"
    )
    sweep.add_argument(
        "--yes", action="store_true", help="make the grid even when it has more runs than a sweep makes unasked (64)"
    )
    sweep.add_argument("--detach", action="store_true", help="return once the runs are queued; they go on")
    for flag in NOT_FOR_SWEEPS:
        sweep.add_argument(flag, nargs="?", action=_RefusedFlag, help=argparse.SUPPRESS)
    sweep.set_defaults(handler=cmd_sweep)


def _add_sweeps_parser(commands: argparse._SubParsersAction) -> None:
    sweeps = commands.add_parser("sweeps", help="list sweeps: what each varies, its runs by status")
    sweeps.add_argument("--json", action="store_true", help="print JSON for scripts")
    sweeps.set_defaults(handler=cmd_sweeps_list)
    actions = sweeps.add_subparsers(title="actions", metavar="ACTION")
    show = actions.add_parser(
        "show", help="a sweep: its runs by status, what it varies, and the comparison of its runs"
    )
    show.add_argument("sweep_id", metavar="ID", help="sweep id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(handler=cmd_sweeps_show)


def _add_eval_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="loss, perplexity and bits per byte of a model on a dataset")
    evaluate.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    evaluate.add_argument("--dataset", required=True, metavar="PATH_OR_NAME", help="a bundled name, file or folder")
    evaluate.add_argument("--field", help=FIELD_HELP)
    # --split names the part of the tokens measured (as training holds it out); this, a saved dataset's split.
    add_split_flag(evaluate, "--dataset-split")
    evaluate.add_argument(
        "--split", choices=("val", "all"), default="val", help="the validation split (default) or the whole dataset"
    )
    add_flags(
        evaluate,
        (
            ("--split-by", "split_by", str, f"{SPLIT_BY_HELP} (default: a run:ID model's own, else position)"),
            ("--block-size", "block_size", whole_number, "tokens per window (default: the model's context)"),
            ("--batch-size", "batch_size", whole_number, "windows per batch"),
            ("--max-batches", "max_batches", whole_number, "evaluate an even spread of this many batches only"),
            ("--device", "device", device_name, "auto, cpu, cuda[:N] or mps"),
        ),
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON for scripts")
    evaluate.set_defaults(handler=cmd_eval)


# ---------------------------------------------------------------------------
# lmwb train


def cmd_train(args: argparse.Namespace) -> int:
    """Train headless with live progress; stop cleanly on Ctrl+C, SIGTERM or --max-time.

    With --nproc N, start N copies of this command under torchrun. Under
    torchrun (ours or the user's own), rank 0 shows progress and the
    summary; the other ranks train silently.
    """
    from engine.store import RunStore

    with settings_named_by_flags(TRAINING_FLAG_NAMES):
        # Every setting that needs no model or data is checked now, before torch loads (seconds).
        _training_config(args, RunStore())[0].validate()
    if args.detach or args.queue:  # the run's own process loads torch; this one returns without it
        return _train_in_background(args)
    from engine.distributed import launched_by_torchrun, this_process
    from engine.training import TrainingJob

    if args.nproc is not None and launched_by_torchrun():
        raise CommandError("--nproc starts torchrun itself; under torchrun, leave it out.")
    if args.nproc is not None and args.nproc > 1:
        return _train_under_torchrun(args)
    place = this_process()
    store = open_store() if place.writes else RunStore()  # only rank 0 writes the store
    with settings_named_by_flags(TRAINING_FLAG_NAMES):
        config, resume_run, plan = _training_config(args, store)
        job = TrainingJob(config, store=store, resume_run=resume_run)
        with stop_on_signals(job.stop, (signal.SIGINT, signal.SIGTERM)) as stopping:
            run_id = job.start()
            if place.writes:
                processes = f" as {place.world_size} processes" if place.distributed else ""
                print(
                    f"{'Resuming' if resume_run else 'Started'} run {run_id}{processes}: {config.model} on "
                    f"{config.dataset}, {_extent(config)}. Ctrl+C stops it with a checkpoint.",
                    flush=True,
                )
                if plan:
                    print(plan, flush=True)
                follow_training(job, stopping)
            else:
                while not job.join(timeout=0.5):
                    pass
        if place.writes:
            print_training_summary(store, store.get_run(run_id), job.progress)
        if job.error is not None:
            raise job.error
    return EXIT_OK


def _train_in_background(args: argparse.Namespace) -> int:
    """--detach / --queue: record the run and hand it to a process of its own; print how to follow it."""
    from engine.run_process import log_path, submit_run

    store = open_store()
    with settings_named_by_flags(TRAINING_FLAG_NAMES):
        config, resume_run, plan = _training_config(args, store)
        run = submit_run(config, store, resume_run=resume_run, nproc=args.nproc, queue=args.queue)
    if run.status == "queued":
        ahead = [
            queued.id
            for queued in store.list_runs(status="queued", order_by="created_at", descending=False)
            if (queued.queued_at or "") < (run.queued_at or "")
        ]
        print(
            f"Queued run {run.id}: {config.model} on {config.dataset}. It starts when the run going now "
            f"{'and the ' + str(len(ahead)) + ' queued before it end' if ahead else 'ends'}.",
            flush=True,
        )
    else:
        verb = "Resuming" if resume_run else "Started"
        print(
            f"{verb} run {run.id} in the background (pid {run.pid}): {config.model} on {config.dataset}, "
            f"{_extent(config)}. It goes on if this terminal closes.",
            flush=True,
        )
    if plan:
        print(plan, flush=True)
    print(
        f"Follow it:  lmwb runs follow {run.id}\n"
        f"Control it: lmwb runs pause|continue|stop {run.id}\n"
        f"Its log:    {log_path(run.id)}",
        flush=True,
    )
    return EXIT_OK


def _train_under_torchrun(args: argparse.Namespace) -> int:
    """Check the settings once, here, then run `lmwb train` (less --nproc) as N ranks under torchrun."""
    from engine.datasets import open_dataset
    from engine.distributed import run_under_torchrun

    with settings_named_by_flags(TRAINING_FLAG_NAMES):
        config, _, _ = _training_config(args, open_store())
        config.validate()
        open_dataset(config.dataset, config.dataset_field, config.dataset_split)
    print(
        f"Starting {args.nproc} processes with torchrun; global batch {config.batch_size} x {config.grad_accum} "
        f"x {args.nproc} = {config.batch_size * config.grad_accum * args.nproc} windows per step.",
        flush=True,
    )
    return run_under_torchrun("tui.cli", _rank_arguments(args), args.nproc)


def _rank_arguments(args: argparse.Namespace) -> list[str]:
    """The `lmwb train` arguments the user gave, less --nproc: what every rank runs.

    Rebuilt from the parsed flags as ``--flag=value`` (so a value starting
    with '-' stays a value), never as a shell string.
    """
    arguments = ["train"]
    for field, flag in (TRAINING_FLAG_NAMES | {"resume": "--resume"}).items():
        value = getattr(args, field, None)
        if value is True:
            arguments.append(flag)
        elif isinstance(value, list):  # a repeatable flag (--probe, with --probe-file's lines)
            arguments += [f"{flag}={item}" for item in value]
        elif value is not None:
            arguments.append(f"{flag}={value}")
    return arguments


def _training_config(args: argparse.Namespace, store: RunStore) -> tuple[Any, str | None, str]:
    """The run's TrainingConfig, the run to resume, and the plan's one line (a new run: what was picked and why).

    A new run is planned from the flags given (engine.planning); a resumed one
    keeps its own settings, over which the flags given are laid.
    """
    from engine.planning import plan_run
    from engine.training_config import TrainingConfig

    settings = _training_settings(args)
    if args.resume:
        if "model" in settings or "dataset" in settings:
            raise CommandError(
                "--resume continues a run with its own model and dataset; leave out --model and --dataset."
            )
        run = store.get_run(args.resume)
        return TrainingConfig.from_dict({**run.config, **settings}), run.id, ""
    _require_model_and_dataset(settings, "lmwb train", " (or --resume RUN_ID)")
    plan = plan_run(settings)
    return plan.config, None, plan.explanation()


def _training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings given as flags, by TrainingConfig field (``lmwb train`` and ``lmwb sweep``)."""
    from engine.training_config import TrainingConfig

    settings = flags_given(args, [field.name for field in dataclasses.fields(TrainingConfig)])
    if settings.get("batch_size") == AUTO:  # sized to the GPU by the run; the windows per step stay planned
        del settings["batch_size"]
        settings["auto_batch"] = True
    return settings


def _require_model_and_dataset(settings: dict[str, Any], command: str, otherwise: str = "") -> None:
    missing = [TRAINING_FLAG_NAMES[field] for field in ("model", "dataset") if field not in settings]
    if missing:
        raise CommandError(f"{command} needs {' and '.join(missing)}{otherwise}.")


def _extent(config: Any) -> str:
    """How far a run goes, as the start line says it: to a step, or for its time budget."""
    if config.planned_on_time:
        cap = "" if config.max_epochs is None else f" or {config.max_epochs:g} passes over the data, if sooner"
        return f"for {human_duration(config.max_time)} of training{cap} (planned on time)"
    return f"to step {config.max_steps}" if config.epochs is None else f"for {config.epochs:g} epochs"


# The flag that sets each TrainingConfig field, to name it in messages.
TRAINING_FLAG_NAMES = {
    "model": "--model",
    "dataset": "--dataset",
    "dataset_field": "--field",
    "dataset_split": "--split",
} | {field: flag for flag, field, _, _ in TRAINING_FLAGS}

# ---------------------------------------------------------------------------
# lmwb sweep and lmwb sweeps


def cmd_sweep(args: argparse.Namespace) -> int:
    """Check the whole grid, record the sweep and queue its runs in order; then follow them unless --detach."""
    from engine.sweeps import plan_sweep, start_sweep, varied_settings

    if not args.vary:
        raise CommandError("lmwb sweep needs a setting to vary: --vary NAME=V1,V2,... (e.g. learning_rate=1e-3,3e-4).")
    _refuse_flag_spellings(args.vary)
    settings = _training_settings(args)
    _require_model_and_dataset(settings, "lmwb sweep")
    store = open_store()
    # A varied setting's error names it as typed after --vary, not by the flag that sets one value.
    varied_names = {name for name, _ in args.vary}
    flags = {field: flag for field, flag in TRAINING_FLAG_NAMES.items() if field not in varied_names}
    with settings_named_by_flags(flags | {"vary": "--vary", "parallel": "--parallel"}):
        varied = varied_settings(args.vary)
        plan = plan_sweep(settings, varied, allow_large=args.yes)
        sweep, runs = start_sweep(plan, store, parallel=args.parallel)
    at_once = "one at a time" if sweep["parallel"] == 1 else f"{sweep['parallel']} at a time"
    named = f" ({sweep['name']})" if "name" in settings else ""
    print(f"Sweep {sweep['id']}{named}: {plan.description()}, {at_once}, in this order:", flush=True)
    explanations = [run_plan.explanation() for run_plan in plan.runs]
    for run, explanation in zip(runs, explanations, strict=True):
        print(f"  {run.id}  {run.name}", flush=True)
        if len(set(explanations)) > 1:
            print(f"            {explanation}", flush=True)
    if len(set(explanations)) == 1:
        print(explanations[0], flush=True)  # the same plan for every run
    if args.detach:
        print(
            "They train in the background, each a process of its own, and go on if this terminal closes.\n"
            f"Follow one:  lmwb runs follow RUN_ID\n"
            f"The sweep:   lmwb sweeps show {sweep['id']}",
            flush=True,
        )
        return EXIT_OK
    return _follow_sweep(store, sweep["id"], runs)


def _refuse_flag_spellings(vary: Sequence[tuple[str, Sequence[str]]]) -> None:
    """``--vary lr=...`` names a flag, not a setting: say which setting it sets."""
    setting_of_flag = {flag.lstrip("-").replace("-", "_"): field for field, flag in TRAINING_FLAG_NAMES.items()}
    for name, _ in vary:
        setting = setting_of_flag.get(name.replace("-", "_"), name)
        if setting != name:
            raise CommandError(
                f"--vary takes a setting's config name, and {name} is a flag's (--{name} sets {setting}): "
                f"write --vary {setting}=..."
            )


# Runs that ended without anyone asking: a followed sweep with one exits non-zero, as `lmwb train` does.
UNSUCCESSFUL = ("failed", "interrupted")


def _follow_sweep(store: RunStore, sweep_id: str, runs: Sequence[Any]) -> int:
    """A line as each run of the sweep starts and ends, until all have ended; Ctrl+C stops them all.

    Then a line of the runs by status, and the exit status ``lmwb train``
    would give: 1 when a run failed or was interrupted, 0 when every run
    completed or was stopped or cancelled as someone asked.
    """
    from engine.run_process import check_runs
    from engine.store import FINISHED_STATUSES
    from engine.sweeps import stop_sweep, sweep_runs

    shown = {run.id: "queued" for run in runs}  # the status each run was last reported with
    number = {run.id: index for index, run in enumerate(runs, start=1)}
    last_check = time.monotonic()
    print("Following the sweep. Ctrl+C stops its runs with a checkpoint and cancels those queued.", flush=True)
    with stop_on_signals(lambda: None) as stopping:
        stopped = False
        while True:
            if stopping.is_set() and not stopped:
                going, cancelled = stop_sweep(store, sweep_id)
                print(
                    f"Stopping the sweep: {len(going)} run(s) stop with a checkpoint, "
                    f"{len(cancelled)} queued run(s) cancelled.",
                    flush=True,
                )
                stopped = True
            if time.monotonic() - last_check > 2.0:  # a dead run is marked interrupted, and the queue moves on
                check_runs(store)
                last_check = time.monotonic()
            current = sweep_runs(store, sweep_id)
            for run in current:
                if run.status != shown[run.id]:
                    line = _sweep_run_line(run, shown[run.id], f"{number[run.id]}/{len(runs)}")
                    if line:
                        print(line, flush=True)
                    shown[run.id] = run.status
            if all(run.status in FINISHED_STATUSES for run in current):
                break
            time.sleep(0.5)
    return _sweep_ended(sweep_id, current)


def _sweep_ended(sweep_id: str, runs: Sequence[Any]) -> int:
    """Say how an ended sweep's runs ended, by status, and return the exit status: 1 if any went wrong."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    failed = sum(counts.get(status, 0) for status in UNSUCCESSFUL)
    print(
        f"Sweep {sweep_id} ended. {len(runs)} run{'s' if len(runs) != 1 else ''}: {_status_counts(counts)}. "
        f"{'See what went wrong' if failed else 'Compare them'}: lmwb sweeps show {sweep_id}",
        flush=True,
    )
    return EXIT_RUN_FAILED if failed else EXIT_OK


def _sweep_run_line(run: Any, before: str, place: str) -> str:
    """What a run of a followed sweep did since it was last reported: started, ended, or nothing to say."""
    from engine.store import ACTIVE_STATUSES, FINISHED_STATUSES

    if run.status in FINISHED_STATUSES:
        if run.status == "cancelled":
            return f"run {run.id} ({place}) cancelled: {run.name}"
        ended = (
            f"run {run.id} ({place}) {run.status} at step {run.steps}: {run.name} · "
            f"best val loss {table_cell(run.best_val_loss).plain}"
        )
        return ended + (f"\n  {run.error}" if run.error and run.status != "stopped" else "")
    if run.status in ACTIVE_STATUSES and before == "queued":
        return f"run {run.id} ({place}) started: {run.name}"
    return ""


def _status_counts(counts: dict[str, int]) -> str:
    """``"2 completed, 1 running, 1 queued"``, statuses in the store's order."""
    from engine.store import RUN_STATUSES

    return ", ".join(f"{counts[status]} {status}" for status in RUN_STATUSES if counts.get(status))


def _varied_text(varied: dict[str, list]) -> str:
    """``"learning_rate 0.001, 0.0003; batch_size 8, 16"``: what a sweep varies, values as --vary takes them."""
    from engine.sweeps import value_text

    return "; ".join(f"{name} {', '.join(value_text(v) for v in values)}" for name, values in varied.items())


def cmd_sweeps_list(args: argparse.Namespace) -> int:
    """Every sweep, newest first: what it varies, and its runs counted by status."""
    sweeps = open_store().sweeps()
    if args.json:
        print_json(sweeps)
        return EXIT_OK
    if not sweeps:
        stdout_console().print(
            "No sweeps yet. Start one with: lmwb sweep --model scratch:nano --dataset fables "
            "--vary learning_rate=1e-3,3e-4"
        )
        return EXIT_OK
    rows = [
        [
            sweep["id"],
            sweep["name"],
            _varied_text(sweep["varied"]),
            f"{sum(sweep['statuses'].values())}: {_status_counts(sweep['statuses'])}",
            local_time(sweep["created_at"]),
        ]
        for sweep in sweeps
    ]
    stdout_console().print(new_table("Sweeps", ["id", "name", "varied", "runs", "created"], rows))
    return EXIT_OK


def cmd_sweeps_show(args: argparse.Namespace) -> int:
    """A sweep's status (its runs by status, what it varies, how many at once) and the comparison of its runs."""
    from engine.comparison import MIN_COMPARED, compare_runs
    from engine.sweeps import sweep_runs

    store = open_store()
    sweep = store.get_sweep(args.sweep_id)
    run_ids = [run.id for run in sweep_runs(store, sweep["id"])]
    comparison = compare_runs(store, run_ids) if len(run_ids) >= MIN_COMPARED else None
    if args.json:
        print_json(sweep | {"runs": run_ids, "comparison": comparison.as_json() if comparison else None})
        return EXIT_OK
    console = stdout_console()
    counts = _status_counts(sweep["statuses"])
    about = [
        ("name", sweep["name"]),
        ("varied", _varied_text(sweep["varied"])),
        ("runs", f"{len(run_ids)}" + (f": {counts}" if counts else "")),
        ("at once", sweep["parallel"]),
        ("created", local_time(sweep["created_at"])),
    ]
    console.print(key_value_panel(f"Sweep {sweep['id']}", about))
    console.print()
    if comparison is None:
        console.print(f"{'No run' if not run_ids else 'One run'} in this sweep yet: nothing to compare.")
    else:
        print_comparison(comparison)
    return EXIT_OK


# ---------------------------------------------------------------------------
# lmwb eval


def cmd_eval(args: argparse.Namespace) -> int:
    """Loss, perplexity and bits per byte of a model on a dataset, recorded in the store."""
    from engine.evaluation import evaluate

    store = open_store()
    options = flags_given(args, ("split_by", "block_size", "batch_size", "max_batches", "device"))
    flags = {
        "model": "--model",
        "dataset": "--dataset",
        "dataset_field": "--field",
        "dataset_split": "--dataset-split",
        "split": "--split",
        "split_by": "--split-by",
        "block_size": "--block-size",
        "batch_size": "--batch-size",
        "max_batches": "--max-batches",
    }
    with settings_named_by_flags(flags), status_spinner(f"Evaluating {args.model} on {args.dataset}…") as update:
        result = evaluate(
            args.model,
            args.dataset,
            split=args.split,
            dataset_field=args.field,
            dataset_split=args.dataset_split,
            store=store,
            progress=update,
            **options,
        )
    if args.json:
        print_json(result.as_dict())
        return EXIT_OK
    stdout_console().print(
        key_value_panel(
            f"{result.model} on {result.dataset} ({_split_shown(result)})",
            [
                ("loss", result.loss),
                ("perplexity", result.perplexity),
                ("bits per byte", result.bits_per_byte),
                ("tokens", result.tokens),
            ],
        )
    )
    return EXIT_OK


def _split_shown(result: Any) -> str:
    """The text an evaluation measured: "val split, held out by document", or "all split"."""
    held_out = f", held out by {result.split_by}" if result.split_by else ""
    return f"{result.split} split{held_out}"
