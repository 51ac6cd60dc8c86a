"""Checkpoints: what ``runs/<id>/checkpoints/step-N/`` holds, how it is written and read, and which are kept.

A checkpoint is a Hugging Face model directory (a LoRA run's: its adapters
only) with the tokenizer, plus ``trainer_state.pt``: everything else an
exact resume needs (``TrainerState``: the optimizer, the step, and each
rank's data position and random state). It is written into a temporary
sibling and renamed into place, so nobody ever sees half of one. Random
states are captured and restored here too, as values that
``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np
import torch

from engine.errors import TrainingError
from engine.home import ensure_private_dir, run_dir, workbench_home
from engine.store import process_alive

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TRAINER_STATE_FILE = "trainer_state.pt"
TRAINER_STATE_FORMAT = 2  # 2: each rank's sampler and random state, under "ranks"
_TEMPORARY_PREFIX = ".tmp-step-"  # + "<step>-<pid>": a checkpoint being written


class RankState(TypedDict):
    """Where one rank is in its own stream: its data position and its random state."""

    sampler: dict[str, Any]  # WindowSampler.state_dict()
    rng: dict[str, Any]  # capture_rng_state()


class _RequiredTrainerState(TypedDict):
    format: int  # TRAINER_STATE_FORMAT
    step: int
    tokens: int
    elapsed: float  # seconds trained over every session
    best_val_loss: float | None
    optimizer: dict[str, Any]
    grad_scaler: dict[str, Any]  # empty when no scaler is in use
    ranks: list[RankState]  # in rank order
    dataset_hash: str  # the text the data order belongs to


class TrainerState(_RequiredTrainerState, total=False):
    """``trainer_state.pt``: everything beside the weights that continuing a run exactly needs."""

    config: dict[str, Any]  # the run's settings as it saved this, for people reading it


def checkpoints_dir(run_id: str) -> Path:
    """The directory holding a run's checkpoints (created, private)."""
    return ensure_private_dir(run_dir(run_id) / "checkpoints")


def save_checkpoint(
    directory: Path,
    step: int,
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    trainer_state: TrainerState,
) -> Path:
    """Write ``step-N/`` in ``directory``: a Hugging Face model directory plus ``trainer_state.pt``.

    Everything goes into a temporary sibling first and is renamed into place
    in one step, so a crash or a full disk never leaves a half-written
    checkpoint where anyone looks; a temporary left by a killed process is
    removed when the next training job starts.
    """
    final = directory / f"step-{step}"
    temporary = directory / f"{_TEMPORARY_PREFIX}{step}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(str(temporary))
        tokenizer.save_pretrained(temporary)
        torch.save(trainer_state, temporary / TRAINER_STATE_FILE)
        if final.exists():  # written by a process that died before recording it
            shutil.rmtree(final)
        os.rename(temporary, final)
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise TrainingError(
            f"Could not write the checkpoint for step {step} in {directory}: {exc.strerror or exc}. "
            "Free disk space or fix the directory's permissions, then resume the run."
        ) from exc
    return final


def load_trainer_state(checkpoint: Path) -> TrainerState:
    """Read a checkpoint's trainer state (tensors and plain values only: ``weights_only=True``)."""
    path = checkpoint / TRAINER_STATE_FILE
    if not path.is_file():
        raise TrainingError(
            f"The checkpoint {checkpoint} has no {TRAINER_STATE_FILE}, so it cannot be resumed. "
            f"Start a new run from its weights instead (model: {checkpoint})."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file raises anything from pickle to zip errors
        raise TrainingError(
            f"The trainer state {path} is corrupt or truncated ({type(exc).__name__}: {exc}). "
            f"Delete the directory {checkpoint} to resume from the checkpoint before it."
        ) from exc
    if (
        not isinstance(state, dict)
        or state.get("format") != TRAINER_STATE_FORMAT
        or not TrainerState.__required_keys__ <= state.keys()
    ):
        raise TrainingError(
            f"The trainer state {path} is not one this version of lm-workbench wrote. "
            f"Delete the directory {checkpoint} to resume from the checkpoint before it."
        )
    return cast("TrainerState", state)


def checkpoints_to_remove(checkpoints: list[dict], kept: int) -> list[int]:
    """Steps of the checkpoints to delete: all but the newest ``kept`` and the best by validation loss."""
    by_step = sorted(checkpoints, key=lambda row: row["step"])
    keep = {row["step"] for row in by_step[-kept:]}
    scored = [row for row in by_step if row.get("val_loss") is not None]
    if scored:
        keep.add(min(scored, key=lambda row: row["val_loss"])["step"])
    return [row["step"] for row in by_step if row["step"] not in keep]


def remove_abandoned_temporaries() -> list[Path]:
    """Remove checkpoint temporaries (any run's) whose writing process is gone; return what was removed.

    A temporary is named ``.tmp-step-N-<pid>``: while that process lives it
    may still be writing, so only the dead ones go.
    """
    removed = []
    for temporary in (workbench_home() / "runs").glob(f"*/checkpoints/{_TEMPORARY_PREFIX}*"):
        pid = temporary.name.rpartition("-")[2]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(temporary, ignore_errors=True)
            removed.append(temporary)
    return removed


def remove_unrecorded_checkpoints(directory: Path, recorded: list[dict]) -> None:
    """Remove checkpoints that a killed process renamed into place but never recorded in the store."""
    recorded_paths = {Path(row["path"]).resolve() for row in recorded}
    for path in directory.glob("step-*"):
        if path.resolve() not in recorded_paths:
            shutil.rmtree(path, ignore_errors=True)


# -----------------------------------------------------------------------------
# Random states: seeded once, saved with each checkpoint, put back on resume


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device), so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every random state the loop draws on, as values ``torch.load(weights_only=True)`` accepts."""
    # The legacy tuple of NumPy's global generator (MT19937), as format 2 saves it.
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    kind, keys, position, has_gauss, cached_gaussian = legacy
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng_state`` saw."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
