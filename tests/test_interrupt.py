"""SIGINT/SIGTERM: the run finishes its chunk, writes a checkpoint and its metrics, exits 130/143, and resumes."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Long enough (10 000 one-iteration chunks) that the signal always lands mid-run.
FLAGS = ["--env=cartpole-balance", "--num-envs=4", "--updates-per-iteration=1", "--batch-size=16", "--start-steps=16",
         "--hidden-dim=32", "--log-interval=4", "--total-steps=40000", "--eval-interval=16", "--eval-episodes=2",
         "--episode-length=20", "--checkpoint-interval=100000"]


def metric_steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def start_and_signal(tmp_path: Path, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    process = subprocess.Popen([sys.executable, "flowrl_jax.py", *FLAGS, f"--run-root={tmp_path}"], cwd=ROOT,
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
        resumed = subprocess.run([sys.executable, "flowrl_jax.py", "--resume", str(run_dir),
                                  f"--total-steps={steps[-1] + 8}"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert metric_steps(run_dir) == list(range(4, steps[-1] + 12, 4))
