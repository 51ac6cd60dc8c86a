"""Where lm-workbench keeps its data on disk.

Everything lives under one directory, ``$LMWB_HOME`` (default: the platform's
user data directory), so a user can back it up, move it or point tests at a
temporary one. Directories are created readable by their owner only.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from engine.errors import StoreError

APP_NAME = "lm-workbench"
# The bundled datasets sit beside the packages in the repository checkout.
SAMPLE_TEXTS_DIR = Path(__file__).resolve().parent.parent / "sample_texts"


def workbench_home() -> Path:
    """Return ``$LMWB_HOME`` (or the platform default), creating it if needed."""
    raw = os.environ.get("LMWB_HOME")
    home = Path(raw).expanduser() if raw else Path(platformdirs.user_data_dir(APP_NAME))
    return ensure_private_dir(home)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700; explain when we cannot.

    Parents are created one by one so that none gets the umask's wider mode
    (``mkdir(parents=True)`` would use it for every parent).
    """
    if path.exists() and not path.is_dir():
        raise StoreError(
            f"{path} is a file, not a directory, so lm-workbench cannot keep its data there. "
            "Move the file aside or set LMWB_HOME to a directory."
        )
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"Cannot create the data directory {path}: {exc.strerror}. Set LMWB_HOME to a writable directory."
        ) from exc
    if not os.access(path, os.W_OK):
        raise StoreError(
            f"The data directory {path} is not writable. Fix its permissions or set LMWB_HOME to a writable directory."
        )
    return path


def database_path() -> Path:
    """The SQLite file that records runs, metrics, samples and generations."""
    return workbench_home() / "workbench.db"


def run_dir(run_id: str) -> Path:
    """The directory holding one run's checkpoints."""
    return ensure_private_dir(workbench_home() / "runs" / run_id)


def token_cache_dir() -> Path:
    """Where tokenized datasets are cached, keyed by content hash and tokenizer."""
    return ensure_private_dir(workbench_home() / "cache" / "tokens")


def tokenizer_cache_dir() -> Path:
    """Where byte-level BPE tokenizers trained for scratch models are cached."""
    return ensure_private_dir(workbench_home() / "cache" / "tokenizers")


def health_cache_dir() -> Path:
    """Where dataset health reports are cached (by content hash, as tokenized datasets are)."""
    return ensure_private_dir(workbench_home() / "cache" / "health")


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache (models and datasets as downloaded): read from the environment now.

    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, as
    huggingface_hub finds it. The libraries read these variables once, when
    imported; reading them here on every call obeys a user (or a test) who sets them later.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return _hf_home() / "hub"


def hf_datasets_cache_dir() -> Path:
    """The ``datasets`` library's cache (the Arrow files ``load_dataset`` builds): ``$HF_DATASETS_CACHE``,
    else ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``, read from the environment now."""
    explicit = os.environ.get("HF_DATASETS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return _hf_home() / "datasets"


def _hf_home() -> Path:
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("HF_HOME") or os.path.join(xdg_cache, "huggingface")).expanduser()
