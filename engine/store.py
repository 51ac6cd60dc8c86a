"""The run store: one SQLite file that records every run, and the only code that speaks SQL.

A training loop in the app's thread, a headless ``lmwb train`` in another
terminal and the Runs screen all share ``$LMWB_HOME/workbench.db``. So the
database is opened the way concurrent SQLite wants it: WAL (readers never wait
for the writer), a busy timeout (writers queue instead of failing),
``synchronous=NORMAL`` (safe under WAL, fast), foreign keys on, one connection
per thread, and every write in a ``BEGIN IMMEDIATE`` transaction so a
read-then-write never deadlocks with another writer.

The schema grows through small migration functions, each applied once and
recorded in ``_migrations``; see docs/schema.md for the tables and how to query
them with ``sqlite-utils`` or ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import psutil
import sqlite_utils
from sqlite_utils.db import NotFoundError

from engine.errors import StoreError
from engine.home import database_path, ensure_private_dir, workbench_home

# queued: waits its turn; starting: a process was launched for it and is loading.
RunStatus = Literal[
    "queued", "starting", "running", "paused", "completed", "stopped", "failed", "interrupted", "cancelled"
]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
ACTIVE_STATUSES: tuple[RunStatus, ...] = ("starting", "running", "paused")  # a process owns the run
FINISHED_STATUSES: tuple[RunStatus, ...] = ("completed", "stopped", "failed", "interrupted", "cancelled")
ControlAction = Literal["pause", "continue", "stop"]
# Requests a front end writes for a run's process, and the statuses that answer each.
CONTROL_ACTIONS: dict[ControlAction, tuple[RunStatus, ...]] = {
    "pause": ("paused",),
    "continue": ("running",),
    "stop": FINISHED_STATUSES,
}
# The statuses a run can be asked each thing in (a queued run's stop cancels it). The store
# refuses the others with the reason; front ends ask `can_control` to offer only what would work.
CONTROLLABLE_FROM: dict[ControlAction, tuple[RunStatus, ...]] = {
    "pause": ("starting", "running"),
    "continue": ("paused",),
    "stop": ("queued", *ACTIVE_STATUSES),
}
# What runs can be sorted by, each with the direction a person expects first (True: descending:
# newest, most trained first; lowest loss and A-Z first otherwise). The CLI and the Runs screen ask here.
RUN_ORDERINGS = {"created_at": True, "name": False, "status": False, "steps": True, "best_val_loss": False}
# The metric columns, in the order exports show them; other keys go to `extra`.
METRIC_FIELDS = (
    "train_loss",
    "val_loss",
    "val_ppl",
    "val_bpb",
    "lr",
    "tokens_per_sec",
    "grad_norm",
    "tokens",
    "elapsed",
)
# What update_run may change; status, times, pid and host belong to set_status.
UPDATABLE_RUN_FIELDS = (
    "name",
    "model",
    "dataset",
    "config",
    "notes",
    "tags",
    "steps",
    "tokens",
    "best_val_loss",
    "world_size",
    "lora",
)
DEFAULT_BUSY_TIMEOUT = 10.0
# A run recorded by another machine (a shared LMWB_HOME) cannot be checked by
# pid; it counts as gone once its heartbeat is this old.
STALE_HEARTBEAT = timedelta(minutes=10)
LIST_RUNS_HINT = "Run `lmwb runs` to list run ids."
LIST_SWEEPS_HINT = "Run `lmwb sweeps` to list sweep ids."
# Two readings of one process's start time differ by clock-tick rounding only.
PROCESS_START_TOLERANCE = 1.0


# ---------------------------------------------------------------------------
# Migrations: each is applied once, in the order written, and recorded by name.
# Never edit one that has shipped; add a new one.

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[Migration] = []


def migration(function: Migration) -> Migration:
    """Register a schema change; `RunStore` applies it once per database."""
    MIGRATIONS.append(function)
    return function


@migration
def m001_runs(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE runs (
            id            TEXT PRIMARY KEY,
            name          TEXT NOT NULL,
            status        TEXT NOT NULL,
            model         TEXT NOT NULL,
            dataset       TEXT NOT NULL,
            config        TEXT NOT NULL DEFAULT '{}',
            created_at    TEXT NOT NULL,
            started_at    TEXT,
            finished_at   TEXT,
            heartbeat_at  TEXT,
            pid           INTEGER,
            host          TEXT,
            steps         INTEGER NOT NULL DEFAULT 0,
            tokens        INTEGER NOT NULL DEFAULT 0,
            best_val_loss REAL,
            error         TEXT,
            notes         TEXT NOT NULL DEFAULT '',
            tags          TEXT NOT NULL DEFAULT '[]',
            world_size    INTEGER NOT NULL DEFAULT 1,
            lora          INTEGER NOT NULL DEFAULT 0
        )""")


@migration
def m002_metrics_samples_checkpoints(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE metrics (
            run_id         TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step           INTEGER NOT NULL,
            train_loss     REAL,
            val_loss       REAL,
            val_ppl        REAL,
            val_bpb        REAL,
            lr             REAL,
            tokens_per_sec REAL,
            grad_norm      REAL,
            tokens         INTEGER,
            elapsed        REAL,
            extra          TEXT,
            created_at     TEXT NOT NULL,
            PRIMARY KEY (run_id, step)
        )""")
    db.execute("""
        CREATE TABLE samples (
            id         INTEGER PRIMARY KEY,
            run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step       INTEGER NOT NULL,
            prompt     TEXT NOT NULL,
            text       TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX samples_run_step ON samples (run_id, step)")
    db.execute("""
        CREATE TABLE checkpoints (
            run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step       INTEGER NOT NULL,
            path       TEXT NOT NULL,
            val_loss   REAL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, step)
        )""")


@migration
def m003_generations_with_search(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE generations (
            id                INTEGER PRIMARY KEY,
            model             TEXT NOT NULL,
            prompt            TEXT NOT NULL,
            settings          TEXT NOT NULL DEFAULT '{}',
            text              TEXT NOT NULL,
            token_count       INTEGER NOT NULL,
            tokens_per_second REAL,
            finish_reason     TEXT,
            created_at        TEXT NOT NULL
        )""")
    db.table("generations").enable_fts(["prompt", "text"], create_triggers=True)


@migration
def m004_evaluations(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE evaluations (
            id            INTEGER PRIMARY KEY,
            model         TEXT NOT NULL,
            dataset       TEXT NOT NULL,
            split         TEXT NOT NULL,
            loss          REAL,
            perplexity    REAL,
            bits_per_byte REAL,
            tokens        INTEGER,
            created_at    TEXT NOT NULL
        )""")


@migration
def m005_run_processes(db: sqlite_utils.Database) -> None:
    # process_start: when the owning process started (seconds since the epoch), so a
    # reused pid is told apart; control: a pending pause/continue/stop request;
    # progress: the trainer's live progress record (JSON); queued_at: the queue's order.
    for column, kind in (("process_start", "REAL"), ("control", "TEXT"), ("progress", "TEXT"), ("queued_at", "TEXT")):
        db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")


@migration
def m006_sweeps_and_probes(db: sqlite_utils.Database) -> None:
    # A sweep is a grid of runs made by one command: `varied` maps each setting to its list of
    # values, `settings` holds the settings every run shares, `parallel` how many run at once.
    db.execute("""
        CREATE TABLE sweeps (
            id         TEXT PRIMARY KEY,
            name       TEXT NOT NULL,
            varied     TEXT NOT NULL,
            settings   TEXT NOT NULL DEFAULT '{}',
            parallel   INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL
        )""")
    db.execute("ALTER TABLE runs ADD COLUMN sweep_id TEXT REFERENCES sweeps(id)")
    db.execute("CREATE INDEX runs_sweep ON runs (sweep_id)")
    # What the model wrote for each fixed probe prompt at an evaluation step (greedy, so
    # the steps differ only by what the model learned); one row per (run, step, prompt).
    db.execute("""
        CREATE TABLE probes (
            run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step       INTEGER NOT NULL,
            prompt     TEXT NOT NULL,
            text       TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, step, prompt)
        )""")


@migration
def m007_evaluation_split_rule(db: sqlite_utils.Database) -> None:
    # How a "val" evaluation held its validation text out (engine.datasets.SPLIT_CHOICES); NULL for
    # "all". Evaluations made before this column all held it out by position.
    db.execute("ALTER TABLE evaluations ADD COLUMN split_by TEXT")
    db.execute("UPDATE evaluations SET split_by = 'position' WHERE split = 'val'")


# The schema version is the number of migrations; PRAGMA user_version holds it.
SCHEMA_VERSION = len(MIGRATIONS)


# ---------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    """One training run as the store records it: what, where, how far, how well."""

    id: str
    name: str
    status: RunStatus
    model: str
    dataset: str
    config: dict
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    pid: int | None
    host: str | None
    steps: int
    tokens: int
    best_val_loss: float | None
    error: str | None
    notes: str
    tags: list[str]
    world_size: int
    lora: bool
    process_start: float | None = None  # when the owning process started (pid reuse check)
    control: ControlAction | None = None  # a pending request: pause, continue or stop
    progress: dict | None = None  # the trainer's live progress record (TrainingProgress fields)
    queued_at: str | None = None  # when the run joined the queue
    sweep_id: str | None = None  # the sweep that made it, if one did

    def as_dict(self) -> dict:
        """Plain JSON-ready data, for `lmwb runs --json` and exports."""
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> Run:
        """Decode a `runs` row: JSON columns become dict/list, lora a bool."""
        return cls(
            **{
                **row,
                "config": json.loads(row["config"]),
                "tags": json.loads(row["tags"]),
                "lora": bool(row["lora"]),
                "progress": json.loads(row["progress"]) if row.get("progress") else None,
            }
        )


class RunStore:
    """The run database: runs, metrics, samples, checkpoints, generations, evaluations.

    Safe to share between threads (each gets its own connection) and between
    processes (SQLite's WAL and locking do the rest). Rows come back as plain
    dicts with JSON columns decoded; a run comes back as a `Run`.
    """

    def __init__(self, path: Path | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path) if path is not None else database_path()
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._create_private_file()
        self._migrate()

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- runs ---------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str,
        model: str,
        dataset: str,
        config: dict,
        tags=(),
        notes: str = "",
        world_size: int = 1,
        lora: bool = False,
        status: RunStatus = "running",
        sweep_id: str | None = None,
    ) -> Run:
        """Record a new run: owned by this process (`running`; set_status("running") stamps its start),
        claimed by this process to launch one for it (`starting`), or owned by no process until the
        queue starts it (`queued`)."""
        if status not in ("running", "starting", "queued"):
            raise StoreError(f"A new run is running, starting or queued, not {status!r}.")
        now = _now()
        owner = _this_process() if status != "queued" else {"pid": None, "host": None, "process_start": None}
        row = {
            "name": name or f"{model} on {dataset}",
            "status": status,
            "model": str(model),
            "dataset": str(dataset),
            "config": json.dumps(config),
            "created_at": now,
            "heartbeat_at": now,
            **owner,
            "queued_at": now if status == "queued" else None,
            "notes": notes,
            "tags": json.dumps(list(tags)),
            "world_size": world_size,
            "lora": int(lora),
            "sweep_id": sweep_id,
        }
        while True:
            row["id"] = uuid.uuid4().hex[:8]
            try:
                with self._write() as db:
                    db.table("runs").insert(row)
                return self.get_run(row["id"])
            except sqlite3.IntegrityError as exc:
                if "runs.id" not in str(exc):
                    raise
                # one id in four billion is taken: draw another

    def get_run(self, run_id: str) -> Run:
        """The run whose id is, or starts with, `run_id` (as users type short ids)."""
        prefix = run_id.strip().lower()
        if not prefix:
            raise StoreError(f"No run id given. {LIST_RUNS_HINT}")
        rows = self._query("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created_at", (len(prefix), prefix))
        if not rows:
            raise StoreError(f"No run has an id starting with {run_id!r}. {LIST_RUNS_HINT}")
        if len(rows) > 1:
            matches = ", ".join(row["id"] for row in rows[:5])
            raise StoreError(f"{run_id!r} matches {len(rows)} runs ({matches}); type more of the id. {LIST_RUNS_HINT}")
        return Run.from_row(rows[0])

    def list_runs(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        sweep_id: str | None = None,
        order_by: str = "created_at",
        descending: bool = True,
    ) -> list[Run]:
        """Runs filtered by status, by text in name/model/dataset and by sweep, sorted (missing values last)."""
        if order_by not in RUN_ORDERINGS:
            raise StoreError(f"Cannot sort runs by {order_by!r}; choose one of {', '.join(RUN_ORDERINGS)}.")
        clauses, params = [], []
        if status is not None:
            _check_status(status)
            clauses.append("status = ?")
            params.append(status)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(name LIKE ? ESCAPE '\\' OR model LIKE ? ESCAPE '\\' OR dataset LIKE ? ESCAPE '\\')")
            params += [pattern] * 3
        if sweep_id is not None:
            clauses.append("sweep_id = ?")
            params.append(sweep_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        direction = "DESC" if descending else "ASC"
        rows = self._query(
            f"SELECT * FROM runs {where} ORDER BY {order_by} {direction} NULLS LAST, rowid {direction}", params
        )
        return [Run.from_row(row) for row in rows]

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Change a run's descriptive fields or progress (see UPDATABLE_RUN_FIELDS)."""
        unknown = set(fields) - set(UPDATABLE_RUN_FIELDS)
        if unknown:
            raise TypeError(
                f"update_run() cannot change {', '.join(sorted(unknown))}; status goes through set_status()"
            )
        if "name" in fields and not str(fields["name"]).strip():
            raise StoreError("A run's name cannot be empty; type a name.")
        encoded = {key: _encode_run_field(key, value) for key, value in fields.items()}
        with self._write(run_id) as db:
            db.table("runs").update(run_id, encoded)

    def set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """Move a run to `status`: `running` claims it for this process, a finished status stamps the end.

        A pending control request that the new status answers (paused for
        pause, running for continue, any end for stop) is cleared.
        """
        _check_status(status)
        now = _now()
        with self._write(run_id) as db:
            run = db.table("runs").get(run_id)
            changes: dict[str, Any] = {"status": status, "error": error}
            if status == "running":
                changes |= {
                    "started_at": run["started_at"] or now,
                    "finished_at": None,
                    "heartbeat_at": now,
                    **_this_process(),
                }
            elif status in FINISHED_STATUSES:
                changes["finished_at"] = now
            if run["control"] is not None and status in CONTROL_ACTIONS[run["control"]]:
                changes["control"] = None
            db.table("runs").update(run_id, changes)

    def set_owner(self, run_id: str, pid: int) -> None:
        """Hand a starting run to the process launched for it (the launcher claimed it first)."""
        with self._write(run_id) as db:
            db.table("runs").update(
                run_id, {"pid": int(pid), "process_start": process_start_time(pid), "heartbeat_at": _now()}
            )

    def heartbeat(self, run_id: str, *, steps: int, tokens: int, progress: dict | None = None) -> str | None:
        """Say the run is alive, how far it got and (``progress``) what it is doing; return any pending request.

        One transaction, about once a second from the trainer: the stale-run
        sweep reads the heartbeat, front ends read the progress, and the
        trainer reads back the pause/continue/stop request a front end wrote.
        """
        changes: dict[str, Any] = {"heartbeat_at": _now(), "steps": int(steps), "tokens": int(tokens)}
        if progress is not None:
            changes["progress"] = json.dumps(progress, default=_json_safe)
        with self._write(run_id) as db:
            db.table("runs").update(run_id, changes)
            return db.execute("SELECT control FROM runs WHERE id = ?", (run_id,)).fetchone()[0]

    def request_control(self, run_id: str, action: str) -> Run:
        """Ask a run's process to pause, continue or stop (it answers by changing the status).

        A queued run is not running yet: stop cancels it at once. Asking a run
        that cannot do what is asked (pause a finished run, continue a running
        one) raises a StoreError that says its status.
        """
        action = control_action(action)
        run = self.get_run(run_id)
        with self._write(run.id) as db:
            status = db.table("runs").get(run.id)["status"]
            if action == "stop" and status == "queued":
                db.table("runs").update(
                    run.id,
                    {
                        "status": "cancelled",
                        "finished_at": _now(),
                        "control": None,
                        "error": "Cancelled while queued; it never started.",
                    },
                )
                return self.get_run(run.id)
            allowed = CONTROLLABLE_FROM[action]
            if status in CONTROL_ACTIONS[action] or (action == "continue" and status in ("starting", "running")):
                raise StoreError(f"Run {run.id} is {status} already; there is nothing to {action}.")
            if status not in allowed:
                raise StoreError(
                    f"Run {run.id} is {status}, so it cannot be asked to {action}; only a "
                    f"{' or '.join(allowed)} run can. {LIST_RUNS_HINT}"
                )
            db.table("runs").update(run.id, {"control": action})
        return self.get_run(run.id)

    def claim_queued_run(self, slots: int = 1) -> Run | None:
        """Take the first queued run for this process to launch, if fewer runs than its slots are active.

        A sweep's run has its sweep's ``parallel`` slots; any other run has
        ``slots``. One transaction, so two processes that look at the queue at
        once never both start the same run, nor one run each past the free slots.
        """
        with self._write() as db:
            row = db.execute(
                "SELECT runs.id, sweeps.parallel FROM runs LEFT JOIN sweeps ON sweeps.id = runs.sweep_id "
                "WHERE runs.status = 'queued' ORDER BY runs.queued_at, runs.rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            run_id, parallel = row
            placeholders = ", ".join("?" * len(ACTIVE_STATUSES))
            active = db.execute(
                f"SELECT count(*) FROM runs WHERE status IN ({placeholders})", ACTIVE_STATUSES
            ).fetchone()[0]
            if active >= (parallel or slots):
                return None
            db.table("runs").update(run_id, {"status": "starting", "heartbeat_at": _now(), **_this_process()})
        return self.get_run(run_id)

    def reopen_run(self, run_id: str, config: dict, status: RunStatus) -> Run:
        """Take a finished run up again with new settings, to resume it: queued, or starting now for this process."""
        if status not in ("starting", "queued"):
            raise StoreError(f"A run is reopened as starting or queued, not {status!r}.")
        owner = _this_process() if status == "starting" else {"pid": None, "host": None, "process_start": None}
        with self._write(run_id) as db:
            current = db.table("runs").get(run_id)["status"]
            if current not in FINISHED_STATUSES:
                raise StoreError(f"Run {run_id} is {current} already; stop it before starting it again.")
            db.table("runs").update(
                run_id,
                {
                    "status": status,
                    "queued_at": _now(),
                    "config": json.dumps(config),
                    "heartbeat_at": _now(),
                    **owner,
                    "control": None,
                    "error": None,
                    "finished_at": None,
                },
            )
        return self.get_run(run_id)

    def delete_run(self, run_id: str) -> None:
        """Forget a run (id or prefix): its rows and its directory of checkpoints."""
        run = self.get_run(run_id)
        if run.status in ACTIVE_STATUSES and _process_alive(run):
            raise StoreError(
                f"Run {run.id} is still {run.status} (pid {run.pid} on {run.host}); stop it before deleting it."
            )
        with self._write(run.id) as db:
            db.table("runs").delete(run.id)  # metrics, samples and checkpoints cascade
        directory = workbench_home() / "runs" / run.id
        if not directory.exists():
            return
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            raise StoreError(
                f"Run {run.id} is deleted from the database but its files in {directory} "
                f"could not be removed ({exc.strerror}); delete that folder by hand."
            ) from exc

    def mark_interrupted_runs(self) -> list[str]:
        """Mark `interrupted` every running/paused run whose process is gone; return their ids.

        Called at start-up, so a run whose trainer crashed or was killed does
        not stay `running` forever. On this host a run is gone when its pid is
        not alive, or is alive but started at another time than the run's
        process did (the pid was reused); a run from another host when its
        heartbeat is stale.
        """
        placeholders = ", ".join("?" * len(ACTIVE_STATUSES))
        query = f"SELECT * FROM runs WHERE status IN ({placeholders})"
        # Followers call this every few seconds: read first, and take the write lock only when a run looks gone.
        if all(_process_alive(run) for run in map(Run.from_row, self._query(query, ACTIVE_STATUSES))):
            return []
        now = _now()
        with self._write() as db:  # look again under the lock: a run may have ended or moved on meanwhile
            active = self._query(query, ACTIVE_STATUSES)
            gone = [run for run in map(Run.from_row, active) if not _process_alive(run)]
            for run in gone:
                db.table("runs").update(
                    run.id,
                    {
                        "status": "interrupted",
                        "finished_at": now,
                        "control": None,
                        "error": f"The process that ran it (pid {run.pid} on {run.host}) ended without "
                        "finishing; resume it from its last checkpoint.",
                    },
                )
        return [run.id for run in gone]

    # -- metrics, samples, checkpoints ---------------------------------------

    def add_metrics(self, run_id: str, rows: list[dict]) -> None:
        """Write a batch of metric rows in one transaction.

        One row per (run, step): writing a step again fills in or overwrites
        the values given and keeps the others, so a resumed run re-logging the
        steps after its last checkpoint leaves one clean curve. Keys that are
        not metric columns are kept in the row's `extra` JSON.
        """
        if not rows:
            return
        now = _now()
        records = [_metric_record(run_id, row, now) for row in rows]
        columns = ("run_id", "step", *METRIC_FIELDS, "extra", "created_at")
        merge = ",\n".join(f"{name} = coalesce(excluded.{name}, {name})" for name in METRIC_FIELDS)
        sql = (
            f"INSERT INTO metrics ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})\n"
            f"ON CONFLICT (run_id, step) DO UPDATE SET {merge},\n"
            "extra = CASE WHEN excluded.extra IS NULL THEN extra "
            "ELSE json_patch(coalesce(extra, '{}'), excluded.extra) END"
        )
        with self._write(run_id) as db:
            db.conn.executemany(sql, records)

    def metrics(self, run_id: str, after_step: int = -1) -> list[dict]:
        """Metric rows with step > after_step, by step; cheap enough to poll a few times a second."""
        rows = self._query(
            f"SELECT step, {', '.join(METRIC_FIELDS)}, created_at, extra FROM metrics "
            "WHERE run_id = ? AND step > ? ORDER BY step",
            (run_id, after_step),
        )
        for row in rows:
            row.update(json.loads(row.pop("extra") or "{}"))
        return rows

    def add_sample(self, run_id: str, step: int, prompt: str, text: str) -> None:
        """Record text the model wrote at `step`, to watch it learn."""
        with self._write(run_id) as db:
            db.table("samples").insert(
                {"run_id": run_id, "step": int(step), "prompt": prompt, "text": text, "created_at": _now()}
            )

    def samples(self, run_id: str, after_step: int = -1) -> list[dict]:
        """Samples with step > after_step, oldest first: step, prompt, text, created_at."""
        return self._query(
            "SELECT step, prompt, text, created_at FROM samples WHERE run_id = ? AND step > ? ORDER BY step, id",
            (run_id, after_step),
        )

    def add_checkpoint(self, run_id: str, step: int, path: Path | str, val_loss: float | None = None) -> None:
        """Record a checkpoint already renamed into place (a re-save of a step replaces it).

        A checkpoint beside the database is recorded relative to it, so a
        workbench home copied or moved elsewhere (from a GPU box to a laptop,
        say) keeps its checkpoints.
        """
        path = Path(path)
        with contextlib.suppress(ValueError):
            path = path.resolve().relative_to(self.path.parent.resolve())
        with self._write(run_id) as db:
            db.table("checkpoints").insert(
                {
                    "run_id": run_id,
                    "step": int(step),
                    "path": str(path),
                    "val_loss": _as_float(val_loss),
                    "created_at": _now(),
                },
                replace=True,
            )

    def checkpoints(self, run_id: str) -> list[dict]:
        """The run's checkpoints, oldest first: step, path (absolute), val_loss, created_at."""
        rows = self._query(
            "SELECT step, path, val_loss, created_at FROM checkpoints WHERE run_id = ? ORDER BY step", (run_id,)
        )
        home = self.path.resolve().parent
        return [{**row, "path": str(home / row["path"])} for row in rows]  # an absolute path stays as it is

    def remove_checkpoint(self, run_id: str, step: int) -> None:
        """Forget a checkpoint whose files the trainer has rotated away."""
        with self._write(run_id) as db:
            db.execute("DELETE FROM checkpoints WHERE run_id = ? AND step = ?", (run_id, int(step)))

    # -- probes ----------------------------------------------------------------

    def add_probes(self, run_id: str, step: int, completions: dict[str, str]) -> None:
        """Record what the model wrote for each probe prompt at `step` (a step written again is replaced)."""
        now = _now()
        rows = [
            {"run_id": run_id, "step": int(step), "prompt": prompt, "text": text, "created_at": now}
            for prompt, text in completions.items()
        ]
        with self._write(run_id) as db:
            db.table("probes").insert_all(rows, replace=True)

    def probes(self, run_id: str, prompt: str | None = None, after_step: int = -1) -> list[dict]:
        """Probe completions with step > after_step, by step, prompts in the order the run recorded them.

        Each row: step, prompt, text, created_at.
        """
        where, params = "run_id = ? AND step > ?", [run_id, after_step]
        if prompt is not None:
            where += " AND prompt = ?"
            params.append(prompt)
        return self._query(
            f"SELECT step, prompt, text, created_at FROM probes WHERE {where} ORDER BY step, rowid", params
        )

    # -- sweeps ----------------------------------------------------------------

    def create_sweep(self, *, name: str, varied: dict[str, list], settings: dict, parallel: int = 1) -> dict:
        """Record a sweep (its runs are created after it, with its id); return it as a dict."""
        row: dict[str, Any] = {
            "name": name,
            "varied": json.dumps(varied),
            "settings": json.dumps(settings),
            "parallel": int(parallel),
            "created_at": _now(),
        }
        while True:
            row["id"] = uuid.uuid4().hex[:8]
            try:
                with self._write() as db:
                    db.table("sweeps").insert(row)
                return self.get_sweep(row["id"])
            except sqlite3.IntegrityError as exc:
                if "sweeps.id" not in str(exc):
                    raise

    def get_sweep(self, sweep_id: str) -> dict:
        """The sweep whose id is, or starts with, `sweep_id`: id, name, varied, settings, parallel, created_at,
        and its runs counted by status (``statuses``), as ``sweeps()`` gives each."""
        prefix = sweep_id.strip().lower()
        if not prefix:
            raise StoreError(f"No sweep id given. {LIST_SWEEPS_HINT}")
        rows = self._query("SELECT * FROM sweeps WHERE substr(id, 1, ?) = ? ORDER BY created_at", (len(prefix), prefix))
        if not rows:
            raise StoreError(f"No sweep has an id starting with {sweep_id!r}. {LIST_SWEEPS_HINT}")
        if len(rows) > 1:
            matches = ", ".join(row["id"] for row in rows[:5])
            raise StoreError(f"{sweep_id!r} matches {len(rows)} sweeps ({matches}); type more of the id.")
        (sweep,) = self._with_statuses([_sweep_from_row(rows[0])])
        return sweep

    def sweeps(self) -> list[dict]:
        """Every sweep, newest first, with its runs' statuses counted (``statuses``: status → count)."""
        rows = self._query("SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC")
        return self._with_statuses([_sweep_from_row(row) for row in rows])

    def _with_statuses(self, sweeps: list[dict]) -> list[dict]:
        """The sweeps with their runs counted by status, in their ``statuses``."""
        counts = self._query(
            "SELECT sweep_id, status, count(*) AS n FROM runs WHERE sweep_id IS NOT NULL GROUP BY 1, 2"
        )
        by_id = {sweep["id"]: sweep for sweep in sweeps}
        for count in counts:
            if count["sweep_id"] in by_id:
                by_id[count["sweep_id"]]["statuses"][count["status"]] = count["n"]
        return sweeps

    # -- generations and evaluations -----------------------------------------

    def add_generation(
        self,
        *,
        model: str,
        prompt: str,
        settings: dict,
        text: str,
        token_count: int,
        tokens_per_second: float,
        finish_reason: str,
    ) -> int:
        """Log one finished generation; returns its id."""
        with self._write() as db:
            table = db.table("generations").insert(
                {
                    "model": str(model),
                    "prompt": prompt,
                    "settings": json.dumps(settings),
                    "text": text,
                    "token_count": int(token_count),
                    "tokens_per_second": _as_float(tokens_per_second),
                    "finish_reason": finish_reason,
                    "created_at": _now(),
                }
            )
        return _inserted_id(table)

    def generations(self, *, search: str | None = None, limit: int = 100) -> list[dict]:
        """Logged generations, newest first; `search` keeps those whose prompt or text has its words."""
        limit = max(int(limit), 0)
        if search is not None and search.strip():
            # Each word typed must start a word of the prompt or text; FTS
            # operators and punctuation in the search are not special.
            words = re.findall(r"\w+", search)
            if not words:
                return []
            query = " ".join(f'"{word}"*' for word in words)
            with self._sqlite_errors():
                rows = list(self._db.table("generations").search(query, order_by="id DESC", limit=limit))
        else:
            rows = self._query("SELECT * FROM generations ORDER BY id DESC LIMIT ?", (limit,))
        for row in rows:
            row.pop("rowid", None)  # the full-text search adds it
            row["settings"] = json.loads(row["settings"])
        return rows

    def add_evaluation(
        self,
        *,
        model: str,
        dataset: str,
        split: str,
        split_by: str | None,
        loss: float,
        perplexity: float,
        bits_per_byte: float,
        tokens: int,
    ) -> int:
        """Log one evaluation of a model on a dataset split (``split_by``: how "val" was held out); returns its id."""
        with self._write() as db:
            table = db.table("evaluations").insert(
                {
                    "model": str(model),
                    "dataset": str(dataset),
                    "split": split,
                    "split_by": split_by,
                    "loss": _as_float(loss),
                    "perplexity": _as_float(perplexity),
                    "bits_per_byte": _as_float(bits_per_byte),
                    "tokens": int(tokens),
                    "created_at": _now(),
                }
            )
        return _inserted_id(table)

    def evaluations(self, *, limit: int = 100) -> list[dict]:
        """Logged evaluations, newest first, to compare models on the same data."""
        return self._query("SELECT * FROM evaluations ORDER BY id DESC LIMIT ?", (max(int(limit), 0),))

    # -- export --------------------------------------------------------------

    def export_run(self, run_id: str, fmt: str) -> str:
        """A run as text: "json" (run, metrics, samples, checkpoints) or "csv" (metrics with a header)."""
        if fmt not in ("json", "csv"):
            raise StoreError(f"Cannot export as {fmt!r}; choose json or csv.")
        run = self.get_run(run_id)
        metrics = self.metrics(run.id)
        if fmt == "json":
            return json.dumps(
                {
                    "run": run.as_dict(),
                    "metrics": metrics,
                    "samples": self.samples(run.id),
                    "checkpoints": self.checkpoints(run.id),
                },
                indent=2,
            )
        extra_keys = sorted({key for row in metrics for key in row} - {"step", *METRIC_FIELDS, "created_at"})
        out = io.StringIO()
        writer = csv.DictWriter(
            out, fieldnames=["step", *METRIC_FIELDS, *extra_keys, "created_at"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(metrics)
        return out.getvalue()

    # -- connections, transactions, errors ------------------------------------

    @property
    def _db(self) -> sqlite_utils.Database:
        """This thread's connection, opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def _connect(self) -> sqlite_utils.Database:
        with self._sqlite_errors():
            # The timeout is SQLite's busy_timeout: wait for a writer this long.
            db = sqlite_utils.Database(sqlite3.connect(self.path, timeout=self.busy_timeout), execute_plugins=False)
            try:
                db.enable_wal()
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                db.close()
                raise
        return db

    def _create_private_file(self) -> None:
        """Create the database file readable by its owner only, before SQLite opens it."""
        if self.path.exists():
            return
        ensure_private_dir(self.path.parent)
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # another process created it a moment ago
        except OSError as exc:
            raise StoreError(
                f"Cannot create the database {self.path}: {exc.strerror}. "
                "Fix the folder's permissions or set LMWB_HOME to a writable directory."
            ) from exc

    def _migrate(self) -> None:
        """Bring the schema up to date, or refuse a database from a newer lm-workbench."""
        with self._sqlite_errors():
            if not self._pending_migrations(self._db):
                return
        with self._write() as db:
            # Check again under the write lock: another process may have just migrated.
            for apply in self._pending_migrations(db):
                apply(db)
                db.table("_migrations").insert({"name": apply.__name__, "applied_at": _now()})
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _pending_migrations(self, db: sqlite_utils.Database) -> list[Migration]:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        version = db.execute("PRAGMA user_version").fetchone()[0]
        known = {apply.__name__ for apply in MIGRATIONS}
        unknown = applied - known
        if version > SCHEMA_VERSION or unknown:
            found = f"migrations {', '.join(sorted(unknown))}" if unknown else f"schema version {version}"
            raise StoreError(
                f"The database {self.path} was written by a newer version of lm-workbench "
                f"({found}; this version knows schema version {SCHEMA_VERSION}). "
                "Upgrade lm-workbench, or set LMWB_HOME to another directory."
            )
        return [apply for apply in MIGRATIONS if apply.__name__ not in applied]

    @contextmanager
    def _write(self, run_id: str | None = None) -> Iterator[sqlite_utils.Database]:
        """One write transaction that takes the write lock up front (BEGIN IMMEDIATE)."""
        db = self._db
        with self._sqlite_errors(run_id):
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.commit()
            except BaseException:
                db.rollback()
                raise

    def _query(self, sql: str, params: tuple | list = ()) -> list[dict]:
        with self._sqlite_errors():
            cursor = self._db.execute(sql, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextmanager
    def _sqlite_errors(self, run_id: str | None = None) -> Iterator[None]:
        """Turn the SQLite failures a user can meet into StoreErrors that say what to do."""
        try:
            yield
        except NotFoundError as exc:
            raise StoreError(f"No run with id {run_id!r}. {LIST_RUNS_HINT}") from exc
        except sqlite3.Error as exc:
            explained = self._explain(exc, run_id)
            if explained is None:
                raise
            raise explained from exc

    def _explain(self, exc: sqlite3.Error, run_id: str | None) -> StoreError | None:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreError(
                f"The database {self.path} is in use by another process: it stayed locked for "
                f"more than {self.busy_timeout:g} s. Wait for the other lm-workbench to "
                "finish writing (or close it), then try again."
            )
        if "file is not a database" in text or "disk image is malformed" in text:
            return StoreError(
                f"{self.path} is not a usable lm-workbench database (it is damaged or another "
                "kind of file). Move it aside, e.g. rename it to workbench.db.broken, and "
                "lm-workbench will start a new one."
            )
        if "readonly" in text or "unable to open" in text:
            return StoreError(
                f"Cannot write the database {self.path} ({text}). Fix the permissions of "
                f"{self.path.parent} or set LMWB_HOME to a writable directory."
            )
        if "disk is full" in text:
            return StoreError(f"The disk holding {self.path} is full; free some space and try again.")
        if "FOREIGN KEY constraint failed" in text:
            return StoreError(f"No run with id {run_id!r} (was it deleted?). {LIST_RUNS_HINT}")
        return None


# ---------------------------------------------------------------------------
# Helpers


def _inserted_id(table: sqlite_utils.db.Table) -> int:
    """The id SQLite gave the row just inserted (sqlite-utils types it as optional; an insert always sets it)."""
    if table.last_pk is None:
        raise StoreError(f"The database did not return the id of the new {table.name} row.")
    return int(table.last_pk)


def _sweep_from_row(row: dict) -> dict:
    """A `sweeps` row with its JSON decoded, and room for its runs' status counts."""
    return {**row, "varied": json.loads(row["varied"]), "settings": json.loads(row["settings"]), "statuses": {}}


def _now() -> str:
    """Current time as ISO-8601 UTC with milliseconds: sorts as text, parses back."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def control_action(text: str) -> ControlAction:
    """The control action ``text`` names, or a StoreError that lists them."""
    for action in CONTROL_ACTIONS:
        if text == action:
            return action
    raise StoreError(f"Unknown request {text!r}; use one of {', '.join(CONTROL_ACTIONS)}.")


def can_control(status: RunStatus, action: ControlAction) -> bool:
    """Whether a run in ``status`` can be asked to ``action`` (what a front end should offer)."""
    return status in CONTROLLABLE_FROM[action]


def can_resume(status: RunStatus) -> bool:
    """Whether a run in ``status`` may be resumed: its process has ended, and none is queued to start it."""
    return status in FINISHED_STATUSES


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise StoreError(f"Unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}.")


def _as_float(value: Any) -> float | None:
    """Plain float (numpy and torch scalars included) or None."""
    return None if value is None else float(value)


def _encode_run_field(key: str, value: Any) -> Any:
    if key == "config":
        return json.dumps(value)
    if key == "tags":
        return json.dumps(list(value))
    if key in ("steps", "tokens", "world_size", "lora"):
        return int(value)
    if key == "best_val_loss":
        return _as_float(value)
    return str(value)


def _metric_record(run_id: str, row: dict, now: str) -> dict:
    if "step" not in row:
        raise ValueError(f"a metrics row needs a 'step': {row!r}")
    record = {"run_id": run_id, "step": int(row["step"]), "created_at": now}
    for name in METRIC_FIELDS:
        value = row.get(name)
        record[name] = None if value is None else (int(value) if name == "tokens" else float(value))
    extra = {key: _json_safe(value) for key, value in row.items() if key != "step" and key not in METRIC_FIELDS}
    record["extra"] = json.dumps(extra, default=str) if extra else None
    return record


def _json_safe(value: Any) -> Any:
    """A value SQLite's JSON functions accept: scalars (numpy, torch too) as numbers, NaN/inf as text."""
    if value is None or isinstance(value, (str, int, list, dict)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else str(number)


def process_start_time(pid: int | None = None) -> float | None:
    """When process ``pid`` (default: this one) started, in seconds since the epoch; None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` is alive and, when ``started`` is known, is the process that started then.

    A pid is reused once its process is gone, so a live pid alone does not
    prove a run's process lives; its start time does. A zombie (ended, not
    yet reaped by its parent) counts as gone.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # alive, owned by another user
    return started is None or abs(created - started) < PROCESS_START_TOLERANCE


def _this_process() -> dict[str, Any]:
    """The owner fields for a run this process takes: pid, host and start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": process_start_time()}


def _process_alive(run: Run) -> bool:
    """Whether the process that owns an active run still exists (pid, start time, host, heartbeat)."""
    if run.host != socket.gethostname():
        last_sign = datetime.fromisoformat(run.heartbeat_at or run.created_at)
        return datetime.now(timezone.utc) - last_sign < STALE_HEARTBEAT
    if run.pid is None:
        return False
    return process_alive(run.pid, run.process_start)
