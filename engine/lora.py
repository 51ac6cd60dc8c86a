"""LoRA: training small adapter matrices beside a frozen pretrained model, with ``peft``.

A LoRA run trains a few hundred thousand numbers instead of a whole model:
each targeted linear layer ``W`` gains a low-rank update ``B·A`` (rank
``r``, scaled by ``alpha / r``) and only ``A`` and ``B`` learn. Its
checkpoints are peft adapter directories (``adapter_config.json`` and
``adapter_model.safetensors``, beside the tokenizer), a few megabytes where a
full checkpoint would be hundreds. ``adapter_config.json`` names the base
model in ``base_model_name_or_path`` as a Hugging Face id or an absolute
directory, so both the workbench (``run:<id>``) and plain peft
(``AutoPeftModelForCausalLM``) can put base and adapter back together.

This module holds the settings, wrapping a model with fresh adapters, loading
saved adapters onto a base model, and merging them into it; finding and
loading the base model is ``engine.models``' job.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checks import check_int, check_number
from engine.errors import ModelSourceError, SettingsError

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
AUTO_TARGETS = "auto"
# GPT-2's attention input (query, key and value in one layer, c_attn) and the
# output projections of attention and MLP (both named c_proj): the layers the
# LoRA paper adapts, in GPT-2's names.
GPT2_TARGETS = ("c_attn", "c_proj")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class LoraSettings:
    """How big the adapters are and where they go; validated with the training settings.

    ``targets`` is a comma-separated list of module names (a name matches
    every module whose dotted path ends with it), or ``auto``: GPT-2's
    ``c_attn,c_proj``, and peft's own choice for other architectures.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: str = AUTO_TARGETS

    def validate(self) -> None:
        """Raise ``SettingsError`` naming the training field (``lora_rank``, ...) of the first bad value."""
        check_int("lora_rank", self.rank, 1, 4096, hint=" (8 or 16 is usual)")
        check_number("lora_alpha", self.alpha, 0, above=True, below=1e6, hint=" (twice the rank is usual)")
        check_number("lora_dropout", self.dropout, 0, below=1)
        if not isinstance(self.targets, str) or (self.targets.strip() != AUTO_TARGETS and not self.target_names()):
            raise SettingsError(
                "lora_targets",
                f"{self.targets!r} names no modules; use auto or module names separated by commas, like c_attn,c_proj.",
            )
        bad = [name for name in self.target_names() if not _MODULE_NAME.fullmatch(name)]
        if bad:
            raise SettingsError(
                "lora_targets",
                f"{bad[0]!r} is not a module name; use auto or names like "
                "c_attn,c_proj (letters, digits, '_' and '.').",
            )

    def target_names(self) -> list[str]:
        """The module names given, or [] for auto."""
        if self.targets.strip() == AUTO_TARGETS:
            return []
        return [name.strip() for name in self.targets.split(",") if name.strip()]


def add_adapters(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Freeze ``model`` and wrap it with fresh, trainable LoRA adapters.

    The adapters start as a no-op (``B`` is zero), so the wrapped model's
    first loss is the base model's. Its ``adapter_config.json`` will name
    the base by the Hugging Face id or the absolute directory it was loaded
    from.
    """
    from peft import LoraConfig, get_peft_model

    settings.validate()
    base = _base_location(model)
    targets = settings.target_names() or _default_targets(model)
    config = LoraConfig(
        r=settings.rank,
        # peft annotates lora_alpha as int, but scales by alpha / r in floats: a fractional alpha works.
        lora_alpha=settings.alpha,  # type: ignore[arg-type]
        lora_dropout=settings.dropout,
        target_modules=targets,
        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2 stores its linear layers transposed (Conv1D)
        task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )
    with _quiet_peft():
        try:
            wrapped = get_peft_model(model, config)
        except ValueError as exc:
            raise _targets_not_found(model, settings, exc) from exc
    wrapped.peft_config["default"].base_model_name_or_path = base  # peft may overwrite it with a relative path
    return wrapped


def _base_location(model: PreTrainedModel) -> str:
    """Where the base model was loaded from, as something that loads it again from any directory."""
    location = getattr(model, "name_or_path", "") or ""
    if not location:
        raise SettingsError(
            "lora",
            "LoRA adapts a pretrained model, and this one was not loaded from one "
            "(a scratch: model starts from random weights). Train it without --lora, or pick "
            "a Hugging Face model, a model directory or a run checkpoint.",
        )
    if is_adapter_directory(Path(location)):
        raise SettingsError(
            "lora",
            f"{location} holds LoRA adapters itself. Export it as a merged model "
            "(lmwb runs export-model ID DIR) and train new adapters on DIR.",
        )
    path = Path(location).expanduser()
    return str(path.resolve()) if path.is_dir() else location


def _default_targets(model: PreTrainedModel) -> list[str] | None:
    """GPT-2's attention and projection layers; None lets peft choose for other architectures."""
    return list(GPT2_TARGETS) if model.config.model_type == "gpt2" else None


def _targets_not_found(model: PreTrainedModel, settings: LoraSettings, exc: ValueError) -> SettingsError:
    import torch

    layers = sorted(
        {
            name.rpartition(".")[2]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
        }
    )
    which = settings.targets if settings.target_names() else f"auto ({model.config.model_type} has no default)"
    return SettingsError(
        "lora_targets",
        f"{which} matched no layer of this model ({exc}). Its linear layers are named: {', '.join(layers) or 'none'}.",
    )


def is_adapter_directory(directory: Path) -> bool:
    """True for a directory of peft adapters (``adapter_config.json``) rather than a whole model."""
    return (directory / ADAPTER_CONFIG_FILE).is_file() and not (directory / "config.json").is_file()


def adapter_base(directory: Path) -> str:
    """The base model an adapter directory was trained on (``base_model_name_or_path``), checked."""
    config_path = directory / ADAPTER_CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelSourceError(f"{config_path} is not readable JSON ({exc}). Save the adapters again.") from exc
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise ModelSourceError(
            f"{config_path} does not name its base model (base_model_name_or_path). "
            "Add the Hugging Face id or the directory of the model the adapters were trained on."
        )
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelSourceError(
            f"{config_path} holds {config.get('peft_type')} adapters; lm-workbench loads LoRA adapters only."
        )
    if not (directory / ADAPTER_WEIGHTS_FILE).is_file():
        raise ModelSourceError(
            f"{directory} has {ADAPTER_CONFIG_FILE} but no {ADAPTER_WEIGHTS_FILE}. lm-workbench "
            "loads adapter weights only from safetensors; save them again with save_pretrained."
        )
    return base


def load_adapters(
    model: PreTrainedModel, directory: Path, *, trainable: bool, device: torch.device | None = None
) -> PeftModel:
    """Put saved adapters on their base model: trainable to resume a LoRA run, frozen to use it."""
    from peft import PeftModel

    adapter_base(directory)  # checks the directory is one we can load safely
    # Without a device peft picks one itself (a GPU if there is one), so it is named only when known.
    options: dict[str, Any] = {} if device is None else {"torch_device": str(device)}
    with _quiet_peft():
        try:
            return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable, **options)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelSourceError(
                f"The adapters in {directory} do not fit their base model ({reason}). "
                "Check adapter_config.json's base_model_name_or_path."
            ) from exc


def merge_adapters(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights: a plain model, as fast as the base, with the same outputs."""
    with _quiet_peft():
        return model.merge_and_unload()


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft warns about choices made here on purpose (fan_in_fan_out, frozen layers); keep it off the terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        yield
