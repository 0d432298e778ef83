"""Soak test of exact resume: a small multi-seed run killed with SIGKILL at random moments and resumed each time,
against the same run uninterrupted.

Each kill lands a random delay after the run has a checkpoint to come back to, so kills fall mid-chunk, during an
evaluation, during a checkpoint write or while compiling after a resume. At the end the interrupted run's eval.csv,
metrics.csv (wall-clock columns aside) and final train state must equal the uninterrupted run's exactly.

    python benchmarks/soak_kill_resume.py --kills 10 --out benchmarks/results/soak_kill_resume.txt
"""

import csv
import dataclasses
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.run import checkpoint  # noqa: E402

TIMING = {"env_steps_per_s", "updates_per_s"}


@dataclasses.dataclass
class Args:
    kills: int = 10
    """SIGKILLs before the interrupted run is let finish."""
    max_delay: float = 6.0
    """Each kill lands uniformly within this many seconds after the run has a checkpoint."""
    total_steps: int = 480
    """Env steps of the run (2 seeds, 4 envs each; a checkpoint every 32 steps)."""
    seed: int = 0
    """Seed of the kill times."""
    work_dir: str = "/tmp/flowrl-soak"
    """Where both runs are written (emptied first)."""
    out: str | None = None
    """Also write the report to this file."""
    module: list[str] | None = None
    """Run this module and its first arguments (`python -m`) instead of flowrl_jax.py, with the same flags (the test
    suite soaks `tests.toy_cli flowrl`: FlowRL and the harness around a toy env)."""


def flags(args: Args, root: Path) -> list[str]:
    return ["--env=cartpole-balance", "--num-seeds=2", "--num-envs=4", "--updates-per-iteration=1",
            "--batch-size=16", "--start-steps=16", "--hidden-dim=16", "--log-interval=8",
            f"--total-steps={args.total_steps}", "--eval-interval=64", "--eval-episodes=2", "--episode-length=20",
            "--checkpoint-interval=32", "--keep-checkpoints=2", f"--run-root={root}"]


def script(args: Args, *argv: str) -> subprocess.Popen:
    program = ["-m", *args.module] if args.module else ["flowrl_jax.py"]
    return subprocess.Popen([sys.executable, *program, *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def table(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def final_leaves(run_dir: Path) -> dict:
    return checkpoint.read_by_path(checkpoint.list_checkpoints(run_dir / "checkpoints")[-1])[0]


def compare(full: Path, interrupted: Path) -> list[str]:
    """What differs between the two runs (empty: identical)."""
    differences = [name for name in ("eval.csv", "metrics.csv") if table(full / name) != table(interrupted / name)]
    expected, found = final_leaves(full), final_leaves(interrupted)
    if expected.keys() != found.keys():
        differences.append("checkpoint layout")
    differences += [f"state {name}" for name in expected if name in found and not np.array_equal(expected[name],
                                                                                                    found[name])]
    return differences


def soak(args: Args) -> dict:
    """Run both, return {kills, resumes, differences, seconds}."""
    rng = random.Random(args.seed)
    work = Path(args.work_dir)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    began = time.monotonic()
    full_process = script(args, *flags(args, work / "full"))
    if full_process.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed: {full_process.stderr.read()[-2000:]}")
    (full,) = (work / "full").iterdir()

    process = script(args, *flags(args, work / "interrupted"))
    kills = resumes = 0
    while True:
        while process.poll() is None and not list((work / "interrupted").glob("*/checkpoints/*.msgpack")):
            time.sleep(0.05)
        if process.poll() is None and kills < args.kills:
            time.sleep(rng.uniform(0, args.max_delay))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
        if process.wait() == 0:
            break
        if process.returncode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"the interrupted run failed ({process.returncode}): {process.stderr.read()[-2000:]}")
        (run_dir,) = (work / "interrupted").iterdir()
        process = script(args, "--resume", str(run_dir))
        resumes += 1
    (interrupted,) = (work / "interrupted").iterdir()
    return dict(kills=kills, resumes=resumes, differences=compare(full, interrupted),
                seconds=time.monotonic() - began)


def main(argv=None) -> None:
    args = tyro.cli(Args, args=argv)
    result = soak(args)
    verdict = "identical" if not result["differences"] else "DIFFERENT: " + ", ".join(result["differences"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = (f"command: python benchmarks/soak_kill_resume.py {' '.join(sys.argv[1:] if argv is None else argv)}\n"
              f"date {time.strftime('%Y-%m-%d')}, commit {commit.strip()}, "
              f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})\n"
              f"kills: {result['kills']}, resumes: {result['resumes']}, wall time {result['seconds']:.0f} s\n"
              f"eval.csv, metrics.csv and the final train state against the uninterrupted run: {verdict}\n")
    print(report, end="")
    if args.out:
        Path(args.out).write_text(report)
    if result["differences"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
