"""A training run's settings: every field, its default, and the checks that need no model or data.

Nothing here imports torch, so a command can refuse bad settings at once,
before torch and transformers load (seconds). The checks that need the model
or the data (the block size against the model's context, a dataset with one
window in each split) run as early as they can and raise the same
``SettingsError``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from engine.checks import check_int, check_number, check_text
from engine.datasets import check_split_by
from engine.devices import device_name, precision_name
from engine.errors import SettingsError, WorkbenchError
from engine.lora import LoraSettings
from engine.model_source import ModelSource

COMPILE_CHOICES = ("auto", "on", "off")
COMPILE_PAYS_OFF_STEPS = 1000
COMPILE_PAYS_OFF_SECONDS = 600.0
# Probe prompts are completed at every evaluation, all in one batch: a handful keeps that a small
# share of the run's time (bench/training.py measures it), and each is one line a timeline can show.
MAX_PROBES = 16
MAX_PROBE_CHARACTERS = 500
MAX_PROBE_TOKENS = 128  # within every scratch preset's context (256 and up), with room for the prompt


@dataclass
class TrainingConfig:
    """Everything a training run is told, in one plain object.

    It is stored with the run, so a run can be inspected, repeated or resumed
    from its record alone. ``validate()`` checks every field before anything
    heavy happens; the checks that need the model or the data run as early as
    they can and raise the same ``SettingsError``: the block size against the
    model's context before the run is created (from the model's config on
    disk), a dataset too small for one window once it is tokenized.
    """

    model: str  # a model source: "gpt2", "./dir", "run:<id>@<step>", "scratch:tiny"
    dataset: str  # a bundled dataset name, a file or a folder
    dataset_field: str | None = None  # the .jsonl field / .csv column holding the text
    dataset_split: str | None = None  # the split read, of a saved DatasetDict or a cached dataset with several
    # How validation is held out (engine.datasets.SPLIT_CHOICES): "position" takes the last tenth of
    # the tokens; "document" takes whole documents, so none (and no copy of one) sits on both sides.
    split_by: str = "position"
    max_steps: int | None = 200  # optimizer steps in total (when resuming: the new total); None: plan on max_time
    epochs: float | None = None  # when set, max_steps is derived: this many passes over the training tokens
    # With max_steps: a limit on this session's training, then stop as if stop() was called (resumable).
    # Without (max_steps None): the run's time budget, every session together; the learning rate decays
    # over it and the run completes, evaluated and checkpointed, as it runs out (engine.planning).
    max_time: float | None = None  # seconds
    # A run planned on time: end after this many passes over the training tokens if the budget
    # would take it further, with the learning rate decaying over whichever ends first. Small data
    # seen for too many passes is memorised, and the held-out loss climbs (engine.planning).
    max_epochs: float | None = None
    batch_size: int = 8  # windows per micro-batch
    # On a GPU: find the largest micro-batch that fits its memory (at most batch_size * grad_accum windows)
    # and keep batch_size * grad_accum windows per step with gradient accumulation. Set back to False
    # once fitted, with the fitted batch_size and grad_accum recorded, so a resume repeats them.
    auto_batch: bool = False
    block_size: int = 128  # tokens per window (at most the model's context)
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 3e-4  # peak learning rate, reached after the warmup
    min_learning_rate: float = 3e-5  # where the cosine decay ends, at max_steps
    warmup_steps: int = 20  # linear warmup from ~0 to learning_rate
    weight_decay: float = 0.1  # AdamW decay, on matrices and embeddings only
    # Dropout on a GPT-2's embeddings, attention and residual paths; None keeps the model's own
    # (0 for scratch presets). Text seen for many epochs is memorised without it.
    dropout: float | None = None
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    eval_every: int = 50  # steps between validation evaluations (0: never)
    eval_batches: int = 10  # validation batches per evaluation
    sample_every: int = 100  # steps between generated samples (0: never)
    sample_prompt: str = ""  # "" starts samples from the end-of-text token
    sample_length: int = 60  # new tokens per sample
    # Fixed prompts the model completes greedily at every evaluation, stored with the step, so a
    # run shows how its writing changes (engine.probes). One line each, each given once.
    probes: list[str] = field(default_factory=list)
    probe_tokens: int = 32  # tokens each probe completion runs to (fewer if the model ends its text)
    checkpoint_every: int = 100  # steps between checkpoints (0: only at the end or on stop)
    checkpoints_kept: int = 2  # newest checkpoints kept on disk, plus the best by validation loss
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (fp32 on CPU, bf16 autocast on CUDA) | fp32 | bf16 | fp16
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower
    # torch.compile the training step: auto compiles on CUDA for a run long enough to win back the
    # compile time (see compile_wanted), on | off decide it anywhere.
    compile: str = "auto"
    lora: bool = False  # train LoRA adapters on the frozen model instead of all its weights
    lora_rank: int = 8  # the adapters' rank
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.05  # dropout on the adapters' input
    lora_targets: str = "auto"  # modules to adapt, comma-separated; auto: c_attn,c_proj on GPT-2
    vocab_size: int = 8192  # tokenizer size for scratch: presets
    name: str = ""  # a name for the run ("" lets the store pick one)

    def validate(self) -> None:
        """Raise ``SettingsError(field, ...)`` for the first bad or inconsistent value.

        The device and precision are put in their canonical spelling ("CUDA" -> "cuda"), as everywhere.
        """
        check_text("model", self.model)
        try:
            ModelSource.parse(self.model)
        except WorkbenchError as exc:
            raise SettingsError("model", str(exc)) from exc
        check_text("dataset", self.dataset)
        if self.dataset_field is not None:
            check_text("dataset_field", self.dataset_field)
        if self.dataset_split is not None:
            check_text("dataset_split", self.dataset_split)
        check_split_by(self.split_by)
        if self.max_steps is None:
            if self.max_time is None or self.epochs is not None:
                raise SettingsError(
                    "max_steps",
                    "is needed unless the run is planned on time: give a number of steps, or max_time "
                    "(seconds) without max_steps and epochs.",
                )
        else:
            check_int("max_steps", self.max_steps, 1)
        if self.epochs is not None:
            check_number("epochs", self.epochs, 0, above=True)
        if self.max_time is not None:
            check_number("max_time", self.max_time, 0, above=True, unit=" seconds")
        if self.max_epochs is not None:
            check_number("max_epochs", self.max_epochs, 0, above=True)
            if not self.planned_on_time:
                raise SettingsError(
                    "max_epochs",
                    "caps a run planned on time (max_time without max_steps and epochs); a run of so many "
                    "steps or epochs has its length already, so leave max_epochs empty.",
                )
        check_int("batch_size", self.batch_size, 1)
        check_int("block_size", self.block_size, 1)
        check_int("grad_accum", self.grad_accum, 1)
        check_number("learning_rate", self.learning_rate, 0, above=True)
        check_number("min_learning_rate", self.min_learning_rate, 0)
        if self.min_learning_rate > self.learning_rate:
            raise SettingsError(
                "min_learning_rate",
                f"{self.min_learning_rate:g} is above learning_rate ({self.learning_rate:g}); "
                "the schedule decays down to it, so use a value at most learning_rate.",
            )
        check_int("warmup_steps", self.warmup_steps, 0)
        if self.max_steps is not None and self.epochs is None:
            check_warmup(self.warmup_steps, self.max_steps)
        check_number("weight_decay", self.weight_decay, 0)
        if self.dropout is not None:
            check_number("dropout", self.dropout, 0, below=1)
        check_number("beta1", self.beta1, 0, below=1)
        check_number("beta2", self.beta2, 0, below=1)
        check_number("grad_clip", self.grad_clip, 0, hint=" (0 turns clipping off)")
        check_int("eval_every", self.eval_every, 0, hint=" (0 turns evaluation off)")
        check_int("eval_batches", self.eval_batches, 1)
        check_int("sample_every", self.sample_every, 0, hint=" (0 turns samples off)")
        if not isinstance(self.sample_prompt, str):
            raise SettingsError("sample_prompt", "must be text (it may be empty).")
        check_int("sample_length", self.sample_length, 1)
        self.probes = check_probes(self.probes)
        check_int("probe_tokens", self.probe_tokens, 1, MAX_PROBE_TOKENS)
        if self.probes and self.eval_every == 0:
            raise SettingsError(
                "probes",
                "prompts are completed at each evaluation, and eval_every is 0 (no evaluations); "
                "set eval_every, or leave the probes out.",
            )
        check_int("checkpoint_every", self.checkpoint_every, 0, hint=" (0 saves only at the end or on stop)")
        check_int("checkpoints_kept", self.checkpoints_kept, 1)
        check_int("seed", self.seed, 0, 2**32 - 1)
        self.device = device_name(self.device)
        self.precision = precision_name(self.precision)
        if self.compile not in COMPILE_CHOICES:
            raise SettingsError("compile", f"{self.compile!r} is not a choice; use {', '.join(COMPILE_CHOICES)}.")
        for switch in ("auto_batch", "gradient_checkpointing", "lora"):
            if not isinstance(getattr(self, switch), bool):
                raise SettingsError(switch, f"{getattr(self, switch)!r} is not true or false.")
        self.lora_settings().validate()
        if self.lora and ModelSource.parse(self.model).kind == "scratch":
            raise SettingsError(
                "lora",
                "a scratch: model starts from random weights, and LoRA adapts a trained "
                "model. Train the scratch model without LoRA, or pick a pretrained model.",
            )
        check_int(
            "vocab_size",
            self.vocab_size,
            257,
            1_000_000,
            hint=" (a byte-level tokenizer needs 256 byte tokens plus end-of-text)",
        )
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise SettingsError("name", "must be text of at most 200 characters.")

    def compile_wanted(self, device_type: str) -> bool:
        """Whether to torch.compile the step: on and off as said; auto on CUDA for a long run only.

        Compiling a GPT-2 takes about a minute and then runs each step faster, so
        auto compiles on CUDA when the run is at least COMPILE_PAYS_OFF_STEPS steps
        or COMPILE_PAYS_OFF_SECONDS of training; elsewhere (CPU, MPS) the win is
        small and the compiler may be missing, so only ``on`` compiles there.
        """
        if self.compile != "auto":
            return self.compile == "on"
        if device_type != "cuda":
            return False
        if self.max_steps is None:
            return self.max_time is not None and self.max_time >= COMPILE_PAYS_OFF_SECONDS
        return self.epochs is not None or self.max_steps >= COMPILE_PAYS_OFF_STEPS

    @property
    def planned_on_time(self) -> bool:
        """Whether the run's length is its time budget (max_time) rather than a number of steps."""
        return self.max_steps is None

    def steps_for(self, train_tokens: int, world_size: int = 1) -> int | None:
        """The run's total steps: ``max_steps``, enough for ``epochs`` passes, or None when planned on time."""
        if self.epochs is None:
            return self.max_steps
        return self._steps_for_passes(self.epochs, train_tokens, world_size)

    def epoch_cap_steps(self, train_tokens: int, world_size: int = 1) -> int | None:
        """A run planned on time with ``max_epochs``: the step its passes over the data end at (else None)."""
        if not self.planned_on_time or self.max_epochs is None:
            return None
        return self._steps_for_passes(self.max_epochs, train_tokens, world_size)

    def _steps_for_passes(self, passes: float, train_tokens: int, world_size: int) -> int:
        tokens_per_step = self.batch_size * self.block_size * self.grad_accum * world_size
        return max(1, math.ceil(passes * train_tokens / tokens_per_step))

    def lora_settings(self) -> LoraSettings:
        """The LoRA fields as ``engine.lora`` takes them."""
        return LoraSettings(
            rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for the run record and the trainer state."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """Build a config from plain values (a stored run, a form); unknown keys are refused by name."""
        if not isinstance(values, dict):
            raise SettingsError("config", f"expected a mapping of settings, got {type(values).__name__}.")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known), key=str)
        if unknown:
            raise SettingsError(str(unknown[0]), f"is not a training setting; known settings: {', '.join(known)}.")
        for required in ("model", "dataset"):
            if required not in values:
                raise SettingsError(required, "is required.")
        return cls(**values)


def check_probes(prompts: object) -> list[str]:
    """The probe prompts as a list, or SettingsError("probes") naming the first bad one.

    A prompt is one non-blank line of at most MAX_PROBE_CHARACTERS characters,
    kept exactly as given (its spaces matter to the tokenizer). A prompt given
    twice is refused rather than dropped: the store keeps one completion per
    prompt and step, and a repeat is more likely a slip than a wish.
    """
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(prompt, str) for prompt in prompts):
        raise SettingsError("probes", "must be a list of prompts (text), e.g. ['Once upon a time'].")
    if len(prompts) > MAX_PROBES:
        raise SettingsError(
            "probes",
            f"{len(prompts)} prompts is more than {MAX_PROBES}; keep at most {MAX_PROBES} (each is "
            "completed at every evaluation).",
        )
    for number, prompt in enumerate(prompts, start=1):
        if not prompt.strip():
            raise SettingsError("probes", f"prompt {number} is blank; give text for the model to continue.")
        if "\n" in prompt or "\r" in prompt:
            raise SettingsError("probes", f"prompt {number} holds a line break; a probe prompt is one line.")
        if len(prompt) > MAX_PROBE_CHARACTERS:
            raise SettingsError(
                "probes",
                f"prompt {number} is {len(prompt)} characters; keep each to at most {MAX_PROBE_CHARACTERS}.",
            )
        if prompt in prompts[: number - 1]:
            first = prompts.index(prompt) + 1
            raise SettingsError("probes", f"prompt {number} repeats prompt {first} ({prompt!r}); give each once.")
    return list(prompts)


def check_warmup(warmup_steps: int, max_steps: int, limit: str = "max_steps") -> None:
    """Refuse a warmup longer than the run: its rate would never decay. ``limit`` names what sets the run's steps."""
    if warmup_steps > max_steps:
        raise SettingsError(
            "warmup_steps",
            f"{warmup_steps} warmup steps is more than the {max_steps} steps of the run ({limit}); "
            "use fewer (a tenth of the run is usual).",
        )


def check_room_to_resume(config: TrainingConfig, run_id: str, step: int, elapsed: float) -> None:
    """Refuse to resume a run that its settings say is finished: at its max_steps, or out of its time budget."""
    if config.epochs is not None:
        return
    if config.max_steps is not None and config.max_steps <= step:
        raise SettingsError(
            "max_steps",
            f"run {run_id} is already at step {step}; max_steps is the new total, so give more than {step}.",
        )
    if config.max_steps is None and config.max_time is not None and config.max_time <= elapsed:
        raise SettingsError(
            "max_time",
            f"run {run_id} has trained {elapsed:.0f} s of its {config.max_time:g} s budget; max_time is the "
            f"run's whole budget, so give more than {elapsed:.0f}.",
        )


def check_block_size(block_size: int, context: int | None) -> None:
    """Refuse windows longer than the model can attend to (``context`` None: not known yet)."""
    if context is not None and block_size > context:
        raise SettingsError(
            "block_size",
            f"{block_size} is more than the model's context of {context} tokens; "
            f"use a block_size of at most {context}.",
        )
