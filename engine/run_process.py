"""A run is a process: launching one detached, the queue, pause/continue/stop requests, and live progress.

Whoever starts a run (the Train screen, ``lmwb train --detach``, the queue)
starts it here, as ``python -m engine.run_process RUN_ID``: a process in a
session of its own, with no terminal, its output in
``$LMWB_HOME/runs/<id>/train.log``. Closing the app or losing the SSH
connection never reaches it.

The store is the only link between a run and any front end:

- the run's process writes its metrics, samples and checkpoints there, and,
  twice a second, a heartbeat with its live progress (``TrainingProgress``);
- a front end writes a request (pause, continue, stop) on the run's row; the
  process reads it back with its heartbeat, acts on it between steps, and
  answers by changing the run's status (``control_run`` waits for that);
- a queued run is started, one at a time, by whoever sees a free slot: a run
  process as it ends, ``lmwb train --queue``, or anyone who checks the runs
  (``check_runs``). There is no daemon.

This module imports no torch: the CLI and the app use it to follow and
control runs without loading a model.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from engine.errors import StoreError, TrainingError, WorkbenchError
from engine.home import ensure_private_dir, run_dir
from engine.store import (
    CONTROL_ACTIONS,
    FINISHED_STATUSES,
    Run,
    RunStatus,
    RunStore,
    can_resume,
    control_action,
)

if TYPE_CHECKING:
    from engine.training_config import TrainingConfig

LOG_FILE = "train.log"
ANSWER_TIMEOUT = 30.0  # seconds a run has to answer a request before the asker gives up
PULSE_INTERVAL = 0.5  # seconds between a run's heartbeats (progress out, requests in)
QUEUE_SLOTS = 1  # queued runs start while fewer runs than this are active
POLL_INTERVAL = 0.2  # seconds between reads while waiting for an answer


@dataclass(frozen=True)
class TrainingProgress:
    """A snapshot of a run, replaced whole after every step, so any thread may read it at any time.

    The run's process writes it to the store with each heartbeat; a front end
    reads it back with ``progress_of(run)``.
    """

    step: int = 0
    max_steps: int = 0  # for a run planned on time, the steps its budget will reach at the pace so far
    steps_estimated: bool = False  # max_steps is that estimate
    tokens: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_sec: float = 0.0
    eta_seconds: float | None = None
    elapsed: float = 0.0  # seconds of training in the run so far, pauses not counted
    status: RunStatus = "starting"
    phase: str = ""  # what it does now: "Tokenizing fables: 40%", training, evaluating, ...
    message: str = ""  # the last thing it said: a checkpoint saved, how it ended
    gpu_memory_bytes: int | None = None  # peak GPU memory the run has allocated (None off CUDA)
    mfu: float | None = None  # model FLOPs utilisation (0.4: 40 %) on a GPU of known peak; None elsewhere

    def as_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def progress_of(run: Run) -> TrainingProgress | None:
    """The progress record the run's process last wrote (None before its first heartbeat)."""
    if not run.progress:
        return None
    known = {field.name for field in fields(TrainingProgress)}
    return TrainingProgress(**{key: value for key, value in run.progress.items() if key in known})


# ---------------------------------------------------------------------------
# Starting runs: now, or in the queue


def submit_run(
    config: TrainingConfig,
    store: RunStore,
    *,
    resume_run: str | None = None,
    nproc: int | None = None,
    queue: bool = False,
    sweep_id: str | None = None,
) -> Run:
    """Check the settings, record the run, and start its process now (or queue it); return the run.

    What can be checked quickly is checked here, before anything is
    recorded: a new run as ``check_new_run`` does, a resumed run's settings,
    dataset, status and process count (``nproc`` left out: 1 for a new run,
    the run's own for a resumed one). Errors found later (a dataset too
    small, a model that fails to load) end the run as ``failed`` with their
    message, which its process writes. ``sweep_id`` tags a new run as one of
    that sweep's (engine.sweeps).
    """
    status: RunStatus = "queued" if queue else "starting"
    if resume_run is None:
        check_new_run(config, store)
        run = store.create_run(
            name=config.name,
            model=config.model,
            dataset=config.dataset,
            config=config.as_dict(),
            world_size=nproc or 1,
            lora=config.lora,
            status=status,
            sweep_id=sweep_id,
        )
    else:
        from engine.datasets import open_dataset

        config.validate()
        open_dataset(config.dataset, config.dataset_field, config.dataset_split)
        run = _check_resumable(store.get_run(resume_run), config, nproc, store)
        run = store.reopen_run(run.id, config.as_dict(), status)
    if queue:
        start_queued_runs(store)
    else:
        launch(run, store)
    return store.get_run(run.id)


def check_new_run(config: TrainingConfig, store: RunStore) -> None:
    """What a new run must pass before it is recorded: its settings, its dataset's path, and its block
    size against the model's context (read from the model's config on disk, when it is there)."""
    from engine.datasets import open_dataset
    from engine.model_source import context_length_on_disk
    from engine.training_config import check_block_size

    config.validate()
    open_dataset(config.dataset, config.dataset_field, config.dataset_split)
    check_block_size(config.block_size, context_length_on_disk(config.model, store))


def _check_resumable(run: Run, config: TrainingConfig, nproc: int | None, store: RunStore) -> Run:
    """Refuse, before anything changes, a resume that its process would refuse."""
    if not can_resume(run.status):
        raise TrainingError(f"Run {run.id} is {run.status} already; stop it before resuming it.")
    if nproc is not None and run.world_size != nproc:
        raise TrainingError(
            f"Run {run.id} was trained as {run.world_size} process(es); resume it as "
            f"{run.world_size} (lmwb train --resume {run.id} --nproc {run.world_size})."
        )
    if not store.checkpoints(run.id):
        raise TrainingError(f"Run {run.id} has no checkpoint to resume from; start a new run instead.")
    from engine.training_config import check_room_to_resume

    progress = progress_of(run)
    check_room_to_resume(config, run.id, run.steps, progress.elapsed if progress is not None else 0.0)
    return run


def launch(run: Run, store: RunStore) -> int:
    """Start the process that trains ``run`` (already claimed: status starting); return its pid.

    Its own session (``start_new_session``): no controlling terminal, so a
    hang-up, the app quitting or the terminal closing never reaches it. It
    works in this process's directory, so relative dataset and model paths
    mean what they meant here.
    """
    log_path = ensure_private_dir(run_dir(run.id)) / LOG_FILE
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "engine.run_process", run.id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(log)
    except OSError as exc:
        message = f"Could not start the run's process: {exc.strerror or exc}."
        store.set_status(run.id, "failed", error=message)
        raise TrainingError(f"{message} Its log would have been {log_path}.") from exc
    store.set_owner(run.id, process.pid)
    # Reap it if this process outlives it, so it does not linger as a zombie.
    threading.Thread(target=process.wait, name=f"reap-{run.id}", daemon=True).start()
    return process.pid


def start_queued_runs(store: RunStore, slots: int = QUEUE_SLOTS) -> list[Run]:
    """Launch queued runs, oldest first, while fewer than ``slots`` runs are active; return those launched."""
    launched = []
    while (run := store.claim_queued_run(slots)) is not None:
        with contextlib.suppress(TrainingError):  # recorded as failed; the next in line goes on
            launch(run, store)
        launched.append(run)
    return launched


def check_runs(store: RunStore) -> list[str]:
    """Mark runs whose process died as interrupted, then start queued runs if a slot is free.

    Whoever looks at the runs calls this (the app at start, the CLI's run
    commands), so a queue whose running run was killed still moves on.
    Returns the ids of the runs marked interrupted.
    """
    gone = store.mark_interrupted_runs()
    start_queued_runs(store)
    return gone


def log_path(run_id: str) -> os.PathLike:
    """Where a run's process writes its output."""
    return run_dir(run_id) / LOG_FILE


# ---------------------------------------------------------------------------
# Asking a run to pause, continue or stop


def control_run(
    store: RunStore,
    run_id: str,
    action: str,
    *,
    timeout: float = ANSWER_TIMEOUT,
    waiting: Callable[[Run], None] | None = None,
) -> Run:
    """Ask run ``run_id`` to ``action`` (pause, continue, stop) and wait for its answer; return the run then.

    Pause is answered by the status ``paused``, continue by ``running``; stop
    first by the run saying it is stopping (within ``timeout``), then by its
    final status once its checkpoint is written, however long that takes.
    A queued run is cancelled at once. ``waiting(run)`` is called while
    waiting, a few times a second. A StoreError says why there is no answer:
    not found, a status that cannot do it, a process that is gone, or no
    answer within ``timeout`` seconds (the request then stays, and the run
    acts on it when it can).
    """
    answers = CONTROL_ACTIONS[control_action(action)]
    store.mark_interrupted_runs()
    run = store.request_control(run_id, action)
    deadline = time.monotonic() + timeout
    acknowledged = False
    while True:
        if run.status in answers:
            return run
        if run.status in FINISHED_STATUSES:
            raise StoreError(f"Run {run.id} ended ({run.status}) before it could {action}.")
        acknowledged = acknowledged or _acknowledged(run, action)
        if not acknowledged and time.monotonic() > deadline:
            raise StoreError(
                f"Run {run.id} did not answer within {timeout:g} s (its process, pid {run.pid} on {run.host}, may "
                f"be busy loading, evaluating or saving, or hung). The request stays: it will {action} when it "
                f"can. Its log: {log_path(run.id)}"
            )
        if waiting is not None:
            waiting(run)
        time.sleep(POLL_INTERVAL)
        if run.id in store.mark_interrupted_runs():
            raise StoreError(f"Run {run.id}'s process is gone; the run is now interrupted. Its log: {log_path(run.id)}")
        run = store.get_run(run.id)


def _acknowledged(run: Run, action: str) -> bool:
    """A stop is answered in two parts: "stopping" within a second, the final status after the checkpoint."""
    progress = progress_of(run)
    return action == "stop" and progress is not None and progress.phase == "stopping"


class RunPulse:
    """The trainer's link to the store, in a thread of its own: progress out, requests in, twice a second.

    It runs beside the training loop, so a long step, evaluation or
    checkpoint never delays a heartbeat, and a request is picked up within a
    second whatever the loop is doing. ``progress()`` gives the run's current
    ``TrainingProgress``; ``on_request(action)`` is called with each pending
    request (again each time until the run's status answers it).
    """

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        progress: Callable[[], TrainingProgress],
        on_request: Callable[[str], None],
        interval: float = PULSE_INTERVAL,
    ) -> None:
        self.store, self.run_id = store, run_id
        self.progress, self.on_request, self.interval = progress, on_request, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"pulse-{run_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread, then write the final progress once more."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(WorkbenchError):  # the store may be what failed the run
            self.beat()

    def beat(self) -> None:
        progress = self.progress()
        request = self.store.heartbeat(
            self.run_id, steps=progress.step, tokens=progress.tokens, progress=progress.as_dict()
        )
        if request is not None and not self._stopped.is_set():
            self.on_request(request)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self.interval):
            with contextlib.suppress(WorkbenchError):  # a busy database: try again next beat
                self.beat()
        self.store.close()


# ---------------------------------------------------------------------------
# The run's process: python -m engine.run_process RUN_ID


def main(argv: Sequence[str] | None = None) -> int:
    """Train the stored run ``RUN_ID`` (new, queued or to resume) in this process, or as its ranks under torchrun."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        print("usage: python -m engine.run_process RUN_ID (start runs with lmwb train --detach)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal to lose, but never end with one
    store = RunStore()
    run_id = arguments[0]
    try:
        return _train_stored_run(store, store.get_run(run_id))
    except WorkbenchError as exc:
        print(f"lmwb: error: {exc}", file=sys.stderr, flush=True)
        _fail_if_not_started(store, run_id, str(exc))
        with contextlib.suppress(WorkbenchError):  # its slot is free: the next queued run starts, as after any end
            start_queued_runs(store)
        return 2


def _train_stored_run(store: RunStore, run: Run) -> int:
    from engine import distributed

    if run.world_size > 1 and not distributed.launched_by_torchrun():
        return distributed.run_under_torchrun("engine.run_process", [run.id], run.world_size)
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    job = TrainingJob(TrainingConfig.from_dict(run.config), store=store, resume_run=run.id)
    for number in (signal.SIGINT, signal.SIGTERM):  # `kill` stops it cleanly, with a checkpoint
        signal.signal(number, lambda *_: job.stop())
    if job.place.writes:
        print(f"Run {run.id} ({run.name}), pid {os.getpid()}: {run.model} on {run.dataset}", flush=True)
    try:
        finished = job.run()
    finally:
        if job.place.writes and job.progress.status != "starting":  # one that never started says why itself
            print(f"Run {run.id}: {job.progress.status}. {job.progress.message}", flush=True)
    return 0 if finished.status in ("completed", "stopped") else 1


def _fail_if_not_started(store: RunStore, run_id: str, message: str) -> None:
    """A run that failed before its trainer took it (bad settings, a missing file) is still recorded as failed."""
    with contextlib.suppress(WorkbenchError):
        if store.get_run(run_id).status in ("starting", "queued"):
            store.set_status(run_id, "failed", error=message)


if __name__ == "__main__":
    sys.exit(main())
