"""The run store: what a trainer writes, what the Runs screen reads, and what must never be lost.

Every test uses a real database in its private LMWB_HOME; crashes and other
processes are real subprocesses.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlite_utils

from engine.errors import StoreError
from engine.store import MIGRATIONS, SCHEMA_VERSION, RunStore
from tests.conftest import REPO_ROOT


@pytest.fixture
def store() -> RunStore:
    return RunStore()


def new_run(store: RunStore, **overrides) -> str:
    fields = {
        "name": "fox fables",
        "model": "scratch:nano",
        "dataset": "fables",
        "config": {"max_steps": 200, "learning_rate": 3e-4},
    } | overrides
    return store.create_run(**fields).id


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that shares this test's LMWB_HOME."""
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True, timeout=60
    )


# -- runs ---------------------------------------------------------------------


def test_a_new_run_belongs_to_this_process_and_reads_back(store):
    run = store.create_run(
        name="",
        model="gpt2",
        dataset="fables",
        config={"block_size": 64},
        tags=["baseline"],
        notes="first try",
        lora=True,
    )

    assert len(run.id) == 8 and int(run.id, 16) >= 0
    assert run.name == "gpt2 on fables"
    assert run.status == "running" and run.pid == os.getpid() and run.host == socket.gethostname()
    assert run.config == {"block_size": 64} and run.tags == ["baseline"] and run.lora is True
    assert run.started_at is None and run.finished_at is None and run.steps == 0 and run.best_val_loss is None
    assert store.get_run(run.id) == run
    assert run.as_dict()["config"] == {"block_size": 64}


def test_runs_are_found_by_a_unique_prefix_of_their_id(store):
    ids = [new_run(store) for _ in range(17)]  # 17 ids: two must share a first character
    run_id = ids[0]
    assert store.get_run(run_id[:6]).id == run_id
    assert store.get_run(run_id.upper()).id == run_id

    shared = next(i[0] for i in ids if sum(other[0] == i[0] for other in ids) > 1)
    with pytest.raises(StoreError, match=r"matches \d+ runs.*type more of the id.*lmwb runs"):
        store.get_run(shared)
    with pytest.raises(StoreError, match="No run has an id starting with 'zzzz'.*lmwb runs"):
        store.get_run("zzzz")
    with pytest.raises(StoreError, match="No run id given"):
        store.get_run("  ")


def test_runs_are_filtered_by_status_and_text_and_sorted(store):
    fables = new_run(store, name="Fables small", dataset="fables")
    dialogue = new_run(store, name="chat", model="gpt2", dataset="dialogue")
    code = new_run(store, name="100% code", dataset="code")
    store.update_run(fables, best_val_loss=2.5, steps=300)
    store.update_run(dialogue, best_val_loss=1.9, steps=100)
    store.set_status(dialogue, "completed")

    assert [r.id for r in store.list_runs()] == [code, dialogue, fables]  # newest first
    assert [r.id for r in store.list_runs(status="completed")] == [dialogue]
    assert [r.id for r in store.list_runs(search="FAB")] == [fables]
    assert [r.id for r in store.list_runs(search="gpt2")] == [dialogue]
    assert [r.id for r in store.list_runs(search="100%")] == [code]
    assert [r.id for r in store.list_runs(search="%")] == [code]  # % is a character, not a wildcard
    # best first, and runs without a validation loss last either way
    assert [r.id for r in store.list_runs(order_by="best_val_loss", descending=False)] == [dialogue, fables, code]
    assert [r.id for r in store.list_runs(order_by="best_val_loss")] == [fables, dialogue, code]
    assert [r.id for r in store.list_runs(order_by="steps")] == [fables, dialogue, code]
    assert [r.name for r in store.list_runs(order_by="name", descending=False)] == ["100% code", "Fables small", "chat"]
    with pytest.raises(StoreError, match="Cannot sort runs by 'pid'; choose one of created_at, name"):
        store.list_runs(order_by="pid")
    with pytest.raises(StoreError, match="Unknown run status 'done'"):
        store.list_runs(status="done")


def test_a_run_is_renamed_annotated_and_its_progress_recorded(store):
    run_id = new_run(store)
    store.update_run(run_id, name="renamed", notes="lr too high?", tags=["sweep", "lr"], config={"learning_rate": 1e-3})
    store.heartbeat(run_id, steps=40, tokens=40 * 8 * 128)

    run = store.get_run(run_id)
    assert (run.name, run.notes, run.tags, run.config) == (
        "renamed",
        "lr too high?",
        ["sweep", "lr"],
        {"learning_rate": 1e-3},
    )
    assert (run.steps, run.tokens) == (40, 40960) and run.heartbeat_at >= run.created_at
    with pytest.raises(StoreError, match="name cannot be empty"):
        store.update_run(run_id, name=" ")
    with pytest.raises(TypeError, match="set_status"):
        store.update_run(run_id, status="completed")
    with pytest.raises(StoreError, match="No run with id 'nothere'"):
        store.heartbeat("nothere", steps=1, tokens=1)


def test_status_changes_stamp_the_start_and_end_of_a_run(store):
    run_id = new_run(store)
    store.set_status(run_id, "running")  # the model is loaded and the first step begins
    started = store.get_run(run_id).started_at
    assert started >= store.get_run(run_id).created_at

    store.set_status(run_id, "paused")
    assert store.get_run(run_id).finished_at is None
    store.set_status(run_id, "failed", error="CUDA out of memory: lower batch_size")
    failed = store.get_run(run_id)
    assert failed.status == "failed" and failed.finished_at and failed.error.startswith("CUDA out of memory")

    store.set_status(run_id, "running")  # resumed
    resumed = store.get_run(run_id)
    assert resumed.started_at == started and resumed.finished_at is None and resumed.error is None

    store.set_status(run_id, "completed")
    assert store.get_run(run_id).finished_at >= started
    with pytest.raises(StoreError, match="Unknown run status 'finished'; use one of queued, starting, running"):
        store.set_status(run_id, "finished")
    with pytest.raises(StoreError, match="No run with id 'feedbeef'"):
        store.set_status("feedbeef", "stopped")


# -- metrics, samples, checkpoints ----------------------------------------------


def test_metrics_are_written_in_batches_and_read_after_a_step(store):
    run_id = new_run(store)
    store.add_metrics(
        run_id,
        [
            {
                "step": s,
                "train_loss": 5.0 - s / 100,
                "lr": 3e-4,
                "tokens": s * 1024,
                "tokens_per_sec": 900.0,
                "grad_norm": 1.2,
                "elapsed": s / 10,
            }
            for s in range(1, 51)
        ],
    )
    store.add_metrics(run_id, [{"step": 50, "val_loss": 4.6, "val_ppl": 99.5, "val_bpb": 1.8, "mfu": 0.31}])

    rows = store.metrics(run_id)
    assert [r["step"] for r in rows] == list(range(1, 51))
    assert store.metrics(run_id, after_step=47) == rows[-3:]
    last = rows[-1]
    # the validation row filled in step 50 without erasing its training values
    assert (last["train_loss"], last["val_loss"], last["val_ppl"], last["val_bpb"]) == (4.5, 4.6, 99.5, 1.8)
    assert last["tokens"] == 50 * 1024 and last["mfu"] == 0.31  # unknown keys are kept, not dropped
    assert "mfu" not in rows[0]

    store.add_metrics(run_id, [{"step": 51, "train_loss": float("nan"), "loss_scale": float("inf")}])
    store.add_metrics(run_id, [{"step": 51, "loss_scale": float("nan"), "skipped": True}])  # a diverged step
    diverged = store.metrics(run_id, after_step=50)[0]
    assert diverged["train_loss"] is None  # SQLite has no NaN: it is stored as NULL
    assert (diverged["loss_scale"], diverged["skipped"]) == ("nan", True)
    assert store.metrics("otherrun") == []


def test_a_resumed_run_re_logging_steps_leaves_one_clean_curve(store):
    run_id = new_run(store)
    store.add_metrics(run_id, [{"step": s, "train_loss": 3.0} for s in range(1, 11)])
    store.add_metrics(run_id, [{"step": s, "train_loss": 2.0} for s in range(6, 16)])

    rows = store.metrics(run_id)
    assert [r["step"] for r in rows] == list(range(1, 16))
    assert [r["train_loss"] for r in rows] == [3.0] * 5 + [2.0] * 10


def test_metrics_for_a_deleted_or_unknown_run_are_refused_clearly(store):
    with pytest.raises(StoreError, match="No run with id 'abcdef12' \\(was it deleted\\?\\)"):
        store.add_metrics("abcdef12", [{"step": 1, "train_loss": 1.0}])
    run_id = new_run(store)
    with pytest.raises(ValueError, match="needs a 'step'"):
        store.add_metrics(run_id, [{"train_loss": 1.0}])


def test_samples_and_checkpoints_are_kept_in_step_order(store, lmwb_home):
    run_id = new_run(store)
    store.add_sample(run_id, 100, "Once upon a time", "Once upon a time the fox")
    store.add_sample(run_id, 200, "Once upon a time", "Once upon a time there was a crow")
    step_100 = lmwb_home / "runs" / run_id / "checkpoints" / "step-100"
    store.add_checkpoint(run_id, 100, step_100, val_loss=3.2)
    store.add_checkpoint(run_id, 200, str(step_100.with_name("step-200")))
    store.add_checkpoint(run_id, 100, step_100, val_loss=3.1)  # saved again after a resume

    assert [(s["step"], s["text"]) for s in store.samples(run_id)] == [
        (100, "Once upon a time the fox"),
        (200, "Once upon a time there was a crow"),
    ]
    assert [s["step"] for s in store.samples(run_id, after_step=100)] == [200]
    checkpoints = store.checkpoints(run_id)
    assert [(c["step"], c["path"], c["val_loss"]) for c in checkpoints] == [
        (100, str(step_100), 3.1),
        (200, str(step_100.with_name("step-200")), None),
    ]

    store.remove_checkpoint(run_id, 100)
    assert [c["step"] for c in store.checkpoints(run_id)] == [200]


def test_checkpoints_move_with_the_workbench_home(tmp_path):
    before, after = tmp_path / "gpu-box", tmp_path / "laptop"
    store = RunStore(before / "workbench.db")
    run_id = new_run(store)
    inside = before / "runs" / run_id / "checkpoints" / "step-10"
    inside.mkdir(parents=True)
    elsewhere = tmp_path / "exported" / "step-20"  # outside the home: kept as written
    store.add_checkpoint(run_id, 10, inside)
    store.add_checkpoint(run_id, 20, elsewhere)
    store.close()

    before.rename(after)  # rsync'd, moved, or a new LMWB_HOME
    paths = [c["path"] for c in RunStore(after / "workbench.db").checkpoints(run_id)]
    assert paths == [str(after / "runs" / run_id / "checkpoints" / "step-10"), str(elsewhere)]
    assert Path(paths[0]).is_dir()


# -- generations and evaluations --------------------------------------------------


def test_generations_are_logged_and_found_by_words_in_prompt_or_text(store):
    def log(prompt, text):
        return store.add_generation(
            model="gpt2",
            prompt=prompt,
            settings={"temperature": 0.8},
            text=text,
            token_count=len(text.split()),
            tokens_per_second=41.5,
            finish_reason="length",
        )

    fox = log("The fox", "The fox jumped over the fence.")
    crow = log("A crow", "A crow sat on the mill and sang.")
    both = log("Fable:", "The crow and the fox shared the cheese.")

    assert [g["id"] for g in store.generations()] == [both, crow, fox]
    assert [g["id"] for g in store.generations(search="fox")] == [both, fox]
    assert [g["id"] for g in store.generations(search="fox crow")] == [both]
    assert [g["id"] for g in store.generations(search="fabl")] == [both]  # words are matched as typed so far
    assert [g["id"] for g in store.generations(search="jump")] == [fox]
    assert [g["id"] for g in store.generations(limit=1)] == [both]
    for odd in ['"', "fox OR", "NOT", "a*(", "'; DROP TABLE runs; --"]:
        store.generations(search=odd)  # FTS syntax in user text is never an error
    assert store.generations(search="?!") == []
    logged = store.generations(search="jumped")[0]
    assert logged["settings"] == {"temperature": 0.8} and logged["finish_reason"] == "length"
    assert logged["token_count"] == 6 and logged["tokens_per_second"] == 41.5


def test_evaluations_are_logged_newest_first(store):
    first = store.add_evaluation(
        model="gpt2", dataset="fables", split="all", split_by=None, loss=3.5, perplexity=33.1, bits_per_byte=1.4,
        tokens=20_000,
    )  # fmt: skip
    second = store.add_evaluation(
        model="run:ab12cd34", dataset="fables", split="val", split_by="document", loss=2.9, perplexity=18.2,
        bits_per_byte=1.1, tokens=20_000,
    )  # fmt: skip
    rows = store.evaluations()
    assert [r["id"] for r in rows] == [second, first]
    assert (rows[0]["model"], rows[0]["loss"], rows[0]["perplexity"]) == ("run:ab12cd34", 2.9, 18.2)
    assert [(r["split"], r["split_by"]) for r in rows] == [("val", "document"), ("all", None)]


def test_evaluations_from_before_the_split_rule_was_recorded_read_as_held_out_by_position(store):
    with sqlite3.connect(store.path) as conn:  # a database from before m007, with one evaluation of each split
        conn.execute("ALTER TABLE evaluations DROP COLUMN split_by")
        conn.execute("DELETE FROM _migrations WHERE name = 'm007_evaluation_split_rule'")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
        for split in ("val", "all"):
            conn.execute(
                "INSERT INTO evaluations (model, dataset, split, loss, perplexity, bits_per_byte, tokens, created_at)"
                " VALUES ('gpt2', 'fables', ?, 3.0, 20.1, 1.2, 100, '2026-12-01T00:00:00')",
                (split,),
            )

    rows = RunStore().evaluations()
    assert [(r["split"], r["split_by"]) for r in rows] == [("all", None), ("val", "position")]


# -- export and delete ------------------------------------------------------------


def test_a_run_exports_as_json_and_csv(store):
    run_id = new_run(store)
    store.add_metrics(
        run_id, [{"step": 1, "train_loss": 4.0}, {"step": 2, "train_loss": 3.5, "val_loss": 3.7, "mfu": 0.2}]
    )
    store.add_sample(run_id, 2, "The", "The fox")
    store.add_checkpoint(run_id, 2, "/tmp/step-2", val_loss=3.7)

    exported = json.loads(store.export_run(run_id[:5], "json"))
    assert exported["run"]["id"] == run_id and exported["run"]["config"]["max_steps"] == 200
    assert exported["metrics"] == store.metrics(run_id)
    assert exported["samples"][0]["text"] == "The fox"
    assert exported["checkpoints"][0]["path"] == "/tmp/step-2"

    table = list(csv.DictReader(io.StringIO(store.export_run(run_id, "csv"))))
    assert [row["step"] for row in table] == ["1", "2"]
    assert table[1]["val_loss"] == "3.7" and table[1]["mfu"] == "0.2" and table[0]["val_loss"] == ""
    assert list(table[0])[:3] == ["step", "train_loss", "val_loss"]
    with pytest.raises(StoreError, match="Cannot export as 'xml'; choose json or csv"):
        store.export_run(run_id, "xml")


def test_deleting_a_run_removes_its_rows_and_its_files(store, lmwb_home):
    run_id = new_run(store)
    store.add_metrics(run_id, [{"step": 1, "train_loss": 4.0}])
    store.add_sample(run_id, 1, "The", "The fox")
    checkpoint = lmwb_home / "runs" / run_id / "checkpoints" / "step-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    store.add_checkpoint(run_id, 1, checkpoint)
    keep = new_run(store)
    store.add_metrics(keep, [{"step": 1, "train_loss": 4.0}])

    with pytest.raises(StoreError, match=f"Run {run_id} is still running .*stop it before deleting it"):
        store.delete_run(run_id)
    store.set_status(run_id, "stopped")
    store.delete_run(run_id[:6])

    with pytest.raises(StoreError, match="No run has an id starting with"):
        store.get_run(run_id)
    assert not (lmwb_home / "runs" / run_id).exists()
    db = sqlite_utils.Database(store.path)
    for table in ("metrics", "samples", "checkpoints"):
        assert db[table].count_where("run_id = ?", [run_id]) == 0
    assert len(store.metrics(keep)) == 1


# -- the database file ---------------------------------------------------------


def test_the_database_is_private_to_its_owner(store, lmwb_home):
    run_id = new_run(store)
    store.add_metrics(run_id, [{"step": 1, "train_loss": 4.0}])
    assert store.path == lmwb_home / "workbench.db"
    for path in lmwb_home.glob("workbench.db*"):  # the -wal and -shm files too
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert lmwb_home.stat().st_mode & 0o777 == 0o700


def test_the_database_is_a_plain_sqlite_file_users_can_query(store):
    run_id = new_run(store)
    store.add_metrics(run_id, [{"step": 1, "train_loss": 4.0}])
    store.add_generation(
        model="gpt2",
        prompt="The fox",
        settings={},
        text="ran away",
        token_count=2,
        tokens_per_second=10.0,
        finish_reason="eos",
    )

    db = sqlite_utils.Database(store.path)
    assert [row["id"] for row in db["runs"].rows] == [run_id]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [row["text"] for row in db["generations"].search("fox")] == ["ran away"]
    assert next(db.query("SELECT count(*) AS n FROM metrics WHERE run_id = ?", [run_id]))["n"] == 1


def test_migrations_are_applied_once_and_recorded(store):
    names = [apply.__name__ for apply in MIGRATIONS]
    db = sqlite_utils.Database(store.path)
    recorded = list(db["_migrations"].rows)
    assert [row["name"] for row in recorded] == names
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(names)

    run_id = new_run(store)
    RunStore()  # opening again applies nothing and loses nothing
    assert list(db["_migrations"].rows) == recorded
    assert store.get_run(run_id).id == run_id


def test_a_database_missing_a_later_migration_is_brought_up_to_date(store):
    run_id = new_run(store)
    with sqlite3.connect(store.path) as conn:  # a database without the evaluations table and its later column
        conn.execute("DROP TABLE evaluations")
        conn.execute("DELETE FROM _migrations WHERE name IN ('m004_evaluations', 'm007_evaluation_split_rule')")
        conn.execute("PRAGMA user_version = 3")

    upgraded = RunStore()
    upgraded.add_evaluation(
        model="gpt2", dataset="fables", split="val", split_by="position", loss=3.0, perplexity=20.1,
        bits_per_byte=1.2, tokens=100,
    )  # fmt: skip
    assert len(upgraded.evaluations()) == 1 and upgraded.get_run(run_id).id == run_id


@pytest.mark.parametrize(
    "newer",
    [
        "INSERT INTO _migrations VALUES ('m042_future_feature', '2031-01-01')",
        f"PRAGMA user_version = {SCHEMA_VERSION + 1}",
    ],
)
def test_a_database_from_a_newer_version_is_refused(store, newer):
    run_id = new_run(store)
    with sqlite3.connect(store.path) as conn:
        conn.execute(newer)

    with pytest.raises(StoreError, match="written by a newer version of lm-workbench.*Upgrade lm-workbench"):
        RunStore()
    with sqlite3.connect(store.path) as conn:  # refused without being touched
        assert conn.execute("SELECT id FROM runs").fetchall() == [(run_id,)]


def test_a_corrupt_database_file_is_refused_with_advice(lmwb_home):
    lmwb_home.mkdir()
    (lmwb_home / "workbench.db").write_bytes(os.urandom(8192))

    with pytest.raises(StoreError, match="workbench.db is not a usable lm-workbench database.*Move it aside"):
        RunStore()


def test_an_unusable_data_directory_is_explained(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("I am a file")
    monkeypatch.setenv("LMWB_HOME", str(not_a_folder))
    with pytest.raises(StoreError, match="is a file, not a directory.*set LMWB_HOME to a directory"):
        RunStore()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_home_is_explained(lmwb_home):
    RunStore()
    lmwb_home.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable.*LMWB_HOME"):
            RunStore()
    finally:
        lmwb_home.chmod(0o700)


def test_a_database_locked_too_long_says_it_is_in_use(store):
    run_id = new_run(store)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing and does not let go
    try:
        impatient = RunStore(busy_timeout=0.2)
        assert impatient.get_run(run_id).id == run_id  # reading still works under WAL
        with pytest.raises(StoreError, match="is in use by another process.*more than 0.2 s"):
            impatient.add_metrics(run_id, [{"step": 1, "train_loss": 4.0}])
    finally:
        other.execute("ROLLBACK")
        other.close()
    impatient.add_metrics(run_id, [{"step": 1, "train_loss": 4.0}])  # and nothing is stuck afterwards
    assert len(store.metrics(run_id)) == 1


# -- crashes and concurrency -------------------------------------------------------

CRASHED_TRAINER = """
from engine.store import RunStore
store = RunStore()
running = store.create_run(name="crashed", model="scratch:nano", dataset="fables", config={})
paused = store.create_run(name="paused then crashed", model="scratch:nano", dataset="fables", config={})
store.set_status(paused.id, "paused")
print(running.id, paused.id)
"""


def test_runs_whose_process_is_gone_are_marked_interrupted(store):
    dead_running, dead_paused = run_python(CRASHED_TRAINER).stdout.split()
    alive_here = new_run(store, name="still training in this process")
    finished = new_run(store)
    store.set_status(finished, "completed")
    stale_remote = new_run(store, name="another machine, silent for an hour")
    fresh_remote = new_run(store, name="another machine, beating")
    an_hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    with sqlite3.connect(store.path) as conn:  # as a trainer on a shared LMWB_HOME would have written them
        conn.execute("UPDATE runs SET host = 'gpu-box', heartbeat_at = ? WHERE id = ?", (an_hour_ago, stale_remote))
        conn.execute("UPDATE runs SET host = 'gpu-box' WHERE id = ?", (fresh_remote,))

    swept = store.mark_interrupted_runs()

    assert sorted(swept) == sorted([dead_running, dead_paused, stale_remote])
    for run_id in swept:
        run = store.get_run(run_id)
        assert run.status == "interrupted" and run.finished_at
        assert "ended without finishing; resume it" in run.error
    assert {store.get_run(i).status for i in (alive_here, fresh_remote)} == {"running"}
    assert store.get_run(finished).status == "completed"
    assert store.mark_interrupted_runs() == []


def test_two_threads_writing_metrics_at_once_lose_nothing(store):
    runs = [new_run(store), new_run(store)]
    errors: list[BaseException] = []
    steps, batch = 1500, 10

    def trainer(run_id: str) -> None:
        try:
            for start in range(0, steps, batch):
                store.add_metrics(run_id, [{"step": s, "train_loss": 1 / (s + 1)} for s in range(start, start + batch)])
                store.heartbeat(run_id, steps=start + batch, tokens=0)
        except BaseException as exc:  # noqa: BLE001 - collected, so the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=trainer, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):  # the UI thread polls meanwhile
        for run_id in runs:
            store.metrics(run_id, after_step=steps - 50)
    for thread in threads:
        thread.join()

    assert errors == []
    for run_id in runs:
        assert [row["step"] for row in store.metrics(run_id)] == list(range(steps))
        assert store.get_run(run_id).steps == steps


HEADLESS_TRAINER = """
import sys
from engine.store import RunStore
store = RunStore()
run_id, steps = sys.argv[1], int(sys.argv[2])
for start in range(0, steps, 20):
    store.add_metrics(run_id, [{"step": s, "train_loss": 1 / (s + 1)} for s in range(start, start + 20)])
    store.heartbeat(run_id, steps=start + 20, tokens=0)
"""


def test_a_run_written_by_another_process_shows_up_live(store):
    run_id = new_run(store)
    steps = 2000
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", HEADLESS_TRAINER, run_id, str(steps)], env=env, stderr=subprocess.PIPE, text=True
    )
    seen: list[int] = []
    reads_while_writing = 0
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        seen += [row["step"] for row in store.metrics(run_id, after_step=seen[-1] if seen else -1)]
        reads_while_writing += 1
        time.sleep(0.005)
    _, stderr = writer.communicate(timeout=60)
    seen += [row["step"] for row in store.metrics(run_id, after_step=seen[-1] if seen else -1)]

    assert writer.returncode == 0, stderr
    assert seen == list(range(steps))  # every row, once, in order
    assert reads_while_writing > 1
    assert store.get_run(run_id).steps == steps
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- sweeps and probes ----------------------------------------------------------


def test_a_sweep_groups_its_runs_and_counts_their_statuses(store):
    sweep = store.create_sweep(name="lr", varied={"learning_rate": [1e-3, 3e-4]}, settings={"max_steps": 5}, parallel=2)
    assert sweep["varied"] == {"learning_rate": [1e-3, 3e-4]} and sweep["parallel"] == 2
    first = new_run(store, sweep_id=sweep["id"], status="queued")
    second = new_run(store, sweep_id=sweep["id"], status="queued")
    new_run(store)  # not in the sweep
    assert [run.id for run in store.list_runs(sweep_id=sweep["id"], descending=False)] == [first, second]
    assert store.get_run(first).sweep_id == sweep["id"]
    assert store.get_sweep(sweep["id"][:3])["id"] == sweep["id"]
    (listed,) = store.sweeps()
    assert listed["statuses"] == {"queued": 2}
    with pytest.raises(StoreError, match="No sweep has an id starting with 'zz'. Run `lmwb sweeps`"):
        store.get_sweep("zz")


def test_one_sweep_comes_with_its_runs_counted_by_status(store):
    sweep = store.create_sweep(name="lr", varied={"learning_rate": [1e-3, 3e-4]}, settings={})
    assert sweep["statuses"] == {}
    done = new_run(store, sweep_id=sweep["id"])
    new_run(store, sweep_id=sweep["id"], status="queued")
    store.set_status(done, "completed")
    new_run(store, status="queued")  # not in the sweep
    assert store.get_sweep(sweep["id"])["statuses"] == {"completed": 1, "queued": 1}
    assert store.sweeps()[0]["statuses"] == {"completed": 1, "queued": 1}


def test_a_sweeps_runs_start_as_many_at_once_as_it_asks(store):
    sweep = store.create_sweep(name="grid", varied={"batch_size": [4, 8, 16]}, settings={}, parallel=2)
    queued = [new_run(store, sweep_id=sweep["id"], status="queued") for _ in range(3)]
    assert store.claim_queued_run().id == queued[0]
    assert store.claim_queued_run().id == queued[1]  # the sweep's second slot
    assert store.claim_queued_run() is None  # two active: its third waits
    plain = new_run(store, status="queued")
    store.set_status(queued[0], "completed")
    store.set_status(queued[1], "completed")
    assert store.claim_queued_run().id == queued[2]
    assert store.claim_queued_run() is None  # a run outside the sweep keeps the default single slot
    store.set_status(queued[2], "completed")
    assert store.claim_queued_run().id == plain


def test_probes_are_kept_by_step_and_a_step_written_again_is_replaced(store):
    run_id = new_run(store)
    store.add_probes(run_id, 10, {"Once upon": " a time", "The fox": " ran"})
    store.add_probes(run_id, 20, {"Once upon": " a hill", "The fox": " ran"})
    store.add_probes(run_id, 20, {"Once upon": " a hill top", "The fox": " ran off"})  # resumed, re-evaluated
    rows = store.probes(run_id)
    assert [(row["step"], row["prompt"], row["text"]) for row in rows] == [
        (10, "Once upon", " a time"),
        (10, "The fox", " ran"),
        (20, "Once upon", " a hill top"),
        (20, "The fox", " ran off"),
    ]
    assert [row["text"] for row in store.probes(run_id, prompt="The fox")] == [" ran", " ran off"]
    assert [(row["step"], row["prompt"]) for row in store.probes(run_id, after_step=10)] == [
        (20, "Once upon"),
        (20, "The fox"),
    ]
    store.set_status(run_id, "completed")
    store.delete_run(run_id)
    assert store.probes(run_id) == []
