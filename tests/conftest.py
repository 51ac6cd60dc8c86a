"""Shared fixtures: a private LMWB_HOME per test and small real models.

Models are built here from a ``GPT2Config`` and saved with ``save_pretrained``,
then loaded back through the engine exactly as a user's model would be: no
hub access, no mocking of transformers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

# pytest-xdist runs one worker per core; a torch thread pool per worker on top
# of that oversubscribes the cores and OpenMP's spin-waiting then slows small
# models by an order of magnitude. Set before torch is imported (here or in a
# subprocess a test starts, which inherits the environment).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

# Enough varied text for a byte-level BPE tokenizer to learn merges, with
# accents, CJK and emoji so multi-byte UTF-8 handling is exercised.
TOKENIZER_TEXTS = [
    "The fox and the crow met by the old mill, and the fox spoke first.",
    "Question: what is a language model? Answer: a model of text.",
    "def add(a, b):\n    return a + b\n",
    "Café au lait, naïve façade, über cool — ça va?",
    "日本語のテキストと中文文本。",
    "Emoji test: 🦊🐦🌾 and more 🎉!",
] * 20


@pytest.fixture(autouse=True)
def lmwb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own empty data directory and no hub access.

    Runs are processes of their own that outlive whoever started them: one a
    test leaves going is ended with the test (its whole process group, so
    the ranks of a --nproc run go too).
    """
    home = tmp_path / "lmwb-home"
    monkeypatch.setenv("LMWB_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    yield home
    end_run_processes(home)


def end_run_processes(home: Path) -> None:
    """Kill the processes of the runs still active or queued in ``home`` (queued ones could start later)."""
    if not (home / "workbench.db").exists():
        return
    from engine.store import ACTIVE_STATUSES, RunStore, process_alive

    try:
        store = RunStore(home / "workbench.db")
        runs = store.list_runs()
    except Exception:  # noqa: BLE001 - a database a test broke on purpose holds no run to end
        return
    for run in runs:
        if run.status == "queued":
            store.request_control(run.id, "stop")  # cancelled: nothing starts it later
        elif run.status in ACTIVE_STATUSES and run.pid and run.pid != os.getpid() and process_alive(run.pid):
            with contextlib.suppress(OSError):
                group = os.getpgid(run.pid)
                if group == os.getpgid(0):  # started by this test without a session of its own
                    os.kill(run.pid, signal.SIGKILL)
                else:
                    os.killpg(group, signal.SIGKILL)
    store.close()


def build_tiny_gpt2(directory: Path, *, n_positions: int = 64, vocab_size: int = 300, seed: int = 0) -> Path:
    """Train a small byte-level BPE tokenizer, build a random 2-layer GPT-2, save both."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TOKENIZER_TEXTS, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Hugging Face model directory: random 2-layer GPT-2 + BPE tokenizer."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
