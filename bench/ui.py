"""How the TUI feels: first frame, keypress-to-repaint while training, training speed with it open.

The app runs as a user runs it: `python -m tui.cli` in a real pseudo-terminal
(100x30), driven by writing keys to the terminal and timed by reading what it
paints back. Nothing inside the app is instrumented.

1. Time to first frame: from starting the process to the nav bar's bytes
   arriving on the terminal (torch is not imported yet), and the CPU time the
   app had used by then (which other work on the machine does not inflate).
   Target <= 1 s.
2. Training tokens/s with the TUI open / headless. The same small run
   (scratch:nano on fables, the form's defaults: batch 8, block 128) is
   trained by a headless process (a TrainingJob, as `lmwb train` runs it) and
   from the app's Train screen as it opens (Ctrl+R, no typing), which stays
   open, polling and drawing the chart, until the bench stops the run with
   Ctrl+S. Runs alternate, each pair in turn; tokens/s is the median of the
   per-step rates the run logged (first steps left out). Target >= 0.95.
3. Keypress-to-repaint latency while a run trains in the app, timed from
   writing a key to its effect arriving on the terminal: typing into the
   Runs filter (the common case), and switching screens with 5 and 4 (the
   heaviest repaint there is). Median and p95; target p95 <= 50 ms.

    .venv/bin/python -m bench.ui                    # about 4 minutes on a laptop CPU
    .venv/bin/python -m bench.ui --repeats 9 --steps 100 --presses 60

Runs go to a temporary LMWB_HOME unless --home is given. On a machine whose
cores are shared with other work, wall-clock numbers mostly measure the
others; read the load average printed with the results.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SIZE = (100, 30)
# Keys as a terminal sends them.
CTRL_Q, CTRL_R, CTRL_S, CTRL_U, ESCAPE = "\x11", "\x12", "\x13", "\x15", "\x1b"
# Text that only the screen being switched to paints: a Runs column header,
# a Train form label.
RUNS_MARK, TRAIN_MARK = b"best val", b"learning rate"
# What is typed into the Runs filter: a prefix no screen shows, then letters
# (the field is emptied before they run out, so it never scrolls).
FILTER_PREFIX, FILTER_LETTERS = "qzx", "abcdefghijklmnopqrstuvwy"
WARMUP_STEPS = 3  # per-step rates of the first steps include start-up costs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (default 60)")
    parser.add_argument("--repeats", type=int, default=5, help="headless/TUI run pairs (default 5)")
    parser.add_argument("--presses", type=int, default=40, help="timed keypresses (default 40)")
    parser.add_argument("--frames", type=int, default=3, help="app starts timed for the first frame")
    parser.add_argument("--threads", type=int, help="torch CPU threads for both sides (OMP_NUM_THREADS; "
                        "default: torch's choice). 1 is steadier on a machine whose cores are shared")
    parser.add_argument("--home", help="LMWB_HOME for the runs (default: a temporary directory)")
    return parser.parse_args()


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


class TerminalApp:
    """`lmwb` in a pseudo-terminal: write keys to it, wait for text it paints, with arrival times."""

    def __init__(self, home: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        env = {**os.environ, "LMWB_HOME": str(home), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color",
               "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "tui.cli"], stdin=slave, stdout=slave,
                                        stderr=slave, env=env, cwd=REPO_ROOT, start_new_session=True)
        os.close(slave)
        # If the bench fails half-way, the app must not outlive it, training.
        atexit.register(lambda: self.process.poll() is None and self.process.kill())
        self.master = master
        self.output = bytearray()
        self.arrivals: list[tuple[int, float]] = []  # (length of output after a read, time of the read)
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

    closed = False

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

    def wait_for(self, text: bytes, after: int, timeout: float = 120.0) -> float:
        """The time the read that completed ``text`` (after position ``after``) returned."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = self.output.find(text, max(0, after - len(text)))
                if found >= 0:
                    end = found + len(text)
                    return next(when for length, when in self.arrivals if length >= end)
                if self.closed or time.monotonic() > deadline:
                    raise RuntimeError(f"{text!r} never appeared on the app's terminal")
                self.lock.wait(timeout=0.5)

    def quit(self) -> None:
        """Ctrl+Q; confirm if it asks (a run in progress), then wait for the process."""
        position, _ = self.press(CTRL_Q)
        try:
            self.wait_for(b"Stop and quit", position, timeout=3)
            self.press("y")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self.master)


# -----------------------------------------------------------------------------
# 1. Time to first frame


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_first_frame(home: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds the app used) from starting it to its first frame on the terminal."""
    app = TerminalApp(home)
    arrived = app.wait_for(b"Datasets", 0, timeout=30)
    cpu = cpu_seconds(app.process.pid)
    app.wait_for(b"torch ready", 0)  # let it finish starting before it is asked to quit
    app.quit()
    return arrived - app.started, cpu


# -----------------------------------------------------------------------------
# 2. Training speed, headless and with the app open


def headless_config(steps: int) -> dict:
    """What the app's Train form starts with (scratch:nano on fables, the TrainingConfig
    defaults), ending after ``steps``: evaluation, samples and checkpoints come every 50
    steps or more, so the timed steps are training steps on both sides."""
    return {"model": "scratch:nano", "dataset": "fables", "max_steps": steps}


def tokens_per_second(home: Path, run_id: str) -> float:
    """Median of the run's logged per-step tokens/s, leaving out the first steps."""
    from engine.store import RunStore

    rates = [row["tokens_per_sec"] for row in RunStore(home / "workbench.db").metrics(run_id)
             if row["step"] > WARMUP_STEPS and row.get("tokens_per_sec")]
    return statistics.median(rates)


def train_headless(home: Path, config: dict) -> str:
    """Train in a separate process with no UI, as `lmwb train` does; return the run id."""
    script = ("import json, sys\n"
              "from engine.training import TrainingConfig, TrainingJob\n"
              "job = TrainingJob(TrainingConfig(**json.loads(sys.argv[1])))\n"
              "print(job.run().id)\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(config)], cwd=REPO_ROOT,
                          capture_output=True, text=True, env={**os.environ, "LMWB_HOME": str(home)})
    if done.returncode != 0:
        raise RuntimeError(f"headless training failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def known_runs(home: Path) -> set[str]:
    from engine.store import RunStore

    return {run.id for run in RunStore(home / "workbench.db").list_runs()}


def new_run(home: Path, before: set[str], timeout: float = 300) -> str:
    """The id of the first run to appear that is not in ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = known_runs(home) - before
        if fresh:
            return fresh.pop()
        time.sleep(0.5)
    raise RuntimeError(f"no new run appeared within {timeout:.0f} s")


def wait_for_status(home: Path, run_id: str, status: str, timeout: float = 900) -> None:
    from engine.store import RunStore

    store = RunStore(home / "workbench.db")
    deadline = time.monotonic() + timeout
    while store.get_run(run_id).status != status:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not reach {status} within {timeout:.0f} s")
        time.sleep(0.5)


def start_run_in_app(home: Path) -> tuple[TerminalApp, str]:
    """Start the app, go to Train once torch is loaded, start a run with the form as it opens."""
    app = TerminalApp(home)
    app.wait_for(b"torch ready", 0)
    position, _ = app.press("4")
    app.wait_for(TRAIN_MARK, position)
    time.sleep(1.0)  # the form puts the cursor in its first field once mounted
    # Leave the field, so 4 and 5 switch screens later. Escape goes alone: with
    # a key close behind it, a terminal reads the pair as Alt+key.
    app.press(ESCAPE)
    time.sleep(1.0)
    before = known_runs(home)
    app.press(CTRL_R)
    return app, new_run(home, before)


def wait_for_step(home: Path, run_id: str, step: int, timeout: float = 900) -> None:
    from engine.store import RunStore

    store = RunStore(home / "workbench.db")
    deadline = time.monotonic() + timeout
    while store.get_run(run_id).steps < step:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not reach step {step} within {timeout:.0f} s")
        time.sleep(0.5)


def train_in_app(home: Path, steps: int) -> str:
    """Train from the app's Train screen, left open, for ``steps`` steps; then stop the run."""
    app, run_id = start_run_in_app(home)
    wait_for_step(home, run_id, steps)
    app.press(CTRL_S)
    wait_for_status(home, run_id, "stopped")
    app.quit()
    return run_id


# -----------------------------------------------------------------------------
# 3. Keypress-to-repaint latency during training


def keypress_latencies(home: Path, presses: int) -> tuple[list[float], list[float]]:
    """(typing, screen switches): seconds from writing a key to its repaint, while a run trains.

    Typing: characters into the Runs filter, each timed until the field shows
    it (the filter also re-reads the runs). Screen switches: 5 and 4 in turn,
    each timed until the new screen's text arrives; the heaviest repaint the
    app does (the whole screen: the Train form and chart, the Runs table and chart).
    """
    app, run_id = start_run_in_app(home)
    wait_for_step(home, run_id, WARMUP_STEPS)  # into the steady state: steps are being logged
    switches = []
    for press in range(presses):
        key, mark = ("5", RUNS_MARK) if press % 2 == 0 else ("4", TRAIN_MARK)
        position, sent = app.press(key)
        switches.append(app.wait_for(mark, position, timeout=60) - sent)
        time.sleep(0.25)
    position, _ = app.press("5")
    app.wait_for(RUNS_MARK, position, timeout=60)
    app.press("/")
    time.sleep(0.5)
    typing = []
    for press in range(presses):
        if press % len(FILTER_LETTERS) == 0:  # untimed: start the field again, before it fills
            app.press(CTRL_U)
            time.sleep(0.2)
            app.press(FILTER_PREFIX)  # a key closely after Ctrl+U is lost
            typed = FILTER_PREFIX
            time.sleep(0.5)
        typed += FILTER_LETTERS[press % len(FILTER_LETTERS)]
        position, sent = app.press(typed[-1])
        typing.append(app.wait_for(typed.encode(), position, timeout=60) - sent)
        time.sleep(0.25)
    app.press(CTRL_S)
    app.quit()
    return typing, switches


def main() -> None:
    args = parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="lmwb-bench-ui-"))
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the app and the headless trainer
    print(f"LMWB_HOME {home}; terminal {SIZE[0]}x{SIZE[1]}; torch threads {args.threads or 'default'}; "
          f"load average {os.getloadavg()[0]:.1f}")

    frames = [time_to_first_frame(home) for _ in range(args.frames)]
    walls, cpus = [wall for wall, _ in frames], [cpu for _, cpu in frames]
    print(f"time to first frame: median {statistics.median(walls):.3f} s wall, "
          f"{statistics.median(cpus):.2f} s of CPU (runs: {', '.join(f'{w:.3f}' for w in walls)}) · target <= 1 s")

    headless, in_app = [], []
    # A short run first trains the scratch tokenizer and caches the tokens, for both sides.
    train_headless(home, {**headless_config(WARMUP_STEPS + 2), "warmup_steps": 1})
    for repeat in range(args.repeats):
        sides = [("headless", lambda: train_headless(home, headless_config(args.steps)), headless),
                 ("app", lambda: train_in_app(home, args.steps), in_app)]
        for label, train, rates in sides if repeat % 2 == 0 else reversed(sides):
            rate = tokens_per_second(home, train())
            rates.append(rate)
            print(f"  run {repeat + 1} {label:8s} {rate:8.0f} tokens/s")
    ratio = statistics.median(in_app) / statistics.median(headless)
    pairs = sorted(app / alone for app, alone in zip(in_app, headless))
    print(f"training tokens/s, app open / headless: {statistics.median(in_app):.0f} / "
          f"{statistics.median(headless):.0f} = {ratio:.3f} (pairs {pairs[0]:.2f}-{pairs[-1]:.2f}) · target >= 0.95")

    typing, switches = keypress_latencies(home, args.presses)
    for label, latencies in (("typing in a field", typing), ("switching screens", switches)):
        print(f"keypress to repaint while training, {label}: median {statistics.median(latencies) * 1000:.1f} ms, "
              f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
              f"over {len(latencies)} presses · target p95 <= 50 ms")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
