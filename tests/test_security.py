"""Security: files a user downloads or finds cannot run code, and what we record stays private.

Two kinds of test. Source checks read every module of ``engine/`` and ``tui/``
as a syntax tree (not as text, so a comment or a docstring cannot fool them)
and refuse the calls that would let a file or a user's text run code:
pickle loading without ``weights_only=True``, ``trust_remote_code``, a shell.
Behaviour checks hand the real loaders a booby-trapped pickle, one that would
create a marker file if it were ever unpickled, and watch that it never is.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from engine.errors import ModelSourceError, TrainingError
from engine.models import load_model
from tests.conftest import FABLES, REPO_ROOT
from tui.cli import main

SOURCE_FILES = sorted(path for folder in ("engine", "tui") for path in (REPO_ROOT / folder).rglob("*.py"))


def calls(tree: ast.AST):
    """Every call in a module, with the dotted name of what is called (``torch.load``, ``open``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, dotted_name(node.func)


def dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    return ""


def keyword_value(call: ast.Call, name: str):
    """The literal value a call passes for keyword ``name``: missing, or ``"<not a literal>"``."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "<not a literal>"
    return "<missing>"


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{node.lineno}"


@pytest.fixture(scope="module")
def modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) for path in SOURCE_FILES]


# -----------------------------------------------------------------------------
# Source checks over engine/ and tui/


def test_the_source_checks_see_the_modules_that_load_files():
    names = {str(path.relative_to(REPO_ROOT)) for path in SOURCE_FILES}
    assert {"engine/models.py", "engine/training.py", "engine/store.py", "tui/cli/generation_commands.py"} <= names


def test_every_torch_load_refuses_pickled_code(modules):
    loads, unsafe = [], []
    for path, tree in modules:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "torch"
                and any(a.name == "load" for a in node.names)
            ):
                unsafe.append(f"{where(path, node)}: 'from torch import load' hides torch.load from this check")
        for call, name in calls(tree):
            if name == "torch.load":
                loads.append(where(path, call))
                if keyword_value(call, "weights_only") is not True:
                    unsafe.append(f"{where(path, call)}: torch.load without weights_only=True")
    assert loads, "expected the trainer state to be read with torch.load"
    assert unsafe == []


def test_nothing_unpickles_files_by_any_other_road(modules):
    unsafe = []
    for path, tree in modules:
        for call, name in calls(tree):
            if name in (
                "pickle.load",
                "pickle.loads",
                "pickle.Unpickler",
                "dill.load",
                "joblib.load",
                "cloudpickle.load",
                "torch.jit.load",
                "shelve.open",
                "marshal.load",
                "marshal.loads",
            ):
                unsafe.append(f"{where(path, call)}: {name}")
            if name in ("np.load", "numpy.load") and keyword_value(call, "allow_pickle") not in ("<missing>", False):
                unsafe.append(f"{where(path, call)}: {name} with allow_pickle")
    assert unsafe == []


def test_model_weights_are_loaded_from_safetensors_only(modules):
    # peft's PeftModel.from_pretrained takes no such flag; the adapter directory is checked for
    # safetensors first, which test_lora_adapters_with_only_a_booby_trapped_pickle_are_refused_unopened proves.
    model_loads, unsafe = [], []
    for path, tree in modules:
        for call, name in calls(tree):
            if not name.endswith(".from_pretrained") or any(word in name for word in ("Tokenizer", "Config", "Peft")):
                continue
            model_loads.append(where(path, call))
            if keyword_value(call, "use_safetensors") is not True:
                unsafe.append(f"{where(path, call)}: {name} without use_safetensors=True")
    assert model_loads, "expected models to be loaded with from_pretrained"
    assert unsafe == []


def test_remote_code_is_never_trusted(modules):
    trusting = []
    for path, tree in modules:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "trust_remote_code"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
            ):
                trusting.append(f"{where(path, node.value)}: trust_remote_code={ast.unparse(node.value)}")
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "trust_remote_code"
                        and not (isinstance(value, ast.Constant) and value.value is False)
                    ):
                        trusting.append(f"{where(path, key)}: 'trust_remote_code': {ast.unparse(value)}")
    assert trusting == []


def test_no_shell_ever_runs_and_no_text_is_evaluated(modules):
    shells = (
        "os.system",
        "os.popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "commands.getoutput",
        "pty.spawn",
        "eval",
        "exec",
    )
    unsafe = []
    for path, tree in modules:
        for call, name in calls(tree):
            if name in shells or name.startswith(("os.exec", "os.spawn")):
                unsafe.append(f"{where(path, call)}: {name}")
            if keyword_value(call, "shell") not in ("<missing>", False):
                unsafe.append(f"{where(path, call)}: {name} with shell={keyword_value(call, 'shell')}")
    assert unsafe == []


# -----------------------------------------------------------------------------
# Booby-trapped pickles are never opened


class Trap:
    """Unpickling this creates ``marker``: harmless, and proof that a pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def trapped_pickle(path: Path, marker: Path) -> None:
    torch.save({"state_dict": Trap(marker)}, path)


def test_the_trap_would_fire_if_a_pickle_were_trusted(tmp_path):
    # The control for the tests below: an unsafe load really does run the trap.
    marker = tmp_path / "pwned"
    trapped_pickle(tmp_path / "trap.pt", marker)
    torch.load(tmp_path / "trap.pt", weights_only=False)
    assert marker.exists()


def test_a_model_with_only_a_booby_trapped_pickle_is_refused_unopened(tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "downloaded-model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    trapped_pickle(model / "pytorch_model.bin", marker)

    assert main(["generate", "--model", str(model), "--prompt", "Once"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "holds only pickle weights (pytorch_model.bin)" in error
    assert "unpickling a file can run any code" in error
    assert not marker.exists()


def test_beside_safetensors_a_booby_trapped_pickle_is_ignored(tmp_path, tiny_model_dir):
    model = tmp_path / "downloaded-model"
    shutil.copytree(tiny_model_dir, model)
    marker = tmp_path / "pwned"
    trapped_pickle(model / "pytorch_model.bin", marker)
    trapped_pickle(model / "training_args.bin", marker)

    loaded = load_model(str(model), device="cpu")
    assert loaded.info().parameters > 0
    assert not marker.exists()


def test_lora_adapters_with_only_a_booby_trapped_pickle_are_refused_unopened(tmp_path, tiny_model_dir, capsys):
    adapters = tmp_path / "downloaded-adapters"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "base_model_name_or_path": str(tiny_model_dir),
                "r": 4,
                "lora_alpha": 8,
                "target_modules": ["c_attn"],
                "task_type": "CAUSAL_LM",
            }
        ),
        encoding="utf-8",
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, adapters / name)
    marker = tmp_path / "pwned"
    trapped_pickle(adapters / "adapter_model.bin", marker)

    with pytest.raises(ModelSourceError, match="only from safetensors"):
        load_model(str(adapters), device="cpu")
    assert main(["generate", "--model", str(adapters), "--prompt", "Once"]) == 2
    assert "only from safetensors" in capsys.readouterr().err
    assert not marker.exists()


def test_a_booby_trapped_trainer_state_is_refused_unopened(tmp_path, tiny_model_dir, capsys):
    from engine.checkpoints import TRAINER_STATE_FILE, load_trainer_state
    from engine.store import RunStore
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    text = tmp_path / "fables.txt"
    text.write_text(FABLES.read_text(encoding="utf-8")[:12_000], encoding="utf-8")
    config = TrainingConfig(
        model=str(tiny_model_dir),
        dataset=str(text),
        max_steps=2,
        batch_size=2,
        block_size=16,
        warmup_steps=0,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        device="cpu",
    )
    run = TrainingJob(config, RunStore()).run()
    checkpoint = Path(RunStore().checkpoints(run.id)[-1]["path"])
    marker = tmp_path / "pwned"
    trapped_pickle(checkpoint / TRAINER_STATE_FILE, marker)

    with pytest.raises(TrainingError, match="corrupt or truncated"):
        load_trainer_state(checkpoint)
    assert main(["train", "--resume", run.id, "--steps", "4"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(checkpoint) in error
    assert not marker.exists()
    assert RunStore().get_run(run.id).status == "completed"  # the refused resume changed nothing


# -----------------------------------------------------------------------------
# What is recorded is private to its owner


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def trained_under_an_open_umask(lmwb_home, tiny_model_dir, tmp_path):
    """A short run trained by a careless shell whose umask would make everything world-readable."""
    from engine.store import RunStore
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    text = tmp_path / "fables.txt"
    text.write_text(FABLES.read_text(encoding="utf-8")[:12_000], encoding="utf-8")
    previous = os.umask(0)
    try:
        config = TrainingConfig(
            model=str(tiny_model_dir),
            dataset=str(text),
            max_steps=2,
            batch_size=2,
            block_size=16,
            warmup_steps=0,
            eval_every=0,
            sample_every=0,
            checkpoint_every=0,
            device="cpu",
        )
        return TrainingJob(config, RunStore()).run()
    finally:
        os.umask(previous)


def test_the_data_directory_and_database_are_private_even_with_an_open_umask(lmwb_home, trained_under_an_open_umask):
    run = trained_under_an_open_umask
    assert mode(lmwb_home) == 0o700
    database = lmwb_home / "workbench.db"
    assert mode(database) == 0o600
    for companion in (Path(f"{database}-wal"), Path(f"{database}-shm")):
        if companion.exists():  # SQLite gives them the database's own mode
            assert mode(companion) == 0o600, companion.name
    for directory in (
        lmwb_home / "runs" / run.id,
        lmwb_home / "runs" / run.id / "checkpoints",
        lmwb_home / "cache" / "tokens",
    ):
        assert mode(directory) == 0o700, directory


def test_every_directory_the_workbench_creates_is_private(lmwb_home, trained_under_an_open_umask):
    # Matters when LMWB_HOME itself was made by the user with mode 0755.
    created = [path for path in lmwb_home.rglob("*") if path.is_dir() and not path.name.startswith("step-")]
    assert {str(path.relative_to(lmwb_home)): oct(mode(path)) for path in created if mode(path) != 0o700} == {}
