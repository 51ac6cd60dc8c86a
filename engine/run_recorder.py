"""The one place a training run writes to the store: metrics in batches, heartbeats, samples, probes, checkpoints.

The loop hands every row here; ``RunRecorder`` batches them into one
transaction a second (or every ``FLUSH_ROWS`` rows), so a crash loses at most
a second of metrics and a front end sees the run live. Under several
processes only rank 0 writes: the others hold a ``SilentRecorder``, which
takes the same calls and writes nothing, so every rank runs the same loop.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from engine.checkpoints import checkpoints_to_remove
from engine.store import RunStatus, RunStore


class RunRecorder:
    """Every write of one run to the store: metrics batched into one transaction, each batch with a heartbeat.

    Rows are flushed once a second or every ``FLUSH_ROWS`` rows, and whenever
    the loop asks (evaluation, checkpoint, pause, the end).
    """

    FLUSH_ROWS = 100
    FLUSH_SECONDS = 1.0

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._rows: list[dict[str, Any]] = []
        self._steps = 0
        self._tokens = 0
        self._last_flush = time.monotonic()

    def add_metrics(self, row: dict[str, Any]) -> None:
        """One step's metrics row (``step`` and ``tokens`` included), written with the next batch."""
        self._rows.append(row)
        self._steps, self._tokens = row["step"], row["tokens"]
        if len(self._rows) >= self.FLUSH_ROWS or time.monotonic() - self._last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the rows held so far, with a heartbeat saying how far the run is."""
        if self._rows:
            self.store.add_metrics(self.run_id, self._rows)
            self._rows = []
        self.store.heartbeat(self.run_id, steps=self._steps, tokens=self._tokens)
        self._last_flush = time.monotonic()

    def set_position(self, steps: int, tokens: int) -> None:
        """How far the run is before its first row (a resumed run): what heartbeats say until then."""
        self._steps, self._tokens = steps, tokens

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        self.store.set_status(self.run_id, status, error=error)

    def add_sample(self, step: int, prompt: str, text: str) -> None:
        self.store.add_sample(self.run_id, step, prompt, text)

    def add_probes(self, step: int, completions: dict[str, str]) -> None:
        """Each probe prompt's completion at ``step`` (a step written again, on resume, is replaced)."""
        self.store.add_probes(self.run_id, step, completions)

    def add_checkpoint(self, step: int, path: Path, val_loss: float | None, kept: int) -> None:
        """Record a checkpoint, then delete those retention lets go (the record goes first, then the files)."""
        self.store.add_checkpoint(self.run_id, step, str(path), val_loss=val_loss)
        checkpoints = self.store.checkpoints(self.run_id)
        for old_step in checkpoints_to_remove(checkpoints, kept):
            old_path = next(Path(row["path"]) for row in checkpoints if row["step"] == old_step)
            self.store.remove_checkpoint(self.run_id, old_step)
            shutil.rmtree(old_path, ignore_errors=True)

    def set_best_val_loss(self, value: float) -> None:
        self.store.update_run(self.run_id, best_val_loss=value)


class SilentRecorder:
    """What ranks other than 0 hold: a ``RunRecorder``'s calls, with nothing written."""

    def add_metrics(self, row: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def set_position(self, steps: int, tokens: int) -> None:
        pass

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        pass

    def add_sample(self, step: int, prompt: str, text: str) -> None:
        pass

    def add_probes(self, step: int, completions: dict[str, str]) -> None:
        pass

    def add_checkpoint(self, step: int, path: Path, val_loss: float | None, kept: int) -> None:
        pass

    def set_best_val_loss(self, value: float) -> None:
        pass
