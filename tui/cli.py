"""The `lmwb` command line: the workbench without the terminal UI.

Every command asks the engine and prints its answer: Rich tables for people,
``--json`` for scripts. A user's mistake prints one line starting
``lmwb: error:`` and exits with status 2; anything else is a bug, which prints
one line saying where its traceback was written and exits with status 1.

Heavy modules load late: ``lmwb --help`` imports neither torch nor textual,
the store is opened only by commands that read or write runs, and torch is
imported only by the commands that need a model.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from engine import __version__
from engine.errors import SettingsError, WorkbenchError
from engine.store import RUN_ORDERINGS
from tui.widgets.formatting import CHANGED_STYLE, changed_words, human_duration, model_label, two_lines

if TYPE_CHECKING:
    from engine.store import RunStore

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_RUN_FAILED = 1  # a run the command followed to its end failed, or its process died


class CommandError(WorkbenchError):
    """A mistake in how a command was called that argparse cannot see (a missing file, a bad combination)."""


# ---------------------------------------------------------------------------
# Argument types. A settings flag is only parsed here, as a whole number or a
# number; whether its value is allowed is the settings object's question
# (TrainingConfig, GenerationSettings, evaluate's checks), and its
# SettingsError names the flag (settings_named_by_flags). The few flags no
# settings object holds (--nproc, --limit, --step) are range-checked here.


def whole_number(text: str) -> int:
    """A whole number of any size or sign (its range is the engine's to check)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


AUTO = "auto"


def whole_number_or_auto(text: str) -> int | str:
    """A whole number, or ``auto`` (the engine then picks it)."""
    return AUTO if text.strip().lower() == AUTO else whole_number(text)


def number(text: str) -> float:
    """A finite number of any size or sign (its range is the engine's to check); nan and inf are refused here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1, for a count no settings object checks (--nproc, --limit)."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0, for a step no settings object checks (--step of export-model)."""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return value


def probe_file(text: str) -> list[str]:
    """The probe prompts in a UTF-8 file, one a line as written (blank lines skipped): --probe-file's type.

    Read as the flags are parsed, so a file that cannot serve is refused before anything is created.
    """
    from engine.checks import read_utf8_file

    try:
        content = read_utf8_file("probe_file", text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    prompts = [line for line in content.splitlines() if line.strip()]
    if not prompts:
        raise argparse.ArgumentTypeError(f"{text} holds no prompt (it is empty or blank); write one prompt a line")
    return prompts


def device_name(text: str) -> str:
    """A device's spelling (the engine's grammar); whether it exists here is the engine's question."""
    from engine.devices import device_name as canonical_device

    try:
        return canonical_device(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def precision_name(text: str) -> str:
    """A precision's spelling (the engine's grammar: auto picks bf16 or fp16 on a GPU)."""
    from engine.devices import precision_name as canonical_precision

    try:
        return canonical_precision(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def run_status(text: str) -> str:
    """One of the store's run statuses (imported only when the flag is given)."""
    from engine.store import RUN_STATUSES

    if text not in RUN_STATUSES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(RUN_STATUSES)}, got {text!r}")
    return text


# ---------------------------------------------------------------------------
# The parser.


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line rather than usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"lmwb: error: {message} (see '{self.prog} --help')\n")


# The flags that say which text of a dataset to read, for every command that opens one.
FIELD_HELP = "the .jsonl field, .csv or Parquet column holding the text (default: text, or the only text column)"
SPLIT_HELP = "the split to read, of a saved DatasetDict or a Hugging Face cache dataset that has several"
SPLIT_BY_HELP = (
    "how validation is held out: position (the last tenth of the tokens) or document (whole documents, "
    "so no document, nor a copy of one, sits on both sides; see 'lmwb datasets check')"
)
# The flag a dataset's split is named by, for the settings' errors; eval names it --dataset-split.
SPLIT_FLAG = {"dataset_split": "--split"}


def add_split_flag(parser: argparse._ActionsContainer, flag: str = "--split") -> None:
    """The split of a dataset that has several, as args.dataset_split: every command that opens a dataset."""
    parser.add_argument(flag, dest="dataset_split", metavar="NAME", help=SPLIT_HELP)


def build_parser() -> argparse.ArgumentParser:
    """Every command, flag and help text of `lmwb`."""
    parser = _Parser(
        prog="lmwb",
        description="A terminal workbench for training and probing GPT-2-style language models. "
        "Without a command, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"lmwb {__version__}")
    parser.set_defaults(handler=open_app)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    datasets = commands.add_parser(
        "datasets", help="list the bundled and Hugging Face cache datasets, or inspect one (a file, folder or name)"
    )
    datasets.add_argument(
        "path", nargs="?", metavar="PATH", help="a dataset to inspect: a bundled or cached name, a file or a folder"
    )
    datasets.add_argument("--field", help=FIELD_HELP)
    add_split_flag(datasets)
    datasets.add_argument("--model", metavar="SRC", help="count tokens with this model's tokenizer")
    datasets.add_argument("--tokens", action="store_true", help="count tokens (needs --model)")
    datasets.add_argument(
        "--vocab-size",
        type=whole_number,
        metavar="N",
        help="with a scratch: model, the vocabulary of its tokenizer (default: as training)",
    )
    datasets.add_argument("--json", action="store_true", help="print JSON for scripts")
    datasets.set_defaults(handler=cmd_datasets)
    datasets.epilog = (
        "Also: 'lmwb datasets check PATH [--model SRC]' reports duplicates, train/validation leakage, encoding "
        "problems and lengths; 'lmwb datasets dedupe PATH --out NEWPATH [--near]' writes a copy without "
        "duplicates; 'lmwb datasets tokenizers PATH [--sizes N,N,...]' compares vocabularies for a scratch model "
        "(each has its own --help)."
    )

    models = commands.add_parser("models", help="list model sources: presets, cached Hub models, run checkpoints")
    models.add_argument("--json", action="store_true", help="print JSON for scripts")
    models.set_defaults(handler=cmd_models)

    _add_runs_parser(commands)
    _add_generate_parser(commands)
    _add_score_parser(commands)
    _add_lens_parser(commands)

    history = commands.add_parser("history", help="past generations, with full-text search")
    history.add_argument("--search", metavar="QUERY", help="full-text search over prompts and texts")
    history.add_argument("--limit", type=positive_int, default=20, help="how many to show (default: 20)")
    history.add_argument("--json", action="store_true", help="print JSON for scripts")
    history.set_defaults(handler=cmd_history)

    _add_dataset_action_parsers(commands)
    _add_train_parser(commands)
    _add_sweep_parser(commands)
    _add_sweeps_parser(commands)

    evaluate = commands.add_parser("eval", help="loss, perplexity and bits per byte of a model on a dataset")
    evaluate.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    evaluate.add_argument("--dataset", required=True, metavar="PATH_OR_NAME", help="a bundled name, file or folder")
    evaluate.add_argument("--field", help=FIELD_HELP)
    # --split names the part of the tokens measured (as training holds it out); this, a saved dataset's split.
    add_split_flag(evaluate, "--dataset-split")
    evaluate.add_argument(
        "--split", choices=("val", "all"), default="val", help="the validation split (default) or the whole dataset"
    )
    _add_flags(
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
    return parser


def _add_runs_parser(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="list, show, delete and export training runs")
    runs.add_argument("--status", type=run_status, help="only runs with this status (running, completed, ...)")
    runs.add_argument("--search", metavar="QUERY", help="only runs whose name, model or dataset contains this")
    runs.add_argument(
        "--sort",
        choices=tuple(RUN_ORDERINGS),
        default="created_at",
        help="sort field (default: created_at, newest first)",
    )
    runs.add_argument("--reverse", action="store_true", help="reverse the sort order")
    runs.add_argument("--json", action="store_true", help="print JSON for scripts")
    runs.set_defaults(handler=cmd_runs_list)
    actions = runs.add_subparsers(title="actions", metavar="ACTION")

    show = actions.add_parser(
        "show", help="one run: config, metrics, checkpoints, samples, and each probe prompt's latest completion"
    )
    show.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(handler=cmd_runs_show)

    delete = actions.add_parser("delete", help="delete a run with its metrics and checkpoints")
    delete.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_runs_delete)

    export = actions.add_parser("export", help="a run's metrics as CSV or JSON")
    export.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    export.add_argument("--format", choices=("csv", "json"), default="json", help="csv or json (default: json)")
    export.add_argument("--output", type=Path, metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=cmd_runs_export)

    probes = actions.add_parser(
        "probes", help="a run's probe prompts and the completion at each evaluated step, changes highlighted"
    )
    probes.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    probes.add_argument("--prompt", metavar="TEXT", help="only this probe prompt")
    probes.add_argument("--json", action="store_true", help="print JSON for scripts")
    probes.set_defaults(handler=cmd_runs_probes)

    follow = actions.add_parser(
        "follow", help="the live progress of a run, wherever it was started (Ctrl+C leaves the run going)"
    )
    follow.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    follow.set_defaults(handler=cmd_runs_follow)
    for action, text in (
        ("pause", "pause a running run between two steps (it keeps its place and memory)"),
        ("continue", "continue a paused run"),
        ("stop", "stop a run with a checkpoint (it can be resumed), or cancel a queued one"),
    ):
        control = actions.add_parser(action, help=text)
        control.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
        control.set_defaults(handler=cmd_runs_control, action=action)

    compare = actions.add_parser(
        "compare",
        help="runs side by side: the settings that differ, best val loss, bits/byte, tokens/s, steps, wall time",
    )
    compare.add_argument("run_ids", nargs="+", metavar="ID", help="two run ids or more (unique prefixes are enough)")
    compare.add_argument("--json", action="store_true", help="print JSON for scripts")
    written = compare.add_mutually_exclusive_group()
    written.add_argument("--csv", type=Path, metavar="FILE", help="also write the comparison as CSV to FILE")
    written.add_argument("--markdown", type=Path, metavar="FILE", help="also write it as a Markdown table to FILE")
    compare.set_defaults(handler=cmd_runs_compare)

    export_model = actions.add_parser(
        "export-model", help="a run's checkpoint as a plain Hugging Face model directory (LoRA adapters merged in)"
    )
    export_model.add_argument("run_id", metavar="ID", help="run id (a unique prefix is enough)")
    export_model.add_argument("directory", type=Path, metavar="DIR", help="a new (or empty) directory to write")
    export_model.add_argument(
        "--step", type=non_negative_int, metavar="N", help="that step's checkpoint (default: the latest)"
    )
    export_model.set_defaults(handler=cmd_runs_export_model)


# Sampling flags: (flag, the GenerationSettings field it sets, type, help).
GENERATION_FLAGS = (
    ("--max-new-tokens", "max_new_tokens", whole_number, "how many tokens at most"),
    ("--temperature", "temperature", number, "0 is greedy; higher is more random"),
    ("--top-k", "top_k", whole_number, "sample from the k likeliest tokens (0: all)"),
    ("--top-p", "top_p", number, "sample from the smallest set of tokens holding this probability"),
    ("--repetition-penalty", "repetition_penalty", number, "above 1 discourages repeats"),
    ("--seed", "seed", whole_number, "same seed, same text"),
    ("--alternatives", "alternatives", whole_number, "top alternatives per token in --json"),
)


def _add_generate_parser(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate",
        help="stream text from a model, token by token",
        description="Stream text from a model. Text goes to stdout as each token arrives; "
        "a summary goes to stderr. Ctrl+C stops and still records the generation.",
    )
    generate.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    prompt = generate.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="the prompt; '-' reads it from stdin (as does a pipe)")
    prompt.add_argument("--prompt-file", type=Path, metavar="FILE", help="read the prompt from a UTF-8 file")
    sampling = generate.add_argument_group("sampling settings (defaults: the engine's GenerationSettings)")
    _add_flags(sampling, GENERATION_FLAGS)
    sampling.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop when this text appears (repeatable)"
    )
    generate.add_argument("--dataset", metavar="PATH_OR_NAME", help="for scratch: models, the tokenizer's dataset")
    add_split_flag(generate)
    generate.add_argument(
        "--device", type=device_name, default="auto", metavar="DEVICE", help="auto (default), cpu, cuda[:N] or mps"
    )
    generate.add_argument("--json", action="store_true", help="one JSON object per token, then a summary")
    generate.set_defaults(handler=cmd_generate)


def _add_score_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score",
        help="how surprised a model is by each token of a text, and its loss and bits per byte",
        description="Score every token of a text: its log-probability (natural log) given the tokens before it, "
        "its rank (1: the model's first choice), the entropy of the prediction and the surprise (bits); then the "
        "summed log-probability, the loss per token and bits per byte. The first token is scored from the "
        "start-of-text token; a text longer than the model's context is read in sliding windows half a context "
        "apart, each token scored once. In a terminal the text is coloured by surprise (with --against: by B's "
        "surprise minus A's, red where B is more surprised, blue where less).",
    )
    score.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    score.add_argument(
        "--against", metavar="SRC", help="a second model with the same tokenizer: both scores, token by token"
    )
    _add_text_flags(score)
    score.add_argument("--json", action="store_true", help="every token and the totals as JSON")
    score.set_defaults(handler=cmd_score)


def _add_lens_parser(commands: argparse._SubParsersAction) -> None:
    lens = commands.add_parser(
        "lens",
        help="the logit lens: what each layer of a GPT-2 model predicts at one place of a text",
        description="The final layer norm and the LM head applied to the hidden state after the embeddings and "
        "after every block, at one position: each layer's likeliest tokens, its entropy (bits), and the "
        "probability and rank it gives the token really there. Position P is token P's place (read from the "
        "token before it); the default, the number of tokens (or -1), is the place after the text. The last "
        "layer is the model's own output. GPT-2 family models only.",
    )
    lens.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    _add_text_flags(lens)
    lens.add_argument(
        "--position",
        type=whole_number,
        metavar="P",
        help="token P's place, 0 for the first; negative counts back from the place after the text (default: -1)",
    )
    lens.add_argument("--top", type=whole_number, metavar="K", help="likeliest tokens per layer (default: 5)")
    lens.add_argument("--json", action="store_true", help="every layer's readout as JSON")
    lens.set_defaults(handler=cmd_lens)


def _add_text_flags(parser: argparse.ArgumentParser) -> None:
    """The text a command reads: --text or --text-file, one of them; and how its models load."""
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="TEXT", help="the text")
    text.add_argument("--text-file", type=Path, metavar="FILE", help="read the text from a UTF-8 file")
    parser.add_argument("--dataset", metavar="PATH_OR_NAME", help="for scratch: models, the tokenizer's dataset")
    add_split_flag(parser)
    parser.add_argument(
        "--device", type=device_name, default="auto", metavar="DEVICE", help="auto (default), cpu, cuda[:N] or mps"
    )


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


# `lmwb datasets PATH` inspects a dataset, so `datasets` cannot also take subcommands in argparse:
# `lmwb datasets check ...` is parsed as the command "datasets check" (see _routed), which
# `lmwb --help` does not list on its own (the datasets command's help names it).
DATASET_ACTIONS = ("check", "dedupe", "tokenizers")


def _routed(argv: Sequence[str]) -> list[str]:
    """``datasets check ARGS`` as the one command "datasets check" (a dataset named check: ./check)."""
    if len(argv) >= 2 and argv[0] == "datasets" and argv[1] in DATASET_ACTIONS:
        return [f"datasets {argv[1]}", *argv[2:]]
    return list(argv)


def _add_dataset_action_parsers(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "datasets check",
        description="Check a dataset before training on it: exact and near duplicate documents, duplicate "
        "lines, text of the validation split that also sits in training, encoding problems, document lengths, "
        "and, with --model, its tokens against the model's size. A report, so it exits 0 whatever it finds; "
        "a second check of the same data is read from the cache.",
    )
    check.add_argument("path", metavar="PATH", help="a dataset: a bundled or cached name, a file or a folder")
    check.add_argument("--model", metavar="SRC", help="measure tokens and leakage with this model's tokenizer")
    check.add_argument("--field", help=FIELD_HELP)
    add_split_flag(check)
    check.add_argument("--json", action="store_true", help="print JSON for scripts")
    check.set_defaults(handler=cmd_datasets_check)

    dedupe = commands.add_parser(
        "datasets dedupe",
        description="Write a copy of a dataset without the documents that copy an earlier one (and, with "
        "--near, those that nearly do). The original is never touched: a file is written as a new file of "
        "its format (.jsonl records and .csv rows kept whole), a folder as a new folder, any other format as "
        "JSONL with a 'text' field.",
    )
    dedupe.add_argument("path", metavar="PATH", help="a dataset: a bundled or cached name, a file or a folder")
    dedupe.add_argument("--out", required=True, metavar="NEWPATH", help="where to write the copy (must not exist)")
    dedupe.add_argument("--near", action="store_true", help="also leave out near duplicates (as the check finds)")
    dedupe.add_argument("--field", help=FIELD_HELP)
    add_split_flag(dedupe)
    dedupe.add_argument("--json", action="store_true", help="print JSON for scripts")
    dedupe.set_defaults(handler=cmd_datasets_dedupe)

    tokenizers = commands.add_parser(
        "datasets tokenizers",
        description="Which vocabulary should a model trained from scratch on this dataset have? Trains byte-level "
        "BPE tokenizers of a few sizes on it (and of the size lmwb train would pick), and measures each, GPT-2's "
        "(when it is in the Hugging Face cache; never downloaded) and --model's: bytes per token, vocabulary "
        "entries the data shows fewer than 10 times, and embedding parameters at the width of --model's scratch "
        "preset (else tiny's). Measured on the whole dataset, as a scratch model sees it. The tokenizers and the "
        "token ids are cached, so training on one of them starts at once.",
    )
    tokenizers.add_argument("path", metavar="PATH", help="a dataset: a bundled or cached name, a file or a folder")
    tokenizers.add_argument(
        "--sizes", metavar="N,N,...", help="vocabulary sizes to train, at least 257 each (default: 1000,4000,16000)"
    )
    tokenizers.add_argument(
        "--model", metavar="SRC", help="compare this model's tokenizer too; a scratch: preset sets the width"
    )
    tokenizers.add_argument("--field", help=FIELD_HELP)
    add_split_flag(tokenizers)
    tokenizers.add_argument("--json", action="store_true", help="print JSON for scripts")
    tokenizers.set_defaults(handler=cmd_datasets_tokenizers)


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
    _add_flags(settings, TRAINING_FLAGS)
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


# How each argument type shows in --help.
METAVARS = {
    whole_number: "N",
    whole_number_or_auto: "N|auto",
    number: "X",
    device_name: "DEVICE",
    precision_name: "PRECISION",
    str: "TEXT",
    list: "TEXT",
}


def _add_flags(group: argparse._ActionsContainer, flags: Sequence[tuple[str, str, Callable, str]]) -> None:
    """Add settings flags whose dest is the settings field they set (left out: None, the engine's default).

    A flag of kind ``bool`` is a switch that takes no value and turns its setting on; one of kind
    ``list`` is repeatable, each use adding an item.
    """
    for flag, field, kind, text in flags:
        if kind is bool:
            group.add_argument(flag, dest=field, action="store_const", const=True, help=text)
        elif kind is list:
            group.add_argument(flag, dest=field, action="append", metavar=METAVARS[kind], help=text)
        else:
            group.add_argument(flag, dest=field, type=kind, metavar=METAVARS[kind], help=text)


# ---------------------------------------------------------------------------
# Entry point and error handling.


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lmwb` with ``argv`` (default: the process arguments) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(_routed(sys.argv[1:] if argv is None else argv))
    except SystemExit as ending:  # --help, --version, or a usage mistake already reported
        return ending.code if isinstance(ending.code, int) else EXIT_USAGE
    try:
        return args.handler(args)
    except WorkbenchError as error:
        _print_error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _print_error("interrupted", prefix="lmwb")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BUG
    except Exception as error:  # noqa: BLE001 - a bug: one line here, the traceback in a log file
        log = _write_traceback_log()
        message = " ".join(f"{type(error).__name__}: {error}".split())
        print(f"lmwb: internal error: {message} (full traceback in {log}; please report it)", file=sys.stderr)
        return EXIT_BUG


def _print_error(message: str, prefix: str = "lmwb: error") -> None:
    one_line = " ".join(message.split())
    print(f"{prefix}: {one_line}", file=sys.stderr)


def _write_traceback_log() -> Path:
    """Write the current exception's traceback under $LMWB_HOME/logs (or the temp dir if that fails)."""
    text = traceback.format_exc()
    name = f"lmwb-{datetime.now():%Y%m%d-%H%M%S}-{threading.get_native_id()}.log"
    try:
        from engine.home import ensure_private_dir, workbench_home

        path = ensure_private_dir(workbench_home() / "logs") / name
        path.write_text(text, encoding="utf-8")
    except (OSError, WorkbenchError):
        import tempfile

        path = Path(tempfile.gettempdir()) / name
        path.write_text(text, encoding="utf-8")
    return path


def _silence_stdout() -> None:
    """After a closed pipe (``lmwb generate ... | head``), keep Python's exit flush from failing too."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], signals: Sequence[int] = (signal.SIGINT,)) -> Iterator[threading.Event]:
    """While inside, Ctrl+C (and the other ``signals``) call ``stop()`` instead of raising KeyboardInterrupt.

    Stopping through the engine (cancel a stream, stop a job) lets it end
    cleanly: the generation is recorded, the run checkpointed. The yielded
    event is set once a signal came, so a progress display can say so.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signal handlers can only be set from the main thread
        return
    previous = {number: signal.getsignal(number) for number in signals}

    def handle(number: int, frame: object) -> None:
        requested.set()
        stop()

    for number in signals:
        signal.signal(number, handle)
    try:
        yield requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def settings_named_by_flags(flags: dict[str, str]) -> Iterator[None]:
    """Report a bad setting by the flag the user typed (``--block-size``), not the engine's field name."""
    try:
        yield
    except SettingsError as error:
        if error.field not in flags:
            raise
        raise CommandError(f"{flags[error.field]}: {error.reason}") from error


# ---------------------------------------------------------------------------
# Output helpers.

# Tables sent to a pipe or file are laid out this wide (Rich's default there is
# 80 columns, which folds ids and dates).
PIPE_WIDTH = 160


def print_json(value: Any) -> None:
    """Pretty JSON on stdout, for scripts (``jq`` and friends)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _cell(value: Any, digits: int = 4) -> Text:
    """A table cell: user text is never read as Rich markup; numbers are formatted, None is a dash."""
    if value is None:
        return Text("–", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.{digits}f}")
    if isinstance(value, int):
        return Text(f"{value:,}")
    return Text(str(value))


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    return table


def _key_values(title: str, pairs: Sequence[tuple[str, Any]]) -> Group:
    """A titled list of ``name  value`` lines, for one thing's details."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(key, _cell(value))
    return Group(Text(title, style="bold underline"), table)


def _shorten(text: str, width: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _local_time(iso: str | None) -> str | None:
    """A store timestamp (ISO-8601 UTC) as this machine's local time, to the minute."""
    if iso is None:
        return None
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


@contextlib.contextmanager
def _status_line(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr for people (nothing when stderr is a pipe); yields a function to update it."""
    console = _stderr()
    if not console.is_terminal:
        yield lambda text: None
        return
    with console.status(message) as status:
        yield lambda text: status.update(text)


def _open_store() -> RunStore:
    """The run store, with runs left 'running' by dead processes marked 'interrupted' (and the queue moved on)."""
    from engine.run_process import check_runs
    from engine.store import RunStore

    store = RunStore()
    check_runs(store)
    return store


# ---------------------------------------------------------------------------
# lmwb (no command): the app.


def open_app(args: argparse.Namespace) -> int:
    """Open the Textual app; textual is imported only here."""
    from tui.app import run_app

    run_app()
    return EXIT_OK


# ---------------------------------------------------------------------------
# lmwb datasets


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the bundled and Hugging Face cache datasets, or show one dataset's stats and preview."""
    from engine.datasets import bundled_datasets, cached_datasets

    if args.tokens and not args.model:
        raise CommandError("--tokens needs --model SRC: how many tokens depends on the tokenizer.")
    if args.path is not None:
        dataset = _open_dataset_for(args)
        summary = _dataset_summary(dataset, args.model, args.vocab_size) | {"preview": dataset.preview()}
        if args.json:
            print_json(summary)
            return EXIT_OK
        console = _stdout()
        details = [item for item in summary.items() if item[0] != "preview"]
        console.print(_key_values(f"Dataset {dataset.name}", details))
        console.print()
        console.print(Text("Preview", style="bold"))
        console.print(Text(summary["preview"]))
        return EXIT_OK

    for flag, value in (("--field", args.field), ("--split", args.dataset_split)):
        if value:
            raise CommandError(
                f"{flag} applies to a dataset PATH, e.g. 'lmwb datasets data.jsonl --field body' or "
                "'lmwb datasets ./saved --split train'."
            )
    summaries = [
        {**_dataset_summary(dataset, args.model, args.vocab_size), "kind": "bundled"} for dataset in bundled_datasets()
    ]
    # A cached dataset may be gigabytes: it is listed by its files; 'lmwb datasets NAME --split S' reads it.
    cached = cached_datasets()
    if args.json:
        print_json(summaries + [_cached_summary(dataset) for dataset in cached])
        return EXIT_OK
    console = _stdout()
    columns = ["name", "files", "bytes", "documents", "characters"] + (["tokens"] if args.model else []) + ["path"]
    console.print(_table("Bundled datasets", columns, [[row[c] for c in columns] for row in summaries]))
    if cached:
        rows = [{**row, "splits": ", ".join(row["splits"])} for row in map(_cached_summary, cached)]
        table = [[row[column] for column in CACHED_COLUMNS] for row in rows]
        console.print(_table("In the Hugging Face cache (read offline)", CACHED_COLUMNS, table))
    return EXIT_OK


CACHED_COLUMNS = ["name", "splits", "files", "bytes", "path"]


def _cached_summary(dataset: Any) -> dict[str, Any]:
    """A dataset in the Hugging Face cache as listed: its splits and files, not read (it may be gigabytes)."""
    return {
        "name": dataset.name,
        "kind": "hf cache",
        "splits": list(dataset.split_names),
        "files": sum(len(dataset.files(split)) for split in dataset.split_names),
        "bytes": dataset.bytes,
        "path": str(dataset.path),
    }


def _dataset_summary(dataset: Any, model: str | None, vocab_size: int | None) -> dict[str, Any]:
    stats = dataset.stats()
    summary: dict[str, Any] = {
        "name": dataset.name,
        "path": str(dataset.path),
        "files": stats.files,
        "bytes": stats.bytes,
        "documents": stats.documents,
        "characters": stats.characters,
    }
    if dataset.field is not None:
        summary["field"] = dataset.field
    if dataset.split is not None:
        summary["split"] = dataset.split
    if model:
        summary["tokens"] = _count_tokens(dataset, model, vocab_size)
        summary["tokenizer"] = model
    return summary


def _count_tokens(dataset: Any, model: str, vocab_size: int | None) -> int:
    from engine.datasets import count_tokens

    with _status_line(f"Counting tokens in {dataset.name}…") as update:
        tokenizer = _tokenizer_for(model, dataset, vocab_size, update)

        def progress(done: int, total: int) -> None:
            update(f"Counting tokens in {dataset.name}: {done / max(total, 1):.0%}")

        return count_tokens(dataset, tokenizer, progress=progress)


def _tokenizer_for(model: str, dataset: Any, vocab_size: int | None, update: Callable[[str], None]) -> Any:
    """The model's tokenizer; a scratch: model's is trained on the dataset being counted."""
    from engine.models import ModelRequest
    from engine.training_config import TrainingConfig

    # The vocabulary a training run of this preset would use, unless asked otherwise.
    vocab_size = TrainingConfig.vocab_size if vocab_size is None else vocab_size
    with settings_named_by_flags({"vocab_size": "--vocab-size"}):
        return ModelRequest.of(model, dataset, vocab_size=vocab_size).load_tokenizer(progress=update)


# ---------------------------------------------------------------------------
# lmwb datasets check / dedupe

HEALTH_PHASES = {
    "reading": "Reading",
    "near duplicates": "Near duplicates",
    "tokenizing": "Tokenizing",
    "leakage": "Leakage",
    "leakage by document": "By document",
}


def cmd_datasets_check(args: argparse.Namespace) -> int:
    """Report on a dataset's duplicates, leakage, encoding, lengths and (with --model) tokens; exit 0."""
    from engine.dataset_health import check_dataset, checked_model

    dataset = _open_dataset_for(args)
    model = None
    if args.model:
        with _status_line(f"Loading {args.model}…") as update:
            model = checked_model(args.model, dataset, progress=update)
    with _health_progress() as progress:
        report = check_dataset(dataset, model, progress=progress)
    if args.json:
        print_json(report.as_dict())
    else:
        from tui.widgets.health_report import health_report

        _stdout().print(health_report(report))
    return EXIT_OK


def cmd_datasets_dedupe(args: argparse.Namespace) -> int:
    """Write a copy of a dataset without its duplicate documents; the original is never touched."""
    from engine.dataset_health import dedupe_dataset

    dataset = _open_dataset_for(args)
    with _health_progress() as progress:
        result = dedupe_dataset(dataset, Path(args.out), near=args.near, progress=progress)
    if args.json:
        print_json(result.as_dict())
        return EXIT_OK
    removed = f"{result.exact_removed:,} exact cop{'y' if result.exact_removed == 1 else 'ies'}"
    if args.near:
        removed += f" and {result.near_removed:,} near cop{'y' if result.near_removed == 1 else 'ies'}"
    console = _stdout()
    console.print(  # soft wrap: a path is never broken at the console's width, so it can be copied whole
        Text(f"Removed {removed} of {result.documents:,} documents; wrote the other {result.kept:,} to {result.out}."),
        soft_wrap=True,
    )
    if result.note:
        console.print(Text(f"The copy is {result.note}.", style="dim"))
    return EXIT_OK


def cmd_datasets_tokenizers(args: argparse.Namespace) -> int:
    """BPE tokenizers of a few sizes trained on a dataset, against GPT-2's and the model's; the vocabulary to use."""
    from engine.tokenizer_lab import DEFAULT_SIZES, compare_tokenizers, parse_sizes

    with settings_named_by_flags({"sizes": "--sizes"}):
        sizes = DEFAULT_SIZES if args.sizes is None else parse_sizes(args.sizes)
    dataset = _open_dataset_for(args)
    with _status_line(f"Comparing tokenizers on {dataset.name}…") as update:
        comparison = compare_tokenizers(dataset, sizes, model=args.model, progress=update)
    assert comparison is not None  # only a cancel makes it None, and nothing here cancels
    if args.json:
        print_json(comparison.as_dict())
    else:
        from tui.widgets.tokenizer_lab import tokenizer_lab_report

        _stdout().print(tokenizer_lab_report(comparison))
    return EXIT_OK


def _open_dataset_for(args: argparse.Namespace) -> Any:
    """The dataset PATH of an `lmwb datasets` command, as --field and --split read it."""
    from engine.datasets import open_dataset

    with settings_named_by_flags(SPLIT_FLAG):
        return open_dataset(args.path, field=args.field, split=args.dataset_split)


@contextlib.contextmanager
def _health_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr for the check's phases (nothing when stderr is not a terminal)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    console = _stderr()
    if not console.is_terminal:
        yield lambda phase, done, total: None
        return
    columns = (TextColumn("{task.description:<16}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, console=console, transient=True) as display:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = display.add_task(HEALTH_PHASES.get(phase, phase), total=total)
            display.update(tasks[phase], completed=done, total=total)

        yield update


# ---------------------------------------------------------------------------
# lmwb models


def cmd_models(args: argparse.Namespace) -> int:
    """Everything that can go after --model: presets, cached Hub models, run checkpoints."""
    from engine.models import list_model_choices

    choices = [_as_dict(choice) for choice in list_model_choices(_open_store())]
    if args.json:
        print_json(choices)
        return EXIT_OK
    rows = [[choice["source"], choice["kind"], choice["description"]] for choice in choices]
    _stdout().print(_table("Model sources", ["source", "kind", "description"], rows))
    return EXIT_OK


def _as_dict(value: Any) -> dict[str, Any]:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return dataclasses.asdict(value)


# ---------------------------------------------------------------------------
# lmwb runs


def cmd_runs_list(args: argparse.Namespace) -> int:
    """Runs, filtered and sorted, newest first by default."""
    descending = RUN_ORDERINGS[args.sort] != args.reverse
    runs = _open_store().list_runs(status=args.status, search=args.search, order_by=args.sort, descending=descending)
    rows = [run.as_dict() for run in runs]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        _stdout().print("No runs yet. Start one with: lmwb train --model scratch:tiny --dataset NAME")
        return EXIT_OK
    columns = ["id", "name", "status", "model", "dataset", "steps", "best val loss", "created"]
    table_rows = [
        [
            row["id"],
            row["name"],
            row["status"],
            model_label(row["model"], row["lora"], row["world_size"]),
            row["dataset"],
            row["steps"],
            row["best_val_loss"],
            _local_time(row["created_at"]),
        ]
        for row in rows
    ]
    _stdout().print(_table("Runs", columns, table_rows))
    return EXIT_OK


def cmd_runs_show(args: argparse.Namespace) -> int:
    """One run in full: config, metrics summary, samples, checkpoints, each probe prompt's latest completion."""
    store = _open_store()
    run = store.get_run(args.run_id)
    detail = run.as_dict()
    detail["metrics_summary"] = summarize_metrics(store.metrics(run.id))
    detail["samples"] = store.samples(run.id)
    detail["checkpoints"] = store.checkpoints(run.id)
    detail["probes"] = [{"prompt": prompt, **steps[-1]} for prompt, steps in _probe_timelines(store, run.id).items()]
    if args.json:
        print_json(detail)
        return EXIT_OK

    _print_run(detail)
    return EXIT_OK


def _print_run(detail: dict[str, Any]) -> None:
    """A run for people: what it is, how far it got, its config, checkpoints, latest samples and probes."""
    console = _stdout()
    summary = detail["metrics_summary"]
    status = detail["status"] + (f": {detail['error']}" if detail["error"] else "")
    about = [
        ("name", detail["name"]),
        ("status", status),
        ("model", detail["model"]),
        ("dataset", detail["dataset"]),
        ("steps", detail["steps"]),
        ("tokens", detail["tokens"]),
        ("best val loss", detail["best_val_loss"]),
        ("created", _local_time(detail["created_at"])),
        ("finished", _local_time(detail["finished_at"])),
        ("LoRA", detail["lora"]),
        ("processes", detail["world_size"]),
    ] + ([("notes", detail["notes"])] if detail["notes"] else [])
    console.print(_key_values(f"Run {detail['id']}", about))
    console.print()
    # Config values as typed (a seed is 1337, not 1,337).
    console.print(
        _key_values(
            "Config", [(key, None if value is None else str(value)) for key, value in sorted(detail["config"].items())]
        )
    )
    console.print()
    console.print(
        _key_values(
            "Metrics",
            [
                ("logged steps", summary["logged_steps"]),
                (
                    "train loss",
                    f"{_cell(summary['first_train_loss']).plain} → {_cell(summary['last_train_loss']).plain}",
                ),
                ("best val loss", summary["best_val_loss"]),
                ("last val loss", summary["last_val_loss"]),
                ("last val perplexity", summary["last_val_ppl"]),
                ("last val bits/byte", summary["last_val_bpb"]),
                ("tokens/s", None if summary["tokens_per_sec"] is None else round(summary["tokens_per_sec"])),
            ],
        )
    )
    if detail["checkpoints"]:
        rows = [[c["step"], c["val_loss"], c["path"]] for c in detail["checkpoints"]]
        console.print(_table("Checkpoints", ["step", "val loss", "path"], rows))
    for sample in detail["samples"][-3:]:
        console.print()
        console.print(Text(f"Sample at step {sample['step']}", style="bold"))
        console.print(Text(f"{sample['prompt']}{sample['text']}"))
    if detail["probes"]:
        console.print()
        console.print(Text("Probes: each prompt's latest completion (all of them: lmwb runs probes ID)", style="bold"))
        _print_probe_timelines(console, {probe["prompt"]: [probe] for probe in detail["probes"]})


def summarize_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a person asks of a run's metrics: how far, where the loss started and ended, the best eval."""

    def values(key: str) -> list[Any]:
        return [row[key] for row in rows if row.get(key) is not None]

    train_losses, val_losses = values("train_loss"), values("val_loss")
    speeds = values("tokens_per_sec")
    evaluated = [row for row in rows if row.get("val_loss") is not None]
    last_eval = evaluated[-1] if evaluated else {}
    return {
        "logged_steps": len(rows),
        "last_step": rows[-1]["step"] if rows else None,
        "first_train_loss": train_losses[0] if train_losses else None,
        "last_train_loss": train_losses[-1] if train_losses else None,
        "best_val_loss": min(val_losses) if val_losses else None,
        "last_val_loss": last_eval.get("val_loss"),
        "last_val_ppl": last_eval.get("val_ppl"),
        "last_val_bpb": last_eval.get("val_bpb"),
        "tokens_per_sec": speeds[-1] if speeds else None,
    }


def cmd_runs_follow(args: argparse.Namespace) -> int:
    """The live progress of any run on this LMWB_HOME, read from the store; Ctrl+C leaves the run going."""
    from engine.run_process import progress_of
    from engine.store import FINISHED_STATUSES

    store = _open_store()
    run = store.get_run(args.run_id)
    last_check = time.monotonic()

    def next_progress(interval: float = 0.25) -> tuple[Any, bool]:
        nonlocal run, last_check
        if leaving.wait(interval):
            return _stored_progress(run, progress_of(run)), True
        if time.monotonic() - last_check > 2.0:  # a run whose process died is marked interrupted
            store.mark_interrupted_runs()
            last_check = time.monotonic()
        run = store.get_run(run.id)
        return _stored_progress(run, progress_of(run)), run.status in FINISHED_STATUSES

    with stop_on_signals(lambda: None) as leaving:
        print(
            f"Following run {run.id} ({run.name}), {run.status}. Ctrl+C stops following; the run goes on.", flush=True
        )
        follow_progress(next_progress, threading.Event())
    if leaving.is_set() and run.status not in FINISHED_STATUSES:
        print(f"Stopped following; run {run.id} goes on. Follow it again: lmwb runs follow {run.id}", flush=True)
        return EXIT_OK
    _print_training_summary(store, run, _stored_progress(run, progress_of(run)))
    return EXIT_OK


def _stored_progress(run: Any, progress: Any) -> Any:
    """A run's progress record with its current status (a queued run has none yet; a dead one says so)."""
    from engine.run_process import TrainingProgress

    if progress is None:
        progress = TrainingProgress(step=run.steps, tokens=run.tokens, max_steps=run.config.get("max_steps", 0))
    phase = progress.phase if run.status in ("running", "starting") else run.status
    return dataclasses.replace(progress, status=run.status, phase=phase, message=run.error or progress.message)


def cmd_runs_control(args: argparse.Namespace) -> int:
    """Pause, continue or stop a run (a queued one is cancelled) and wait for its answer."""
    from engine.run_process import ANSWER_TIMEOUT, control_run

    store = _open_store()
    doing = {"pause": "pausing", "continue": "continuing", "stop": "stopping"}[args.action]
    with _status_line(f"Asking run {args.run_id} to {args.action} (it answers between two steps)…") as update:

        def waiting(run: Any) -> None:
            if run.progress and run.progress.get("phase") == "stopping":
                update(f"Run {run.id} is stopping: saving a checkpoint…")
            else:
                update(f"Waiting up to {ANSWER_TIMEOUT:g} s for run {run.id} to answer ({doing})…")

        run = control_run(store, args.run_id, args.action, waiting=waiting)
    if run.status == "cancelled":
        print(f"Cancelled queued run {run.id}; it never started.", flush=True)
    elif run.status == "paused":
        print(f"Run {run.id} paused at step {run.steps}. Continue it with: lmwb runs continue {run.id}", flush=True)
    elif run.status == "running":
        print(f"Run {run.id} continues from step {run.steps}.", flush=True)
    else:
        checkpoints = store.checkpoints(run.id)
        saved = f"; checkpoint {checkpoints[-1]['path']}" if checkpoints else ""
        print(f"Run {run.id} {run.status} at step {run.steps}{saved}.", flush=True)
        if run.status == "stopped":
            print(f"Resume it with: lmwb train --resume {run.id}", flush=True)
    return EXIT_OK


def cmd_runs_delete(args: argparse.Namespace) -> int:
    """Delete a run that is not running, after asking (on a terminal) unless --yes."""
    from engine.store import ACTIVE_STATUSES

    store = _open_store()
    run = store.get_run(args.run_id)
    if run.status in ACTIVE_STATUSES:
        raise CommandError(
            f"Run {run.id} is {run.status} (process {run.pid} on {run.host}); stop it first, then delete it."
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"Not deleting run {run.id} without confirmation; pass --yes to delete it.")
        checkpoints = len(store.checkpoints(run.id))
        answer = input(f"Delete run {run.id} ({run.name}, {run.steps} steps, {checkpoints} checkpoints)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.", file=sys.stderr)
            return EXIT_OK
    store.delete_run(run.id)
    print(f"Deleted run {run.id}.", file=sys.stderr)
    return EXIT_OK


def cmd_runs_export(args: argparse.Namespace) -> int:
    """A run's metrics as CSV or JSON, to stdout or a file."""
    store = _open_store()
    run = store.get_run(args.run_id)
    text = store.export_run(run.id, args.format)
    if args.output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return EXIT_OK
    _write_text(args.output, text, "--output")
    print(f"Wrote run {run.id} as {args.format} to {args.output}.", file=sys.stderr)
    return EXIT_OK


def cmd_runs_compare(args: argparse.Namespace) -> int:
    """Runs side by side: a table (or JSON), optionally written as CSV or Markdown too."""
    from engine.comparison import compare_runs

    comparison = compare_runs(_open_store(), args.run_ids)
    for path, fmt, text in ((args.csv, "CSV", comparison.to_csv), (args.markdown, "Markdown", comparison.to_markdown)):
        if path is not None:
            _write_text(path, text(), "--" + fmt.lower())
            print(f"Wrote the comparison of {len(comparison.runs)} runs as {fmt} to {path}.", file=sys.stderr)
    if args.json:
        print_json(comparison.as_json())
    else:
        _print_comparison(comparison)
    return EXIT_OK


# A best value's marker, read without colour too.
BEST_MARK = "*"
# Names cut shorter than this say nothing: a table of a row per run that leaves them less is turned around.
MIN_NAME_WIDTH = 8


def _print_comparison(comparison: Any) -> None:
    """The comparison's table (best values bold green and starred), then the settings every run shares."""
    console = _stdout()
    rows = [
        [Text(f"{cell.text} {BEST_MARK}", style="bold green") if cell.best else Text(cell.text) for cell in cells]
        for cells in comparison.cells()
    ]
    console.print(
        _runs_as_rows(comparison.header(), rows, console.width) or _runs_as_columns(comparison.header(), rows)
    )
    console.print(
        f"{BEST_MARK} best: lowest val loss, bits/byte and wall time (training time, pauses left out); "
        "highest tokens/s (median)."
    )
    same = f"Same in all {len(comparison.runs)} runs: {comparison.same_text()}"
    room = 2 * console.width  # two lines
    if len(same) > room:
        same = _shorten(same, room - len(MORE_SAME)) + MORE_SAME
    console.print(Text(same, style="dim"))


def _runs_as_rows(header: list[str], rows: list[list[Text]], width: int) -> Table | None:
    """A row per run, if it fits ``width``: every column as wide as its widest value or title line (titles
    over two lines), and the run names (a sweep's repeat its settings) cut to what is left. None: too narrow."""
    titles = [two_lines(title) for title in header]
    widths = [
        max(len(line) for line in [*title.splitlines(), *(row[index].plain for row in rows)])
        for index, title in enumerate(titles)
    ]
    # Each column has a space after it, and a divider between it and the next.
    room_for_names = width - (sum(widths) - widths[1]) - (2 * len(widths) - 1)
    if room_for_names < MIN_NAME_WIDTH:
        return None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for index, (title, column_width) in enumerate(zip(titles, widths, strict=True)):
        if index == 1:
            table.add_column(title, no_wrap=True, overflow="ellipsis", width=min(column_width, room_for_names))
        else:
            table.add_column(title, no_wrap=True, width=column_width)
    for row in rows:
        table.add_row(*row)
    return table


def _runs_as_columns(header: list[str], rows: list[list[Text]]) -> Table:
    """A column per run, headed by its id, for a terminal too narrow for a row per run: the names are cut
    to the width of their column's values."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("", no_wrap=True)
    for row in rows:
        values = [cell.plain for index, cell in enumerate(row) if index != 1]
        table.add_column(row[0].plain, no_wrap=True, overflow="ellipsis", width=max(map(len, values)))
    for index, title in enumerate(header[1:], start=1):
        table.add_row(Text(title, style="bold"), *(row[index] for row in rows))
    return table


MORE_SAME = " (--json lists them all)"


def _write_text(path: Path, text: str, flag: str) -> None:
    """Write a file a command was asked for; a path that cannot be written is the user's to change."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise CommandError(f"Cannot write {path}: {error.strerror}. Choose another {flag} path.") from None


def cmd_runs_export_model(args: argparse.Namespace) -> int:
    """A run's checkpoint written as a plain Hugging Face model directory, LoRA adapters merged in."""
    from engine.model_source import ModelSource
    from engine.models import export_model

    store = _open_store()
    source = ModelSource("run", store.get_run(args.run_id).id, args.step)
    with _status_line(f"Exporting {source}…") as update:
        path = export_model(source, args.directory, store=store, progress=update)
    print(
        f"Wrote {source} to {path}; it loads with AutoModelForCausalLM.from_pretrained, or here as --model {path}.",
        file=sys.stderr,
    )
    return EXIT_OK


def _probe_timelines(store: RunStore, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each probe prompt of a run (in the order the run wrote them) with its completions by step: step, text."""
    timelines: dict[str, list[dict[str, Any]]] = {}
    for row in store.probes(run_id):
        timelines.setdefault(row["prompt"], []).append({"step": row["step"], "text": row["text"]})
    return timelines


def _print_probe_timelines(console: Console, timelines: dict[str, list[dict[str, Any]]]) -> None:
    """Each prompt on a line, then its completions a row a step, the words changed since the step before
    highlighted (``lmwb runs probes``, and the latest completions in ``lmwb runs show``)."""
    for prompt, steps in timelines.items():
        console.print(Text(prompt, style="bold"))  # on a line of its own: a table's title folds to the table
        table = Table(show_header=False, box=None)
        table.add_column(justify="right", style="dim", no_wrap=True)
        table.add_column(overflow="fold")
        previous = None
        for step in steps:
            table.add_row(f"step {step['step']:,}", changed_words(previous, step["text"]))
            previous = step["text"]
        console.print(table)


def cmd_runs_probes(args: argparse.Namespace) -> int:
    """Each probe prompt of a run with its completion at every evaluated step (text: what changed highlighted)."""
    store = _open_store()
    run = store.get_run(args.run_id)
    timelines = _probe_timelines(store, run.id)
    if args.prompt is not None:
        if args.prompt not in timelines:
            known = "; its prompts: " + ", ".join(map(repr, timelines)) if timelines else ""
            raise CommandError(f"Run {run.id} has no completions of the probe prompt {args.prompt!r}{known}.")
        timelines = {args.prompt: timelines[args.prompt]}
    if args.json:
        print_json({"prompts": [{"prompt": prompt, "steps": steps} for prompt, steps in timelines.items()]})
        return EXIT_OK
    console = _stdout()
    if not timelines:
        console.print(
            f"Run {run.id} has no probe completions: it was given no probe prompts, or has not evaluated yet. "
            "Give a run some with: lmwb train --probe TEXT (repeatable) or --probe-file FILE."
        )
        return EXIT_OK
    console.print(
        Text.assemble(
            f"Run {run.id} ({run.name}): each probe prompt's completion at every evaluated step; ",
            ("what changed since the step before", CHANGED_STYLE),
            " is highlighted.",
        )
    )
    _print_probe_timelines(console, timelines)
    return EXIT_OK


# ---------------------------------------------------------------------------
# lmwb generate and lmwb history


# The flags naming a scratch: model's dataset, for the settings' errors (generate, score, lens).
DATASET_FLAGS = {"dataset": "--dataset"} | SPLIT_FLAG


def cmd_generate(args: argparse.Namespace) -> int:
    """Stream a model's text token by token; record the generation, even when stopped by Ctrl+C."""
    from engine.generation import GenerationSettings, TokenStream, record_generation
    from engine.models import ModelRequest

    prompt = read_prompt(args)
    given = _given(args, [field for _, field, _, _ in GENERATION_FLAGS])
    settings = GenerationSettings(**given, stop=tuple(args.stop))
    with settings_named_by_flags({field: flag for flag, field, _, _ in GENERATION_FLAGS} | {"stop": "--stop"}):
        settings.validate()
    store = _open_store()
    request = ModelRequest.of(args.model, args.dataset, dataset_split=args.dataset_split)
    with settings_named_by_flags(DATASET_FLAGS), _status_line(f"Loading {request.source}…") as update:
        loaded = request.load(device=args.device, store=store, progress=update)

    stream = TokenStream(loaded.model, loaded.tokenizer, prompt, settings)
    with stop_on_signals(stream.cancel):
        for event in stream:
            if args.json:
                sys.stdout.write(json.dumps({"type": "token", **_as_dict(event)}, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write(event.text)
            sys.stdout.flush()
    result = stream.result
    if result is None:  # a stream that was iterated to its end always holds its result
        raise RuntimeError("the token stream ended without a result")
    generation_id = record_generation(store, str(loaded.source), result, settings)

    if args.json:
        summary = {
            "type": "summary",
            "id": generation_id,
            "model": str(loaded.source),
            "prompt": result.prompt,
            "text": result.text,
            "tokens": len(result.token_ids),
            "finish_reason": result.finish_reason,
            "tokens_per_second": result.tokens_per_second,
            "time_to_first_token": result.time_to_first_token,
            "elapsed": result.elapsed,
            "settings": settings.as_dict(),
        }
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        if not result.text.endswith("\n"):
            sys.stdout.write("\n")
        print(
            f"{len(result.token_ids)} tokens · {result.tokens_per_second:.1f} tok/s · "
            f"first token {result.time_to_first_token * 1000:.0f} ms · finish: {result.finish_reason} · "
            f"saved as generation {generation_id}",
            file=sys.stderr,
        )
    sys.stdout.flush()
    return EXIT_OK


def read_prompt(args: argparse.Namespace) -> str:
    """The prompt from --prompt, --prompt-file, or stdin ('-' or a pipe)."""
    if args.prompt_file is not None:
        try:
            return args.prompt_file.read_text(encoding="utf-8")
        except OSError as error:
            raise CommandError(f"Cannot read the prompt file {args.prompt_file}: {error.strerror}.") from None
        except UnicodeDecodeError:
            raise CommandError(f"The prompt file {args.prompt_file} is not UTF-8 text; save it as UTF-8.") from None
    if args.prompt == "-" or (args.prompt is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if args.prompt is None:
        raise CommandError("Give a prompt: --prompt TEXT, --prompt-file FILE, or pipe it on stdin.")
    return args.prompt


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags among ``names`` that the user gave, so the engine's defaults stay the only defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def cmd_history(args: argparse.Namespace) -> int:
    """Past generations, newest first, optionally searched."""
    rows = _open_store().generations(search=args.search, limit=args.limit)
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        found = "matching that search" if args.search else "yet"
        _stdout().print(f"No generations {found}. Make one with: lmwb generate --model SRC --prompt TEXT")
        return EXIT_OK
    table_rows = [
        [
            row["id"],
            _local_time(row["created_at"]),
            row["model"],
            _shorten(row["prompt"], 30),
            _shorten(row["text"], 50),
            row["token_count"],
            row["finish_reason"],
        ]
        for row in rows
    ]
    columns = ["id", "created", "model", "prompt", "text", "tokens", "finish"]
    _stdout().print(_table("Generations", columns, table_rows))
    return EXIT_OK


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
    store = _open_store() if place.writes else RunStore()  # only rank 0 writes the store
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
            _print_training_summary(store, store.get_run(run_id), job.progress)
        if job.error is not None:
            raise job.error
    return EXIT_OK


def _train_in_background(args: argparse.Namespace) -> int:
    """--detach / --queue: record the run and hand it to a process of its own; print how to follow it."""
    from engine.run_process import log_path, submit_run

    store = _open_store()
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
        config, _, _ = _training_config(args, _open_store())
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

    settings = _given(args, [field.name for field in dataclasses.fields(TrainingConfig)])
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
        return f"for {human_duration(config.max_time)} of training (planned on time)"
    return f"to step {config.max_steps}" if config.epochs is None else f"for {config.epochs:g} epochs"


def _print_training_summary(store: RunStore, run: Any, progress: Any) -> None:
    """How the run ended, where its latest checkpoint is, and how to go on."""
    print(
        f"Run {run.id} {run.status} at step {run.steps} · {run.tokens:,} tokens · "
        f"best val loss {_cell(run.best_val_loss).plain} · {human_duration(progress.elapsed)} of training",
        flush=True,
    )
    if run.status == "stopped" and progress.message:
        print(progress.message, flush=True)
    if run.error and run.status != "stopped":
        print(run.error, flush=True)
    checkpoints = store.checkpoints(run.id)
    if checkpoints:
        print(f"Latest checkpoint: {checkpoints[-1]['path']} (model source: run:{run.id})", flush=True)
    if run.status == "stopped":
        processes = f" --nproc {run.world_size}" if run.world_size > 1 else ""
        steps = run.config.get("max_steps")
        more = "" if steps is None else f" --steps {steps}"  # a run planned on time goes on with its budget
        print(f"Resume with: lmwb train --resume {run.id}{more}{processes}", flush=True)


# The flag that sets each TrainingConfig field, to name it in messages.
TRAINING_FLAG_NAMES = {
    "model": "--model",
    "dataset": "--dataset",
    "dataset_field": "--field",
    "dataset_split": "--split",
} | {field: flag for flag, field, _, _ in TRAINING_FLAGS}


def follow_training(job: Any, stopping: threading.Event, interval: float = 0.25) -> None:
    """Show a job's progress (``lmwb train`` in the foreground) until its thread ends."""

    def next_progress() -> tuple[Any, bool]:
        ended = job.join(timeout=interval)
        return job.progress, ended

    follow_progress(next_progress, stopping)


def follow_progress(next_progress: Callable[[], tuple[Any, bool]], stopping: threading.Event) -> None:
    """Show progress until it ends: live on a terminal, plain lines in a pipe.

    ``next_progress()`` waits a moment and returns (TrainingProgress, ended).
    ``stopping`` set means the user asked the run to stop: the display says so.
    """
    console = _stdout()
    if console.is_terminal:
        _follow_live(next_progress, console, stopping)
    else:
        _follow_lines(next_progress, stopping)


class ProgressFields(TypedDict):
    """A progress record's numbers as shown: the live display's task fields, and each line in a pipe."""

    loss: str
    val: str
    speed: str
    eta: str
    gpu: str


def _progress_fields(progress: Any) -> ProgressFields:
    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    return ProgressFields(
        loss=number(progress.train_loss),
        val=number(progress.val_loss),
        speed=f"{progress.tokens_per_sec:,.0f}" if progress.tokens_per_sec else "–",
        eta=human_duration(progress.eta_seconds),
        gpu=("" if progress.gpu_memory_bytes is None else f" · GPU peak {progress.gpu_memory_bytes / 2**30:.1f} GiB")
        + ("" if progress.mfu is None else f" · MFU {progress.mfu:.0%}"),
    )


def _follow_live(next_progress: Callable[[], tuple[Any, bool]], console: Console, stopping: threading.Event) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]} · val {task.fields[val]} · {task.fields[speed]} tok/s · "
            "ETA {task.fields[eta]}{task.fields[gpu]}"
        ),
    )
    with Progress(*columns, console=console, refresh_per_second=4) as display:
        progress, ended = next_progress()
        task = display.add_task(
            progress.phase or progress.status, total=progress.max_steps or None, **_progress_fields(progress)
        )
        plan_shown = False
        while True:
            if progress.message.startswith("Plan:") and not plan_shown:  # how far the time budget will go
                display.console.print(progress.message)
                plan_shown = True
            description = (
                "stopping: saving a checkpoint"
                if stopping.is_set() and not ended
                else progress.phase or progress.status
            )
            display.update(
                task,
                description=description,
                completed=progress.step,
                total=progress.max_steps or None,
                **_progress_fields(progress),
            )
            if ended:
                return
            progress, ended = next_progress()


def _follow_lines(
    next_progress: Callable[[], tuple[Any, bool]], stopping: threading.Event, every_seconds: float = 2.0
) -> None:
    """One line per step (at most every few seconds, but every evaluation), for logs and pipes."""
    last_shown, last_val, last_time, told_stopping, plan_shown = None, None, 0.0, False, False
    ended = False
    while not ended:
        progress, ended = next_progress()
        if progress.message.startswith("Plan:") and not plan_shown:  # how far the time budget will go
            print(progress.message, flush=True)
            plan_shown = True
        training = progress.status in ("running", "paused", *FINISHED_PROGRESS)
        shown = progress.step if training else progress.phase
        due = time.monotonic() - last_time >= every_seconds or progress.val_loss != last_val or ended
        if shown and shown != last_shown and due:
            print(_progress_line(progress) if training else progress.phase, flush=True)
            last_shown, last_val, last_time = shown, progress.val_loss, time.monotonic()
        if stopping.is_set() and not told_stopping and not ended:
            print("Stopping: finishing this step and saving a checkpoint…", flush=True)
            told_stopping = True


# A progress record with one of these statuses describes the end of a run.
FINISHED_PROGRESS = ("completed", "stopped", "failed", "interrupted", "cancelled")


def _progress_line(progress: Any) -> str:
    fields = _progress_fields(progress)
    total = f"≈{progress.max_steps}" if progress.steps_estimated else str(progress.max_steps)
    return (
        f"step {progress.step}/{total} · loss {fields['loss']} · val {fields['val']} · "
        f"{fields['speed']} tok/s · ETA {fields['eta']}{fields['gpu']}"
    )


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
    store = _open_store()
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
            f"best val loss {_cell(run.best_val_loss).plain}"
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
    sweeps = _open_store().sweeps()
    if args.json:
        print_json(sweeps)
        return EXIT_OK
    if not sweeps:
        _stdout().print(
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
            _local_time(sweep["created_at"]),
        ]
        for sweep in sweeps
    ]
    _stdout().print(_table("Sweeps", ["id", "name", "varied", "runs", "created"], rows))
    return EXIT_OK


def cmd_sweeps_show(args: argparse.Namespace) -> int:
    """A sweep's status (its runs by status, what it varies, how many at once) and the comparison of its runs."""
    from engine.comparison import MIN_COMPARED, compare_runs
    from engine.sweeps import sweep_runs

    store = _open_store()
    sweep = store.get_sweep(args.sweep_id)
    run_ids = [run.id for run in sweep_runs(store, sweep["id"])]
    comparison = compare_runs(store, run_ids) if len(run_ids) >= MIN_COMPARED else None
    if args.json:
        print_json(sweep | {"runs": run_ids, "comparison": comparison.as_json() if comparison else None})
        return EXIT_OK
    console = _stdout()
    counts = _status_counts(sweep["statuses"])
    about = [
        ("name", sweep["name"]),
        ("varied", _varied_text(sweep["varied"])),
        ("runs", f"{len(run_ids)}" + (f": {counts}" if counts else "")),
        ("at once", sweep["parallel"]),
        ("created", _local_time(sweep["created_at"])),
    ]
    console.print(_key_values(f"Sweep {sweep['id']}", about))
    console.print()
    if comparison is None:
        console.print(f"{'No run' if not run_ids else 'One run'} in this sweep yet: nothing to compare.")
    else:
        _print_comparison(comparison)
    return EXIT_OK


# ---------------------------------------------------------------------------
# lmwb score and lmwb lens

TEXT_FLAGS = {"text": "--text", "text_file": "--text-file"} | DATASET_FLAGS
SURPRISING_SHOWN = 5  # tokens listed under a scored text


def read_text(args: argparse.Namespace) -> str:
    """The text of --text or --text-file (read and checked before any model loads)."""
    from engine.checks import read_text_file

    if args.text_file is None:
        return args.text
    with settings_named_by_flags(TEXT_FLAGS):
        return read_text_file("text_file", args.text_file)


def _load_for_text(args: argparse.Namespace, source: str, store: RunStore) -> Any:
    """A model named on the command line, loaded as `lmwb generate` loads it."""
    from engine.models import ModelRequest

    request = ModelRequest.of(source, args.dataset, dataset_split=args.dataset_split)
    with settings_named_by_flags(TEXT_FLAGS), _status_line(f"Loading {request.source}…") as update:
        return request.load(device=args.device, store=store, progress=update)


def cmd_score(args: argparse.Namespace) -> int:
    """Every token's logprob, rank and entropy, and the totals; with --against, the second model's too."""
    from engine.inspection import score_text

    text = read_text(args)
    store = _open_store()
    loaded = _load_for_text(args, args.model, store)
    other = None if args.against is None else _load_for_text(args, args.against, store)
    flags = TEXT_FLAGS | {"against": "--against", "model": "--model"}
    with settings_named_by_flags(flags), _status_line("Scoring…") as update:
        score = score_text(
            loaded.model,
            loaded.tokenizer,
            text,
            against=None if other is None else (other.model, other.tokenizer),
            progress=lambda done, total: update(f"Scoring: window {done} of {total}…"),
        )
    models = {"model": str(loaded.source)} | ({} if other is None else {"against": str(other.source)})
    if args.json:
        print_json(models | score.as_dict())
        return EXIT_OK
    _print_score(score, models)
    return EXIT_OK


def _print_score(score: Any, models: dict[str, str]) -> None:
    """The text coloured token by token, the totals of each model, and the tokens that stand out."""
    from tui.widgets.scored_text import token_colours

    console = _stdout()
    against = score.against
    surprises = [token.surprise for token in score.tokens]
    colours = token_colours(surprises, None if against is None else [token.surprise for token in against.tokens])
    rendering = Text()
    for token, colour in zip(score.tokens, colours, strict=True):
        rendering.append(token.text, style=colour)
    console.print(rendering)
    console.print(
        Text(
            "Coloured by B's surprise minus A's: red where B is more surprised, blue where less."
            if against
            else "Coloured by surprise: green for a likely token, red from 10 bits (1 in 1,000).",
            style="dim",
        )
    )
    totals = Table(box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("", "model", "tokens", "total logprob", "loss (nats/token)", "bits per byte"):
        totals.add_column(column, overflow="fold")
    for side, each in (("A", score), ("B", against)):
        if each is not None:
            name = models["model" if side == "A" else "against"]
            totals.add_row(
                side if against else "",
                name,
                f"{len(each.tokens):,}",
                f"{each.total_logprob:.4f}",
                f"{each.loss:.4f}",
                f"{each.bits_per_byte:.4f}",
            )
    console.print(totals)
    console.print(_standing_out(score))


def _standing_out(score: Any) -> Table:
    """The most surprising tokens; with a second model, those where the two differ most."""
    from tui.widgets.scored_text import probability_text, token_label

    against = score.against
    indices = range(len(score.tokens))
    if against is None:
        chosen = sorted(indices, key=lambda i: -score.tokens[i].surprise)[:SURPRISING_SHOWN]
        title = "Most surprising"
    else:
        chosen = sorted(indices, key=lambda i: -abs(against.tokens[i].surprise - score.tokens[i].surprise))
        chosen = chosen[:SURPRISING_SHOWN]
        title = "Where A and B differ most"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = ["#", "token", "p", "rank", "entropy (bits)", "surprise (bits)"]
    if against is not None:
        columns += ["B p", "B rank", "B − A (bits)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "token" else "right", no_wrap=True)
    for index in chosen:
        token = score.tokens[index]
        row = [
            str(index),
            token_label(token.text, 20),
            probability_text(token.probability),
            f"{token.rank:,}",
            f"{token.entropy:.2f}",
            f"{token.surprise:.2f}",
        ]
        if against is not None:
            other = against.tokens[index]
            row += [probability_text(other.probability), f"{other.rank:,}", f"{other.surprise - token.surprise:+.2f}"]
        table.add_row(*row)
    return table


def cmd_lens(args: argparse.Namespace) -> int:
    """Each layer's likeliest tokens at one position of the text (GPT-2 family models)."""
    from engine.inspection import logit_lens
    from tui.widgets.lens_table import lens_table
    from tui.widgets.scored_text import token_label

    text = read_text(args)
    loaded = _load_for_text(args, args.model, _open_store())
    flags = TEXT_FLAGS | {"model": "--model", "position": "--position", "top": "--top"}
    with settings_named_by_flags(flags):
        readout = logit_lens(loaded.model, loaded.tokenizer, text, **_given(args, ("position", "top")))
    if args.json:
        print_json({"model": str(loaded.source)} | readout.as_dict())
        return EXIT_OK
    where = (
        f"the place after the text ({readout.tokens} tokens)"
        if readout.target is None
        else f"position {readout.position} of {readout.tokens}: the token there is {token_label(readout.target[1], 20)}"
        f" (id {readout.target[0]})"
    )
    after = f", read after {token_label(readout.after, 20)}" if readout.position > 0 else ", read from the start token"
    console = _stdout()
    console.print(Text(f"Logit lens of {loaded.source} at {where}{after}", style="bold"), soft_wrap=True)
    console.print(lens_table(readout, token_width=16))
    console.print(
        Text(
            "H: the entropy of the layer's prediction. actual: the probability and rank it gives the token there "
            "(underlined where it is among the likeliest). The last layer is the model's own output.",
            style="dim",
        )
    )
    return EXIT_OK


# ---------------------------------------------------------------------------
# lmwb eval


def cmd_eval(args: argparse.Namespace) -> int:
    """Loss, perplexity and bits per byte of a model on a dataset, recorded in the store."""
    from engine.evaluation import evaluate

    store = _open_store()
    options = _given(args, ("split_by", "block_size", "batch_size", "max_batches", "device"))
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
    with settings_named_by_flags(flags), _status_line(f"Evaluating {args.model} on {args.dataset}…") as update:
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
    _stdout().print(
        _key_values(
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


if __name__ == "__main__":
    sys.exit(main())
