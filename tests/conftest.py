"""Shared fixtures: a private LMWB_HOME per test and small real models.

Models are built here from a ``GPT2Config`` and saved with ``save_pretrained``,
then loaded back through the engine exactly as a user's model would be: no
hub access, no mocking of transformers.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# pytest-xdist runs one worker per core; a torch thread pool per worker on top
# of that oversubscribes the cores and OpenMP's spin-waiting then slows small
# models by an order of magnitude. Set before torch is imported (here or in a
# subprocess a test starts, which inherits the environment).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository's root: the working directory of every ``lmwb`` a test starts as a process of its own."""
FABLES = REPO_ROOT / "sample_texts" / "fables.txt"
"""The bundled fables, a sample text that ships with the workbench."""

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
    bpe.train_from_iterator(
        TOKENIZER_TEXTS, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def put_in_hf_cache(directory: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Lay a model (or a dataset: ``repo_type="dataset"``) out exactly as huggingface_hub caches a download:
    blobs, a snapshot of links (in the repository's folders, such as data/), refs/main.

    Under the test's own HF_HOME (see ``lmwb_home``), so the engine finds it offline as a user's cached one.
    """
    repo = Path(os.environ["HF_HOME"]) / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for folder in (snapshot, repo / "blobs", repo / "refs"):
        folder.mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(path for path in directory.rglob("*") if path.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(directory)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Hugging Face model directory: random 2-layer GPT-2 + BPE tokenizer."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def fables_excerpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's own text file: the first 24 KB of the bundled fables.

    No test writes to it (caches go to the test's own LMWB_HOME), so one file
    serves the session, and module-scoped fixtures can use it too.
    """
    path = tmp_path_factory.mktemp("data") / "fables-excerpt.txt"
    path.write_text(FABLES.read_text(encoding="utf-8")[:24_000], encoding="utf-8")
    return path


# --- running lmwb ------------------------------------------------------------------------------


def lmwb_command(*args: str) -> list[str]:
    """The command line of `lmwb ARGS` as a process of its own (for ``subprocess``, run in ``REPO_ROOT``)."""
    return [sys.executable, "-m", "tui.cli", *args]


def lmwb_in_subprocess(*args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real `lmwb ARGS` in a child process (same LMWB_HOME), as a shell would; wait for it to end."""
    return subprocess.run(
        lmwb_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def lmwb_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `lmwb ARGS` through ``tui.cli.main`` in this process; return its exit status, stdout and stderr."""
    from tui.cli import main

    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *words: str) -> str:
    """A user's mistake: exit status 2 and one line on stderr, 'lmwb: error: ...', naming every word; no traceback.

    Returns that line.
    """
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmwb: error: "), err
    for word in words:
        assert word in lines[0], err
    return lines[0]


def write_fables(path: Path, count: int = 300) -> Path:
    """A small made-up corpus: varied sentences, enough for a tokenizer and a few training windows."""
    animals = ["fox", "crow", "hare", "tortoise", "owl", "wolf", "lamb", "mouse", "lion", "ant"]
    places = ["old mill", "river bank", "dark wood", "barley field", "stone bridge", "hollow oak"]
    morals = [
        "slow and steady wins",
        "pride comes before a fall",
        "a friend in need is a friend indeed",
        "look before you leap",
        "honesty is the best policy",
    ]
    lines = []
    for index, (first, second) in enumerate(itertools.islice(itertools.permutations(animals, 2), count)):
        place, moral = places[index % len(places)], morals[index % len(morals)]
        lines.append(f"The {first} met the {second} by the {place}, and the {first} said that {moral}.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def fables(tmp_path: Path) -> Path:
    """A made-up fables file of the test's own (not the bundled one): a dataset given by path."""
    return write_fables(tmp_path / "fables.txt")
