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
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from engine.errors import SettingsError, TrainingError

# How long a rank waits for the others at a collective before giving up:
# rank 0 alone evaluates, samples and writes checkpoints while the rest wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
# After Ctrl+C or SIGTERM, how long torchrun lets its workers finish the step
# and write the checkpoint before it kills them.
STOP_GRACE_SECONDS = 120


@dataclass(frozen=True)
class ProcessRank:
    """Where this process stands among the processes training one model: (0, 0, 1) when it is alone."""

    rank: int = 0          # 0 .. world_size - 1, across all machines
    local_rank: int = 0    # on this machine: the GPU this process takes
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
            raise TrainingError(f"The environment variable {name}={text!r} is not a whole number; torchrun sets "
                                "it. Start several processes with lmwb train --nproc N, or unset it.")
    place = ProcessRank(rank=values["RANK"], local_rank=values["LOCAL_RANK"], world_size=values["WORLD_SIZE"])
    if not 0 <= place.rank < max(place.world_size, 1):
        raise TrainingError(f"RANK={place.rank} does not fit WORLD_SIZE={place.world_size}; torchrun sets both. "
                            "Start several processes with lmwb train --nproc N, or unset them.")
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
            raise SettingsError("device", f"this machine has {torch.cuda.device_count()} GPU(s) but local rank "
                                f"{place.local_rank} needs one of its own; start at most "
                                f"{torch.cuda.device_count()} processes per machine (--nproc).")
        return f"cuda:{place.local_rank}"
    if wanted in ("auto", "cpu"):
        return "cpu"
    if wanted == "cuda":
        raise SettingsError("device", "several processes were asked to train on CUDA, but there is no CUDA here; "
                            "use --device cpu (or auto) to train them on the CPU.")
    raise SettingsError("device", f"{preference!r} cannot be shared by several processes: each takes the GPU of "
                        "its local rank. Use auto, cuda or cpu.")


def start_process_group(device: torch.device) -> None:
    """Join the other ranks: NCCL between GPUs, gloo between CPU processes. Once per process."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives and object transfers use the current device
        dist.init_process_group(backend="nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        dist.init_process_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)


def end_process_group() -> None:
    """Leave the process group (if this process joined one), so the process exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_writer(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable value: a run id, an error message)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_at_writer(value: Any) -> list[Any] | None:
    """Every rank's ``value``, in rank order, at rank 0; None on the other ranks."""
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all ranks (a new tensor on every rank)."""
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def agree(stop: bool, pause: bool, device: torch.device) -> tuple[bool, bool]:
    """(stop, pause) on every rank, true where any rank said so: ranks must stop and pause together, or they hang."""
    votes = torch.tensor([float(stop), float(pause)], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes[0].item()), bool(votes[1].item())


@contextlib.contextmanager
def writer_first(place: ProcessRank) -> Iterator[None]:
    """Rank 0 does the inside first (training a tokenizer, filling a cache); the others then find it done."""
    if place.distributed and not place.writes:
        dist.barrier()
    try:
        yield
    finally:
        if place.distributed and place.writes:
            dist.barrier()


def torchrun_arguments(module: str, arguments: Sequence[str], nproc: int) -> list[str]:
    """torchrun's own arguments for running ``python -m module arguments...`` as ``nproc`` ranks on this machine.

    A list, never a shell string: no argument is ever read by a shell.
    ``--standalone`` lets torchrun pick a free port, so several launches on
    one machine do not collide.
    """
    return ["--standalone", f"--nproc-per-node={nproc}", f"--shutdown-timeout={STOP_GRACE_SECONDS}",
            "-m", module, *arguments]


def run_under_torchrun(module: str, arguments: Sequence[str], nproc: int) -> int:
    """Do what ``torchrun ARGUMENTS`` does (in this process), wait for the ranks, and return an exit status.

    Ctrl+C or SIGTERM reach torchrun's launcher here, which passes them on
    to the ranks: they stop together with a checkpoint. The launcher's own
    traceback for that, and its report of a rank that failed (the rank has
    said why itself), are left out; its errors still show. CPU ranks share
    the machine's cores unless ``OMP_NUM_THREADS`` says otherwise.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("torch.distributed.elastic") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.ERROR)  # not its notes on shutting down, which a stop is
    try:
        run(get_args_parser().parse_args(torchrun_arguments(module, arguments, nproc)))
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    except ChildFailedError as failed:
        exit_code = failed.get_first_failure()[1].exitcode
        return exit_code if exit_code > 0 else 1
    return 0
