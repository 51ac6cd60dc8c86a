"""Several processes training one model: the plumbing between torchrun and the training loop.

PyTorch's own launcher does the hard part. ``torchrun --nproc-per-node N``
(``python -m torch.distributed.run``) starts N copies of a command and tells
each, in environment variables, its ``RANK``, ``LOCAL_RANK`` (which GPU of
this machine) and ``WORLD_SIZE``, and where to meet the others. Each copy
then joins one process group (NCCL between GPUs, gloo between CPU
processes) and the loop wraps its model in ``DistributedDataParallel``, which
averages the gradients of all ranks after every backward pass.

Rank 0 is the writer: it alone writes the run store, samples and
checkpoints. The others train and stay silent. This module holds what the
loop needs for that: where this process stands (``this_process``), its
device, the process group's start and end, the few collectives the loop uses,
and the relaunch of ``lmwb train --nproc N`` under torchrun.

Nothing here waits forever. Each launch meets its ranks on a rendezvous of
its own (a port the system picks on 127.0.0.1, a fresh id), which ends with
an error after ``LMWB_RENDEZVOUS_TIMEOUT`` seconds (default 300) if they do
not all come; every collective gives up after ``LMWB_COLLECTIVE_TIMEOUT``
seconds (default 1800: rank 0 alone evaluates, samples and checkpoints while
the others wait), and a rank that loses the others then ends with one
``TrainingError`` line that says so. A rank that dies ends the launch:
torchrun stops the others, and ``run_under_torchrun`` says which rank died
and how.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import faulthandler
import logging
import math
import os
import re
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from engine.errors import SettingsError, TrainingError

# How long a rank waits for the others at a collective before giving up:
# rank 0 alone evaluates, samples and writes checkpoints while the rest wait.
# LMWB_COLLECTIVE_TIMEOUT (seconds) overrides it.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
COLLECTIVE_TIMEOUT_VARIABLE = "LMWB_COLLECTIVE_TIMEOUT"
# How long torchrun waits for all ranks (all machines) to meet before giving
# up. LMWB_RENDEZVOUS_TIMEOUT (seconds) overrides it.
RENDEZVOUS_TIMEOUT_SECONDS = 300
RENDEZVOUS_TIMEOUT_VARIABLE = "LMWB_RENDEZVOUS_TIMEOUT"
# After Ctrl+C or SIGTERM, how long torchrun lets its workers finish the step
# and write the checkpoint before it kills them.
STOP_GRACE_SECONDS = 120
# Once a rank has left its process group, how long it may take to exit before
# it is ended anyway (a teardown that hangs in C++ would otherwise hold the launch).
EXIT_GRACE_SECONDS = 120


def _seconds_from_environment(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise TrainingError(
            f"{name}={text!r} is not a number of seconds above 0; unset it for the default ({default:g} s)."
        )
    return seconds


def collective_timeout() -> datetime.timedelta:
    """How long a rank waits for the others at a collective: ``LMWB_COLLECTIVE_TIMEOUT`` seconds, or 30 minutes."""
    return datetime.timedelta(
        seconds=_seconds_from_environment(COLLECTIVE_TIMEOUT_VARIABLE, COLLECTIVE_TIMEOUT.total_seconds())
    )


def rendezvous_timeout() -> int:
    """How long torchrun waits for every rank to join, in whole seconds: ``LMWB_RENDEZVOUS_TIMEOUT``, or 300."""
    return math.ceil(_seconds_from_environment(RENDEZVOUS_TIMEOUT_VARIABLE, RENDEZVOUS_TIMEOUT_SECONDS))


@dataclass(frozen=True)
class ProcessRank:
    """Where this process stands among the processes training one model: (0, 0, 1) when it is alone."""

    rank: int = 0  # 0 .. world_size - 1, across all machines
    local_rank: int = 0  # on this machine: the GPU this process takes
    world_size: int = 1

    @property
    def writes(self) -> bool:
        """Rank 0 writes the store, samples and checkpoints; the other ranks only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when this process is one of several training one model."""
        return self.world_size > 1


def this_process() -> ProcessRank:
    """This process's rank, local rank and world size, as torchrun set them in the environment."""
    values = {}
    for name, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        text = os.environ.get(name, "").strip()
        if not text:
            values[name] = default
        elif text.isdigit():
            values[name] = int(text)
        else:
            raise TrainingError(
                f"The environment variable {name}={text!r} is not a whole number; torchrun sets "
                "it. Start several processes with lmwb train --nproc N, or unset it."
            )
    place = ProcessRank(rank=values["RANK"], local_rank=values["LOCAL_RANK"], world_size=values["WORLD_SIZE"])
    if not 0 <= place.rank < max(place.world_size, 1):
        raise TrainingError(
            f"RANK={place.rank} does not fit WORLD_SIZE={place.world_size}; torchrun sets both. "
            "Start several processes with lmwb train --nproc N, or unset them."
        )
    return place


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun started (even a world of one)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def training_device(preference: str, place: ProcessRank) -> str:
    """The device a rank trains on: its own GPU (``cuda:<local rank>``) when there are GPUs, else the CPU.

    A single process keeps whatever the user asked for (``engine.models``
    checks it when it loads the model).
    """
    if not place.distributed:
        return preference
    wanted = preference.strip().lower()
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        if place.local_rank >= torch.cuda.device_count():
            raise SettingsError(
                "device",
                f"this machine has {torch.cuda.device_count()} GPU(s) but local rank "
                f"{place.local_rank} needs one of its own; start at most "
                f"{torch.cuda.device_count()} processes per machine (--nproc).",
            )
        return f"cuda:{place.local_rank}"
    if wanted in ("auto", "cpu"):
        return "cpu"
    if wanted == "cuda":
        raise SettingsError(
            "device",
            "several processes were asked to train on CUDA, but there is no CUDA here; "
            "use --device cpu (or auto) to train them on the CPU.",
        )
    raise SettingsError(
        "device",
        f"{preference!r} cannot be shared by several processes: each takes the GPU of "
        "its local rank. Use auto, cuda or cpu.",
    )


# The process groups this process joined, held until it exits. Why: DDP's
# C++ Reducer holds the group too. When the Reducer goes last (with the
# model, on whichever thread drops it, holding the GIL), ~ProcessGroupGloo
# joins gloo's worker thread while holding the GIL; if that thread is still
# freeing a finished collective whose tensors Python already dropped, it
# needs the GIL to do so, and both wait forever (a rank that prints its
# summary and never exits, and a torchrun that waits for it). Freed from its
# Python object instead, the group is destroyed with the GIL released, so
# gloo's thread finishes: ``_let_groups_go`` does that at exit.
_kept_groups: list[Any] = []
_timeout_in_use: datetime.timedelta = COLLECTIVE_TIMEOUT


def start_process_group(device: torch.device) -> None:
    """Join the other ranks: NCCL between GPUs, gloo between CPU processes. Once per process.

    Joining and every collective after it give up after ``collective_timeout()``;
    failing to join raises a ``TrainingError`` that says why.
    """
    if dist.is_initialized():
        return
    global _timeout_in_use
    _timeout_in_use = collective_timeout()
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's collectives and object transfers use the current device
            dist.init_process_group(backend="nccl", timeout=_timeout_in_use, device_id=device)
        else:
            dist.init_process_group(backend="gloo", timeout=_timeout_in_use)
    except RuntimeError as exc:  # torch's DistStoreError and DistNetworkError, gloo's connection errors
        raise TrainingError(
            f"This process could not join the other training processes ({_short_reason(exc)}) within "
            f"{_timeout_in_use.total_seconds():g} s ({COLLECTIVE_TIMEOUT_VARIABLE}): one of them failed to start or "
            "its machine cannot be reached. Start them all again (lmwb train --nproc N, or torchrun)."
        ) from exc
    _keep_until_exit(dist.group.WORLD)


def end_process_group() -> None:
    """Leave the process group (if this process joined one), so the process exits cleanly.

    The group itself is let go of only when the interpreter exits (see
    ``_keep_until_exit``): freed here, or wherever the model's DDP wrapper
    happens to go, it can deadlock. From here on the process only finishes
    up, so a watchdog ends it if it is still there ``EXIT_GRACE_SECONDS``
    later: a rank stuck in a teardown would otherwise hold torchrun forever.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        # A C thread, which needs no GIL (a teardown stuck in C++ may hold it): it prints every thread's stack
        # and ends the process with status 1.
        faulthandler.dump_traceback_later(EXIT_GRACE_SECONDS, exit=True, file=sys.__stderr__ or sys.stderr)


def _keep_until_exit(group: Any) -> None:
    if not _kept_groups:
        atexit.register(_let_groups_go)
    _kept_groups.append(group)


def _let_groups_go() -> None:
    """At exit, after the model and its Reducer are gone: free the process groups, the GIL released."""
    _kept_groups.clear()


def _short_reason(exc: BaseException) -> str:
    """The gist of a torch or gloo error, on one line: "Connection closed by peer [127.0.0.1]:41234"."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", text)  # the C++ source position
    text = text.split(". This is typically caused", 1)[0].split(" Check the logs", 1)[0]
    text = text.strip().rstrip(".")
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


@contextlib.contextmanager
def _with_the_others(doing: str) -> Iterator[None]:
    """A collective: when the others are gone or do not answer in time, a TrainingError that says so."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:  # gloo raises plain RuntimeErrors; NCCL DistBackendError (one too)
        raise _lost_the_others(doing, exc) from exc


@contextlib.contextmanager
def exchanging_gradients() -> Iterator[None]:
    """Around a training step under DDP, whose backward pass averages the gradients with the other ranks.

    A peer lost or silent there ends the rank with the ``TrainingError`` any
    collective raises. Unlike a collective, a step also runs the model, so
    only an error of the process group is taken for a lost peer: every other
    one (out of memory, a bug) passes unchanged.
    """
    try:
        yield
    except RuntimeError as exc:
        if not _from_the_process_group(exc):
            raise
        raise _lost_the_others("exchanging gradients", exc) from exc


def _from_the_process_group(exc: RuntimeError) -> bool:
    """True for what a collective raises: torch's ``DistError`` (NCCL, the store), or gloo's transport errors.

    gloo's are plain ``RuntimeError``s whose text names their source file,
    "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer".
    """
    return isinstance(exc, dist.DistError) or "gloo/transport/" in str(exc)


def _lost_the_others(doing: str, exc: BaseException) -> TrainingError:
    return TrainingError(
        f"Lost the other training processes while {doing} ({_short_reason(exc)}): one of them crashed, was "
        f"stopped or hangs, or its machine cannot be reached (each waits "
        f"{_timeout_in_use.total_seconds():g} s for the others; {COLLECTIVE_TIMEOUT_VARIABLE} sets it). "
        "This run ends here: resume it from its last checkpoint."
    )


def broadcast_from_writer(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable value: a run id, an error message)."""
    box = [value]
    with _with_the_others("hearing from rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_at_writer(value: Any) -> list[Any] | None:
    """Every rank's ``value``, in rank order, at rank 0; None on the other ranks."""
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    with _with_the_others("gathering every rank's state at rank 0"):
        dist.gather_object(value, gathered, dst=0)
    return gathered


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all ranks (a new tensor on every rank)."""
    total = value.detach().clone()
    with _with_the_others("averaging the loss"):
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def agree(stop: bool, pause: bool, device: torch.device) -> tuple[bool, bool]:
    """(stop, pause) on every rank, true where any rank said so: ranks must stop and pause together, or they hang."""
    votes = torch.tensor([float(stop), float(pause)], device=device)
    with _with_the_others("agreeing on whether to stop"):
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return bool(votes[0].item()), bool(votes[1].item())


@contextlib.contextmanager
def writer_first(place: ProcessRank) -> Iterator[None]:
    """Rank 0 does the inside first (training a tokenizer, filling a cache); the others then find it done."""
    if place.distributed and not place.writes:
        with _with_the_others("waiting for rank 0 to prepare the data"):
            dist.barrier()
    try:
        yield
    finally:
        if place.distributed and place.writes:
            with _with_the_others("telling the other ranks the data is ready"):
                dist.barrier()


def torchrun_arguments(module: str, arguments: Sequence[str], nproc: int) -> list[str]:
    """torchrun's own arguments for running ``python -m module arguments...`` as ``nproc`` ranks on this machine.

    A list, never a shell string: no argument is ever read by a shell. The
    ranks meet on a c10d rendezvous of this launch's own: port 0 on
    127.0.0.1, so the system hands it a free port as it binds (two launches
    at once never share one, and no chosen port can be taken in between),
    this launch hosting it (``is_host``: it never joins another launch's
    store), and a fresh id. Joining gives up after ``rendezvous_timeout()``
    seconds. ``--local-addr`` keeps the ranks' own store on 127.0.0.1
    rather than on whatever this machine's host name resolves to.
    """
    conf = f"join_timeout={rendezvous_timeout()},is_host=1"
    return [
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        f"--rdzv-id=lmwb-{uuid.uuid4().hex}",
        f"--rdzv-conf={conf}",
        "--local-addr=127.0.0.1",
        "--max-restarts=0",
        f"--shutdown-timeout={STOP_GRACE_SECONDS}",
        "-m",
        module,
        *arguments,
    ]


def run_under_torchrun(module: str, arguments: Sequence[str], nproc: int) -> int:
    """Do what ``torchrun ARGUMENTS`` does (in this process), wait for the ranks, and return an exit status.

    Ctrl+C or SIGTERM reach torchrun's launcher here, which passes them on
    to the ranks: they stop together with a checkpoint. The launcher's own
    traceback for that, and its report of a rank that failed (the rank has
    said why itself), are left out; its errors still show. A rank killed by
    a signal (which could say nothing) is named on one ``lmwb: error:``
    line; ranks that never meet raise a ``TrainingError``. CPU ranks share
    the machine's cores unless ``OMP_NUM_THREADS`` says otherwise.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError
    from torch.distributed.run import get_args_parser, run

    launch = torchrun_arguments(module, arguments, nproc)  # a bad LMWB_RENDEZVOUS_TIMEOUT raises before anything starts
    collective_timeout()  # and a bad LMWB_COLLECTIVE_TIMEOUT too, here rather than once in every rank
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("torch.distributed.elastic") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.ERROR)  # not its notes on shutting down, which a stop is
    # Nor its line for a rank that failed: the rank said why itself, or _say_which_rank_was_killed does.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(launch))
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    except ChildFailedError as failed:
        _say_which_rank_was_killed(failed, nproc)
        exit_code = failed.get_first_failure()[1].exitcode
        return exit_code if exit_code > 0 else 1
    except RendezvousTimeoutError as exc:
        raise TrainingError(
            f"The {nproc} training processes did not all meet within {rendezvous_timeout()} s (torchrun's "
            f"rendezvous on 127.0.0.1): the machine may be too busy to start them. Try again, or allow longer "
            f"with {RENDEZVOUS_TIMEOUT_VARIABLE}=SECONDS."
        ) from exc
    except RendezvousError as exc:
        raise TrainingError(
            f"torchrun could not set up the meeting of the {nproc} training processes on "
            f"127.0.0.1 ({_short_reason(exc)}); try again."
        ) from exc
    return 0


def _say_which_rank_was_killed(failed: Any, nproc: int) -> None:
    """One line for a rank that a signal ended (it could not say why itself); ranks that raised already did."""
    stopped_by_torchrun = (signal.SIGTERM, signal.SIGINT)  # how torchrun ends the others after a failure
    for rank, failure in sorted(failed.failures.items(), key=lambda item: (item[1].timestamp, item[0])):
        if failure.exitcode < 0 and -failure.exitcode not in stopped_by_torchrun:
            name = failure.signal_name()
            why = {
                "SIGKILL": " (often the system running out of memory)",
                "SIGABRT": " (it crashed, or NCCL ended it after a collective timed out)",
                "SIGSEGV": " (it crashed)",
            }.get(name, "")
            print(
                f"lmwb: error: training process {rank} of {nproc} (pid {failure.pid}) was killed by {name}{why}; "
                "torchrun stopped the others. Resume the run from its last checkpoint (lmwb runs lists it).",
                file=sys.stderr,
                flush=True,
            )
            return
