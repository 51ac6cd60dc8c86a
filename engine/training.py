"""Training a language model: the settings, the loop, checkpoints, and the job that runs it.

Read it like nanoGPT's ``train.py``: the settings (``TrainingConfig``), the
learning-rate schedule (``get_lr``), the optimizer, the loss and its
evaluation (``estimate_loss``, bits per byte), checkpoints, and then the loop
itself in ``TrainingJob._train``. The job around the loop is thin: a thread,
stop and pause flags read once per step, and ``_RunRecorder``, the one place
that writes a run to the store.

Fine-tuning a Hugging Face model and training a ``scratch:`` preset are one
code path: ``load_model`` hands back a model and a tokenizer either way (for a
scratch preset it first trains the tokenizer on the dataset).

The same loop runs as several processes under ``torchrun`` (``lmwb train
--nproc N``): each rank trains its slice of every global batch through
``DistributedDataParallel``, the ranks agree every step on the loss and on
whether to stop, and rank 0 alone evaluates, samples, checkpoints and writes
the store (the others hold a ``_SilentRecorder``). ``engine.distributed``
holds the plumbing. With ``lora`` the model is frozen and ``engine.lora``'s
adapters train instead; its checkpoints hold only the adapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import distributed
from engine.datasets import Dataset, TokenSplit, WindowSampler, open_dataset, tokenize_dataset
from engine.devices import device_name, precision_name
from engine.errors import SettingsError, TrainingError, WorkbenchError
from engine.generation import GenerationSettings, generate_text
from engine.home import ensure_private_dir, run_dir, workbench_home
from engine.lora import adapter_base, add_adapters, load_adapters
from engine.models import ModelSource, context_length_on_disk, load_model, quiet_transformers
from engine.run_process import RunPulse, TrainingProgress, start_queued_runs
from engine.store import Run, RunStore, process_alive
from engine.training_config import (
    TrainingConfig,
    check_block_size,
    check_int,
    check_warmup,
)

TRAINER_STATE_FILE = "trainer_state.pt"
TRAINER_STATE_FORMAT = 2  # 2: each rank's sampler and random state, under "ranks"
VALIDATION_FRACTION = 0.1  # the last tenth of a dataset's tokens is held out for validation
PAUSE_POLL_SECONDS = 0.1  # how often a paused run looks whether to go on
_TEMPORARY_PREFIX = ".tmp-step-"  # + "<step>-<pid>": a checkpoint being written


# -----------------------------------------------------------------------------
# Learning rate, optimizer, precision


def get_lr(step: int, config: TrainingConfig, max_steps: int) -> float:
    """Learning rate for the 0-based optimizer step: linear warmup, then cosine down to min at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    if step >= max_steps:
        return config.min_learning_rate
    decay_ratio = (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return config.min_learning_rate + coefficient * (config.learning_rate - config.min_learning_rate)


def configure_optimizer(model: torch.nn.Module, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (2-D and up) only, as nanoGPT does.

    Biases and LayerNorm gains are not decayed. Only trainable parameters are
    handed over, so a model with frozen parts (adapters) trains just its
    trainable ones.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=True if device.type == "cuda" else None,
    )


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 autocast on GPUs that have it, fp16 with a gradient scaler on older GPUs, fp32 elsewhere."""
    cuda_has_bf16 = device.type == "cuda" and _native_bf16(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_has_bf16 else "fp16"
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and not cuda_has_bf16:
        raise SettingsError(
            "precision", "this GPU has no native bf16 (torch would emulate it, slower than fp16); use fp16 or auto."
        )
    return precision


def _native_bf16(device: torch.device) -> bool:
    """True on GPUs that compute in bf16 (Ampere and later); torch emulates it on older ones, slowly."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes; weights and optimizer state stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# -----------------------------------------------------------------------------
# Loss and evaluation


def next_token_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``y`` from ``x`` (``y`` is ``x`` moved on by one token)."""
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def evaluation_windows(ids: np.ndarray, block_size: int, max_windows: int | None = None) -> np.ndarray:
    """Start offsets of fixed windows of ``block_size + 1`` tokens over a split.

    Windows follow each other (each predicts the tokens the last one did not),
    so with no limit every token is predicted once, up to the last whole
    window. With a limit, an even spread of them is kept. The same windows
    every time, so the validation curve moves only when the model does.
    """
    count = (len(ids) - 1) // block_size
    starts = np.arange(count, dtype=np.int64) * block_size
    if max_windows is not None and count > max_windows:
        starts = starts[np.linspace(0, count - 1, max_windows).round().astype(np.int64)]
    return starts


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    ids: np.ndarray,
    starts: np.ndarray,
    *,
    block_size: int,
    batch_size: int,
    device: torch.device,
    precision: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """Mean next-token loss over the windows at ``starts``, and how many tokens were predicted."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
    for done, batch_starts in enumerate(batches, start=1):
        windows = torch.from_numpy(np.stack([ids[s : s + block_size + 1] for s in batch_starts]).astype(np.int64))
        x, y = windows[:, :-1].to(device), windows[:, 1:].to(device)
        with autocast_context(device, precision):
            loss = next_token_loss(model, x, y)
        total_loss += loss.item() * y.numel()
        total_tokens += y.numel()
        if progress is not None:
            progress(done, len(batches))
    model.train(was_training)
    return total_loss / total_tokens, total_tokens


def bits_per_byte(loss: float, split: TokenSplit) -> float:
    """Loss in bits per byte of text: comparable across tokenizers, unlike loss per token."""
    return loss / math.log(2) * len(split.ids) / split.num_bytes


def perplexity(loss: float) -> float:
    """exp(loss), or infinity where that overflows."""
    return math.exp(loss) if loss < 700 else math.inf


# -----------------------------------------------------------------------------
# Reproducibility: seeds and random states


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device), so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every random state the loop draws on, as values ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
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


# -----------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(
    checkpoints_dir: Path, step: int, model: torch.nn.Module, tokenizer: Any, trainer_state: dict[str, Any]
) -> Path:
    """Write ``step-N/``: a Hugging Face model directory plus ``trainer_state.pt``.

    Everything goes into a temporary sibling first and is renamed into place
    in one step, so a crash or a full disk never leaves a half-written
    checkpoint where anyone looks; a temporary left by a killed process is
    removed when the next training job starts.
    """
    final = checkpoints_dir / f"step-{step}"
    temporary = checkpoints_dir / f"{_TEMPORARY_PREFIX}{step}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        torch.save(trainer_state, temporary / TRAINER_STATE_FILE)
        if final.exists():  # written by a process that died before recording it
            shutil.rmtree(final)
        os.rename(temporary, final)
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise TrainingError(
            f"Could not write the checkpoint for step {step} in {checkpoints_dir}: {exc.strerror or exc}. "
            "Free disk space or fix the directory's permissions, then resume the run."
        ) from exc
    return final


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
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
    required = {
        "format",
        "step",
        "tokens",
        "elapsed",
        "best_val_loss",
        "optimizer",
        "grad_scaler",
        "ranks",
        "dataset_hash",
    }
    if not isinstance(state, dict) or state.get("format") != TRAINER_STATE_FORMAT or not required <= state.keys():
        raise TrainingError(
            f"The trainer state {path} is not one this version of lm-workbench wrote. "
            f"Delete the directory {checkpoint} to resume from the checkpoint before it."
        )
    return state


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


def _remove_unrecorded_checkpoints(checkpoints_dir: Path, recorded: list[dict]) -> None:
    """Remove checkpoints that a killed process renamed into place but never recorded in the store."""
    recorded_paths = {Path(row["path"]).resolve() for row in recorded}
    for path in checkpoints_dir.glob("step-*"):
        if path.resolve() not in recorded_paths:
            shutil.rmtree(path, ignore_errors=True)


# -----------------------------------------------------------------------------
# Progress, failures and the store


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA, MPS or CPU allocation failure, whichever way torch reports it."""
    text = str(error)
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)
    )


def failure_message(error: BaseException, config: TrainingConfig, step: int) -> str:
    """What to tell the user when a run ends with ``error``: for out-of-memory, what to lower."""
    if is_out_of_memory(error):
        smaller_batch = max(1, config.batch_size // 2)
        return (
            f"Out of memory at step {step} (batch_size {config.batch_size}, block_size {config.block_size}, "
            f"grad_accum {config.grad_accum}). Lower batch_size or block_size; to keep the tokens per step, "
            f"raise grad_accum as you lower batch_size (e.g. batch_size {smaller_batch} with grad_accum "
            f"{config.grad_accum * config.batch_size // smaller_batch}). Then resume the run."
            + (
                ""
                if config.gradient_checkpointing
                else " Turning on gradient_checkpointing also saves memory, at about a third more time per step."
            )
        )
    text = str(error)
    if isinstance(error, WorkbenchError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _RunRecorder:
    """Every write of one run to the store: metrics batched into one transaction, each batch with a heartbeat.

    Rows are flushed once a second or every ``FLUSH_ROWS`` rows, and whenever
    the loop asks (evaluation, checkpoint, pause, the end), so a crash loses
    at most a second of metrics and the TUI sees a run live. On a
    multi-process run only the first process would hold one.
    """

    FLUSH_ROWS = 100
    FLUSH_SECONDS = 1.0

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._rows: list[dict] = []
        self._steps = 0
        self._tokens = 0
        self._last_flush = time.monotonic()

    def add_metrics(self, row: dict) -> None:
        self._rows.append(row)
        self._steps, self._tokens = row["step"], row["tokens"]
        if len(self._rows) >= self.FLUSH_ROWS or time.monotonic() - self._last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self.store.add_metrics(self.run_id, self._rows)
            self._rows = []
        self.store.heartbeat(self.run_id, steps=self._steps, tokens=self._tokens)
        self._last_flush = time.monotonic()

    def set_position(self, steps: int, tokens: int) -> None:
        self._steps, self._tokens = steps, tokens

    def set_status(self, status: str, error: str | None = None) -> None:
        self.store.set_status(self.run_id, status, error=error)

    def add_sample(self, step: int, prompt: str, text: str) -> None:
        self.store.add_sample(self.run_id, step, prompt, text)

    def add_checkpoint(self, step: int, path: Path, val_loss: float | None, kept: int) -> None:
        """Record a checkpoint, then delete those retention lets go (the record goes first, then the files)."""
        self.store.add_checkpoint(self.run_id, step, str(path), val_loss=val_loss)
        checkpoints = self.store.checkpoints(self.run_id)
        for old_step in checkpoints_to_remove(checkpoints, kept):
            old_path = next(Path(row["path"]) for row in checkpoints if row["step"] == old_step)
            self.store.remove_checkpoint(self.run_id, old_step)
            shutil.rmtree(old_path, ignore_errors=True)

    def set_best_val_loss(self, value: float) -> None:
        self.store.update_run(self.run_id, best_val_loss=value)


class _SilentRecorder(_RunRecorder):
    """What ranks other than 0 hold: the recorder's calls, with nothing written, so every rank runs one loop."""

    def __init__(self) -> None:
        super().__init__(store=None, run_id="")

    def flush(self) -> None:
        self._rows = []

    def set_status(self, status: str, error: str | None = None) -> None:
        pass

    def add_sample(self, step: int, prompt: str, text: str) -> None:
        pass

    def add_checkpoint(self, step: int, path: Path, val_loss: float | None, kept: int) -> None:
        pass

    def set_best_val_loss(self, value: float) -> None:
        pass


def _percent(done: int, total: int) -> int:
    return 100 * done // total if total else 100


# -----------------------------------------------------------------------------
# The job


class TrainingJob:
    """One training run: set up, train, evaluate, sample, checkpoint, and record it all in the store.

    ``start()`` trains in a background thread (the TUI), ``run()`` in the
    calling thread (``lmwb train``). ``stop()``, ``pause()`` and ``resume()``
    may be called from any thread (``stop()`` from a signal handler too): the
    loop reads their flags between steps. The same requests come through the
    store (``lmwb runs pause``, the app): the job's ``RunPulse`` reads them
    twice a second, with the heartbeat that writes its progress. With
    ``resume_run`` the job picks up that run's latest checkpoint and
    continues its step count, learning-rate schedule, data order and random
    state; ``config.max_steps`` is then the new total. A ``resume_run`` that
    is queued or starting with no checkpoint yet (a run launched by
    ``engine.run_process``) starts from step 0 under its own id.
    """

    def __init__(
        self,
        config: TrainingConfig,
        store: RunStore | None = None,
        resume_run: str | None = None,
        on_progress: Callable[[TrainingProgress], None] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.store = store if store is not None else RunStore()
        self.resume_run = resume_run
        self.on_progress = on_progress
        self.run_id: str | None = None
        self.model: torch.nn.Module | None = None  # the model being trained, once loaded
        self.error: BaseException | None = None  # why the run failed, once it has
        self.progress = TrainingProgress(max_steps=config.max_steps)
        self.place = distributed.this_process()  # rank and world size, from torchrun's environment
        self.rank, self.world_size = self.place.rank, self.place.world_size
        self._stop_requested = False
        self._pause_requested = False
        self._thread: threading.Thread | None = None
        self._progress_lock = threading.Lock()  # the loop and the pulse both report
        self.pulse: RunPulse | None = None  # rank 0's heartbeat and request reader, once the run is open

    # -- controls, from any thread -------------------------------------------

    def start(self) -> str:
        """Open the run (errors in the settings or the dataset path raise here) and train in a thread."""
        self._open_run()
        self._thread = threading.Thread(target=self._run_and_record, name=f"training-{self.run_id}", daemon=False)
        self._thread.start()
        return self.run_id

    def run(self) -> Run:
        """Train in the calling thread; return the finished run, or raise what ended it."""
        self._open_run()
        self._run_and_record()
        if self.error is not None:
            raise self.error
        return self.store.get_run(self.run_id)

    def stop(self) -> None:
        """Finish the current step, save a checkpoint, end as ``stopped``."""
        self._stop_requested = True

    def pause(self) -> None:
        """Hold the loop between steps (status ``paused``) until ``resume()`` or ``stop()``."""
        self._pause_requested = True

    def resume(self) -> None:
        """Carry on after ``pause()``."""
        self._pause_requested = False

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a started job to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -- opening the run -----------------------------------------------------

    def _open_run(self) -> None:
        """Check what can be checked quickly, then create the run (or reopen the one to resume).

        Several ranks: each joins the process group first; rank 0 opens the
        run and tells the others its id and checkpoint (or why it failed).
        """
        if self.run_id is not None:
            raise TrainingError("This job has already run; create a new TrainingJob to train again.")
        config = self.config
        self.device_name = distributed.training_device(config.device, self.place)
        if self.place.distributed:
            distributed.start_process_group(torch.device(self.device_name))
        try:
            self.dataset: Dataset = open_dataset(config.dataset, config.dataset_field)
            if self.place.writes:
                self._open_run_record()
            else:
                self._follow_run_record()
        except BaseException:
            distributed.end_process_group()
            raise
        if self.resume_state is not None:
            self.recorder.set_position(self.resume_state["step"], self.resume_state["tokens"])

    def _open_run_record(self) -> None:
        """Rank 0: create the run in the store, or reopen the one to resume; tell the other ranks which."""
        config = self.config
        self.resume_state: dict[str, Any] | None = None
        try:
            remove_abandoned_temporaries()
            if self.resume_run is None:
                check_block_size(config.block_size, context_length_on_disk(config.model, self.store))
                run = self.store.create_run(
                    name=config.name,
                    model=config.model,
                    dataset=config.dataset,
                    config=config.as_dict(),
                    world_size=self.world_size,
                    lora=config.lora,
                )
                self.run_id = run.id
                self.store.set_status(run.id, "running")  # stamps the start
                self.checkpoints_dir = ensure_private_dir(run_dir(run.id) / "checkpoints")
            else:
                self._reopen_run_to_resume()
        except Exception as exc:
            if self.place.distributed:
                distributed.broadcast_from_writer({"error": failure_message(exc, config, 0)})
            raise
        if self.place.distributed:
            checkpoint = str(self.resume_checkpoint) if self.resume_state is not None else None
            distributed.broadcast_from_writer({"run_id": self.run_id, "checkpoint": checkpoint})
        self.recorder = _RunRecorder(self.store, self.run_id)
        self.pulse = RunPulse(self.store, self.run_id, lambda: self.progress, self._take_request)
        self.pulse.start()

    def _take_request(self, action: str) -> None:
        """A request read from the store: act on it as if called here (the pulse's thread calls this)."""
        if action == "stop" and not self._stop_requested:
            self.stop()
            self._report(phase="stopping", message="Stopping: finishing this step and saving a checkpoint")
        elif action == "pause":
            self.pause()
        elif action == "continue":
            self.resume()

    def _follow_run_record(self) -> None:
        """Ranks other than 0: learn the run (and the checkpoint to resume) from rank 0; write nothing."""
        opened = distributed.broadcast_from_writer(None)
        if "error" in opened:
            raise TrainingError(f"Rank 0 could not open the run: {opened['error']}")
        self.run_id = opened["run_id"]
        self.resume_state = None
        if opened["checkpoint"] is not None:
            self.resume_checkpoint = Path(opened["checkpoint"])
            self.resume_state = load_trainer_state(self.resume_checkpoint)
        self.recorder = _SilentRecorder()

    def _reopen_run_to_resume(self) -> None:
        config = self.config
        self.store.mark_interrupted_runs()
        run = self.store.get_run(self.resume_run)
        if run.status in ("running", "paused"):
            raise TrainingError(
                f"Run {run.id} is still {run.status} (process {run.pid} on {run.host}); stop it before resuming it."
            )
        if run.status in ("queued", "starting") and not self.store.checkpoints(run.id):
            self._adopt_new_run(run)
            return
        if run.world_size != self.world_size:
            raise TrainingError(
                f"Run {run.id} was trained as {run.world_size} process(es) and this is {self.world_size}; each "
                f"process continues its own data order, so resume it as {run.world_size} "
                f"(lmwb train --resume {run.id} --nproc {run.world_size})."
            )
        if config.lora != run.lora:
            raise SettingsError(
                "lora", f"run {run.id} was trained {'with' if run.lora else 'without'} LoRA; resume it the same way."
            )
        self.checkpoints_dir = ensure_private_dir(run_dir(run.id) / "checkpoints")
        recorded = self.store.checkpoints(run.id)
        _remove_unrecorded_checkpoints(self.checkpoints_dir, recorded)
        on_disk = [row for row in recorded if Path(row["path"]).is_dir()]
        if not on_disk:
            raise TrainingError(f"Run {run.id} has no checkpoint to resume from; start a new run instead.")
        self.resume_checkpoint = Path(on_disk[-1]["path"])
        self.resume_state = load_trainer_state(self.resume_checkpoint)
        resumed_step = self.resume_state["step"]
        if config.epochs is None and config.max_steps <= resumed_step:
            raise SettingsError(
                "max_steps",
                f"run {run.id} is already at step {resumed_step}; max_steps is the new total, "
                f"so give more than {resumed_step}.",
            )
        self.run_id = run.id
        self.store.update_run(run.id, config=config.as_dict())
        self.store.set_status(run.id, "running")  # claims it for this process (pid, host)

    def _adopt_new_run(self, run: Run) -> None:
        """Train a run that was recorded before this process started (launched or queued): from step 0."""
        if run.world_size != self.world_size:
            raise TrainingError(
                f"Run {run.id} is to be trained as {run.world_size} process(es) and this is {self.world_size}."
            )
        check_block_size(self.config.block_size, context_length_on_disk(self.config.model, self.store))
        self.run_id = run.id
        self.store.set_status(run.id, "running")  # claims it for this process (pid, host, start time)
        self.checkpoints_dir = ensure_private_dir(run_dir(run.id) / "checkpoints")

    # -- the thread's body ---------------------------------------------------

    def _run_and_record(self) -> None:
        """Train; whatever ends the run is recorded as its status, with a message saying why."""
        try:
            status, message = self._train()
            self._report(status=status, phase=status, message=message)
        except BaseException as exc:
            self._record_ending(exc)
            if not isinstance(exc, Exception):
                raise  # Ctrl+C or interpreter exit: recorded, and passed on
        finally:
            distributed.end_process_group()
            if self.pulse is not None:
                self.pulse.stop()  # the final progress, with how the run ended
                with contextlib.suppress(WorkbenchError):  # a run ending frees a slot for the queue
                    start_queued_runs(self.store)

    def _record_ending(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            status, message = "failed", failure_message(exc, self.config, self.progress.step)
            self.error = exc
            if is_out_of_memory(exc):
                self.error = TrainingError(message)
                self.error.__cause__ = exc
        else:
            status = "interrupted"
            message = f"Interrupted at step {self.progress.step}; resume from the last checkpoint."
        with contextlib.suppress(Exception):  # the store may be what failed; the status must still be tried
            self.recorder.flush()
        with contextlib.suppress(Exception):
            self.recorder.set_status(status, error=message)
        with contextlib.suppress(Exception):  # the progress callback may be what failed
            self._report(status=status, phase=status, message=message)

    def _report(self, **changes: Any) -> None:
        with self._progress_lock:
            self.progress = dataclasses.replace(self.progress, **changes)
        if self.on_progress is not None:
            self.on_progress(self.progress)

    # -- setup: model, data, optimizer ---------------------------------------

    def _prepare(self) -> None:
        """Load the model and tokenizer, tokenize and split the data, build the optimizer (and restore a checkpoint)."""
        config = self.config
        quiet_transformers()
        if self.resume_state is None:
            seed_everything(config.seed)  # before loading, so a scratch model's initial weights repeat
            source: ModelSource | str = config.model
        elif config.lora:
            source = adapter_base(self.resume_checkpoint)  # the base; its adapters go back on below
        else:
            source = ModelSource(kind="local", value=str(self.resume_checkpoint))
        self._report_setup(f"Loading {source}")
        with distributed.writer_first(self.place):  # rank 0 trains a scratch tokenizer; the others find it cached
            loaded = load_model(
                source,
                device=self.device_name,
                dataset=self.dataset,
                vocab_size=config.vocab_size,
                store=self.store,
                progress=self._report_setup,
            )
        self.tokenizer, self.device = loaded.tokenizer, loaded.device
        self.model = self._trainable_model(loaded.model)
        context = loaded.info().context_length
        check_block_size(config.block_size, context)
        if config.sample_every > 0 and len(self.tokenizer.encode(config.sample_prompt)) >= context:
            raise SettingsError("sample_prompt", f"is longer than the model's context of {context} tokens; shorten it.")
        self.precision = resolve_precision(config.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls and convolutions where autocast leaves fp32
            torch.backends.cudnn.allow_tf32 = True

        with distributed.writer_first(self.place):  # rank 0 fills the token cache; the others read it
            tokens = tokenize_dataset(self.dataset, self.tokenizer, progress=self._report_tokenizing)
        train_split, self.val_split = tokens.split(VALIDATION_FRACTION)
        for split, part in ((train_split, "training"), (self.val_split, "validation")):
            if len(split.ids) < config.block_size + 1:
                raise SettingsError(
                    "dataset",
                    f"{config.dataset!r} gives {len(split.ids)} {part} tokens, fewer than one window of "
                    f"block_size + 1 = {config.block_size + 1}; use more text or a smaller block_size.",
                )
        self.max_steps = config.steps_for(len(train_split.ids), self.world_size)
        check_warmup(config.warmup_steps, self.max_steps)
        self.sampler = WindowSampler(
            train_split,
            config.block_size,
            config.batch_size,
            seed=config.seed,
            rank=self.rank,
            world_size=self.world_size,
        )
        # eval_batches global batches: rank 0 scores the windows one process with the global batch would.
        self.val_starts = evaluation_windows(
            self.val_split.ids, config.block_size, config.eval_batches * config.batch_size * self.world_size
        )
        self.dataset_hash = self.dataset.content_hash()

        self.model.train()
        # Several ranks: DDP averages the gradients of all ranks in the backward pass.
        self.ddp_model = (
            torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            if self.place.distributed
            else None
        )
        self.optimizer = configure_optimizer(self.model, config, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step, self.tokens, self.elapsed_before, self.best_val_loss = 0, 0, 0.0, None
        self.elapsed = 0.0
        self.last_checkpoint_step: int | None = None
        if self.resume_state is not None:
            self._restore(self.resume_state)

    def _trainable_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as it trains: with fresh LoRA adapters (or a resumed run's), with gradient checkpointing."""
        config = self.config
        if config.lora and self.resume_state is None:
            model = add_adapters(model, config.lora_settings())
        elif config.lora:
            model = load_adapters(model, self.resume_checkpoint, trainable=True, device=model.device)
        if config.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise SettingsError("gradient_checkpointing", f"{config.model} does not support it; turn it off.")
            # Non-reentrant checkpointing: gradients reach adapters behind frozen layers, and it works under DDP.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def _report_setup(self, message: str) -> None:
        """Say what setup is doing (training a tokenizer or tokenizing can take minutes)."""
        self._report(phase=message, message=message)

    def _report_tokenizing(self, done: int, total: int) -> None:
        self._report_setup(f"Tokenizing {self.dataset.name}: {_percent(done, total)}%")

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue where the checkpoint left off: optimizer, step, data position, random state."""
        if state["dataset_hash"] != self.dataset_hash:
            raise SettingsError(
                "dataset",
                f"{self.config.dataset!r} is not the text run {self.run_id} was trained on (its content "
                f"changed), so its data order cannot continue. Start a new run from this run's "
                f"checkpoint instead (model: run:{self.run_id}).",
            )
        self.optimizer.load_state_dict(state["optimizer"])
        if state["grad_scaler"]:
            self.scaler.load_state_dict(state["grad_scaler"])
        mine = state["ranks"][self.rank]
        self.sampler.load_state_dict(mine["sampler"])
        self.step, self.tokens = state["step"], state["tokens"]
        self.elapsed_before, self.best_val_loss = state["elapsed"], state["best_val_loss"]
        self.elapsed = self.elapsed_before
        self.last_checkpoint_step = self.step
        restore_rng_state(mine["rng"])  # last: loading may draw random numbers

    # -- the loop ------------------------------------------------------------

    def _train(self) -> tuple[str, str]:
        """Set up, then loop until max_steps, stop or the time limit; return the final status and message."""
        self._prepare()
        config = self.config
        self.recorder.set_position(self.step, self.tokens)
        tokens_per_step = config.batch_size * config.block_size * config.grad_accum * self.world_size
        session_start = time.perf_counter()
        paused_seconds = 0.0
        seconds_per_step: float | None = None  # smoothed wall time per step, for the ETA
        last_step_end = session_start
        stop_reason = ""
        self._report(
            status="running",
            phase="training",
            step=self.step,
            max_steps=self.max_steps,
            tokens=self.tokens,
            elapsed=self.elapsed_before,
        )

        while self.step < self.max_steps:
            stop_reason, pause = self._controls(time.perf_counter() - session_start - paused_seconds)
            if pause and not stop_reason:
                paused = self._hold_while_paused()
                paused_seconds += paused
                last_step_end += paused
                stop_reason, _ = self._controls(time.perf_counter() - session_start - paused_seconds)
            if stop_reason:
                break

            # one optimizer step
            lr = get_lr(self.step, config, self.max_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            step_start = time.perf_counter()
            train_loss, grad_norm = self._optimizer_step()
            step_seconds = time.perf_counter() - step_start
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"The training loss became {train_loss} at step {self.step + 1}. Lower learning_rate "
                    f"(now {config.learning_rate:g}) or raise warmup_steps, then start again or resume."
                )
            self.step += 1
            self.tokens += tokens_per_step

            # bookkeeping: metrics row, evaluation, sample, checkpoint
            now = time.perf_counter()
            session_seconds = now - session_start - paused_seconds
            iteration_seconds = now - last_step_end  # the step and the bookkeeping after the last one
            last_step_end = now
            seconds_per_step = (
                iteration_seconds if seconds_per_step is None else 0.9 * seconds_per_step + 0.1 * iteration_seconds
            )
            stop_reason, _ = self._controls(session_seconds)
            ending = bool(stop_reason) or self.step >= self.max_steps
            checkpoint_due = ending or (config.checkpoint_every > 0 and self.step % config.checkpoint_every == 0)
            row = {
                "step": self.step,
                "train_loss": train_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_sec": tokens_per_step / step_seconds,
                "tokens": self.tokens,
                "elapsed": self.elapsed_before + session_seconds,
            }
            self.elapsed = row["elapsed"]
            if config.eval_every > 0 and (self.step % config.eval_every == 0 or checkpoint_due):
                row.update(self._evaluate())
            self.recorder.add_metrics(row)
            if config.sample_every > 0 and self.step % config.sample_every == 0:
                self._sample()
            if checkpoint_due:
                self._checkpoint(row.get("val_loss"))
            self._report(
                phase="stopping" if self._stop_requested else "training",
                step=self.step,
                tokens=self.tokens,
                train_loss=train_loss,
                val_loss=row.get("val_loss", self.progress.val_loss),
                tokens_per_sec=row["tokens_per_sec"],
                elapsed=row["elapsed"],
                eta_seconds=self._eta(seconds_per_step, session_seconds),
                gpu_memory_bytes=self._gpu_memory_bytes(),
            )
            if ending:
                break

        if self.last_checkpoint_step != self.step:  # stopped between steps (while paused, or before the first)
            self._checkpoint(None)
        self.recorder.flush()
        if stop_reason:
            self.recorder.set_status("stopped")
            return "stopped", f"{stop_reason} at step {self.step}; a checkpoint was saved and the run can be resumed."
        self.recorder.set_status("completed")
        return "completed", f"Completed {self.step} steps."

    def _optimizer_step(self) -> tuple[float, float]:
        """Forward and backward over grad_accum micro-batches, clip, step; return (loss, gradient norm)."""
        config = self.config
        model = self.model if self.ddp_model is None else self.ddp_model
        loss_sum = torch.zeros((), device=self.device)
        for micro_step in range(config.grad_accum):
            x, y = (
                t.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else t
                for t in self.sampler.next_batch()
            )
            # DDP averages gradients across ranks in the last micro-batch's backward pass only.
            last = micro_step == config.grad_accum - 1
            with contextlib.nullcontext() if self.ddp_model is None or last else self.ddp_model.no_sync():
                with autocast_context(self.device, self.precision):
                    loss = next_token_loss(model, x, y) / config.grad_accum
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if self.ddp_model is not None:
            loss_sum = distributed.mean_over_ranks(loss_sum)  # the loss of the global batch
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum.item(), grad_norm.item()

    def _hold_while_paused(self) -> float:
        """Hold every rank here while paused (the pulse keeps beating); return the seconds spent."""
        started = time.perf_counter()
        self.recorder.flush()
        self.recorder.set_status("paused")
        self._report(status="paused", phase="paused", message=f"Paused at step {self.step}.")
        stop, pause = False, True
        while pause and not stop:
            time.sleep(PAUSE_POLL_SECONDS)
            stop, pause = self._agreed_controls()
        if not stop:
            self.recorder.set_status("running")
            self._report(status="running", phase="training", message=f"Continued at step {self.step}.")
        return time.perf_counter() - started

    def _gpu_memory_bytes(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def _controls(self, session_seconds: float) -> tuple[str, bool]:
        """(why to stop now, "" to go on; whether to pause), agreed by every rank.

        A rank that stops or pauses alone leaves the others waiting in the
        next gradient exchange, so the ranks agree: a stop on any rank (a
        signal, the time limit), a pause when rank 0 (which reads the store) says so.
        """
        reason = ""
        if self._stop_requested:
            reason = "Stopped"
        elif self.config.max_time is not None and session_seconds >= self.config.max_time:
            reason = f"Time limit of {self.config.max_time:g} s reached"
        self._stop_requested = self._stop_requested or bool(reason)
        stop, pause = self._agreed_controls()
        return (reason or ("Stopped by another process" if stop else "")), pause

    def _agreed_controls(self) -> tuple[bool, bool]:
        """(stop, pause) as every rank will see them: one small collective per call under several ranks."""
        stop, pause = self._stop_requested, self._pause_requested and self.place.writes
        if self.place.distributed:
            stop, pause = distributed.agree(stop, pause, self.device)
        return stop, pause

    def _eta(self, seconds_per_step: float, session_seconds: float) -> float:
        eta = (self.max_steps - self.step) * seconds_per_step
        if self.config.max_time is not None:
            eta = min(eta, max(0.0, self.config.max_time - session_seconds))
        return eta

    def _evaluate(self) -> dict[str, float]:
        """Validation loss, perplexity and bits per byte on the fixed validation windows (rank 0 alone)."""
        if not self.place.writes:
            return {}  # the others go on, and wait for rank 0 at the next step's gradient exchange
        self.recorder.flush()  # the TUI keeps up while the evaluation runs
        self._report(phase="evaluating")
        # In eval mode (no dropout) this draws no random numbers, so training's stream is untouched.
        val_loss, _ = estimate_loss(
            self.model,
            self.val_split.ids,
            self.val_starts,
            block_size=self.config.block_size,
            batch_size=self.config.batch_size,
            device=self.device,
            precision=self.precision,
        )
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.recorder.set_best_val_loss(val_loss)
        return {
            "val_loss": val_loss,
            "val_ppl": perplexity(val_loss),
            "val_bpb": bits_per_byte(val_loss, self.val_split),
        }

    def _sample(self) -> None:
        """Generate a short text with the generation engine and store it with the step (rank 0 alone)."""
        config = self.config
        if not self.place.writes:
            return
        # A seeded generator of its own: the same seed each time, and training's random stream untouched.
        settings = GenerationSettings(max_new_tokens=config.sample_length, seed=config.seed)
        self.model.eval()
        result = generate_text(self.model, self.tokenizer, config.sample_prompt, settings)
        self.model.train()
        self.recorder.add_sample(self.step, config.sample_prompt, result.text)

    def _checkpoint(self, val_loss: float | None) -> None:
        """Save step-N atomically, record it, and let retention remove what is no longer kept.

        Every rank takes part: rank 0 gathers each rank's data position and
        random state and writes them all, so each rank continues its own on resume.
        """
        mine = {"sampler": self.sampler.state_dict(), "rng": capture_rng_state()}
        ranks = distributed.gather_at_writer(mine) if self.place.distributed else [mine]
        self.last_checkpoint_step = self.step
        if not self.place.writes:
            return
        self.recorder.flush()
        phase = self.progress.phase
        self._report(phase=f"saving checkpoint step-{self.step}")
        state = {
            "format": TRAINER_STATE_FORMAT,
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": self.elapsed,
            "best_val_loss": self.best_val_loss,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "ranks": ranks,
            "dataset_hash": self.dataset_hash,
            "config": self.config.as_dict(),
        }
        path = save_checkpoint(self.checkpoints_dir, self.step, self.model, self.tokenizer, state)
        self.recorder.add_checkpoint(self.step, path, val_loss, self.config.checkpoints_kept)
        self._report(phase=phase, message=f"Saved checkpoint step-{self.step}")


# -----------------------------------------------------------------------------
# Evaluating any model on any dataset


@dataclass
class EvaluationResult:
    """How well a model predicts a dataset's text: loss, perplexity, bits per byte (comparable across tokenizers)."""

    model: str
    dataset: str
    split: str
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int  # tokens predicted
    evaluation_id: int | None = None  # its row in the store

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate(
    model_source: str,
    dataset: str,
    split: str = "val",
    *,
    dataset_field: str | None = None,
    block_size: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    store: RunStore | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Measure a model on a dataset's validation split (the last tenth, as training holds out) or on all of it.

    Every token of the split is predicted once, up to the last whole window
    (or an even spread of ``max_batches`` batches of windows), in windows of ``block_size`` tokens
    (default: the model's context, at most 1024). ``progress`` is told, in
    words, what is happening (loading, tokenizing, "Evaluating: 3/10
    batches"). The result is recorded in the store, so a base model and its
    fine-tuned checkpoint can be compared on the same text later.
    """
    report = progress or (lambda message: None)
    if split not in ("val", "all"):
        raise SettingsError("split", f"{split!r} is not a split; use val or all.")
    check_int("batch_size", batch_size, 1)
    if block_size is not None:
        check_int("block_size", block_size, 1)
    if max_batches is not None:
        check_int("max_batches", max_batches, 1)
    precision = precision_name(precision)
    device = device_name(device)
    store = store if store is not None else RunStore()
    data = open_dataset(dataset, dataset_field)
    quiet_transformers()
    loaded = load_model(model_source, device=device, dataset=data, store=store, progress=report)
    tokens = tokenize_dataset(
        data, loaded.tokenizer, progress=lambda done, total: report(f"Tokenizing {data.name}: {_percent(done, total)}%")
    )
    if split == "val":
        text = tokens.split(VALIDATION_FRACTION)[1]
    else:
        text = TokenSplit(tokens.ids, tokens.num_bytes, f"all of '{data.name}'")
    if len(text.ids) < 2:
        raise SettingsError("dataset", f"{dataset!r} gives fewer than 2 {split} tokens; use more text.")
    context = loaded.info().context_length
    window = min(block_size or min(context, 1024), context, len(text.ids) - 1)
    starts = evaluation_windows(text.ids, window, None if max_batches is None else max_batches * batch_size)
    loss, predicted = estimate_loss(
        loaded.model,
        text.ids,
        starts,
        block_size=window,
        batch_size=batch_size,
        device=loaded.device,
        precision=resolve_precision(precision, loaded.device),
        progress=lambda done, total: report(f"Evaluating: {done}/{total} batches"),
    )
    result = EvaluationResult(
        model=str(loaded.source),
        dataset=data.name,
        split=split,
        loss=loss,
        perplexity=perplexity(loss),
        bits_per_byte=bits_per_byte(loss, text),
        tokens=predicted,
    )
    result.evaluation_id = store.add_evaluation(
        model=result.model,
        dataset=result.dataset,
        split=split,
        loss=loss,
        perplexity=result.perplexity,
        bits_per_byte=result.bits_per_byte,
        tokens=predicted,
    )
    return result
