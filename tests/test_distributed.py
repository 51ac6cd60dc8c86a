"""Several processes, one run: torchrun with the gloo backend on this CPU machine.

The story: a user with N GPUs types ``lmwb train --nproc N ...``; the run
appears in the store like any other, with its world size, and its loss curve
is the curve one process would draw with the same global batch. Two
machines do the same with torchrun's rendezvous endpoint (here: two launches
on one machine). No launch waits forever: each test launch has a timeout
that kills it and its ranks and fails with what it printed, and the ranks
themselves give up on a peer that died or hangs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from engine.datasets import WindowSampler, open_dataset, tokenize_dataset
from engine.distributed import (
    ProcessRank,
    _short_reason,
    collective_timeout,
    exchanging_gradients,
    rendezvous_timeout,
    this_process,
    torchrun_arguments,
    training_device,
)
from engine.errors import SettingsError, TrainingError
from engine.models import load_model


@pytest.fixture
def train_split(tiny_model_dir: Path):
    tokenizer = load_model(str(tiny_model_dir), device="cpu").tokenizer
    return tokenize_dataset(open_dataset("fables"), tokenizer).split(0.1)[0]


def test_two_ranks_together_see_exactly_the_batch_of_one_process_with_twice_the_batch(train_split):
    alone = WindowSampler(train_split, block_size=16, batch_size=6, seed=7)
    ranks = [WindowSampler(train_split, block_size=16, batch_size=3, seed=7, rank=r, world_size=2) for r in (0, 1)]

    for _ in range(4):
        x, y = alone.next_batch()
        parts = [sampler.next_batch() for sampler in ranks]
        assert x.tolist() == parts[0][0].tolist() + parts[1][0].tolist()
        assert y.tolist() == parts[0][1].tolist() + parts[1][1].tolist()
    assert parts[0][0].tolist() != parts[1][0].tolist()  # each rank trains on its own windows


def test_the_process_rank_comes_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch):
    assert this_process() == ProcessRank(0, 0, 1) and this_process().writes and not this_process().distributed

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    place = this_process()
    assert place == ProcessRank(rank=3, local_rank=1, world_size=4)
    assert place.distributed and not place.writes

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(TrainingError, match="WORLD_SIZE='two'"):
        this_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match="RANK=3 does not fit WORLD_SIZE=2"):
        this_process()


def test_cpu_ranks_train_on_the_cpu_and_a_named_gpu_cannot_be_shared():
    two = ProcessRank(rank=1, local_rank=1, world_size=2)
    assert training_device("cpu", two) == "cpu"
    assert training_device("cuda:1", ProcessRank()) == "cuda:1"  # one process keeps what it asked for
    with pytest.raises(SettingsError, match="each takes the GPU of its local rank"):
        training_device("cuda:1", two)
    with pytest.raises(SettingsError) as caught:
        training_device("mps", two)
    assert caught.value.field == "device"


def test_torchruns_arguments_are_a_list_that_no_shell_reads():
    arguments = torchrun_arguments("tui.cli", ["train", "--name=a name; rm -rf ~", "--steps=3"], 4)
    assert "--nnodes=1" in arguments and "--nproc-per-node=4" in arguments
    assert arguments[-5:] == ["-m", "tui.cli", "train", "--name=a name; rm -rf ~", "--steps=3"]


def test_every_launch_meets_on_a_rendezvous_of_its_own_that_gives_up(monkeypatch: pytest.MonkeyPatch):
    first, second = (torchrun_arguments("tui.cli", ["train"], 2) for _ in range(2))
    # A c10d store that this launch hosts on a port the system picks as it binds: two launches at once never
    # share one (--standalone's "localhost" depends on this machine's name; a port chosen ahead can be taken).
    assert "--rdzv-backend=c10d" in first and "--rdzv-endpoint=127.0.0.1:0" in first
    assert "--local-addr=127.0.0.1" in first and "--standalone" not in first
    ids = [next(a for a in arguments if a.startswith("--rdzv-id=")) for arguments in (first, second)]
    assert ids[0] != ids[1]
    assert "--rdzv-conf=join_timeout=300,is_host=1" in first

    monkeypatch.setenv("LMWB_RENDEZVOUS_TIMEOUT", "45")
    monkeypatch.setenv("LMWB_COLLECTIVE_TIMEOUT", "2.5")
    assert "--rdzv-conf=join_timeout=45,is_host=1" in torchrun_arguments("tui.cli", ["train"], 2)
    assert (rendezvous_timeout(), collective_timeout()) == (45, datetime.timedelta(seconds=2.5))
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv("LMWB_COLLECTIVE_TIMEOUT", bad)
        with pytest.raises(TrainingError, match=f"LMWB_COLLECTIVE_TIMEOUT='{bad}' is not a number of seconds"):
            collective_timeout()
    monkeypatch.delenv("LMWB_COLLECTIVE_TIMEOUT")
    assert collective_timeout() == datetime.timedelta(minutes=30)


def test_a_gloo_error_is_told_in_a_few_words():
    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed "
        "by peer [127.0.0.1]:51903. This is typically caused by a remote worker crashing. Check the "
        "logs of the remote worker before reporting an error. GLHF!"
    )
    assert _short_reason(gloo) == "Connection closed by peer [127.0.0.1]:51903"
    timeout = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms "
        "for recv operation to complete"
    )
    assert _short_reason(timeout) == "Timed out waiting 5000ms for recv operation to complete"


def test_only_the_process_groups_errors_in_a_training_step_are_taken_for_a_lost_peer():
    import torch

    lost = (
        RuntimeError(
            "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:9884: "
            "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application."
        ),
        torch.distributed.DistBackendError("NCCL communicator was aborted on rank 0."),
    )
    for error in lost:
        lost_while_exchanging = "^Lost the other training processes while exchanging gradients \\("
        with pytest.raises(TrainingError, match=lost_while_exchanging), exchanging_gradients():
            raise error
    # Out of memory, or a bug, in the same step is not a lost peer: it passes unchanged.
    for error in (torch.OutOfMemoryError("CUDA out of memory."), RuntimeError("mat1 and mat2 shapes cannot be")):
        with pytest.raises(RuntimeError) as raised, exchanging_gradients():
            raise error
        assert raised.value is error


def test_ranks_that_never_meet_end_the_launch_with_an_error_that_says_so(monkeypatch: pytest.MonkeyPatch):
    import torch.distributed.run
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousTimeoutError

    from engine.distributed import run_under_torchrun

    monkeypatch.setenv("LMWB_RENDEZVOUS_TIMEOUT", "7")
    launched = []

    def never_meet(args):
        launched.append(args)
        raise RendezvousTimeoutError("timed out")

    monkeypatch.setattr(torch.distributed.run, "run", never_meet)
    with pytest.raises(
        TrainingError,
        match=r"The 2 training processes did not all meet within 7 s .* allow longer "
        r"with LMWB_RENDEZVOUS_TIMEOUT=SECONDS",
    ):
        run_under_torchrun("tui.cli", ["train"], 2)
    assert launched[0].rdzv_endpoint == "127.0.0.1:0" and launched[0].rdzv_conf == "join_timeout=7,is_host=1"

    monkeypatch.setattr(
        torch.distributed.run,
        "run",
        lambda args: (_ for _ in ()).throw(RendezvousConnectionError("The connection to the C10d store has failed.")),
    )
    with pytest.raises(
        TrainingError,
        match=r"torchrun could not set up .* \(The connection to the C10d store has "
        r"failed\); try again",
    ):
        run_under_torchrun("tui.cli", ["train"], 2)

    monkeypatch.setenv("LMWB_COLLECTIVE_TIMEOUT", "never")  # refused before anything starts
    with pytest.raises(TrainingError, match="LMWB_COLLECTIVE_TIMEOUT='never'"):
        run_under_torchrun("tui.cli", ["train"], 2)


# -----------------------------------------------------------------------------
# lmwb train --nproc 2: real processes under torchrun, gloo on the CPU

REPOSITORY = Path(__file__).resolve().parent.parent
# A launch that takes longer than this has hung: it is killed with its ranks and the test fails.
LAUNCH_TIMEOUT = 240
# What the test launches allow: short enough that a lost peer ends a test well within LAUNCH_TIMEOUT.
TEST_TIMEOUTS = {"LMWB_COLLECTIVE_TIMEOUT": "120", "LMWB_RENDEZVOUS_TIMEOUT": "120"}


def start_python(*arguments: str, environment: dict[str, str] | None = None) -> subprocess.Popen:
    """`python ARGUMENTS` started in a process of its own, from the repository, as a user would type it."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY),
        "OMP_NUM_THREADS": "1",
        **TEST_TIMEOUTS,
        **(environment or {}),
    }
    return subprocess.Popen(
        [sys.executable, *arguments],
        cwd=REPOSITORY,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def kill_with_its_ranks(process: subprocess.Popen) -> None:
    """Kill a launch and everything it started (torchrun starts each rank in a session of its own)."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()


def finish(launches: list[subprocess.Popen], timeout: float = LAUNCH_TIMEOUT) -> list[subprocess.CompletedProcess]:
    """Wait for launches that run at once; one still going after ``timeout`` seconds fails the test."""
    deadline = time.monotonic() + timeout
    results = []
    for number, launch in enumerate(launches):
        try:
            stdout, stderr = launch.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = number
            break
        results.append(subprocess.CompletedProcess(launch.args, launch.returncode, stdout, stderr))
    else:
        return results
    for launch in launches[hung:]:
        kill_with_its_ranks(launch)
    output = [(result.stdout, result.stderr) for result in results] + [
        launch.communicate(timeout=30) for launch in launches[hung:]
    ]
    printed = "\n".join(
        f"--- launch {n}: stdout\n{out}\n--- launch {n}: stderr\n{err}" for n, (out, err) in enumerate(output)
    )
    pytest.fail(
        f"launch {hung} ({' '.join(launches[hung].args[1:])}) hung: still going after {timeout:g} s, so it "
        f"was killed with its ranks. What the launches printed:\n{printed}",
        pytrace=False,
    )


def run_python(
    *arguments: str, environment: dict[str, str] | None = None, timeout: float = LAUNCH_TIMEOUT
) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` to its end, or a failed test if it runs past ``timeout``."""
    return finish([start_python(*arguments, environment=environment)], timeout)[0]


def lmwb(*arguments: str) -> subprocess.CompletedProcess:
    """`lmwb ARGUMENTS`."""
    return run_python("-m", "tui.cli", *arguments)


@pytest.fixture
def fables_excerpt(tmp_path: Path) -> Path:
    path = tmp_path / "fables-excerpt.txt"
    path.write_text((REPOSITORY / "sample_texts" / "fables.txt").read_text(encoding="utf-8")[:24_000], encoding="utf-8")
    return path


# scratch:nano has no dropout, so one process and two see the same arithmetic.
SETTINGS = dict(
    model="scratch:nano",
    block_size=32,
    learning_rate=3e-3,
    min_learning_rate=3e-4,
    warmup_steps=2,
    eval_every=3,
    sample_every=3,
    vocab_size=512,
    device="cpu",
    seed=11,
)


def as_flags(settings: dict) -> list[str]:
    from tui.cli.training_commands import TRAINING_FLAG_NAMES

    return [f"{TRAINING_FLAG_NAMES[field]}={value}" for field, value in settings.items()]


@pytest.mark.slow
def test_two_processes_draw_the_loss_curve_of_one_process_with_the_same_global_batch(fables_excerpt: Path):
    from engine.store import RunStore
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    store = RunStore()
    # One process, 4 windows a step: 3 steps, then resumed to 6.
    alone = TrainingConfig(dataset=str(fables_excerpt), batch_size=4, max_steps=3, **SETTINGS)
    first = TrainingJob(alone, store).run()
    TrainingJob(TrainingConfig.from_dict({**alone.as_dict(), "max_steps": 6}), store, resume_run=first.id).run()

    # Two processes, 2 windows each: the same, through `lmwb train --nproc 2` and its resume.
    flags = as_flags({"dataset": fables_excerpt, "batch_size": 2, **SETTINGS})
    started = lmwb("train", "--nproc", "2", "--steps", "3", *flags)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "global batch 2 x 1 x 2 = 4 windows" in started.stdout
    two = next(run for run in store.list_runs() if run.id != first.id)
    assert f"Started run {two.id} as 2 processes" in started.stdout
    # torchrun by hand works too: resume it that way (with the launch's own rendezvous, as lmwb's).
    resumed = run_python(
        "-m", "torch.distributed.run", *torchrun_arguments("tui.cli", ["train", "--resume", two.id, "--steps", "6"], 2)
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resuming run {two.id} as 2 processes" in resumed.stdout

    assert len(store.list_runs()) == 2  # the second rank wrote no run of its own
    two = store.get_run(two.id)
    assert (two.status, two.steps, two.world_size, two.tokens) == ("completed", 6, 2, 6 * 4 * 32)
    expected, got = store.metrics(first.id), store.metrics(two.id)
    assert [row["step"] for row in got] == [1, 2, 3, 4, 5, 6]
    for column in ("train_loss", "val_loss", "grad_norm", "lr"):
        assert [row[column] for row in got] == pytest.approx(
            [row[column] for row in expected], rel=1e-4, nan_ok=True
        ), column
    assert [row["step"] for row in store.samples(two.id)] == [3, 6]  # rank 0 alone samples
    assert [row["step"] for row in store.checkpoints(two.id)] == [3, 6]


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 now, for a rendezvous endpoint that two launches must both be told."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_machines_meet_on_a_rendezvous_endpoint_and_train_the_run_of_one_process(fables_excerpt: Path):
    from engine.store import RunStore
    from engine.training import TrainingJob
    from engine.training_config import TrainingConfig

    store = RunStore()
    alone = TrainingJob(TrainingConfig(dataset=str(fables_excerpt), batch_size=4, max_steps=3, **SETTINGS), store).run()

    # Two "machines" on this one: two torchrun launches of one process each, meeting on a c10d rendezvous at an
    # endpoint that the first hosts (is_host=1) and the second joins, as README's commands for two machines do.
    # (torchrun's --node-rank is for its static rendezvous; c10d numbers the machines itself, by address and pid.)
    endpoint, meeting = f"127.0.0.1:{free_loopback_port()}", f"lmwb-test-{uuid.uuid4().hex}"
    flags = as_flags({"dataset": fables_excerpt, "batch_size": 2, **SETTINGS})
    machines = [
        start_python(
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={meeting}",
            f"--rdzv-conf=join_timeout=120,is_host={int(host)}",
            "--local-addr=127.0.0.1",
            "-m",
            "tui.cli",
            "train",
            "--steps",
            "3",
            *flags,
        )
        for host in (True, False)
    ]
    results = finish(machines)
    printed = "\n".join(result.stdout + result.stderr for result in results)
    assert [result.returncode for result in results] == [0, 0], printed

    runs = [run for run in store.list_runs() if run.id != alone.id]
    assert len(runs) == 1, printed  # one run, written by whichever machine's process became rank 0
    two = runs[0]
    assert f"Started run {two.id} as 2 processes" in printed
    assert (two.status, two.steps, two.world_size, two.tokens) == ("completed", 3, 2, 3 * 4 * 32)
    expected, got = store.metrics(alone.id), store.metrics(two.id)
    assert [row["step"] for row in got] == [1, 2, 3]
    for column in ("train_loss", "val_loss", "grad_norm", "lr"):
        assert [row[column] for row in got] == pytest.approx(
            [row[column] for row in expected], rel=1e-4, nan_ok=True
        ), column


# A module that torchrun runs as two ranks: they join, then rank 1 dies, hangs, or lets rank 0 tear down while
# gloo still finishes a collective; rank 0 reports as lmwb would.
RANKS = """
import os, signal, sys, time
import torch
import torch.distributed.nn  # imported before the group exists, as in lmwb: its defaults hold no group
from engine import distributed
from engine.errors import WorkbenchError

place = distributed.this_process()
cpu = torch.device("cpu")


def tear_down_while_gloo_still_works():
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    model(torch.ones(1, 2)).sum().backward()
    if place.rank == 1:
        time.sleep(3)  # so rank 0's gather is still under way in gloo's thread when rank 0 ends
    gathered = [torch.zeros(4) for _ in range(2)] if place.rank == 0 else None
    work = torch.distributed.gather(torch.full((4,), float(place.rank)), gathered, dst=0, async_op=True)
    del work, gathered  # Python lets go first: gloo's thread frees the collective, and needs the GIL for it
    distributed.end_process_group()
    # Leaving frees the model, whose DDP Reducer held the group last: the process must still exit.


try:
    distributed.start_process_group(cpu)
    if sys.argv[1] == "teardown":
        tear_down_while_gloo_still_works()
    else:
        if place.rank == 1:
            if sys.argv[1] == "dies":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)  # hangs
        distributed.agree(False, False, cpu)
except WorkbenchError as exc:
    print(f"lmwb: error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)
print(f"rank {place.rank} done", flush=True)
"""


def launch_ranks(
    tmp_path: Path, how: str, collective_timeout_seconds: int = 120
) -> tuple[subprocess.CompletedProcess, float]:
    """Two ranks of RANKS under run_under_torchrun, as lmwb train --nproc 2 starts them: (result, seconds)."""
    (tmp_path / "two_ranks.py").write_text(RANKS, encoding="utf-8")
    started = time.monotonic()
    result = run_python(
        "-c",
        "import sys; from engine.distributed import run_under_torchrun; "
        "sys.exit(run_under_torchrun('two_ranks', sys.argv[1:], 2))",
        how,
        environment={
            "PYTHONPATH": f"{REPOSITORY}{os.pathsep}{tmp_path}",
            "LMWB_COLLECTIVE_TIMEOUT": str(collective_timeout_seconds),
        },
        timeout=120,
    )
    return result, time.monotonic() - started


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_launch_with_a_line_that_says_which(tmp_path: Path):
    result, seconds = launch_ranks(tmp_path, "dies")

    assert result.returncode != 0
    killed = [line for line in result.stderr.splitlines() if "was killed by" in line]
    assert len(killed) == 1 and killed[0].startswith("lmwb: error: training process 1 of 2 (pid "), result.stderr
    assert "SIGKILL (often the system running out of memory); torchrun stopped the others" in killed[0]
    assert "Traceback" not in result.stderr
    assert seconds < 100  # not the 120 s that rank 0 would wait for an answer: the dead rank ended the launch


@pytest.mark.slow
def test_a_rank_that_hangs_is_given_up_on_after_the_collective_timeout(tmp_path: Path):
    result, seconds = launch_ranks(tmp_path, "hangs", collective_timeout_seconds=5)

    assert result.returncode != 0, result.stdout + result.stderr
    lost = [line for line in result.stderr.splitlines() if line.startswith("lmwb: error:")]
    # The clear line comes first. On a loaded machine the rank that gave up may then abort in gloo's
    # teardown (std::terminate), which the launcher reports in a second line naming the signal.
    assert (
        lost
        and "Lost the other training processes while agreeing on whether to stop (Timed out waiting 5000ms" in lost[0]
    ), result.stderr
    assert all("was killed by SIGABRT" in line for line in lost[1:]), result.stderr
    assert "each waits 5 s for the others; LMWB_COLLECTIVE_TIMEOUT sets it" in lost[0]
    assert "resume it from its last checkpoint" in lost[0] and "Traceback" not in result.stderr
    assert seconds < 100  # the 5 s it allowed, then torchrun ended the hung rank: not the test's 120 s


@pytest.mark.slow
def test_a_rank_exits_when_its_group_goes_while_gloo_still_finishes_a_collective(tmp_path: Path):
    # torch frees a gloo group that DDP's Reducer held last with the GIL held, and joins gloo's thread, which
    # may need the GIL to free a finished collective: both then wait forever. This hung `make test`.
    result, _ = launch_ranks(tmp_path, "teardown")

    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.split("\n")[:-1]) == ["rank 0 done", "rank 1 done"]


# A module that torchrun runs as the two ranks of `lmwb train`: rank 1 is killed in its second step, between its
# forward and backward passes, so rank 0 loses it inside DDP's backward pass, where the ranks exchange gradients.
LOST_IN_BACKWARD = """
import os, signal, sys
import engine.training
from tui.cli import main

if os.environ["RANK"] == "1":
    forward = engine.training.next_token_loss
    passes = []

    def killed_after_the_second_forward_pass(*arguments):
        loss = forward(*arguments)
        passes.append(loss)
        if len(passes) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return loss

    engine.training.next_token_loss = killed_after_the_second_forward_pass
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_rank_lost_in_the_backward_pass_ends_the_run_with_a_line_that_says_so(
    tmp_path: Path, tiny_model_dir: Path, fables_excerpt: Path
):
    from engine.store import RunStore

    (tmp_path / "lose_rank_1.py").write_text(LOST_IN_BACKWARD, encoding="utf-8")
    flags = as_flags({**SETTINGS, "model": tiny_model_dir, "dataset": fables_excerpt, "batch_size": 2})
    result = run_python(
        "-c",
        "import sys; from engine.distributed import run_under_torchrun; "
        "sys.exit(run_under_torchrun('lose_rank_1', sys.argv[1:], 2))",
        "train",
        "--steps",
        "4",
        *flags,
        # The lost rank's closed connection ends rank 0's wait at once; the timeout only bounds a miss.
        environment={"PYTHONPATH": f"{REPOSITORY}{os.pathsep}{tmp_path}", "LMWB_COLLECTIVE_TIMEOUT": "30"},
        timeout=120,
    )

    assert result.returncode != 0, result.stdout + result.stderr
    lost = [line for line in result.stderr.splitlines() if "Lost the other training processes" in line]
    assert lost and lost[0].startswith("lmwb: error: Lost the other training processes while exchanging gradients ("), (
        result.stderr
    )
    assert "resume it from its last checkpoint" in lost[0]
    assert "internal error" not in result.stderr, result.stderr
    (run,) = RunStore().list_runs()
    assert run.status == "failed" and "while exchanging gradients" in (run.error or ""), run


def test_resuming_with_another_number_of_processes_is_refused(fables_excerpt: Path, capsys):
    from engine.store import RunStore
    from tui.cli import main

    run = RunStore().create_run(
        name="two",
        model="scratch:nano",
        dataset=str(fables_excerpt),
        world_size=2,
        config={"model": "scratch:nano", "dataset": str(fables_excerpt), "max_steps": 3, "warmup_steps": 1},
    )
    RunStore().set_status(run.id, "stopped")

    assert main(["train", "--resume", run.id, "--steps", "6"]) == 2
    assert f"resume it as 2 (lmwb train --resume {run.id} --nproc 2)" in capsys.readouterr().err


def test_nproc_is_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys):
    from tui.cli import main

    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--nproc", "2", "--model", "scratch:nano", "--dataset", "fables"]) == 2
    assert "under torchrun, leave it out" in capsys.readouterr().err


def test_each_rank_runs_the_users_arguments_less_nproc():
    from tui.cli import build_parser
    from tui.cli.training_commands import _rank_arguments

    typed = [
        "train",
        "--model",
        "./m",
        "--dataset",
        "my data",
        "--nproc",
        "2",
        "--sample-prompt",
        "-dash first",
        "--lr",
        "0.001",
        "--lora",
        "--name",
        "a; b",
    ]
    arguments = _rank_arguments(build_parser().parse_args(typed))

    assert "--nproc" not in " ".join(arguments)
    again = vars(build_parser().parse_args(arguments))
    assert {key: value for key, value in again.items() if key != "nproc"} == {
        key: value for key, value in vars(build_parser().parse_args(typed)).items() if key != "nproc"
    }
