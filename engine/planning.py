"""What a run should use for the settings a person left out, and why, in one line.

People think in time ("train for ten minutes"); the trainer thinks in steps.
``plan_run`` is the one place that turns the settings someone gave (the CLI's
flags, the Train form's fields) into a full ``TrainingConfig``:

- ``max_time`` without ``max_steps`` or ``epochs`` plans the run on time:
  ``max_steps`` is None, the learning rate decays over the time budget, and
  the run ends with its final evaluation and checkpoint as the time runs out.
- A from-scratch preset gets settings picked from the size of its data and
  the budget: learning rate and warmup, batch and block size, the vocabulary
  for small data, a cap on the passes over the data when planned on time
  (MAX_EPOCHS_ON_TIME), and a word when a smaller preset would do better in the
  time. Every pick is overridable: a setting given is never changed.

The rules of thumb come from published work on small models (nanoGPT's
character-level recipe, Chinchilla's 20 tokens per parameter) and were
tuned on this project's corpora with ``bench/quality.py``. No torch here:
the plan is shown before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.datasets import VALIDATION_FRACTION, Dataset, open_dataset
from engine.model_source import SCRATCH_PRESETS, ModelSource, scratch_parameter_count
from engine.training_config import TrainingConfig

# Peak learning rates by preset: the narrower the model, the larger the step it takes well
# (nanoGPT uses 1e-3 for its 384-wide character model and 6e-4 for the 768-wide GPT-2).
PRESET_LEARNING_RATES = {"nano": 2e-3, "tiny": 1e-3, "small": 6e-4}
MIN_LEARNING_RATE_RATIO = 0.1  # the cosine decay ends at a tenth of the peak, as nanoGPT's
# A byte-level BPE vocabulary a dataset can fill: each token seen often enough to learn its
# embedding. About one token per this many bytes of text, between the bounds, a power of two.
# On held-out pydoc prose (bench/quality.py, 420 KB) 1,024 entries beat 2,048 and 512.
BYTES_PER_VOCABULARY_ENTRY = 256
VOCABULARY_BOUNDS = (512, 8192)
PLANNED_BATCH_SIZE = 16
PLANNED_BLOCK_SIZE = 128
# Warmup steps by budget: long enough for Adam's moment estimates to settle, short next to the run.
WARMUP_BY_BUDGET = ((120.0, 20), (600.0, 50), (float("inf"), 100))
# A run planned on time ends after this many passes over its data if its budget would go on:
# data seen more often is memorised and the held-out loss climbs, the sooner the larger the model.
# On held-out pydoc prose (bench/quality.py, 129 K training tokens, bits per byte, each run's
# schedule decaying to its end): scratch:nano 1.878 after 12 passes, 1.870 after 16, 1.903 after
# 27, 3.75 after 146 (a 25-minute budget); scratch:tiny 1.848 after 8, 1.876 after 16, 2.34 after
# 29. small is not measured here: 4 follows the trend, and Muennighoff et al. (2023) find up to
# 4 passes worth almost as much as new data.
MAX_EPOCHS_ON_TIME = {"nano": 16.0, "tiny": 8.0, "small": 4.0}
# Bytes of text per token of a byte-level BPE with the planned vocabulary, at most: 2.9 on English
# prose at 1,024 entries (bench/quality.py's corpus); code and repeats give more, so a margin.
BYTES_PER_TOKEN_AT_MOST = 4.0
# Tokens a model can take in per parameter before more of the same data stops helping it;
# below a tenth of Chinchilla's 20, a smaller model learns more from the same text.
FEW_TOKENS_PER_PARAMETER = 2.0


@dataclass(frozen=True)
class RunPlan:
    """The full settings of a run, and what was picked for it (each pick with its reason)."""

    config: TrainingConfig
    picks: tuple[str, ...] = ()  # "learning_rate 0.001 (preset tiny)", in the order picked
    advice: str = ""  # a smaller preset that would do better with this data, or ""

    def explanation(self) -> str:
        """One line: how long or how far the run goes, what was picked and why, and any advice."""
        config = self.config
        if config.max_steps is None and config.max_time is not None:
            extent = f"{_duration(config.max_time)} of training"
            if config.max_epochs is not None:
                extent += f" or {config.max_epochs:g} epochs of the data if sooner (more would memorise it)"
            extent += ", the learning rate decaying over it"
        else:
            extent = f"{config.max_steps} steps" if config.epochs is None else f"{config.epochs:g} epochs"
        parts = [extent]
        if self.picks:
            parts.append("picked " + ", ".join(self.picks))
        if self.advice:
            parts.append(self.advice)
        return "Plan: " + " · ".join(parts)


def plan_run(given: dict[str, Any]) -> RunPlan:
    """The run's config from the settings ``given`` (the others picked or defaulted), checked.

    A scratch preset's picks scale with the size of its dataset's text, so
    the dataset is opened (a wrong path is refused here, as it would be later).
    """
    settings = dict(given)
    if settings.get("max_time") is not None and "max_steps" not in settings and settings.get("epochs") is None:
        settings["max_steps"] = None
    picks: list[str] = []
    advice = ""
    TrainingConfig.from_dict(settings).validate()  # the settings given, checked before anything is opened
    source = ModelSource.parse(settings["model"])
    if source.kind == "scratch":
        dataset = open_dataset(settings["dataset"], settings.get("dataset_field"), settings.get("dataset_split"))
        picks, advice = _pick_for_scratch(source.value, settings, dataset_bytes(dataset))
    config = TrainingConfig.from_dict(settings)
    config.validate()
    return RunPlan(config, tuple(picks), advice)


def _pick_for_scratch(preset: str, settings: dict[str, Any], data_bytes: int) -> tuple[list[str], str]:
    """Fill in a scratch run's settings from its data size and budget; the notes say what and why, briefly."""
    picks: list[str] = []

    def pick(name: str, value: Any, note: str = "") -> bool:
        """Set ``name`` unless it was given; note why (if a note is given)."""
        if name in settings:
            return False
        settings[name] = value
        if note:
            picks.append(note)
        return True

    learning_rate = PRESET_LEARNING_RATES[preset]
    pick("learning_rate", learning_rate, f"lr {learning_rate:g} ({preset} preset)")
    floor = settings["learning_rate"] * MIN_LEARNING_RATE_RATIO
    pick("min_learning_rate", floor, f"min lr {floor:g}")
    batch = pick("batch_size", PLANNED_BATCH_SIZE)
    block = pick("block_size", min(PLANNED_BLOCK_SIZE, SCRATCH_PRESETS[preset]["n_positions"]))
    if batch or block:  # one note for both: the shape of a batch
        picks.append(f"batch {settings['batch_size']} × {settings['block_size']} tokens")
    budget = settings.get("max_time")
    if budget is not None and settings.get("max_steps", 0) is None:
        pick("max_epochs", MAX_EPOCHS_ON_TIME[preset])  # the plan's extent names it
    if budget is not None:
        warmup = next(steps for limit, steps in WARMUP_BY_BUDGET if budget <= limit)
        note = f"warmup {warmup} steps ({_duration(budget)} budget)"
        passes = _fewest_steps_of_passes(settings, data_bytes)
        if passes is not None and warmup > passes // 10:
            warmup = max(1, passes // 10)
            note = f"warmup {warmup} steps (a tenth of ≥{passes} steps of {settings['max_epochs']:g} passes)"
        pick("warmup_steps", warmup, note)
    vocabulary = vocabulary_for(data_bytes)
    pick("vocab_size", vocabulary, f"vocab {vocabulary} ({_size(data_bytes)} of text)")
    return picks, _smaller_preset_advice(preset, settings["vocab_size"], data_bytes)


def _fewest_steps_of_passes(settings: dict[str, Any], data_bytes: int) -> int | None:
    """The fewest steps a run capped at max_epochs passes can take on this data, or None without a cap.

    Counted as if every token held BYTES_PER_TOKEN_AT_MOST bytes of text, so a
    warmup fitted to it fits the run the data really gives (the plan does not
    tokenize).
    """
    if settings.get("max_epochs") is None:
        return None
    train_tokens = data_bytes * (1 - VALIDATION_FRACTION) / BYTES_PER_TOKEN_AT_MOST
    tokens_per_step = settings["batch_size"] * settings["block_size"] * settings.get("grad_accum", 1)
    return max(1, int(settings["max_epochs"] * train_tokens / tokens_per_step))


def dataset_bytes(dataset: Dataset) -> int:
    """The size a plan scales a scratch run's picks by (the tokenizer lab's and the check's too).

    The UTF-8 bytes of its text, not of its files: a .gz, .zst or Parquet
    file is a fraction of its text, and JSONL, CSV or Arrow markup adds to it.
    """
    return dataset.text_bytes()


def vocabulary_for(data_bytes: int) -> int:
    """The largest power-of-two vocabulary the data can fill, within VOCABULARY_BOUNDS."""
    low, high = VOCABULARY_BOUNDS
    size = low
    while size * 2 <= min(high, data_bytes // BYTES_PER_VOCABULARY_ENTRY):
        size *= 2
    return size


def _smaller_preset_advice(preset: str, vocab_size: int, data_bytes: int) -> str:
    """A word when the data is too little for the preset, naming a smaller one that fits it better."""
    # Text bytes over parameters is an upper bound on tokens per parameter (a token is a byte or more).
    return data_size_advice(data_bytes / scratch_parameter_count(preset, vocab_size), "bytes of text", preset)


def data_size_advice(per_parameter: float, unit: str, preset: str | None = None) -> str:
    """The one rule for too little text: "" with enough, else what to expect and what would help.

    ``per_parameter`` is tokens (``unit`` "tokens": the dataset check, with the
    model's tokenizer) or bytes of text (before tokenizing, as the plan has
    it) per parameter of the model. A scratch ``preset`` with a smaller one
    below it is pointed at that one.
    """
    if per_parameter >= FEW_TOKENS_PER_PARAMETER:
        return ""
    names = list(SCRATCH_PRESETS)
    smaller = names[: names.index(preset)] if preset in names else []
    if not smaller:
        return f"{per_parameter:.2g} {unit} per parameter: expect memorising; more text would help"
    return f"{per_parameter:.2g} {unit} per parameter: scratch:{smaller[-1]} may do better"


def given_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings in ``values`` that differ from TrainingConfig's defaults (a form's edited fields)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}
    return {name: value for name, value in values.items() if name not in defaults or value != defaults[name]}


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min" + (f" {rest} s" if rest else "")


def _size(data_bytes: int) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if data_bytes >= scale:
            return f"{data_bytes / scale:.0f} {unit}"
    return f"{data_bytes} bytes"
