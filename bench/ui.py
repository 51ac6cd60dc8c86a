"""How the TUI feels: first frame, training speed while it follows a run, keypress-to-repaint during training.

The app runs as a user runs it: `python -m tui.cli` in a real pseudo-terminal
(100x30), driven by writing keys to the terminal and timed by reading what it
paints back. Nothing inside the app is instrumented. Training runs are what
they are for a user: processes of their own, started with
`lmwb train --detach` (never with Ctrl+R in the app), their progress in the
store.

1. Start-up, per start of the app (``--frames`` starts, each printed, then
   the medians): time to the first frame (the nav bar's "Datasets" arrives;
   torch is not imported yet), with the CPU time the app had used by then;
   to "datasets listed" (the bundled "fables" painted in the dataset list);
   to "torch ready" (the nav bar says so). Target: first frame <= 1 s.
2. Training tokens/s with the app open and following the run / with no app.
   The same detached run (scratch:nano on fables, the Train form's defaults,
   ``--steps`` steps) is trained once with no app and once with the app
   opened after the run started, on the Train screen (key 4), which must
   show that run's id or name, and left open until the run ends. The pair's
   order alternates over ``--repeats``. A run's tokens/s is
   (tokens_b - tokens_a) / (elapsed_b - elapsed_a) from its metric rows, over
   the steady part of the run: both runs of a pair over the same steps, from
   after the app (torch loaded, Train screen following) had settled to the
   last step. Every pair is printed, then the median ratio. Target >= 0.97.
3. Keypress to repaint while a run really trains: one detached run long
   enough to outlast every press, its status checked to be `running` (and
   its step moving) before and after each phase, or the bench fails. With
   the app open on it, on the Train screen: switching screens (5 and 4 in
   turn, each timed until the new screen's text arrives; the first visit to
   Runs, which builds that screen, is printed on its own and not among
   them), then typing into the Runs filter (/ first; each character timed
   until the field shows the text typed). Median, p95, max and count, and
   every value; target p95 <= 33 ms for both. Load averages are printed
   with each phase.

    .venv/bin/python -m bench.ui                                    # 15-20 minutes on 2 busy CPU cores
    .venv/bin/python -m bench.ui --repeats 1 --presses 6 --frames 1  # a quick check of the bench itself

Runs go to a temporary LMWB_HOME unless --home is given. Torch gets
``--threads`` threads (OMP_NUM_THREADS) in the app and in every run. The app
and every run the bench started are ended when it exits, however it exits.
On a machine whose cores are shared with other work, wall-clock numbers
partly measure the others; read the load averages printed with the results.
A phase that cannot measure what it should (a run not running, the Train
screen not showing the run, text that never arrives) prints FAILED with the
reason; the others still run, and the bench exits 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import os
import pty
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable  # the app and `lmwb` commands

SIZE = (100, 30)
# Keys as a terminal sends them.
CTRL_Q, CTRL_U, ESCAPE = "\x11", "\x15", "\x1b"
# Text that marks what the app painted: the nav bar (first frame), a bundled
# dataset in the Datasets list, the engine's state in the nav bar; a Runs
# column header and a Train form label, which only those screens paint.
FIRST_FRAME_MARK, LISTED_MARK, READY_MARK = b"Datasets", b"fables", b"torch ready"
RUNS_MARK, TRAIN_MARK = b"best val", b"learning rate"
# What is typed into the Runs filter: a prefix no screen shows, then letters
# (the field is emptied before they run out, so it never scrolls).
FILTER_PREFIX, FILTER_LETTERS = "qzx", "abcdefghijklmnopqrstuvwy"
RUN_SETTINGS = ["--model", "scratch:nano", "--dataset", "fables"]  # the Train form's defaults otherwise
LONG_RUN_STEPS = 100_000  # the keypress phase's run: stopped by the bench long before this
STEADY_FROM = 50  # steps before this are start-up (warmup, caches), never timed
SETTLE_STEPS = 10  # steps after the app settled on the run before its steady part starts
MIN_WINDOW = 100  # fewest steps a tokens/s window may have
PRESS_GAP = 0.25  # seconds between timed presses
TARGETS = {"first frame": 1.0, "ratio": 0.97, "p95 ms": 33.0}


class BenchError(RuntimeError):
    """The bench cannot measure what it should: said in words, and the phase fails."""


PHASES = ("start-up", "speed", "keys")  # first frame; tokens/s with the app open; keypress to repaint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5, help="app starts timed for the first frame (default 5)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=4,
        help="no-app/app run pairs for tokens/s (default 4; "
        "the order alternates, so an even number has each side first equally)",
    )
    parser.add_argument("--steps", type=int, default=500, help="steps of each tokens/s run (default 500)")
    parser.add_argument("--presses", type=int, default=40, help="timed keypresses of each kind (default 40)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads in the app and the runs "
        "(OMP_NUM_THREADS; default 1, steadier on a machine whose cores are shared)",
    )
    parser.add_argument("--home", help="LMWB_HOME for the runs (default: a temporary directory)")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"which to measure, comma-separated (default: all of {','.join(PHASES)})",
    )
    args = parser.parse_args()
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {','.join(PHASES)}")
    for flag in ("frames", "repeats", "presses", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.steps < STEADY_FROM + MIN_WINDOW:
        parser.error(f"--steps must be at least {STEADY_FROM + MIN_WINDOW} (start-up plus a timed window)")
    return args


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def bench_env(home: Path, threads: int) -> dict[str, str]:
    """The environment of the app and of every `lmwb` command (and so of every run process)."""
    return {**os.environ, "LMWB_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}


# -----------------------------------------------------------------------------
# The app in a pseudo-terminal


class TerminalApp:
    """`lmwb` in a pseudo-terminal: write keys to it, wait for text it paints, with arrival times."""

    def __init__(self, env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        env = {**env, "TERM": "xterm-256color", "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [PYTHON, "-m", "tui.cli"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        os.close(slave)
        CLEANUP.apps.append(self.process)
        self.master = master
        self.output = bytearray()
        self.arrivals: list[tuple[int, float]] = []  # (length of output after a read, time of the read)
        self.closed = False
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            with self.lock:
                if not chunk:
                    self.closed = True
                    self.lock.notify_all()
                    return
                self.output += chunk
                self.arrivals.append((len(self.output), time.perf_counter()))
                self.lock.notify_all()

    def mark(self) -> int:
        """A position in the output: later waits look only at what arrives after it."""
        with self.lock:
            return len(self.output)

    def press(self, keys: str) -> tuple[int, float]:
        """Write keys; return the output position and the time just before writing."""
        position = self.mark()
        sent = time.perf_counter()
        os.write(self.master, keys.encode())
        return position, sent

    def wait_for_any(self, texts: list[bytes], after: int, timeout: float, what: str) -> tuple[bytes, float]:
        """The first of ``texts`` to be painted after position ``after``, and the time the read that
        completed it returned. BenchError, saying ``what`` was awaited, after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [
                    (index, text)
                    for text in texts
                    if (index := self.output.find(text, max(0, after - len(text) + 1))) >= 0
                ]
                if found:
                    index, text = min(found)
                    end = index + len(text)
                    return text, next(when for length, when in self.arrivals if length >= end)
                if self.closed:
                    raise BenchError(
                        f"the app exited while the bench waited for {what} ({' or '.join(map(repr, texts))})"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{what}: {' or '.join(map(repr, texts))} did not appear on the app's "
                        f"terminal within {timeout:g} s"
                    )
                self.lock.wait(timeout=0.5)

    def wait_for(self, text: bytes, after: int, timeout: float, what: str) -> float:
        return self.wait_for_any([text], after, timeout, what)[1]

    def close(self) -> None:
        """Ctrl+Q; if the app has not exited within 10 s (a dialog, a hang), kill it."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.press(CTRL_Q)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_app(self.process)
        os.close(self.master)


@contextlib.contextmanager
def open_app(env: dict[str, str]) -> Iterator[TerminalApp]:
    app = TerminalApp(env)
    try:
        yield app
    finally:
        app.close()


def open_on_train(app: TerminalApp) -> int:
    """Once torch is in, go to the Train screen and leave the form's field; return the output position
    from before the switch (what the Train screen painted since lies after it)."""
    app.wait_for(READY_MARK, 0, 180, "the nav bar saying torch is ready")
    position, _ = app.press("4")
    app.wait_for(TRAIN_MARK, position, 60, "the Train screen's form")
    time.sleep(1.0)  # the form puts the cursor in its first field once mounted
    # Leave the field, so 4 and 5 switch screens. Escape goes alone: with a
    # key close behind it, a terminal reads the pair as Alt+key.
    app.press(ESCAPE)
    time.sleep(1.0)
    return position


def check_train_screen_shows(app: TerminalApp, run: Run, after: int, timeout: float = 30) -> None:
    """The Train screen (painted after position ``after``) must show the run's id or name."""
    try:
        app.wait_for_any(
            [run.id.encode(), run.name.encode()], after, timeout, f"the Train screen showing run {run.id} ({run.name})"
        )
    except BenchError as exc:
        raise BenchError(
            f"{exc}. The Train screen does not follow the run started with `lmwb train --detach` "
            "(the app should show the latest active run there when it opens)"
        ) from None


# -----------------------------------------------------------------------------
# Runs as processes: start with `lmwb train --detach`, read and stop through the store


class Run:
    """A detached run the bench started: its id and name, and its row in the store."""

    def __init__(self, home: Path, run_id: str, name: str) -> None:
        self.home, self.id, self.name = home, run_id, name

    def row(self):
        from engine.store import RunStore

        store = RunStore(self.home / "workbench.db")
        try:
            return store.get_run(self.id)
        finally:
            store.close()

    def metrics(self) -> list[dict]:
        from engine.store import RunStore

        store = RunStore(self.home / "workbench.db")
        try:
            return store.metrics(self.id)
        finally:
            store.close()


def lmwb(env: dict[str, str], *arguments: str, timeout: float) -> str:
    """Run an `lmwb` command (.venv/bin/python -m tui.cli); its output, or BenchError with it."""
    try:
        done = subprocess.run(
            [PYTHON, "-m", "tui.cli", *arguments],
            cwd=REPO_ROOT,
            env=env,
            text=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`lmwb {' '.join(arguments)}` did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"`lmwb {' '.join(arguments)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def start_run(home: Path, env: dict[str, str], name: str, steps: int) -> Run:
    """`lmwb train --detach`: a run process of its own, as a user starts one; returns once it is recorded."""
    output = lmwb(env, "train", "--detach", *RUN_SETTINGS, "--steps", str(steps), "--name", name, timeout=300)
    found = re.search(r"run (\w+) in the background", output)
    if found is None:
        raise BenchError(f"`lmwb train --detach` did not say which run it started:\n{output}")
    run = Run(home, found.group(1), name)
    CLEANUP.runs.append(run)
    return run


@contextlib.contextmanager
def detached_run(home: Path, env: dict[str, str], name: str, steps: int) -> Iterator[Run]:
    """A run started with `lmwb train --detach`, stopped on leaving if it is still going (a failed phase
    must not leave it training through the next one)."""
    run = start_run(home, env, name, steps)
    try:
        yield run
    finally:
        stop_run(run, env)


def wait_until(run: Run, done, what: str, timeout: float):
    """Poll the run's row until ``done(row)``; return the row, or BenchError after ``timeout`` seconds."""
    from engine.store import FINISHED_STATUSES

    deadline = time.monotonic() + timeout
    while True:
        row = run.row()
        if done(row):
            return row
        if row.status in FINISHED_STATUSES:
            raise BenchError(
                f"run {run.id} ended ({row.status}: {row.error or 'no error'}) before {what}; its log: {log_of(run)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"run {run.id} is {row.status} at step {row.steps}: not {what} within {timeout:g} s; "
                f"its log: {log_of(run)}"
            )
        time.sleep(0.5)


def wait_until_finished(run: Run, timeout: float):
    from engine.store import FINISHED_STATUSES

    deadline = time.monotonic() + timeout
    while (row := run.row()).status not in FINISHED_STATUSES:
        if time.monotonic() > deadline:
            raise BenchError(f"run {run.id} is still {row.status} at step {row.steps} after {timeout:g} s")
        time.sleep(1.0)
    if row.status != "completed":
        raise BenchError(
            f"run {run.id} ended {row.status} at step {row.steps} ({row.error or 'no error'}); its log: {log_of(run)}"
        )
    return row


def log_of(run: Run) -> Path:
    return run.home / "runs" / run.id / "train.log"


def check_running(run: Run, moment: str) -> int:
    """The run must be `running` now (else the phase fails, loudly); return its step."""
    row = run.row()
    if row.status != "running":
        raise BenchError(
            f"run {run.id} is {row.status!r}, not 'running', {moment} "
            f"({row.error or 'no error'}); its log: {log_of(run)}"
        )
    return row.steps


def stop_run(run: Run, env: dict[str, str]) -> None:
    """`lmwb runs stop ID` (a checkpoint, status stopped); SIGTERM to its pid if that fails."""
    from engine.store import ACTIVE_STATUSES, process_alive

    row = run.row()
    if row.status not in ACTIVE_STATUSES and row.status != "queued":
        return
    try:
        lmwb(env, "runs", "stop", run.id, timeout=120)
        return
    except BenchError as exc:
        print(f"  `lmwb runs stop {run.id}` failed ({exc}); sending SIGTERM to pid {row.pid}", flush=True)
    if row.pid and process_alive(row.pid, row.process_start):
        os.kill(row.pid, signal.SIGTERM)


# -----------------------------------------------------------------------------
# Nothing the bench started outlives it


class Cleanup:
    """At exit, however the bench exits: kill the apps still open, end the runs still going."""

    def __init__(self) -> None:
        self.apps: list[subprocess.Popen] = []
        self.runs: list[Run] = []

    def __call__(self) -> None:
        for process in self.apps:
            kill_app(process)
        for run in self.runs:
            end_run_process(run)


def kill_app(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the app and anything it spawned
        process.wait()


def end_run_process(run: Run, grace: float = 60) -> None:
    """SIGTERM to the run's process (it stops with a checkpoint); SIGKILL if it is still there after ``grace``."""
    from engine.store import ACTIVE_STATUSES, process_alive

    with contextlib.suppress(Exception):  # at exit, the store itself may be what failed
        row = run.row()
        if row.status not in ACTIVE_STATUSES or not row.pid or not process_alive(row.pid, row.process_start):
            return
        print(f"cleanup: stopping run {run.id} (pid {row.pid})", flush=True)
        os.kill(row.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_alive(row.pid, row.process_start):
            if time.monotonic() > deadline:
                os.kill(row.pid, signal.SIGKILL)
                return
            time.sleep(0.5)


CLEANUP = Cleanup()


# -----------------------------------------------------------------------------
# 1. Start-up: first frame, datasets listed, torch ready


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_start(env: dict[str, str]) -> dict[str, float]:
    """Seconds from starting the app to its first frame, to the datasets listed, to torch ready;
    and the CPU seconds it had used at the first frame."""
    with open_app(env) as app:
        first = app.wait_for(FIRST_FRAME_MARK, 0, 30, "the first frame (nav bar)")
        cpu = cpu_seconds(app.process.pid)
        listed = app.wait_for(LISTED_MARK, 0, 60, "the bundled datasets in the Datasets list")
        ready = app.wait_for(READY_MARK, 0, 180, "the nav bar saying torch is ready")
    return {
        "first frame": first - app.started,
        "cpu": cpu,
        "datasets listed": listed - app.started,
        "torch ready": ready - app.started,
    }


def measure_start_up(env: dict[str, str], frames: int) -> None:
    print(f"\n1. Start-up, {frames} starts of the app (load average {load_average()})", flush=True)
    starts = []
    for number in range(1, frames + 1):
        start = time_start(env)
        starts.append(start)
        print(
            f"  start {number}: first frame {start['first frame']:.3f} s (CPU {start['cpu']:.2f} s), "
            f"datasets listed {start['datasets listed']:.3f} s, torch ready {start['torch ready']:.3f} s",
            flush=True,
        )
    for key in ("first frame", "datasets listed", "torch ready"):
        values = [start[key] for start in starts]
        target = f" · target <= {TARGETS['first frame']:g} s" if key == "first frame" else ""
        print(
            f"  {key}: median {statistics.median(values):.3f} s "
            f"(all: {', '.join(f'{value:.3f}' for value in values)}){target}"
        )
    print(f"  CPU at the first frame: median {statistics.median(start['cpu'] for start in starts):.2f} s")


# -----------------------------------------------------------------------------
# 2. Training tokens/s, with the app open and following the run / with no app


def run_timeout(steps: int) -> float:
    """Long enough for a run of ``steps`` steps on a slow, busy machine."""
    return 300 + 2.0 * steps


def train_alone(home: Path, env: dict[str, str], name: str, steps: int) -> tuple[Run, None]:
    """A detached run with no app open, to its end."""
    with detached_run(home, env, name, steps) as run:
        wait_until_finished(run, run_timeout(steps))
    return run, None


def train_followed(home: Path, env: dict[str, str], name: str, steps: int) -> tuple[Run, int]:
    """A detached run with the app opened after it started, on the Train screen, which must show
    the run; the app stays open until the run ends. Returns the run and the step it was at when the
    app had settled on it."""
    with detached_run(home, env, name, steps) as run:
        wait_until(run, lambda row: row.status == "running", "running", 300)
        with open_app(env) as app:
            position = open_on_train(app)
            check_train_screen_shows(app, run, position)
            settled_at = run.row().steps
            wait_until_finished(run, run_timeout(steps))
    return run, settled_at


def tokens_per_second(run: Run, first: int, last: int) -> float:
    """(tokens at ``last`` - tokens at ``first``) / (elapsed at ``last`` - elapsed at ``first``), from the run's
    metric rows (elapsed: seconds of training, pauses not counted; it includes evaluations and checkpoints)."""
    rows = {row["step"]: row for row in run.metrics()}
    if first not in rows or last not in rows:
        raise BenchError(f"run {run.id} has no metrics row for step {first} or {last}")
    a, b = rows[first], rows[last]
    return (b["tokens"] - a["tokens"]) / (b["elapsed"] - a["elapsed"])


def steady_window(settled_at: int, steps: int) -> tuple[int, int]:
    """The steps timed in both runs of a pair: from after start-up and after the app settled, to the end."""
    first = max(STEADY_FROM, settled_at + SETTLE_STEPS)
    if steps - first < MIN_WINDOW:
        raise BenchError(
            f"the app settled on its run only at step {settled_at} of {steps}, leaving fewer than "
            f"{MIN_WINDOW} steady steps to time; give more --steps"
        )
    return first, steps


def measure_training_speed(home: Path, env: dict[str, str], repeats: int, steps: int) -> None:
    print(
        f"\n2. Training tokens/s, app open on the Train screen / no app: {repeats} pairs of "
        f"scratch:nano runs on fables, {steps} steps each (load average {load_average()})",
        flush=True,
    )
    ratios, alone_rates, followed_rates = [], [], []
    for pair in range(1, repeats + 1):
        sides = [("no app", train_alone), ("app", train_followed)]
        if pair % 2 == 0:
            sides.reverse()
        results = {}
        for label, train in sides:
            name = f"uibench-{pair}-{'app' if label == 'app' else 'alone'}"
            results[label] = train(home, env, name, steps)
        (alone, _), (followed, settled_at) = results["no app"], results["app"]
        first, last = steady_window(settled_at, steps)
        alone_rate = tokens_per_second(alone, first, last)
        followed_rate = tokens_per_second(followed, first, last)
        ratio = followed_rate / alone_rate
        ratios.append(ratio)
        alone_rates.append(alone_rate)
        followed_rates.append(followed_rate)
        print(
            f"  pair {pair} ({sides[0][0]} first; steps {first}-{last}; app settled at step {settled_at}): "
            f"no app {alone_rate:,.0f} tokens/s (run {alone.id}), app {followed_rate:,.0f} tokens/s "
            f"(run {followed.id}), ratio {ratio:.3f} · load average {load_average()}",
            flush=True,
        )
    print(
        f"  ratio app / no app: median {statistics.median(ratios):.3f} "
        f"(all: {', '.join(f'{ratio:.3f}' for ratio in ratios)}) · target >= {TARGETS['ratio']:g}"
    )
    print(
        f"  tokens/s, median: no app {statistics.median(alone_rates):,.0f}, "
        f"app {statistics.median(followed_rates):,.0f}"
    )


# -----------------------------------------------------------------------------
# 3. Keypress to repaint while a run trains


def first_visit_to_runs(app: TerminalApp) -> float:
    """Seconds from 5 to the Runs screen on its first visit (it is built then), and back to Train.
    Not one of the timed switches, which measure switching between screens already built."""
    position, sent = app.press("5")
    built = app.wait_for(RUNS_MARK, position, 60, "the Runs screen on its first visit") - sent
    time.sleep(PRESS_GAP)
    position, _ = app.press("4")
    app.wait_for(TRAIN_MARK, position, 30, "the Train screen after pressing 4")
    time.sleep(1.0)
    return built


def time_switches(app: TerminalApp, presses: int) -> list[float]:
    """5 and 4 in turn, each timed from writing the key to the new screen's text arriving."""
    latencies = []
    for press in range(presses):
        key, mark, screen = ("5", RUNS_MARK, "Runs") if press % 2 == 0 else ("4", TRAIN_MARK, "Train")
        position, sent = app.press(key)
        latencies.append(app.wait_for(mark, position, 30, f"the {screen} screen after pressing {key}") - sent)
        time.sleep(PRESS_GAP)
    return latencies


def time_typing(app: TerminalApp, presses: int) -> list[float]:
    """Characters into the Runs filter (/ first), each timed until the field shows the text typed so far
    (the filter also re-reads the runs)."""
    position, _ = app.press("5")
    app.wait_for(RUNS_MARK, position, 30, "the Runs screen")
    app.press("/")
    time.sleep(0.5)
    latencies = []
    for press in range(presses):
        if press % len(FILTER_LETTERS) == 0:  # untimed: start the field again, before it fills
            app.press(CTRL_U)
            time.sleep(0.2)
            app.press(FILTER_PREFIX)  # a key closely after Ctrl+U is lost
            typed = FILTER_PREFIX
            time.sleep(0.5)
        typed += FILTER_LETTERS[press % len(FILTER_LETTERS)]
        position, sent = app.press(typed[-1])
        latencies.append(app.wait_for(typed.encode(), position, 30, f"the Runs filter showing {typed!r}") - sent)
        time.sleep(PRESS_GAP)
    return latencies


def training_phase(run: Run, name: str, measure) -> list[float]:
    """``measure()`` between two checks that the run is running and its step moved."""
    load_before = load_average()
    step_before = check_running(run, f"before {name}")
    latencies = measure()
    step_after = check_running(run, f"after {name}")
    if step_after <= step_before:
        raise BenchError(f"run {run.id} stayed at step {step_before} during {name}: it is not training")
    print(
        f"  {name}: run {run.id} running, step {step_before} -> {step_after}; "
        f"load average {load_before} -> {load_average()}",
        flush=True,
    )
    return latencies


def report_latencies(name: str, latencies: list[float]) -> None:
    values = [latency * 1000 for latency in latencies]
    print(
        f"  {name}: median {statistics.median(values):.1f} ms, p95 {percentile(values, 0.95):.1f} ms, "
        f"max {max(values):.1f} ms, {len(values)} presses · target p95 <= {TARGETS['p95 ms']:g} ms"
    )
    print(f"    all, in order (ms): {' '.join(f'{value:.1f}' for value in values)}")


def measure_keypresses(home: Path, env: dict[str, str], presses: int) -> None:
    print(
        f"\n3. Keypress to repaint while a detached run trains, {presses} presses each (load average {load_average()})",
        flush=True,
    )
    with detached_run(home, env, "uibench-keys", LONG_RUN_STEPS) as run:
        wait_until(run, lambda row: row.status == "running" and row.steps >= STEADY_FROM // 5, "training", 300)
        with open_app(env) as app:
            position = open_on_train(app)
            try:
                check_train_screen_shows(app, run, position, timeout=10)
                print(f"  the Train screen shows run {run.id}")
            except BenchError as exc:
                print(f"  note: {exc}; timing the keys anyway (the Train screen's chart is not drawing)")
            print(
                f"  first visit to Runs (builds the screen; not timed below): {first_visit_to_runs(app) * 1000:.0f} ms",
                flush=True,
            )
            switches = training_phase(run, "switching screens", lambda: time_switches(app, presses))
            typing = training_phase(run, "typing in the Runs filter", lambda: time_typing(app, presses))
            stop_run(run, env)  # before the app closes, which might ask about a run going
    report_latencies("switching screens (5/4)", switches)
    report_latencies("typing in a field (Runs filter)", typing)


# -----------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="lmwb-bench-ui-"))
    env = bench_env(home, args.threads)
    atexit.register(CLEANUP)
    for number in (signal.SIGTERM, signal.SIGHUP):  # so atexit runs on these too
        signal.signal(number, lambda signum, _: sys.exit(128 + signum))
    print(
        f"LMWB_HOME {home}; terminal {SIZE[0]}x{SIZE[1]}; torch threads {args.threads} (OMP_NUM_THREADS); "
        f"{os.cpu_count()} CPUs; load average {load_average()} (1/5/15 min)",
        flush=True,
    )
    phases = {
        "start-up": lambda: measure_start_up(env, args.frames),
        "speed": lambda: measure_training_speed(home, env, args.repeats, args.steps),
        "keys": lambda: measure_keypresses(home, env, args.presses),
    }
    failed = []
    for name, measure in phases.items():
        if name not in args.phases.split(","):
            continue
        try:
            measure()
        except BenchError as exc:
            failed.append(name)
            print(f"  FAILED ({name}): {exc}", flush=True)
    print(f"\nload average at the end {load_average()}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
