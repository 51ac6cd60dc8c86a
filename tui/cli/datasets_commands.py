"""`lmwb datasets` (list, or inspect one), its actions `check`, `dedupe` and `tokenizers`, and `lmwb models`.

What a run can be trained on and from: the datasets and their health, the
vocabulary a scratch model should have, and every model source.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.text import Text

from tui.cli.common import (
    EXIT_OK,
    FIELD_HELP,
    SPLIT_FLAG,
    CommandError,
    add_split_flag,
    open_store,
    settings_named_by_flags,
    whole_number,
)
from tui.cli.output import (
    key_value_panel,
    new_table,
    plain_dict,
    print_json,
    status_spinner,
    stderr_console,
    stdout_console,
)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`lmwb datasets` and `lmwb models` (the actions of datasets: add_dataset_action_parsers)."""
    _add_datasets_parser(commands)
    _add_models_parser(commands)


def _add_datasets_parser(commands: argparse._SubParsersAction) -> None:
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


def _add_models_parser(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list model sources: presets, cached Hub models, run checkpoints")
    models.add_argument("--json", action="store_true", help="print JSON for scripts")
    models.set_defaults(handler=cmd_models)


# `lmwb datasets PATH` inspects a dataset, so `datasets` cannot also take subcommands in argparse:
# `lmwb datasets check ...` is parsed as the command "datasets check" (see routed_argv), which
# `lmwb --help` does not list on its own (the datasets command's help names it).
DATASET_ACTIONS = ("check", "dedupe", "tokenizers")


def routed_argv(argv: Sequence[str]) -> list[str]:
    """``datasets check ARGS`` as the one command "datasets check" (a dataset named check: ./check)."""
    if len(argv) >= 2 and argv[0] == "datasets" and argv[1] in DATASET_ACTIONS:
        return [f"datasets {argv[1]}", *argv[2:]]
    return list(argv)


def add_dataset_action_parsers(commands: argparse._SubParsersAction) -> None:
    """`lmwb datasets check`, `dedupe` and `tokenizers`, each parsed as a command of its own (see routed_argv)."""
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
        console = stdout_console()
        details = [item for item in summary.items() if item[0] != "preview"]
        console.print(key_value_panel(f"Dataset {dataset.name}", details))
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
    console = stdout_console()
    columns = ["name", "files", "bytes", "documents", "characters"] + (["tokens"] if args.model else []) + ["path"]
    console.print(new_table("Bundled datasets", columns, [[row[c] for c in columns] for row in summaries]))
    if cached:
        rows = [{**row, "splits": ", ".join(row["splits"])} for row in map(_cached_summary, cached)]
        table = [[row[column] for column in CACHED_COLUMNS] for row in rows]
        console.print(new_table("In the Hugging Face cache (read offline)", CACHED_COLUMNS, table))
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

    with status_spinner(f"Counting tokens in {dataset.name}…") as update:
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
        with status_spinner(f"Loading {args.model}…") as update:
            model = checked_model(args.model, dataset, progress=update)
    with _health_progress() as progress:
        report = check_dataset(dataset, model, progress=progress)
    if args.json:
        print_json(report.as_dict())
    else:
        from tui.widgets.health_report import health_report

        stdout_console().print(health_report(report))
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
    console = stdout_console()
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
    with status_spinner(f"Comparing tokenizers on {dataset.name}…") as update:
        comparison = compare_tokenizers(dataset, sizes, model=args.model, progress=update)
    assert comparison is not None  # only a cancel makes it None, and nothing here cancels
    if args.json:
        print_json(comparison.as_dict())
    else:
        from tui.widgets.tokenizer_lab import tokenizer_lab_report

        stdout_console().print(tokenizer_lab_report(comparison))
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

    console = stderr_console()
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

    choices = [plain_dict(choice) for choice in list_model_choices(open_store())]
    if args.json:
        print_json(choices)
        return EXIT_OK
    rows = [[choice["source"], choice["kind"], choice["description"]] for choice in choices]
    stdout_console().print(new_table("Model sources", ["source", "kind", "description"], rows))
    return EXIT_OK
