"""Training a language model: the job that runs a run, and the loop.

Read it like nanoGPT's ``train.py``: ``TrainingJob._prepare`` loads the
model and tokenizer, tokenizes and splits the data and builds the optimizer,
all into one ``_Training``; ``TrainingJob._train`` is the loop: the learning
rate, one optimizer step, then the bookkeeping (metrics, evaluation, a
sample, a checkpoint). What the loop uses has a module each:

- ``engine.training_config``: the settings (``TrainingConfig``);
- ``engine.schedule``: ``get_lr`` (warmup, then cosine) and the optimizer;
- ``engine.precision``: the precision a forward pass computes in;
- ``engine.evaluation``: the loss, the validation windows, bits per byte;
- ``engine.checkpoints``: checkpoint files, the trainer state, random states;
- ``engine.run_recorder``: the one place that writes the run to the store.

The job around the loop is thin: a thread, stop and pause flags read once
per step, and a ``RunPulse`` that beats the heartbeat and reads requests.

Fine-tuning a Hugging Face model and training a ``scratch:`` preset are one
code path: ``load_model`` hands back a model and a tokenizer either way (for a
scratch preset it first trains the tokenizer on the dataset).

The same loop runs as several processes under ``torchrun`` (``lmwb train
--nproc N``): each rank trains its slice of every global batch through
``DistributedDataParallel``, the ranks agree every step on the loss and on
whether to stop, and rank 0 alone evaluates, samples, checkpoints and writes
the store (the others hold a ``SilentRecorder``). ``engine.distributed``
holds the plumbing. With ``lora`` the model is frozen and ``engine.lora``'s
adapters train instead; its checkpoints hold only the adapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from engine import distributed
from engine.checkpoints import (
    TRAINER_STATE_FORMAT,
    RankState,
    TrainerState,
    capture_rng_state,
    checkpoints_dir,
    load_trainer_state,
    remove_abandoned_temporaries,
    remove_unrecorded_checkpoints,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)
from engine.datasets import VALIDATION_FRACTION, Dataset, TokenSplit, WindowSampler, open_dataset, tokenize_dataset
from engine.errors import SettingsError, TrainingError, WorkbenchError
from engine.evaluation import (
    bits_per_byte,
    estimate_loss,
    evaluation_windows,
    next_token_loss,
    perplexity,
    tokenizing_progress,
)
from engine.generation import GenerationSettings, generate_text
from engine.lora import adapter_base, add_adapters, load_adapters
from engine.mfu import ModelShape, model_flops_utilisation
from engine.model_source import context_length_on_disk
from engine.models import ModelSource, load_model, quiet_transformers, set_dropout
from engine.precision import autocast_context, resolve_precision
from engine.probes import complete_probes
from engine.run_process import RunPulse, TrainingProgress, start_queued_runs
from engine.run_recorder import RunRecorder, SilentRecorder
from engine.schedule import configure_optimizer, get_lr, get_lr_on_time
from engine.store import Run, RunStatus, RunStore
from engine.training_config import TrainingConfig, check_block_size, check_room_to_resume, check_warmup

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAUSE_POLL_SECONDS = 0.1  # how often a paused run looks whether to go on
PLAN_REPORT_STEP = 10  # a run planned on time says how far its budget will take it once its pace is known


@dataclass(frozen=True)
class _ResumePoint:
    """The checkpoint a run continues from, and its trainer state."""

    checkpoint: Path
    state: TrainerState


@dataclass(frozen=True)
class _OpenedRun:
    """What opening a run settles, before any model loads: which run, its data and device, where it resumes."""

    run_id: str
    dataset: Dataset
    device: str  # where this rank trains: "cpu", "cuda:1"
    recorder: RunRecorder | SilentRecorder
    resume: _ResumePoint | None  # None: from step 0


@dataclass
class _Training:
    """Everything the loop trains with, and how far it has got: built in one place, ``TrainingJob._prepare``."""

    run_id: str
    recorder: RunRecorder | SilentRecorder
    model: PreTrainedModel | PeftModel  # what is trained (with its adapters), saved, evaluated and sampled
    ddp_model: DistributedDataParallel | None  # several ranks: the model wrapped, for its no_sync()
    step_model: torch.nn.Module  # what the step runs: the model, DDP-wrapped under several ranks, maybe compiled
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    precision: str  # fp32 | bf16 | fp16, resolved for the device
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # scales fp16 losses; does nothing in other precisions
    sampler: WindowSampler  # this rank's training windows
    val_split: TokenSplit
    val_starts: np.ndarray  # the fixed validation windows (rank 0 scores them)
    dataset_hash: str  # the text the data order belongs to
    max_steps: int | None  # None: planned on time, the run ends as its budget (config.max_time) runs out
    epoch_cap_steps: int | None  # planned on time with max_epochs: the step its passes over the data end at
    parameters: int  # the model's, for tokens per parameter in the plan
    flops_shape: ModelShape  # what the FLOPs per token depend on, for MFU
    # How far the run has got: saved with each checkpoint, restored on resume.
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds trained, every session together
    best_val_loss: float | None = None
    last_checkpoint_step: int | None = None
    # What the run's last evaluation and checkpoint took: a run planned on time keeps room for both at its end.
    evaluation_seconds: float | None = None
    checkpoint_seconds: float | None = None


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
        self.model: PreTrainedModel | PeftModel | None = None  # the model being trained, once loaded
        self.error: BaseException | None = None  # why the run failed, once it has
        self.progress = TrainingProgress(max_steps=config.max_steps or 0)
        self.place = distributed.this_process()  # rank and world size, from torchrun's environment
        self.pulse: RunPulse | None = None  # rank 0's heartbeat and request reader, once the run is open
        self._stop_requested = False
        self._pause_requested = False
        # A run planned on time, once its plan has ended (rank 0 decides): "budget" when its time is
        # up, "epochs" when its passes over the data (max_epochs) are; "" until then.
        self._plan_ended = ""
        self._thread: threading.Thread | None = None
        self._progress_lock = threading.Lock()  # the loop and the pulse both report

    # -- controls, from any thread -------------------------------------------

    def start(self) -> str:
        """Open the run (errors in the settings or the dataset path raise here) and train in a thread."""
        opened = self._open_run()
        self._thread = threading.Thread(
            target=self._run_and_record, args=(opened,), name=f"training-{opened.run_id}", daemon=False
        )
        self._thread.start()
        return opened.run_id

    def run(self) -> Run:
        """Train in the calling thread; return the finished run, or raise what ended it."""
        opened = self._open_run()
        self._run_and_record(opened)
        if self.error is not None:
            raise self.error
        return self.store.get_run(opened.run_id)

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

    def _open_run(self) -> _OpenedRun:
        """Check what can be checked quickly, then create the run (or reopen the one to resume).

        Several ranks: each joins the process group first; rank 0 opens the
        run and tells the others its id and checkpoint (or why it failed).
        """
        if self.run_id is not None:
            raise TrainingError("This job has already run; create a new TrainingJob to train again.")
        config = self.config
        device = distributed.training_device(config.device, self.place)
        if config.auto_batch and not device.startswith("cuda"):
            raise SettingsError(
                "batch_size",
                f"auto sizes the batch to a GPU's memory, and this run trains on {device}; give a number "
                f"instead (the batch of {config.batch_size} windows is a sensible start there).",
            )
        if self.place.distributed:
            distributed.start_process_group(torch.device(device))
        try:
            dataset = open_dataset(config.dataset, config.dataset_field, config.dataset_split)
            run_id, resume = self._open_run_record() if self.place.writes else self._follow_run_record()
        except BaseException:
            distributed.end_process_group()
            raise
        self.run_id = run_id
        recorder: RunRecorder | SilentRecorder = SilentRecorder()
        if self.place.writes:
            recorder = RunRecorder(self.store, run_id)
            self.pulse = RunPulse(self.store, run_id, lambda: self.progress, self._take_request)
            self.pulse.start()
        if resume is not None:
            recorder.set_position(resume.state["step"], resume.state["tokens"])
        return _OpenedRun(run_id=run_id, dataset=dataset, device=device, recorder=recorder, resume=resume)

    def _open_run_record(self) -> tuple[str, _ResumePoint | None]:
        """Rank 0: create the run in the store, or reopen the one to resume; tell the other ranks which."""
        try:
            remove_abandoned_temporaries()
            run_id, resume = (
                (self._create_run(), None) if self.resume_run is None else self._reopen_run(self.resume_run)
            )
        except Exception as exc:
            if self.place.distributed:
                distributed.broadcast_from_writer({"error": failure_message(exc, self.config, 0)})
            raise
        if self.place.distributed:
            checkpoint = str(resume.checkpoint) if resume is not None else None
            distributed.broadcast_from_writer({"run_id": run_id, "checkpoint": checkpoint})
        return run_id, resume

    def _follow_run_record(self) -> tuple[str, _ResumePoint | None]:
        """Ranks other than 0: learn the run (and the checkpoint to resume) from rank 0; write nothing."""
        opened = distributed.broadcast_from_writer(None)
        if "error" in opened:
            raise TrainingError(f"Rank 0 could not open the run: {opened['error']}")
        if opened["checkpoint"] is None:
            return opened["run_id"], None
        checkpoint = Path(opened["checkpoint"])
        return opened["run_id"], _ResumePoint(checkpoint, load_trainer_state(checkpoint))

    def _create_run(self) -> str:
        config = self.config
        check_block_size(config.block_size, context_length_on_disk(config.model, self.store))
        run = self.store.create_run(
            name=config.name,
            model=config.model,
            dataset=config.dataset,
            config=config.as_dict(),
            world_size=self.place.world_size,
            lora=config.lora,
        )
        self.store.set_status(run.id, "running")  # stamps the start
        return run.id

    def _reopen_run(self, run_id: str) -> tuple[str, _ResumePoint | None]:
        """The run to continue from its latest checkpoint, claimed for this process (or one with none yet)."""
        config = self.config
        world_size = self.place.world_size
        self.store.mark_interrupted_runs()
        run = self.store.get_run(run_id)
        if run.status in ("running", "paused"):
            raise TrainingError(
                f"Run {run.id} is still {run.status} (process {run.pid} on {run.host}); stop it before resuming it."
            )
        if run.status in ("queued", "starting") and not self.store.checkpoints(run.id):
            return self._adopt_new_run(run), None
        if run.world_size != world_size:
            raise TrainingError(
                f"Run {run.id} was trained as {run.world_size} process(es) and this is {world_size}; each "
                f"process continues its own data order, so resume it as {run.world_size} "
                f"(lmwb train --resume {run.id} --nproc {run.world_size})."
            )
        if config.lora != run.lora:
            raise SettingsError(
                "lora", f"run {run.id} was trained {'with' if run.lora else 'without'} LoRA; resume it the same way."
            )
        recorded = self.store.checkpoints(run.id)
        remove_unrecorded_checkpoints(checkpoints_dir(run.id), recorded)
        on_disk = [row for row in recorded if Path(row["path"]).is_dir()]
        if not on_disk:
            raise TrainingError(f"Run {run.id} has no checkpoint to resume from; start a new run instead.")
        checkpoint = Path(on_disk[-1]["path"])
        resume = _ResumePoint(checkpoint, load_trainer_state(checkpoint))
        check_room_to_resume(config, run.id, resume.state["step"], resume.state["elapsed"])
        self.store.update_run(run.id, config=config.as_dict())
        self.store.set_status(run.id, "running")  # claims it for this process (pid, host)
        return run.id, resume

    def _adopt_new_run(self, run: Run) -> str:
        """Train a run that was recorded before this process started (launched or queued): from step 0."""
        if run.world_size != self.place.world_size:
            raise TrainingError(
                f"Run {run.id} is to be trained as {run.world_size} process(es) and this is {self.place.world_size}."
            )
        check_block_size(self.config.block_size, context_length_on_disk(self.config.model, self.store))
        self.store.set_status(run.id, "running")  # claims it for this process (pid, host, start time)
        return run.id

    def _take_request(self, action: str) -> None:
        """A request read from the store: act on it as if called here (the pulse's thread calls this)."""
        if action == "stop" and not self._stop_requested:
            self.stop()
            self._report(phase="stopping", message="Stopping: finishing this step and saving a checkpoint")
        elif action == "pause":
            self.pause()
        elif action == "continue":
            self.resume()

    # -- the thread's body ---------------------------------------------------

    def _run_and_record(self, opened: _OpenedRun) -> None:
        """Train; whatever ends the run is recorded as its status, with a message saying why."""
        try:
            status, message = self._train(opened)
            self._report(status=status, phase=status, message=message)
            # The last progress goes out before the status, so whoever sees the run ended sees its last step.
            if self.pulse is not None:
                with contextlib.suppress(WorkbenchError):  # a busy database: pulse.stop() writes it again
                    self.pulse.beat()
            opened.recorder.set_status(status)
        except BaseException as exc:
            self._record_ending(exc, opened.recorder)
            if not isinstance(exc, Exception):
                raise  # Ctrl+C or interpreter exit: recorded, and passed on
        finally:
            distributed.end_process_group()
            if self.pulse is not None:
                self.pulse.stop()  # the final progress, with how the run ended
                with contextlib.suppress(WorkbenchError):  # a run ending frees a slot for the queue
                    start_queued_runs(self.store)

    def _record_ending(self, exc: BaseException, recorder: RunRecorder | SilentRecorder) -> None:
        status: RunStatus
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
            recorder.flush()
        with contextlib.suppress(Exception):
            recorder.set_status(status, error=message)
        with contextlib.suppress(Exception):  # the progress callback may be what failed
            self._report(status=status, phase=status, message=message)

    def _report(self, **changes: Any) -> None:
        with self._progress_lock:
            self.progress = dataclasses.replace(self.progress, **changes)
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _report_setup(self, message: str) -> None:
        """Say what setup is doing (training a tokenizer or tokenizing can take minutes)."""
        self._report(phase=message, message=message)

    # -- setup: model, data, optimizer ---------------------------------------

    def _prepare(self, opened: _OpenedRun) -> _Training:
        """Load the model and tokenizer, tokenize and split the data, build the optimizer (and restore a checkpoint)."""
        config, place, resume = self.config, self.place, opened.resume
        quiet_transformers()
        if resume is None:
            seed_everything(config.seed)  # before loading, so a scratch model's initial weights repeat
            source: ModelSource | str = config.model
        elif config.lora:
            source = adapter_base(resume.checkpoint)  # the base; its adapters go back on below
        else:
            source = ModelSource(kind="local", value=str(resume.checkpoint))
        self._report_setup(f"Loading {source}")
        with distributed.writer_first(place):  # rank 0 trains a scratch tokenizer; the others find it cached
            loaded = load_model(
                source,
                device=opened.device,
                dataset=opened.dataset,
                vocab_size=config.vocab_size,
                store=self.store,
                progress=self._report_setup,
            )
        tokenizer, device = loaded.tokenizer, loaded.device
        model = self._trainable_model(loaded.model, resume)
        self.model = model
        context = loaded.info().context_length
        check_block_size(config.block_size, context)
        if config.sample_every > 0 and len(tokenizer.encode(config.sample_prompt)) >= context:
            raise SettingsError("sample_prompt", f"is longer than the model's context of {context} tokens; shorten it.")
        if config.probes and context and config.probe_tokens >= context:
            raise SettingsError(
                "probe_tokens", f"leaves no room for a prompt in the model's context of {context} tokens; lower it."
            )
        precision = resolve_precision(config.precision, device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls and convolutions where autocast leaves fp32
            torch.backends.cudnn.allow_tf32 = True
        if config.auto_batch:
            config = self._fit_batch(opened.run_id, model, device, precision)

        with distributed.writer_first(place):  # rank 0 fills the token cache; the others read it
            tokens = tokenize_dataset(
                opened.dataset, tokenizer, progress=tokenizing_progress(opened.dataset.name, self._report_setup)
            )
        train_split, val_split = tokens.split(VALIDATION_FRACTION, by=config.split_by)
        for split, part in ((train_split, "training"), (val_split, "validation")):
            if len(split.ids) < config.block_size + 1:
                raise SettingsError(
                    "dataset",
                    f"{config.dataset!r} gives {len(split.ids)} {part} tokens, fewer than one window of "
                    f"block_size + 1 = {config.block_size + 1}; use more text or a smaller block_size.",
                )
        max_steps = config.steps_for(len(train_split.ids), place.world_size)
        epoch_cap_steps = config.epoch_cap_steps(len(train_split.ids), place.world_size)
        if max_steps is not None:
            check_warmup(config.warmup_steps, max_steps)
        if epoch_cap_steps is not None:
            check_warmup(config.warmup_steps, epoch_cap_steps, f"{config.max_epochs:g} passes over this data")
        sampler = WindowSampler(
            train_split,
            config.block_size,
            config.batch_size,
            seed=config.seed,
            rank=place.rank,
            world_size=place.world_size,
        )
        # eval_batches global batches: rank 0 scores the windows one process with the global batch would.
        val_starts = evaluation_windows(
            val_split.ids, config.block_size, config.eval_batches * config.batch_size * place.world_size
        )
        dataset_hash = opened.dataset.content_hash()

        model.train()
        # Several ranks: DDP averages the gradients of all ranks in the backward pass.
        ddp_model = (
            DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            if place.distributed
            else None
        )
        optimizer = configure_optimizer(model, config, device)
        parameters = sum(p.numel() for p in model.parameters())
        training = _Training(
            run_id=opened.run_id,
            recorder=opened.recorder,
            model=model,
            ddp_model=ddp_model,
            step_model=self._step_model(ddp_model if ddp_model is not None else model, device),
            tokenizer=tokenizer,
            device=device,
            precision=precision,
            optimizer=optimizer,
            scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
            sampler=sampler,
            val_split=val_split,
            val_starts=val_starts,
            dataset_hash=dataset_hash,
            max_steps=max_steps,
            epoch_cap_steps=epoch_cap_steps,
            parameters=parameters,
            flops_shape=ModelShape(
                parameters=parameters,
                layers=loaded.info().layers,
                width=model.config.hidden_size,
                context=config.block_size,
            ),
        )
        if resume is not None:
            self._restore(training, resume.state)
            if epoch_cap_steps is not None and training.step >= epoch_cap_steps:
                raise SettingsError(
                    "max_epochs",
                    f"run {opened.run_id} has made its {config.max_epochs:g} passes over the data already "
                    f"(step {training.step}); give a larger max_epochs to train it further.",
                )
        return training

    def _step_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training step runs, compiled when the config wants it (torch compiles at the first step)."""
        if not self.config.compile_wanted(device.type):
            return model
        # Compiling a Module gives an OptimizedModule, itself a Module; torch annotates it as any callable.
        return cast(torch.nn.Module, torch.compile(model))

    def _fit_batch(self, run_id: str, model: torch.nn.Module, device: torch.device, precision: str) -> TrainingConfig:
        """Size the micro-batch to the GPU, keep the windows per step, and record the result as the run's config.

        Rank 0 measures and the other ranks take its answer, so every rank
        steps with the same batch (the GPUs of one run are alike).
        """
        config = self.config
        wanted = config.batch_size * config.grad_accum
        self._report_setup(f"Finding the largest batch of {config.block_size}-token windows that fits the GPU")
        fitted = 0
        if self.place.writes:
            fitted = largest_fitting_batch(
                lambda n: _fits_in_memory(model, n, config.block_size, device, precision), wanted
            )
        if self.place.distributed:
            fitted = distributed.broadcast_from_writer(fitted)
        if fitted == 0:
            raise SettingsError(
                "batch_size",
                f"not even one window of {config.block_size} tokens fits in the GPU's memory; lower block_size, "
                "turn on gradient_checkpointing, or train LoRA adapters.",
            )
        accumulation = math.ceil(wanted / fitted)
        self.config = dataclasses.replace(config, batch_size=fitted, grad_accum=accumulation, auto_batch=False)
        if self.place.writes:
            self.store.update_run(run_id, config=self.config.as_dict())
        self._report_setup(
            f"Batch: {fitted} windows fit the GPU; {accumulation} micro-batch(es) a step keep the {wanted} asked for"
        )
        return self.config

    def _trainable_model(self, model: PreTrainedModel, resume: _ResumePoint | None) -> PreTrainedModel | PeftModel:
        """The model as it trains: with fresh LoRA adapters (or a resumed run's), with gradient checkpointing."""
        config = self.config
        if config.dropout is not None:
            set_dropout(model, config.dropout)  # before adapters: they have a dropout of their own
        trainable: PreTrainedModel | PeftModel = model
        if config.lora and resume is None:
            trainable = add_adapters(model, config.lora_settings())
        elif config.lora and resume is not None:
            trainable = load_adapters(model, resume.checkpoint, trainable=True, device=model.device)
        if config.gradient_checkpointing:
            if not getattr(trainable, "supports_gradient_checkpointing", False):
                raise SettingsError("gradient_checkpointing", f"{config.model} does not support it; turn it off.")
            # Non-reentrant checkpointing: gradients reach adapters behind frozen layers, and it works under DDP.
            trainable.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return trainable

    def _restore(self, training: _Training, state: TrainerState) -> None:
        """Continue where the checkpoint left off: optimizer, step, data position, random state."""
        if state["dataset_hash"] != training.dataset_hash:
            raise SettingsError(
                "dataset",
                f"{self.config.dataset!r} is not the text run {training.run_id} was trained on (its content "
                f"changed), so its data order cannot continue. Start a new run from this run's "
                f"checkpoint instead (model: run:{training.run_id}).",
            )
        training.optimizer.load_state_dict(state["optimizer"])
        if state["grad_scaler"]:
            training.scaler.load_state_dict(state["grad_scaler"])
        mine = state["ranks"][self.place.rank]
        training.sampler.load_state_dict(mine["sampler"])
        training.step, training.tokens = state["step"], state["tokens"]
        training.elapsed, training.best_val_loss = state["elapsed"], state["best_val_loss"]
        training.last_checkpoint_step = training.step
        restore_rng_state(mine["rng"])  # last: loading may draw random numbers

    # -- the loop ------------------------------------------------------------

    def _train(self, opened: _OpenedRun) -> tuple[RunStatus, str]:
        """Set up, then loop until max_steps (or the time budget), a stop or the time limit; return how it ended."""
        training = self._prepare(opened)
        config = self.config
        training.recorder.set_position(training.step, training.tokens)
        tokens_per_step = config.batch_size * config.block_size * config.grad_accum * self.place.world_size
        elapsed_before = training.elapsed  # seconds trained in earlier sessions
        session_start = time.perf_counter()
        paused_seconds = 0.0
        seconds_per_step: float | None = None  # smoothed wall time per step, bookkeeping included
        last_step_end = session_start
        stop_reason = ""
        compiling = config.compile_wanted(training.device.type)  # torch.compile works at the first step
        self._report(
            status="running",
            phase="compiling the model: the first step takes a minute or so" if compiling else "training",
            step=training.step,
            max_steps=training.max_steps or 0,
            steps_estimated=training.max_steps is None,
            tokens=training.tokens,
            elapsed=elapsed_before,
        )

        while training.max_steps is None or training.step < training.max_steps:
            session_seconds = time.perf_counter() - session_start - paused_seconds
            stop_reason, pause = self._controls(training, session_seconds, seconds_per_step)
            if pause and not stop_reason:
                paused = self._hold_while_paused(training)
                paused_seconds += paused
                last_step_end += paused
                session_seconds = time.perf_counter() - session_start - paused_seconds
                stop_reason, _ = self._controls(training, session_seconds, seconds_per_step)
            if stop_reason:
                break

            # one optimizer step
            lr = self._learning_rate(training, elapsed_before + session_seconds)
            for group in training.optimizer.param_groups:
                group["lr"] = lr
            step_start = time.perf_counter()
            train_loss, grad_norm = self._optimizer_step(training)
            step_seconds = time.perf_counter() - step_start
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"The training loss became {train_loss} at step {training.step + 1}. Lower learning_rate "
                    f"(now {config.learning_rate:g}) or raise warmup_steps, then start again or resume."
                )
            training.step += 1
            training.tokens += tokens_per_step

            # bookkeeping: metrics row, evaluation, sample, checkpoint
            now = time.perf_counter()
            session_seconds = now - session_start - paused_seconds
            iteration_seconds = now - last_step_end  # the step and the bookkeeping after the last one
            last_step_end = now
            seconds_per_step = (
                iteration_seconds if seconds_per_step is None else 0.9 * seconds_per_step + 0.1 * iteration_seconds
            )
            training.elapsed = elapsed_before + session_seconds
            stop_reason, _ = self._controls(training, session_seconds, seconds_per_step)
            ending = bool(stop_reason) or training.step == training.max_steps
            checkpoint_due = ending or (config.checkpoint_every > 0 and training.step % config.checkpoint_every == 0)
            row: dict[str, Any] = {
                "step": training.step,
                "train_loss": train_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_sec": tokens_per_step / step_seconds,
                "tokens": training.tokens,
                "elapsed": training.elapsed,
            }
            mfu = _mfu(training, row["tokens_per_sec"] / self.place.world_size)
            if mfu is not None:
                row["mfu"] = mfu
            if config.eval_every > 0 and (training.step % config.eval_every == 0 or checkpoint_due):
                started = time.perf_counter()
                row.update(self._evaluate(training))
                self._probe(training)
                training.evaluation_seconds = time.perf_counter() - started
            training.recorder.add_metrics(row)
            if config.sample_every > 0 and training.step % config.sample_every == 0:
                self._sample(training)
            if checkpoint_due:
                started = time.perf_counter()
                self._checkpoint(training, row.get("val_loss"))
                training.checkpoint_seconds = time.perf_counter() - started
            # The time reported counts this step's evaluation and checkpoint too (the budget does).
            training.elapsed = elapsed_before + time.perf_counter() - session_start - paused_seconds
            self._report(
                phase="stopping" if self._stop_requested and not self._plan_ended else "training",
                step=training.step,
                max_steps=training.max_steps or self._estimated_steps(training, seconds_per_step),
                tokens=training.tokens,
                train_loss=train_loss,
                val_loss=row.get("val_loss", self.progress.val_loss),
                tokens_per_sec=row["tokens_per_sec"],
                elapsed=training.elapsed,
                eta_seconds=self._eta(training, seconds_per_step, session_seconds),
                gpu_memory_bytes=_gpu_memory_bytes(training.device),
                mfu=mfu,
            )
            if training.max_steps is None and training.step == PLAN_REPORT_STEP:
                self._report(message=self._plan_message(training, seconds_per_step, tokens_per_step))
            if ending:
                break

        if training.last_checkpoint_step != training.step:  # stopped between steps (while paused, or before the first)
            self._checkpoint(training, None)
        training.recorder.flush()
        if self._plan_ended:
            # The estimate gives way to the count, and nothing is left to wait for.
            self._report(max_steps=training.step, steps_estimated=False, eta_seconds=0.0)
            if self._plan_ended == "epochs":
                return "completed", (
                    f"Completed {config.max_epochs:g} passes over its data (max_epochs) in {training.elapsed:.0f} s "
                    f"of its {config.max_time:g} s budget: {training.step} steps."
                )
            return "completed", f"Completed its {config.max_time:g} s budget: {training.step} steps."
        if stop_reason:
            return (
                "stopped",
                f"{stop_reason} at step {training.step}; a checkpoint was saved and the run can be resumed.",
            )
        return "completed", f"Completed {training.step} steps."

    def _learning_rate(self, training: _Training, elapsed: float) -> float:
        """The schedule over the run's steps, or over its time budget when it is planned on time."""
        if training.max_steps is not None:
            return get_lr(training.step, self.config, training.max_steps)
        return get_lr_on_time(training.step, self.config, self._plan_spent(training, elapsed))

    def _plan_spent(self, training: _Training, elapsed: float) -> float:
        """How much of a run planned on time is done: of its time budget, or of its passes over the data if further."""
        assert self.config.max_time is not None  # validate(): a run without max_steps has a budget
        spent = elapsed / self.config.max_time
        if training.epoch_cap_steps is not None:
            spent = max(spent, training.step / training.epoch_cap_steps)
        return spent

    def _optimizer_step(self, training: _Training) -> tuple[float, float]:
        """Forward and backward over grad_accum micro-batches, clip, step; return (loss, gradient norm).

        Several ranks: DDP exchanges gradients with the others during the
        backward pass, so a rank lost there ends the run with a clear error,
        as at any other collective.
        """
        config, ddp_model, model = self.config, training.ddp_model, training.step_model
        loss_sum = torch.zeros((), device=training.device)
        with contextlib.nullcontext() if ddp_model is None else distributed.exchanging_gradients():
            for micro_step in range(config.grad_accum):
                x, y = (
                    t.pin_memory().to(training.device, non_blocking=True) if training.device.type == "cuda" else t
                    for t in training.sampler.next_batch()
                )
                # DDP averages gradients across ranks in the last micro-batch's backward pass only.
                last = micro_step == config.grad_accum - 1
                with contextlib.nullcontext() if ddp_model is None or last else ddp_model.no_sync():
                    with autocast_context(training.device, training.precision):
                        loss = next_token_loss(model, x, y) / config.grad_accum
                    training.scaler.scale(loss).backward()
                loss_sum += loss.detach()
        if ddp_model is not None:
            loss_sum = distributed.mean_over_ranks(loss_sum)  # the loss of the global batch
        training.scaler.unscale_(training.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(training.model.parameters(), config.grad_clip or math.inf)
        training.scaler.step(training.optimizer)
        training.scaler.update()
        training.optimizer.zero_grad(set_to_none=True)
        return loss_sum.item(), grad_norm.item()

    def _hold_while_paused(self, training: _Training) -> float:
        """Hold every rank here while paused (the pulse keeps beating); return the seconds spent."""
        started = time.perf_counter()
        training.recorder.flush()
        training.recorder.set_status("paused")
        self._report(status="paused", phase="paused", message=f"Paused at step {training.step}.")
        stop, pause = False, True
        while pause and not stop:
            time.sleep(PAUSE_POLL_SECONDS)
            stop, pause = self._agreed_controls(training.device)
        if not stop:
            training.recorder.set_status("running")
            self._report(status="running", phase="training", message=f"Continued at step {training.step}.")
        return time.perf_counter() - started

    def _controls(
        self, training: _Training, session_seconds: float, seconds_per_step: float | None
    ) -> tuple[str, bool]:
        """(why to stop now, "" to go on; whether to pause), agreed by every rank.

        A rank that stops or pauses alone leaves the others waiting in the
        next gradient exchange, so the ranks agree: a stop on any rank (a
        signal, the time limit), a pause when rank 0 (which reads the store) says so.
        A run planned on time ends the same way, when rank 0's clock says its budget is spent.
        """
        config = self.config
        reason = ""
        if self._stop_requested:
            reason = "Stopped"
        elif training.max_steps is not None and config.max_time is not None and session_seconds >= config.max_time:
            reason = f"Time limit of {config.max_time:g} s reached"
        elif training.max_steps is None and self.place.writes:
            if training.epoch_cap_steps is not None and training.step >= training.epoch_cap_steps:
                self._plan_ended, reason = "epochs", f"{config.max_epochs:g} passes over the data made"
            elif self._budget_is_spent(training, seconds_per_step):
                self._plan_ended, reason = "budget", f"Time budget of {config.max_time:g} s spent"
        self._stop_requested = self._stop_requested or bool(reason)
        stop, pause = self._agreed_controls(training.device)
        return (reason or ("Stopped by another process" if stop else "")), pause

    def _budget_is_spent(self, training: _Training, seconds_per_step: float | None) -> bool:
        """Whether another step, then the final evaluation and checkpoint, would overrun the time budget."""
        assert self.config.max_time is not None
        return training.elapsed + self._seconds_to_finish(training, seconds_per_step) >= self.config.max_time

    def _seconds_to_finish(self, training: _Training, seconds_per_step: float | None) -> float:
        """The time one more step and the final evaluation and checkpoint will take, from what they took so far.

        Before the first evaluation, it is guessed from the step time (a
        forward pass over eval_batches, about half a training step each);
        before the first checkpoint, a second.
        """
        if seconds_per_step is None:
            return 0.0
        config = self.config
        evaluation = training.evaluation_seconds
        if evaluation is None:
            evaluation = 0.5 * seconds_per_step * config.eval_batches / config.grad_accum if config.eval_every else 0.0
        checkpoint = training.checkpoint_seconds if training.checkpoint_seconds is not None else 1.0
        return seconds_per_step + evaluation + checkpoint

    def _estimated_steps(self, training: _Training, seconds_per_step: float) -> int:
        """A run planned on time: the steps it will have taken when its budget (or its max_epochs passes) ends."""
        assert self.config.max_time is not None
        room = self.config.max_time - training.elapsed - self._seconds_to_finish(training, seconds_per_step)
        steps = training.step + 1 + max(0, int(room / seconds_per_step))
        return steps if training.epoch_cap_steps is None else min(steps, training.epoch_cap_steps)

    def _plan_message(self, training: _Training, seconds_per_step: float, tokens_per_step: int) -> str:
        """The plan once the pace is known: the steps, tokens and tokens per parameter it will reach, and when."""
        config = self.config
        steps = self._estimated_steps(training, seconds_per_step)
        tokens = steps * tokens_per_step
        extent = f"in {config.max_time:g} s"
        if steps == training.epoch_cap_steps:
            seconds = training.elapsed + (steps - training.step) * seconds_per_step
            extent = (
                f"ending after {config.max_epochs:g} passes over the data (max_epochs), in ≈{seconds:.0f} s "
                f"of the {config.max_time:g} s budget"
            )
        return (
            f"Plan: ≈{steps:,} steps, ≈{tokens:,} tokens, {tokens / training.parameters:.2g} tokens per parameter "
            f"{extent}."
        )

    def _agreed_controls(self, device: torch.device) -> tuple[bool, bool]:
        """(stop, pause) as every rank will see them: one small collective per call under several ranks."""
        stop, pause = self._stop_requested, self._pause_requested and self.place.writes
        if self.place.distributed:
            stop, pause = distributed.agree(stop, pause, device)
        return stop, pause

    def _eta(self, training: _Training, seconds_per_step: float, session_seconds: float) -> float:
        config = self.config
        if training.max_steps is None:
            assert config.max_time is not None
            eta = max(0.0, config.max_time - training.elapsed)
            if training.epoch_cap_steps is not None:
                eta = min(eta, max(0, training.epoch_cap_steps - training.step) * seconds_per_step)
            return eta
        eta = (training.max_steps - training.step) * seconds_per_step
        if config.max_time is not None:
            eta = min(eta, max(0.0, config.max_time - session_seconds))
        return eta

    def _evaluate(self, training: _Training) -> dict[str, float]:
        """Validation loss, perplexity and bits per byte on the fixed validation windows (rank 0 alone)."""
        if not self.place.writes:
            return {}  # the others go on, and wait for rank 0 at the next step's gradient exchange
        training.recorder.flush()  # the TUI keeps up while the evaluation runs
        self._report(phase="evaluating")
        # In eval mode (no dropout) this draws no random numbers, so training's stream is untouched.
        val_loss, _ = estimate_loss(
            training.model,
            training.val_split.ids,
            training.val_starts,
            block_size=self.config.block_size,
            batch_size=self.config.batch_size,
            device=training.device,
            precision=training.precision,
        )
        if training.best_val_loss is None or val_loss < training.best_val_loss:
            training.best_val_loss = val_loss
            training.recorder.set_best_val_loss(val_loss)
        return {
            "val_loss": val_loss,
            "val_ppl": perplexity(val_loss),
            "val_bpb": bits_per_byte(val_loss, training.val_split),
        }

    def _sample(self, training: _Training) -> None:
        """Generate a short text with the generation engine and store it with the step (rank 0 alone)."""
        config = self.config
        if not self.place.writes:
            return
        # A seeded generator of its own: the same seed each time, and training's random stream untouched.
        settings = GenerationSettings(max_new_tokens=config.sample_length, seed=config.seed)
        training.model.eval()
        result = generate_text(training.model, training.tokenizer, config.sample_prompt, settings)
        training.model.train()
        training.recorder.add_sample(training.step, config.sample_prompt, result.text)

    def _probe(self, training: _Training) -> None:
        """Complete the run's probe prompts greedily and store them with the step (rank 0 alone).

        Greedy draws no random numbers, so the completions depend on the
        weights alone and training's random stream is untouched.
        """
        config = self.config
        if not config.probes or not self.place.writes:
            return
        completions = complete_probes(training.model, training.tokenizer, config.probes, config.probe_tokens)
        training.recorder.add_probes(training.step, completions)

    def _checkpoint(self, training: _Training, val_loss: float | None) -> None:
        """Save step-N atomically, record it, and let retention remove what is no longer kept.

        Every rank takes part: rank 0 gathers each rank's data position and
        random state and writes them all, so each rank continues its own on resume.
        """
        mine: RankState = {"sampler": training.sampler.state_dict(), "rng": capture_rng_state()}
        ranks = distributed.gather_at_writer(mine) if self.place.distributed else [mine]
        training.last_checkpoint_step = training.step
        if ranks is None:  # a rank other than 0: rank 0 writes its state with the others'
            return
        training.recorder.flush()
        phase = self.progress.phase
        self._report(phase=f"saving checkpoint step-{training.step}")
        state: TrainerState = {
            "format": TRAINER_STATE_FORMAT,
            "step": training.step,
            "tokens": training.tokens,
            "elapsed": training.elapsed,
            "best_val_loss": training.best_val_loss,
            "optimizer": training.optimizer.state_dict(),
            "grad_scaler": training.scaler.state_dict(),
            "ranks": ranks,
            "dataset_hash": training.dataset_hash,
            "config": self.config.as_dict(),
        }
        path = save_checkpoint(
            checkpoints_dir(training.run_id), training.step, training.model, training.tokenizer, state
        )
        training.recorder.add_checkpoint(training.step, path, val_loss, self.config.checkpoints_kept)
        self._report(phase=phase, message=f"Saved checkpoint step-{training.step}")


def _mfu(training: _Training, tokens_per_second: float) -> float | None:
    """Model FLOPs utilisation of one rank's GPU, if CUDA and of known peak; None on the CPU and other GPUs.

    The ranks step together, each on a GPU of its own, so one rank's tokens per second over its GPU's peak
    is the run's MFU.
    """
    if training.device.type != "cuda":
        return None
    return model_flops_utilisation(training.flops_shape, tokens_per_second, torch.cuda.get_device_name(training.device))


def largest_fitting_batch(fits: Callable[[int], bool], wanted: int) -> int:
    """The largest batch of at most ``wanted`` that ``fits``, halving from ``wanted``; 0 when not even 1 fits."""
    size = wanted
    while size >= 1 and not fits(size):
        size //= 2
    return size


# The share of the GPU's memory a fitted batch may fill, leaving room for AdamW's two moments,
# allocator fragmentation and the evaluation's batches.
BATCH_MEMORY_SHARE = 0.85


def _fits_in_memory(model: torch.nn.Module, size: int, block_size: int, device: torch.device, precision: str) -> bool:
    """Whether a forward and backward pass over ``size`` windows fits the GPU, with room for the optimizer.

    The probe draws no random numbers the run will see (a forked RNG) and leaves no gradients behind.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer_bytes = 2 * 4 * trainable  # AdamW's two fp32 moments, allocated at the first step
    windows = torch.zeros((size, block_size), dtype=torch.long, device=device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.random.fork_rng(devices=[device]), autocast_context(device, precision):
            next_token_loss(model, windows, windows).backward()
        peak = torch.cuda.max_memory_allocated(device) + optimizer_bytes
        return peak <= BATCH_MEMORY_SHARE * torch.cuda.get_device_properties(device).total_memory
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        del windows
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)  # the run's reported peak starts after the probe


def _gpu_memory_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


# -----------------------------------------------------------------------------
# How a run ends


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
