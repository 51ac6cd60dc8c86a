"""Where a model comes from, in the one spelling the CLI, the app and the store share.

A model source is a Hugging Face id, a local directory, a checkpoint of an
earlier run (``run:<id>[@<step>]``) or a from-scratch preset
(``scratch:<name>``). Reading one needs no torch, so settings that name a
model are checked before torch loads (``engine.models`` does the loading).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from engine.errors import ModelSourceError

if TYPE_CHECKING:
    from engine.store import RunStore

# GPT-2 architecture, sized for a CPU. Counted with the default vocabulary of
# 8192 tokens (the tied embedding is counted once):
#   nano   1,146,720 parameters  (96 wide, 3 layers, 3 heads, context 256)
#   tiny   5,322,240 parameters  (256 wide, 4 layers, 4 heads, context 256)
#   small 29,676,544 parameters  (512 wide, 8 layers, 8 heads, context 512)
# Head width is 32 or 64 as in GPT-2 itself. Dropout is off: these models see
# small datasets for a few minutes, and nanoGPT's advice for short training
# runs holds (a run can still set it in its config).
_NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
SCRATCH_PRESETS: dict[str, dict] = {
    "nano": {"n_embd": 96, "n_layer": 3, "n_head": 3, "n_positions": 256, **_NO_DROPOUT},
    "tiny": {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 256, **_NO_DROPOUT},
    "small": {"n_embd": 512, "n_layer": 8, "n_head": 8, "n_positions": 512, **_NO_DROPOUT},
}


def scratch_parameter_count(name: str, vocab_size: int = 8192) -> int:
    """Parameters of a scratch preset with that vocabulary (GPT-2 ties input and output embeddings)."""
    preset = SCRATCH_PRESETS[name]
    width, layers, context = preset["n_embd"], preset["n_layer"], preset["n_positions"]
    per_layer = 12 * width * width + 13 * width  # attention 4d²+4d, MLP 8d²+5d, two layer norms 4d
    return vocab_size * width + context * width + layers * per_layer + 2 * width


_ACCEPTED_FORMS = (
    "Use one of:\n"
    "  a Hugging Face id             gpt2, distilgpt2, org/name\n"
    "  a local model directory       ./path/to/model, ../model, /abs/path, ~/models/name\n"
    "  an earlier run's checkpoint   run:<id> (its latest) or run:<id>@<step>\n"
    f"  a from-scratch preset         {', '.join('scratch:' + name for name in SCRATCH_PRESETS)}"
)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _not_a_source(text: str, reason: str) -> ModelSourceError:
    return ModelSourceError(f"{text!r} is not a model source: {reason}.\n{_ACCEPTED_FORMS}")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, in the one spelling the CLI, TUI and store share.

    ``str(source)`` is the canonical text and ``ModelSource.parse`` reads it
    back, so a run records its model as text and can reload it later.
    """

    kind: Literal["hub", "local", "run", "scratch"]
    value: str  # hub id, directory, run id, or preset name
    step: int | None = None  # run:<id>@<step>

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        """Read a model source; ``ModelSourceError`` (listing the accepted forms) on nonsense."""
        stripped = text.strip()
        if not stripped:
            raise _not_a_source(text, "it is empty")
        if _CONTROL_CHARACTERS.search(stripped):
            raise _not_a_source(text, "it contains control characters")
        if stripped.startswith("run:"):
            return cls._parse_run(stripped)
        if stripped.startswith("scratch:"):
            preset = stripped.removeprefix("scratch:").lower()
            if preset not in SCRATCH_PRESETS:
                raise _not_a_source(text, f"there is no preset {preset!r}")
            return cls("scratch", preset)
        if _looks_like_path(stripped):
            return cls("local", _canonical_path(stripped))
        try:
            validate_repo_id(stripped)
        except HFValidationError:
            raise _not_a_source(
                text,
                "it is no existing directory, and no Hugging Face id "
                "('name' or 'org/name' in letters, digits, '-', '_' and '.')",
            ) from None
        return cls("hub", stripped)

    @classmethod
    def _parse_run(cls, text: str) -> ModelSource:
        run_id, at, step_text = text.removeprefix("run:").partition("@")
        if not _RUN_ID.fullmatch(run_id):
            raise _not_a_source(text, "after 'run:' comes a run id (letters, digits, '-' and '_')")
        run_id = run_id.lower()  # run ids are lowercase hex; the store matches them so
        if not at:
            return cls("run", run_id)
        if not step_text.isascii() or not step_text.isdigit():
            raise _not_a_source(text, "after '@' comes a step number, like run:ab12cd34@200")
        return cls("run", run_id, int(step_text))

    def __str__(self) -> str:
        if self.kind == "run":
            return f"run:{self.value}" if self.step is None else f"run:{self.value}@{self.step}"
        if self.kind == "scratch":
            return f"scratch:{self.value}"
        return self.value


def _looks_like_path(text: str) -> bool:
    if text in (".", "..") or text.startswith(("./", "../", "/", "~")):
        return True
    return os.path.isdir(text)


def _canonical_path(text: str) -> str:
    """``models/x/`` and ``./models/x`` are the same directory: spell it ``./models/x``."""
    if text.startswith("~"):
        return text.rstrip("/") or text
    path = os.path.normpath(text)
    if os.path.isabs(path) or path in (".", "..") or path.startswith("../"):
        return path
    return "./" + path


def context_length_on_disk(source: ModelSource | str, store: RunStore | None = None) -> int | None:
    """The model's context from its configuration alone, before anything loads; None if it is not on disk.

    So a run can refuse a block size too long for its model before it is
    created, rather than fail once the weights are in. A preset's is known
    here, without transformers, so ``lmwb train --detach`` on one returns
    without loading it; any other model's is read by ``engine.models``.
    """
    source = ModelSource.parse(source) if isinstance(source, str) else source
    if source.kind == "scratch":
        return SCRATCH_PRESETS[source.value]["n_positions"]
    from engine.models import config_on_disk, context_length  # transformers: only for a model with files

    config = config_on_disk(source, store)
    return None if config is None else context_length(config)
