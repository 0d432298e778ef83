"""SIGINT/SIGTERM: the run finishes its chunk, writes a checkpoint and its metrics, exits 130/143, and resumes."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.run import checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Long enough (10 000 one-iteration chunks) that the signal always lands mid-run.
FLAGS = ["--env=cartpole-balance", "--num-envs=4", "--updates-per-iteration=1", "--batch-size=16", "--start-steps=16",
         "--hidden-dim=32", "--log-interval=4", "--total-steps=40000", "--eval-interval=16", "--eval-episodes=2",
         "--episode-length=20", "--checkpoint-interval=100000"]


def metric_steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


# FlowRL through the harness's command line on tests/toy_env.py's point masses: what a signal mid-training does (the
# chunk, the checkpoint, the logs, the exit code, the resume) does not depend on the physics, and the toy's chunk
# compiles far sooner than MJX's. The signals before the first chunk below go to flowrl_jax.py itself, MJX env build
# included.
TOY_FLOWRL = ("-m", "tests.toy_cli", "flowrl")


def start_and_signal(tmp_path: Path, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    process = subprocess.Popen([sys.executable, *TOY_FLOWRL, *FLAGS, f"--run-root={tmp_path}"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        runs = list(tmp_path.iterdir())
        if runs and (runs[0] / "metrics.csv").exists() and len(metric_steps(runs[0])) >= 20:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be signalled"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), runs[0]


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_checkpoints_the_current_chunk_and_exits(tmp_path, signum, exit_code):
    result, run_dir = start_and_signal(tmp_path, signum)
    assert result.returncode == exit_code, result.stderr[-2000:]
    steps = metric_steps(run_dir)
    (saved,) = checkpoint.list_checkpoints(run_dir / "checkpoints")  # the interval is never reached: the signal's
    assert saved.name == f"checkpoint_{steps[-1]:012d}.msgpack"        # checkpoint is at the last chunk logged
    assert steps == list(range(4, steps[-1] + 4, 4)) and steps[-1] < 40000
    assert (run_dir / "learning_curve.png").exists()
    if signum == signal.SIGTERM:  # resume and finish a few chunks later
        resumed = subprocess.run([sys.executable, *TOY_FLOWRL, "--resume", str(run_dir),
                                  f"--total-steps={steps[-1] + 8}"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert metric_steps(run_dir) == list(range(4, steps[-1] + 12, 4))


class Output:
    """A subprocess's stdout and stderr, read as it writes them."""

    def __init__(self, process: subprocess.Popen):
        import threading

        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for chunk in iter(lambda: stream.read(1), ""):
            self.text += chunk

    def wait_for(self, marker: str, process: subprocess.Popen, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            assert process.poll() is None, f"ended before {marker!r}: {self.text[-2000:]}"
            assert time.monotonic() < deadline, f"no {marker!r} in {self.text[-2000:]}"
            time.sleep(0.05)


def start(tmp_path: Path, *flags: str, fresh_cache: bool = False,
          program: tuple[str, ...] = ("flowrl_jax.py",)) -> tuple[subprocess.Popen, Output]:
    import os

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if fresh_cache:  # nothing compiled before: the compile is long enough to be signalled inside
        env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "xla-cache")
    process = subprocess.Popen([sys.executable, *program, *FLAGS, f"--run-root={tmp_path / 'runs'}", *flags],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return process, Output(process)


@pytest.mark.parametrize("moment, marker", [("env construction", "building"),
                                            ("compilation", "compiling the training step")])
def test_a_signal_before_any_chunk_finished_exits_at_once(tmp_path, moment, marker):
    process, output = start(tmp_path, "--hidden-dim=24", fresh_cache=moment == "compilation")
    output.wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143, output.text[-2000:]
    output.thread.join(timeout=10)
    assert "SIGTERM: nothing new to save since the start; exiting" in output.text
    assert not list(tmp_path.glob("runs/*/checkpoints/*.msgpack"))


def test_a_signal_during_imports_exits_promptly(tmp_path):
    # Before the watcher is installed SIGTERM keeps its default action (a library may swallow the KeyboardInterrupt
    # that SIGINT raises inside an import, so SIGINT is promised from the watcher on).
    process, _ = start(tmp_path)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) != 0
    assert not list(tmp_path.glob("runs/*/checkpoints/*.msgpack"))


def test_the_first_signal_is_answered_at_once_and_a_second_stops_at_once(tmp_path):
    # 10 000-iteration chunks of the toy: long enough that both signals land inside one chunk.
    process, output = start(tmp_path, "--log-interval=40000", "--eval-interval=1000000", "--total-steps=400000",
                            program=TOY_FLOWRL)
    output.wait_for("compiled and ran the first chunk", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output.wait_for("finishing the current chunk", process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130, output.text[-2000:]
    output.thread.join(timeout=10)
    assert "SIGINT again: stopping now; last good checkpoint: none was written yet" in output.text
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not list(run_dir.glob("checkpoints/*"))  # the interval was never reached, and no partial save is left
    steps = metric_steps(run_dir)
    assert steps and steps == list(range(40000, steps[-1] + 40000, 40000))  # every finished chunk's row, none torn
