"""What every command group of `lmwb` shares: reading a command line, and answering a mistake in it.

The exit statuses and CommandError; the argument types (a settings flag is only
parsed here, the engine checks its value); the parser that reports a mistake in
one line; the flags several commands take (a dataset's field and split, settings
flags named by their field); a SettingsError named by the flag the user typed;
Ctrl+C handed to the engine; and the run store, opened only by the commands
that read or write runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from engine.errors import SettingsError, WorkbenchError

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


class OneLineParser(argparse.ArgumentParser):
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


def add_flags(group: argparse._ActionsContainer, flags: Sequence[tuple[str, str, Callable, str]]) -> None:
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


def flags_given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags among ``names`` that the user gave, so the engine's defaults stay the only defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


# ---------------------------------------------------------------------------
# Running a command: Ctrl+C, settings errors, the store.


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


def open_store() -> RunStore:
    """The run store, with runs left 'running' by dead processes marked 'interrupted' (and the queue moved on)."""
    from engine.run_process import check_runs
    from engine.store import RunStore

    store = RunStore()
    check_runs(store)
    return store
