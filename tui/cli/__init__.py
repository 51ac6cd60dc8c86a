"""The `lmwb` command line: the workbench without the terminal UI.

Every command asks the engine and prints its answer: Rich tables for people,
``--json`` for scripts. A user's mistake prints one line starting
``lmwb: error:`` and exits with status 2; anything else is a bug, which prints
one line saying where its traceback was written and exits with status 1.

Heavy modules load late: ``lmwb --help`` imports neither torch nor textual,
the store is opened only by commands that read or write runs, and torch is
imported only by the commands that need a model.

The package holds one module per group of commands, each adding its parsers
(``add_parsers``) and holding their handlers (``cmd_*``): datasets_commands
(datasets, their checks and tokenizers, models), runs_commands (runs),
generation_commands (generate, history, score, lens) and training_commands
(train, sweep, sweeps, eval). What they share is in common (exit statuses,
argument types, shared flags, the store), output (what commands print) and
progress (a training run's progress display). Groups import from those, never
from each other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from engine import __version__
from engine.errors import WorkbenchError
from tui.cli import datasets_commands, generation_commands, runs_commands, training_commands
from tui.cli.common import EXIT_BUG, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OneLineParser
from tui.cli.datasets_commands import routed_argv


def build_parser() -> argparse.ArgumentParser:
    """Every command, flag and help text of `lmwb`."""
    parser = OneLineParser(
        prog="lmwb",
        description="A terminal workbench for training and probing GPT-2-style language models. "
        "Without a command, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"lmwb {__version__}")
    parser.set_defaults(handler=open_app)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    # The order `lmwb --help` lists the commands in, and argparse names them all in when one is mistyped.
    datasets_commands.add_parsers(commands)
    runs_commands.add_parsers(commands)
    generation_commands.add_parsers(commands)
    datasets_commands.add_dataset_action_parsers(commands)
    training_commands.add_parsers(commands)
    return parser


# ---------------------------------------------------------------------------
# Entry point and error handling.


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lmwb` with ``argv`` (default: the process arguments) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(routed_argv(sys.argv[1:] if argv is None else argv))
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


# ---------------------------------------------------------------------------
# lmwb (no command): the app.


def open_app(args: argparse.Namespace) -> int:
    """Open the Textual app; textual is imported only here."""
    from tui.app import run_app

    run_app()
    return EXIT_OK
