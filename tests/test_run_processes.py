"""A run is a process of its own: control it, queue it, kill it, and find out, all through the store.

Every run here is a real ``python -m engine.run_process RUN_ID``, started the
way a user starts one (``lmwb train --detach`` or ``--queue``), and
controlled and followed with the real ``lmwb runs ...``: as a child process
where that is the point (the first start, Ctrl+C, a command's own exit
status), else through ``main()`` in this process, which saves a child its
seconds of importing. Nothing is mocked. Each test has its own LMWB_HOME,
whose runs conftest.py ends with the test, so a failing test never leaves a
100000-step run behind. Every wait has a deadline and every child process
a timeout.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO_ROOT, assert_one_line_error, lmwb_command, lmwb_in_process, lmwb_in_subprocess
from tests.test_cli import NANO_RUN, started_run_id

LONG = "100000"  # steps: a run that goes on until it is stopped
START_TIMEOUT = 120  # seconds for a run's process to load and take its first steps (2 shared cores)


# --- helpers ---------------------------------------------------------------------------------


def processes_using(home: Path) -> list[psutil.Process]:
    """Every process (but this one) whose environment names this test's LMWB_HOME: runs, ranks, followers."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get("LMWB_HOME") == str(home) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            pass  # gone, a zombie, or another user's
    return found


@pytest.fixture
def store(lmwb_home: Path):
    from engine.store import RunStore

    return RunStore()


def log_tail(run_id: str, characters: int = 2000) -> str:
    from engine.run_process import log_path

    try:
        return Path(log_path(run_id)).read_text(encoding="utf-8", errors="replace")[-characters:]
    except OSError as exc:
        return f"(no log: {exc})"


def wait_for_run(store, run_id: str, condition: Callable, what: str, timeout: float = START_TIMEOUT):
    """Poll the run's row until ``condition(run)`` holds; return the run. Fails with its state and log."""
    deadline = time.monotonic() + timeout
    while True:
        run = store.get_run(run_id)
        if condition(run):
            return run
        if time.monotonic() > deadline:
            pytest.fail(
                f"run {run_id} was not {what} within {timeout} s: status {run.status}, step {run.steps}, "
                f"progress {run.progress}, error {run.error}\nlog:\n{log_tail(run_id)}"
            )
        time.sleep(0.1)


def start_detached(
    fables: Path, *extra: str, steps: str = LONG, capsys: pytest.CaptureFixture[str] | None = None
) -> tuple[str, int]:
    """`lmwb train --detach`: the run's id and the pid of the process it launched.

    In a child process, as a user types it; or, given ``capsys``, in this process (a child spends most of
    its time importing torch, which this process does once for all its tests).
    """
    arguments = ("train", *NANO_RUN, "--dataset", str(fables), "--steps", steps, "--detach", *extra)
    if capsys is None:
        result = lmwb_in_subprocess(*arguments, timeout=120)
        status, out, err = result.returncode, result.stdout, result.stderr
    else:
        status, out, err = lmwb_in_process(capsys, *arguments)
    assert status == 0, out + err
    pid = re.search(r"\(pid (\d+)\)", out)
    assert pid, out
    return started_run_id(out), int(pid.group(1))


def training(store, run_id: str, timeout: float = START_TIMEOUT):
    """Wait until the run's process is past loading and has taken a step."""
    return wait_for_run(store, run_id, lambda run: run.status == "running" and run.steps > 0, "training", timeout)


def beats(store, run_id: str, count: int, timeout: float = 15) -> None:
    """Wait until the run's process has written ``count`` more heartbeats (it lives and reads requests)."""
    seen = store.get_run(run_id).heartbeat_at
    for _ in range(count):
        run = wait_for_run(store, run_id, lambda run, last=seen: run.heartbeat_at != last, "beating", timeout)
        seen = run.heartbeat_at


class Follower:
    """`lmwb runs follow ID` in a process of its own; a thread reads its output, so no read can hang."""

    def __init__(self, run_id: str) -> None:
        self.process = subprocess.Popen(
            lmwb_command("runs", "follow", run_id),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, wanted: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"follow printed no such line within {timeout} s; it printed: {self.seen}")
            if line is None:
                pytest.fail(f"follow ended (exit {self.process.wait(10)}) before such a line; it printed: {self.seen}")
            self.seen.append(line)
            if wanted(line):
                return line

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for it to end by itself; its exit status and all it printed."""
        status = self.process.wait(timeout=timeout)
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        return status, "\n".join(self.seen)

    def interrupt(self, timeout: float = 30) -> tuple[int, str]:
        """Ctrl+C, as a person at a terminal would press it."""
        self.process.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.reader.join(timeout=10)  # it reads to the end of the output, then the pipe can close
        self.process.stdout.close()


def is_step_line(line: str) -> bool:
    return line.startswith("step ")


def assert_paused_and_still(store, run_id: str) -> int:
    """The run is paused and its steps do not advance while its process beats on; return its step."""
    before = store.get_run(run_id)
    assert before.status == "paused", before
    beats(store, run_id, 3)  # over a second in which an unpaused nano run takes dozens of steps
    after = store.get_run(run_id)
    assert after.status == "paused", after
    assert after.steps == before.steps > 0
    assert after.progress["step"] == before.steps and after.progress["phase"] == "paused"
    assert store.metrics(run_id)[-1]["step"] == before.steps
    return before.steps


# --- control from the command line ------------------------------------------------------------


@pytest.mark.parametrize("action", ["pause", "continue", "stop", "follow"])
def test_an_unknown_run_id_is_one_line(capsys, action: str) -> None:
    status, out, err = lmwb_in_process(capsys, "runs", action, "zz-not-a-run")
    assert_one_line_error(status, err, "zz-not-a-run")
    assert out == ""


@pytest.mark.slow
def test_a_detached_run_of_a_preset_is_handed_to_its_process_before_torch_loads(store, fables: Path) -> None:
    """The command returns in about a second: the run's own process loads torch and the model, not the shell's."""
    arguments = ["train", *NANO_RUN, "--dataset", str(fables), "--steps", "4", "--detach"]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from tui.cli import main; status = main({arguments!r}); "
            "print(status, sorted(m for m in ('torch', 'transformers') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert probe.stdout.strip().splitlines()[-1] == "0 []", probe.stdout + probe.stderr
    run_id = started_run_id(probe.stdout)
    run = wait_for_run(store, run_id, lambda run: run.status in ("completed", "failed"), "finished")
    assert run.status == "completed" and run.steps == 4, run.error


def test_pause_continue_stop_and_follow_a_detached_run(capsys, store, fables: Path) -> None:
    run_id, _ = start_detached(fables)  # a child process, as typed at a shell
    training(store, run_id)

    # A running run: continue has nothing to do.
    status, out, err = lmwb_in_process(capsys, "runs", "continue", run_id)
    assert_one_line_error(status, err, run_id, "running already")

    # Ctrl+C on `follow` stops following; the run goes on.
    with Follower(run_id) as follower:
        assert follower.wait_for_line(lambda line: line.startswith("Following run")).startswith(
            f"Following run {run_id} "
        )
        follower.wait_for_line(is_step_line)  # following: its Ctrl+C handler is in place
        status, out = follower.interrupt()
    assert status == 0, out
    assert f"Stopped following; run {run_id} goes on." in out and "Traceback" not in out
    left_at = store.get_run(run_id).steps
    wait_for_run(store, run_id, lambda run: run.status == "running" and run.steps > left_at, "still training", 60)

    # Pause: answered by the run's process between two steps; it then holds its step.
    result = lmwb_in_subprocess("runs", "pause", run_id, timeout=60)
    assert result.returncode == 0, result.stderr
    paused_at = int(re.search(rf"Run {run_id} paused at step (\d+)\.", result.stdout).group(1))
    assert paused_at == assert_paused_and_still(store, run_id)

    status, out, err = lmwb_in_process(capsys, "runs", "pause", run_id)
    assert_one_line_error(status, err, run_id, "paused already")

    with Follower(run_id) as follower:
        assert follower.wait_for_line(is_step_line).startswith(f"step {paused_at}/")
        status, out = follower.interrupt()
    assert status == 0, out
    assert f"Stopped following; run {run_id} goes on." in out
    assert assert_paused_and_still(store, run_id) == paused_at

    # Continue: it trains on from where it was (it may have taken a step by the time the command reads it).
    status, out, err = lmwb_in_process(capsys, "runs", "continue", run_id)
    assert status == 0, err
    assert int(re.search(rf"Run {run_id} continues from step (\d+)\.", out).group(1)) >= paused_at
    wait_for_run(store, run_id, lambda run: run.status == "running" and run.steps > paused_at, "training again", 60)

    # `follow` of a running run ends by itself when the run ends: here stopped, with a checkpoint.
    with Follower(run_id) as follower:
        follower.wait_for_line(is_step_line)
        result = lmwb_in_subprocess("runs", "stop", run_id, timeout=120)
        assert result.returncode == 0, result.stderr
        status, out = follower.finish(timeout=60)
    stopped_at = int(re.search(rf"Run {run_id} stopped at step (\d+);", result.stdout).group(1))
    run = store.get_run(run_id)
    assert run.status == "stopped" and run.steps == stopped_at > paused_at
    checkpoint = store.checkpoints(run_id)[-1]
    assert checkpoint["step"] == stopped_at and Path(checkpoint["path"]).is_dir()
    assert f"Run {run_id} stopped at step {stopped_at}; checkpoint {checkpoint['path']}." in result.stdout
    assert f"Resume it with: lmwb train --resume {run_id}" in result.stdout
    assert status == 0, out
    assert f"step {stopped_at}/{LONG} " in out  # it followed the run to its last step
    assert f"Run {run_id} stopped at step {stopped_at} " in out and "Stopped following" not in out
    assert "Traceback" not in log_tail(run_id, 20000)

    # A finished run: nothing to pause, continue or stop; following it prints how it ended.
    result = lmwb_in_subprocess("runs", "pause", run_id, timeout=60)
    assert_one_line_error(result.returncode, result.stderr, run_id, "stopped")
    assert result.stdout == ""
    for action in ("continue", "stop"):
        status, out, err = lmwb_in_process(capsys, "runs", action, run_id)
        assert_one_line_error(status, err, run_id, "stopped")
        assert out == ""
    status, out, err = lmwb_in_process(capsys, "runs", "follow", run_id)
    assert status == 0, err
    assert f"Run {run_id} stopped at step {stopped_at} " in out
    assert f"Latest checkpoint: {checkpoint['path']}" in out
    assert f"Resume with: lmwb train --resume {run_id} --steps {LONG}" in out
    assert store.get_run(run_id).status == "stopped"


# --- the queue ------------------------------------------------------------------------------------


def queue_run(capsys, dataset: Path, name: str, steps: str = "6") -> tuple[str, str]:
    """`lmwb train --queue` (in this process: a child would spend seconds importing torch): the id and output."""
    status, out, err = lmwb_in_process(
        capsys, "train", *NANO_RUN, "--dataset", str(dataset), "--steps", steps, "--name", name, "--queue"
    )
    assert status == 0, out + err
    first = out.splitlines()[0]
    assert first.startswith(("Queued run ", "Started run ")), out
    return first.split()[2].rstrip(":"), out


@pytest.mark.slow
def test_queued_runs_start_one_after_another_and_a_cancelled_one_never_does(capsys, store, fables: Path) -> None:
    import engine.training  # noqa: F401 (torch is imported here first, so each run below is queued in a moment)

    # The queue is empty: the first starts at once. It trains until stopped, so it holds the one slot
    # however slowly or quickly this test gets on.
    first, out = queue_run(capsys, fables, "first", steps=LONG)
    assert out.startswith(f"Started run {first} in the background")
    # Three more, a few steps each, wait behind it.
    second, out = queue_run(capsys, fables, "second")
    assert out.startswith(f"Queued run {second}") and "It starts when the run going now ends." in out
    middle, out = queue_run(capsys, fables, "middle")
    assert "and the 1 queued before it end" in out
    last, out = queue_run(capsys, fables, "last")
    assert "and the 2 queued before it end" in out
    for run_id in (second, middle, last):
        run = store.get_run(run_id)
        assert run.status == "queued" and run.started_at is None and run.pid is None, run

    # Stopping a queued run cancels it: it never starts.
    result = lmwb_in_subprocess("runs", "stop", middle, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"Cancelled queued run {middle}; it never started." in result.stdout
    assert store.get_run(middle).status == "cancelled"

    # Stop the first. From then on nobody looks at the runs: each run's process starts the next as it ends.
    training(store, first)
    result = lmwb_in_subprocess("runs", "stop", first, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"Run {first} stopped at step " in result.stdout
    for run_id in (second, last):
        wait_for_run(store, run_id, lambda run: run.status not in ("queued", "starting", "running"), "finished")
    runs = {run_id: store.get_run(run_id) for run_id in (first, second, middle, last)}
    assert [run.status for run in runs.values()] == ["stopped", "completed", "cancelled", "completed"], [
        (run.name, run.status, run.error) for run in runs.values()
    ]
    assert runs[second].steps == runs[last].steps == 6 and runs[middle].steps == 0
    # One after another, in the order queued: each started after the one before it had finished.
    assert runs[first].finished_at <= runs[second].started_at
    assert runs[second].finished_at <= runs[last].started_at
    assert runs[first].queued_at < runs[second].queued_at < runs[middle].queued_at < runs[last].queued_at
    assert runs[middle].started_at is None and not store.metrics(middle) and not store.checkpoints(middle)
    assert "never started" in runs[middle].error


@pytest.mark.slow
def test_a_queued_run_that_fails_to_start_hands_the_queue_on(capsys, store, fables: Path, tmp_path: Path) -> None:
    from engine.run_process import start_queued_runs

    # This process trains a run (as a foreground `lmwb train` does): the one slot is taken.
    holder = store.create_run(name="holder", model="scratch:nano", dataset=str(fables), config={})
    vanishing = tmp_path / "vanishing.txt"
    vanishing.write_bytes(fables.read_bytes())
    broken, out = queue_run(capsys, vanishing, "broken")
    assert out.startswith(f"Queued run {broken}")
    vanishing.unlink()  # its process will find its dataset gone, after submit_run checked it
    waiting, out = queue_run(capsys, fables, "waiting")
    assert out.startswith(f"Queued run {waiting}")

    # The holder ends and starts the next in line, as a run's end does.
    store.set_status(holder.id, "completed")
    assert [run.id for run in start_queued_runs(store)] == [broken]
    # Nobody looks at the runs from here on: the broken run's process, as it fails, starts the next one.
    run = wait_for_run(store, broken, lambda run: run.status not in ("starting", "running"), "failed")
    assert run.status == "failed" and "vanishing.txt" in run.error, run
    run = wait_for_run(store, waiting, lambda run: run.status not in ("queued", "starting", "running"), "finished")
    assert run.status == "completed" and run.steps == 6, run.error
    assert store.get_run(broken).finished_at <= run.started_at


# --- a process that is gone ---------------------------------------------------------------------


def set_owner_columns(home: Path, run_id: str, **columns: object) -> None:
    """Change a run's row the way nothing in lm-workbench would: straight through SQLite."""
    connection = sqlite3.connect(home / "workbench.db", timeout=30)
    try:
        with connection:
            assignments = ", ".join(f"{column} = ?" for column in columns)
            connection.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*columns.values(), run_id))
    finally:
        connection.close()


@pytest.mark.slow
def test_a_killed_run_and_a_reused_pid_are_found_interrupted(capsys, store, fables: Path, lmwb_home: Path) -> None:
    import json

    from engine.store import process_alive, process_start_time

    run_id, launched = start_detached(fables, capsys=capsys)
    run = training(store, run_id)
    assert run.pid == launched and run.process_start is not None
    killed_start = run.process_start

    os.kill(run.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_alive(run.pid, killed_start):  # a zombie not yet reaped counts as gone
        assert time.monotonic() < deadline, f"pid {run.pid} outlived kill -9"
        time.sleep(0.05)
    assert store.get_run(run_id).status == "running"  # nobody has looked yet

    # The next look finds out.
    result = lmwb_in_subprocess("runs", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    [shown] = json.loads(result.stdout)
    assert shown["id"] == run_id and shown["status"] == "interrupted"
    assert f"pid {run.pid}" in shown["error"] and "resume it from its last checkpoint" in shown["error"]
    assert shown["finished_at"] is not None
    result = lmwb_in_subprocess("runs", "pause", run_id, timeout=60)
    assert_one_line_error(result.returncode, result.stderr, run_id, "interrupted")

    # The pid is reused by another process (this one): its start time tells it apart.
    my_start = process_start_time()
    assert abs(my_start - killed_start) > 1.0  # this test's process was running well before the run's
    set_owner_columns(
        lmwb_home, run_id, status="running", finished_at=None, error=None, pid=os.getpid(), process_start=killed_start
    )
    assert store.get_run(run_id).status == "running"
    assert store.mark_interrupted_runs() == [run_id]
    assert store.get_run(run_id).status == "interrupted"

    # The same live pid with its own start time is the run's process: left alone, by the CLI too.
    set_owner_columns(
        lmwb_home, run_id, status="running", finished_at=None, error=None, pid=os.getpid(), process_start=my_start
    )
    assert store.mark_interrupted_runs() == []
    result = lmwb_in_subprocess("runs", "--json", timeout=60)
    assert json.loads(result.stdout)[0]["status"] == "running"
    # ... and a start time a few seconds off is another process again.
    set_owner_columns(lmwb_home, run_id, process_start=my_start - 5)
    assert store.mark_interrupted_runs() == [run_id]


# --- several processes ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_two_process_run_pauses_and_stops_from_the_store_and_the_command_line(
    capsys, store, fables: Path, lmwb_home: Path
) -> None:
    from engine.run_process import control_run

    run_id, launcher = start_detached(fables, "--nproc", "2", "--device", "cpu", capsys=capsys)
    run = training(store, run_id, timeout=240)
    assert run.world_size == 2
    assert run.pid != launcher  # rank 0 owns the run; the launcher is torchrun's parent

    paused = control_run(store, run_id, "pause", timeout=120)
    assert paused.status == "paused"
    paused_at = assert_paused_and_still(store, run_id)  # both ranks hold: rank 1 alone cannot step

    result = lmwb_in_subprocess("runs", "stop", run_id, timeout=240)  # a paused run stops too, with a checkpoint
    assert result.returncode == 0, result.stdout + result.stderr
    stopped = store.get_run(run_id)
    assert stopped.status == "stopped" and stopped.steps == paused_at, stopped
    checkpoint = store.checkpoints(run_id)[-1]
    assert f"Run {run_id} stopped at step {paused_at}; checkpoint {checkpoint['path']}." in result.stdout
    assert checkpoint["step"] == paused_at and Path(checkpoint["path"]).is_dir()
    assert store.metrics(run_id)[-1]["step"] == paused_at

    # The launcher and both ranks exit: none is left waiting for the others.
    deadline = time.monotonic() + 120
    while (left := processes_using(lmwb_home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [(process.pid, process.cmdline()) for process in left]
    assert f"Run {run_id}: stopped." in log_tail(run_id)
    assert "Traceback" not in log_tail(run_id, 20000)
