"""Where a model comes from, and loading it onto the right device.

Every screen, command and run record names a model the same way, with a
``ModelSource``:

    gpt2, distilgpt2, org/name      a Hugging Face id (from the local HF cache, or downloaded)
    ./dir, ../dir, /dir, ~/dir      a local Hugging Face model directory (or LoRA adapters on a base model)
    run:<id>, run:<id>@<step>       a checkpoint of an earlier run (the latest, or that step)
    scratch:nano|tiny|small         a fresh GPT-2 with a byte-level BPE tokenizer trained on a dataset

``load_model`` turns any of them into a ``LoadedModel`` (model + tokenizer on
a device, in eval mode). The CLI and the app ask through a ``ModelRequest``:
the source with the dataset a scratch preset's tokenizer is trained on, by
name, which it opens only for a scratch preset. Weights load only from safetensors and remote code
is never trusted: a model directory is data, never a program. A directory of
LoRA adapters (a LoRA run's checkpoint) loads its base model, puts the
adapters on it and merges them in, so it generates as fast as the base;
``export_model`` writes any source out as a plain model directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import huggingface_hub
import torch
import transformers
from huggingface_hub.errors import CacheNotFound
from safetensors import SafetensorError
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from engine.devices import device_name
from engine.errors import ModelSourceError, SettingsError, StoreError
from engine.home import hf_hub_cache_dir, tokenizer_cache_dir, workbench_home
from engine.lora import adapter_base, is_adapter_directory, load_adapters, merge_adapters
from engine.model_source import SCRATCH_PRESETS, ModelSource, scratch_parameter_count

if TYPE_CHECKING:
    from engine.datasets import Dataset
    from engine.store import RunStore

Progress = Callable[[str], None]

END_OF_TEXT = "<|endoftext|>"
# 256 byte symbols plus <|endoftext|>: the smallest byte-level vocabulary.
MIN_VOCAB_SIZE = 257
_SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_TRAINING_REPORT_BYTES = 1 << 20  # text read between two progress lines while a tokenizer trains


@dataclass
class ModelInfo:
    """What a user wants to know about a loaded model before probing or training it."""

    source: str
    parameters: int
    layers: int
    heads: int
    context_length: int  # positions it can read (0: the config names no limit)
    vocab_size: int
    dtype: str
    device: str
    memory_bytes: int  # weights and buffers; on CUDA, at least what this process holds

    def as_dict(self) -> dict:
        """Plain values, for JSON output and the store."""
        return dataclasses.asdict(self)


@dataclass
class LoadedModel:
    """A model and its tokenizer, on one device, in eval mode."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    device: torch.device

    def info(self) -> ModelInfo:
        """Size, shape and memory of the model, read from the model itself."""
        config = self.model.config
        tensors = [*self.model.parameters(), *self.model.buffers()]
        memory = sum(t.numel() * t.element_size() for t in tensors)
        if self.device.type == "cuda":
            memory = max(memory, torch.cuda.memory_allocated(self.device))
        return ModelInfo(
            source=str(self.source),
            parameters=sum(p.numel() for p in self.model.parameters()),
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            context_length=context_length(config) or 0,
            vocab_size=config.vocab_size,
            dtype=str(next(self.model.parameters()).dtype).removeprefix("torch."),
            device=str(self.device),
            memory_bytes=memory,
        )


@dataclass(frozen=True)
class ModelRequest:
    """A model as a front end names it: a source and, for a scratch: preset, the dataset its tokenizer learns.

    The one rule for turning what the CLI or the app holds (the model text,
    a dataset name) into a loaded model. A model from any other source brings
    its own tokenizer, so ``of`` drops the dataset for it: two requests for the
    same model are equal, and a cache can key on a request.
    """

    source: ModelSource
    dataset: Dataset | str | None = None  # opened, or a bundled name, a file or a folder; scratch: presets only
    vocab_size: int = 8192  # the scratch tokenizer's vocabulary
    dataset_split: str | None = None  # the split of a named dataset that has several (a saved DatasetDict's)

    @classmethod
    def of(
        cls,
        source: ModelSource | str,
        dataset: Dataset | str | None = None,
        *,
        vocab_size: int = 8192,
        dataset_split: str | None = None,
    ) -> ModelRequest:
        """Read ``source`` (ModelSourceError on nonsense); keep the dataset only where the model depends on it."""
        parsed = ModelSource.parse(source) if isinstance(source, str) else source
        if parsed.kind != "scratch":
            return cls(parsed)
        return cls(parsed, dataset or None, vocab_size, dataset_split if isinstance(dataset, str) else None)

    def load(
        self, *, device: str = "auto", store: RunStore | None = None, progress: Progress | None = None
    ) -> LoadedModel:
        """Open the dataset (a scratch: preset's) and load the model and tokenizer, as ``load_model`` does."""
        return load_model(
            self.source,
            device=device,
            dataset=self._open_dataset(),
            vocab_size=self.vocab_size,
            store=store,
            progress=progress,
        )

    def load_tokenizer(
        self, *, store: RunStore | None = None, progress: Progress | None = None
    ) -> PreTrainedTokenizerBase:
        """The tokenizer alone, without the weights: a scratch: preset's trained on the dataset (or cached)."""
        quiet_transformers()
        if self.source.kind == "scratch":
            return train_tokenizer(_tokenizer_dataset(self.source, self._open_dataset()), self.vocab_size, progress)
        (progress or (lambda message: None))("Loading tokenizer…")
        return _with_pad_token(_load_tokenizer(self.source, _locate(self.source, store)))

    def _open_dataset(self) -> Dataset | None:
        from engine.datasets import open_dataset

        return open_dataset(self.dataset, split=self.dataset_split) if isinstance(self.dataset, str) else self.dataset


def context_length(config: transformers.PretrainedConfig) -> int | None:
    """How many positions a model of this config can read; None when it names no fixed limit."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class ModelChoice:
    """One model the user can pick, as listed by ``lmwb models`` and the Models screen."""

    source: str
    kind: str
    description: str

    def as_dict(self) -> dict:
        """Plain values, for JSON output."""
        return dataclasses.asdict(self)


# Where a GPT-2 keeps its dropout rates: embeddings, attention weights, and the residual branches and MLP.
GPT2_DROPOUTS = ("embd_pdrop", "attn_pdrop", "resid_pdrop")


def set_dropout(model: PreTrainedModel, rate: float) -> None:
    """Give every dropout layer of a GPT-2 family model ``rate``, and its config too, so a checkpoint keeps it.

    Other architectures read their rates from the config when they are built,
    in ways of their own; they are refused rather than half changed.
    """
    if not all(hasattr(model.config, name) for name in GPT2_DROPOUTS):
        raise SettingsError(
            "dropout",
            f"can be set on GPT-2 family models only; a {model.config.model_type} model keeps its own. "
            "Leave dropout empty.",
        )
    for name in GPT2_DROPOUTS:
        setattr(model.config, name, rate)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate


def quiet_transformers() -> None:
    """Keep transformers' and the hub's progress bars and warnings off the terminal.

    Their tqdm bars ("Loading weights: 100%", "Writing model shards") and log
    lines would tear through the TUI; the engine reports progress itself.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    for package in ("transformers", "huggingface_hub", "tokenizers"):
        warnings.filterwarnings("ignore", module=rf"{package}(\.|$)")


def pick_device(preference: str = "auto") -> torch.device:
    """The device to run on: CUDA, then Apple MPS, then the CPU, unless the user names one."""
    try:
        wanted = device_name(preference)
    except SettingsError as exc:
        raise ModelSourceError(exc.reason) from None
    if wanted == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "mps":
        if not torch.backends.mps.is_available():
            raise ModelSourceError("Device 'mps' is not available on this machine (no Apple GPU). Use 'auto' or 'cpu'.")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", wanted)
    if match:
        if not torch.cuda.is_available():
            raise ModelSourceError(
                f"Device {preference!r} is not available: this machine (or this torch build) has no CUDA. "
                "Use 'auto' or 'cpu', or install the CUDA build of torch (see the README)."
            )
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise ModelSourceError(
                f"Device {preference!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
        return torch.device("cuda", index)
    raise AssertionError(f"device_name() let {wanted!r} through")  # its grammar is the four branches above


def load_model(
    source: ModelSource | str,
    *,
    device: str = "auto",
    dataset: Dataset | None = None,
    vocab_size: int = 8192,
    store: RunStore | None = None,
    progress: Progress | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer from any source, onto a device, in eval mode.

    A scratch preset needs ``dataset`` (its tokenizer is trained there, with
    ``vocab_size`` tokens) and draws its weights from torch's global RNG: seed
    first for a reproducible start. A ``run:`` source looks its checkpoint up
    in ``store`` (default: the workbench's own database). Weights are float32;
    training decides on mixed precision.
    """
    report = progress or (lambda message: None)
    quiet_transformers()
    if isinstance(source, str):
        source = ModelSource.parse(source)
    target = pick_device(device)
    if source.kind == "scratch":
        model, tokenizer = _build_scratch_model(source, dataset, vocab_size, report)
    else:
        location = _locate(source, store)
        report("Loading tokenizer…")
        tokenizer = _load_tokenizer(source, location)
        report("Loading weights…")
        model = _load_weights(source, location)
    tokenizer = _with_pad_token(tokenizer)
    report(f"Moving the model to {target}…")
    # Called through nn.Module's signature: transformers wraps its override of `to` with functools.wraps,
    # whose type hides the method's binding from a type checker. At run time it is the same override.
    module: torch.nn.Module = model
    module.to(target)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, device=target)


def export_model(
    source: ModelSource | str, directory: Path, *, store: RunStore | None = None, progress: Progress | None = None
) -> Path:
    """Write any model source out as a plain Hugging Face model directory, LoRA adapters merged in.

    What it writes loads with ``AutoModelForCausalLM.from_pretrained(directory)``
    alone: no workbench, no peft, no base model to find. It is written to a
    temporary sibling and renamed into place; an existing directory that is not
    empty is refused, never overwritten.
    """
    report = progress or (lambda message: None)
    target = Path(directory).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelSourceError(f"{target} already exists and is not an empty directory; choose a new directory.")
    loaded = load_model(source, device="cpu", store=store, progress=report)
    report(f"Writing {target}…")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise ModelSourceError(f"Cannot write {target}: {exc.strerror or exc}. Choose another directory.") from exc
    try:
        loaded.model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        if target.exists():
            target.rmdir()  # empty, as checked above
        os.rename(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelSourceError(
            f"Cannot write {target}: {exc.strerror or exc}. Free disk space or choose another directory."
        ) from exc
    return target


def _locate(source: ModelSource, store: RunStore | None) -> str:
    """The hub id or directory that ``from_pretrained`` should read."""
    if source.kind == "hub":
        return source.value
    if source.kind == "run":
        if store is None:
            from engine.store import RunStore

            store = RunStore()
        directory = resolve_checkpoint(source, store)
    else:
        directory = Path(source.value).expanduser()
    _check_model_directory(source, directory)
    return str(directory)


def config_on_disk(source: ModelSource, store: RunStore | None = None) -> transformers.PretrainedConfig | None:
    """A hub, local or run model's configuration alone, before anything loads; None if it is not on disk.

    A source that cannot be a model (a missing directory, a run without
    checkpoints) raises its usual error; a hub model not in the cache yet, or
    a damaged configuration, gives None: loading it will say which.
    """
    location = _locate(source, store)
    try:
        return transformers.AutoConfig.from_pretrained(location, **{**_hub_options(), "local_files_only": True})
    except Exception:  # noqa: BLE001 - not at hand, or damaged: loading will say which
        return None


def _check_model_directory(source: ModelSource, directory: Path) -> None:
    """Refuse, with a reason, a directory that is missing, not a model, or holds only pickles."""
    if not directory.is_dir():
        raise ModelSourceError(f"{source}: no such directory ({directory}). Check the path.")
    adapters = is_adapter_directory(directory)
    if not adapters and not (directory / "config.json").is_file():
        raise ModelSourceError(
            f"{source}: {directory} is not a Hugging Face model directory (it has no config.json). "
            "Point at a folder written by save_pretrained, or a run checkpoint."
        )
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelSourceError(
            f"{source}: {directory} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}). "
            "Save the tokenizer beside the model with tokenizer.save_pretrained(directory)."
        )
    if adapters:
        adapter_base(directory)  # names its base, and holds safetensors weights
        return
    if any((directory / name).is_file() for name in _SAFETENSORS_FILES):
        return
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelSourceError(
            f"{source}: {directory} holds only pickle weights ({', '.join(pickles)}). lm-workbench loads "
            "weights only from safetensors, because unpickling a file can run any code it contains. "
            "Convert it once where you trust the file: "
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)."
        )
    raise ModelSourceError(
        f"{source}: {directory} has a config.json but no model.safetensors. Save the weights there with "
        "save_pretrained, or point at the directory that holds them."
    )


def _hub_options() -> dict:
    """``from_pretrained`` options that read HF_HOME and HF_HUB_OFFLINE now, not at import time.

    huggingface_hub reads both once, when it is imported; a user (or a test)
    who sets them later is still obeyed because every call passes them.
    """
    return {"cache_dir": str(hf_hub_cache_dir()), "local_files_only": _hub_offline()}


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().upper() in ("1", "ON", "YES", "TRUE")


def _how_to_get(hub_id: str) -> str:
    cache = hf_hub_cache_dir()
    why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hugging Face Hub could not be reached"
    return (
        f"{hub_id!r} is not in the Hugging Face cache ({cache}) and {why}. To get it: on a machine with "
        f"network access run `hf download {hub_id}` (or `huggingface-cli download {hub_id}`), then copy the "
        f"models--{hub_id.replace('/', '--')} folder from that machine's Hugging Face cache "
        f"(~/.cache/huggingface/hub by default) into {cache}, or point HF_HOME at a copied Hugging Face home. "
        "Or pass a local model directory, such as ./my-model, instead."
    )


def _with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Batches are padded with end-of-text where the tokenizer names no pad token (GPT-2 names none)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_tokenizer(source: ModelSource, location: str) -> PreTrainedTokenizerBase:
    options = _hub_options() if source.kind == "hub" else {}
    try:
        return AutoTokenizer.from_pretrained(location, trust_remote_code=False, **options)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise _loading_failed(source, location, "tokenizer", exc) from exc


def _load_weights(source: ModelSource, location: str) -> PreTrainedModel:
    if source.kind != "hub" and is_adapter_directory(Path(location)):
        return _load_merged_adapters(source, Path(location))
    options = {}
    if source.kind == "hub":
        # transformers looks for a LoRA adapter config without the hub options unless given them twice.
        options = {**_hub_options(), "adapter_kwargs": _hub_options()}
    try:
        return AutoModelForCausalLM.from_pretrained(
            location, use_safetensors=True, trust_remote_code=False, dtype=torch.float32, **options
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        raise _loading_failed(source, location, "weights", exc) from exc


def _load_merged_adapters(source: ModelSource, directory: Path) -> PreTrainedModel:
    """Base model + LoRA adapters from ``directory``, merged into one plain model of the base's architecture."""
    base_text = adapter_base(directory)
    try:
        base = ModelSource.parse(base_text)
    except ModelSourceError as exc:
        raise ModelSourceError(f"{source}: the base model its adapter_config.json names cannot be used. {exc}") from exc
    if base.kind not in ("hub", "local"):
        raise ModelSourceError(
            f"{source}: its adapter_config.json names {base_text!r} as the base model; "
            "name a Hugging Face id or a model directory there."
        )
    base_location = _locate(base, None)
    if is_adapter_directory(Path(base_location)):
        raise ModelSourceError(
            f"{source}: its base {base_text} holds adapters too; lm-workbench puts one set of "
            "adapters on a whole model. Export the base merged (lmwb runs export-model) first."
        )
    model = merge_adapters(load_adapters(_load_weights(base, base_location), directory, trainable=False))
    # The weights now come from here: adapters trained on top of them must not name the bare base.
    model.name_or_path = model.config.name_or_path = str(directory.resolve())
    return model


def _loading_failed(source: ModelSource, location: str, part: str, exc: Exception) -> ModelSourceError:
    """Turn transformers' loading errors into one that says what to do."""
    lines = str(exc).strip().splitlines()
    reason = lines[0].rstrip(".") if lines else type(exc).__name__
    if source.kind == "hub":
        cached_files = _cached_files(source.value)
        if not cached_files:
            return ModelSourceError(_how_to_get(source.value))
        if part == "weights" and not cached_files & set(_SAFETENSORS_FILES):
            return ModelSourceError(
                f"{source}: this Hugging Face model has no safetensors weights in the cache. lm-workbench "
                "loads weights only from safetensors, because unpickling a file can run any code it contains. "
                "Use a version of the model that ships model.safetensors."
            )
    if "Unrecognized configuration class" in str(exc) or "does not recognize this architecture" in str(exc):
        return ModelSourceError(f"{source}: this is not a causal language model that transformers can load ({reason}).")
    return ModelSourceError(
        f"{source}: cannot load the {part} from {location}: {reason}. "
        "The files may be truncated or corrupt: save the model again, or pick another checkpoint."
    )


def _cached_files(hub_id: str) -> set[str]:
    """Names of the files any cached revision of ``hub_id`` holds (empty when it is not cached)."""
    snapshots = hf_hub_cache_dir() / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    return {path.name for path in snapshots.glob("*/*")}


def cached_hub_tokenizer(hub_id: str) -> PreTrainedTokenizerBase | None:
    """A Hugging Face model's tokenizer from the local cache alone; None when the cache holds none.

    For comparisons that only make sense when the tokenizer is already here
    (the tokenizer lab's GPT-2 row): it never downloads, whatever
    HF_HUB_OFFLINE says. A cached tokenizer that fails to load is a
    ModelSourceError, not None: it is there, and broken.
    """
    if not _cached_files(hub_id) & set(_TOKENIZER_FILES):
        return None
    quiet_transformers()
    options = {"cache_dir": str(hf_hub_cache_dir()), "local_files_only": True}
    try:
        return AutoTokenizer.from_pretrained(hub_id, trust_remote_code=False, **options)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise _loading_failed(ModelSource("hub", hub_id), hub_id, "tokenizer", exc) from exc


def resolve_checkpoint(source: ModelSource, store: RunStore) -> Path:
    """The directory of a run's checkpoint: the step asked for, or the latest one."""
    if source.kind != "run":
        raise ModelSourceError(f"{source} is not a run checkpoint (those are spelled run:<id> or run:<id>@<step>).")
    try:
        run = store.get_run(source.value)
    except StoreError as exc:
        raise ModelSourceError(f"{source}: {exc}") from exc  # the store says how to list the run ids
    checkpoints = store.checkpoints(run.id)
    if not checkpoints:
        raise ModelSourceError(
            f"{source}: run {run.id} ({run.name}) has no checkpoints yet. Wait for its first checkpoint, "
            "or train with a smaller checkpoint_every."
        )
    if source.step is None:
        chosen = max(checkpoints, key=lambda row: row["step"])
    else:
        matching = [row for row in checkpoints if row["step"] == source.step]
        if not matching:
            steps = ", ".join(str(row["step"]) for row in checkpoints)
            raise ModelSourceError(
                f"{source}: run {run.id} has no checkpoint at step {source.step}; it has steps {steps}."
            )
        chosen = matching[0]
    path = Path(chosen["path"])
    # A relative path is read as relative to the workbench home, where runs live.
    return path if path.is_absolute() else workbench_home() / path


def _tokenizer_dataset(source: ModelSource, dataset: Dataset | None) -> Dataset:
    """The dataset a scratch: preset's tokenizer is trained on; SettingsError("dataset") when there is none."""
    if dataset is None:
        raise SettingsError(
            "dataset",
            f"{source} is trained from scratch, so it needs a dataset to train its tokenizer on; choose a dataset.",
        )
    return dataset


def _build_scratch_model(
    source: ModelSource, dataset: Dataset | None, vocab_size: int, report: Progress
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = train_tokenizer(_tokenizer_dataset(source, dataset), vocab_size, report)
    report(f"Building a fresh {source.value} GPT-2…")
    config = GPT2Config(
        **SCRATCH_PRESETS[source.value],
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config), tokenizer


def train_tokenizer(dataset: Dataset, vocab_size: int, progress: Progress | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``dataset``: any text encodes, and decodes back exactly.

    It is cached by the dataset's content hash and the vocabulary size, so
    the second scratch model on a dataset starts at once. The vocabulary may
    come out smaller than asked when the dataset has few distinct merges.
    """
    from engine.datasets import iter_texts

    report = progress or (lambda message: None)
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise SettingsError(
            "vocab_size",
            f"must be a whole number of at least {MIN_VOCAB_SIZE} (256 bytes + {END_OF_TEXT}), not {vocab_size!r}",
        )
    quiet_transformers()
    cached = tokenizer_cache_dir() / f"{dataset.content_hash()[:16]}-{vocab_size}"
    if cached.is_dir():
        try:
            return PreTrainedTokenizerFast.from_pretrained(str(cached))
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, never fatal
            shutil.rmtree(cached, ignore_errors=True)
    training = f"Training a {vocab_size}-token BPE tokenizer on {dataset.name}"
    report(f"{training}…")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _reported(iter_texts(dataset), lambda read: report(f"{training}: {read / 1e6:.0f} MB read…")),
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    tokenizer = _wrap_tokenizer(bpe)
    _save_atomically(tokenizer, cached)
    report(f"Tokenizer ready: {len(tokenizer)} tokens.")
    return tokenizer


def _reported(texts: Iterator[str], report: Callable[[int], None]) -> Iterator[str]:
    """``texts``, calling ``report(bytes read)`` every megabyte: reading is most of a tokenizer's training.

    The trainer reads the texts as it goes, so an exception raised by
    ``report`` (a cancelled tokenizer lab) ends the training there.
    """
    read = reported = 0
    for text in texts:
        yield text
        read += len(text.encode("utf-8"))
        if read - reported >= _TRAINING_REPORT_BYTES:
            reported = read
            report(read)


def _wrap_tokenizer(bpe) -> PreTrainedTokenizerFast:
    """The trained BPE as transformers' tokenizer, backed by a plain ``tokenizers.Tokenizer``.

    Not the ``ByteLevelBPETokenizer`` wrapper itself: the backend must offer the
    whole ``Tokenizer`` API (``encode_batch_fast`` among it) like a loaded one.
    """
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(bpe.to_str()),
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,  # " ." must decode as " .", not "."
    )


def _save_atomically(tokenizer: PreTrainedTokenizerFast, target: Path) -> None:
    """Write to a temporary folder and rename it into place, so no reader sees half a tokenizer."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        os.rename(staging, target)
    except OSError:
        # Another process finished the same tokenizer first: theirs is as good as ours.
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise


def list_model_choices(store: RunStore | None) -> list[ModelChoice]:
    """Every model the user can pick now: presets, the Hugging Face cache, and runs' checkpoints.

    With ``store`` None, runs are not listed.
    """
    choices = [ModelChoice(f"scratch:{name}", "scratch", _describe_preset(name)) for name in SCRATCH_PRESETS]
    choices += _cached_hub_models()
    if store is not None:
        for run in store.list_runs():
            for row in store.checkpoints(run.id):
                loss = "" if row.get("val_loss") is None else f", val loss {row['val_loss']:.3f}"
                choices.append(
                    ModelChoice(f"run:{run.id}@{row['step']}", "run", f"{run.name} at step {row['step']}{loss}")
                )
    return choices


def _describe_preset(name: str) -> str:
    preset = SCRATCH_PRESETS[name]
    millions = scratch_parameter_count(name) / 1e6
    return (
        f"≈{millions:.0f}M params, trained from scratch (GPT-2, {preset['n_layer']} layers, "
        f"{preset['n_embd']} wide, context {preset['n_positions']})"
    )


def _cached_hub_models() -> list[ModelChoice]:
    """Causal language models in the Hugging Face cache; none if there is no cache."""
    try:
        cache = huggingface_hub.scan_cache_dir(hf_hub_cache_dir())
    except (CacheNotFound, ValueError, OSError):
        return []
    choices = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        files = {f.file_name for f in revision.files}
        model_type = _model_type(revision.snapshot_path / "config.json")
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            continue
        note = "" if files & set(_SAFETENSORS_FILES) else "; no safetensors weights, cannot be loaded"
        choices.append(
            ModelChoice(repo.repo_id, "hub", f"Hugging Face cache, {model_type}, {repo.size_on_disk_str}{note}")
        )
    return choices


def _model_type(config_path: Path) -> str | None:
    try:
        value = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
