"""Run a benchmark suite: tasks × algorithms, each pair one training program with all its seeds vmapped.

    python benchmarks/run_suite.py --suite cpu              # ~1 h on a 2-core CPU
    python benchmarks/run_suite.py --suite paper            # the FlowRL paper's DMC tasks, 1 M steps, 5 seeds (GPU)
    python benchmarks/run_suite.py --suite dmc-paper        # the same on original dm_control, dog included, paper mode
    python benchmarks/run_suite.py --suite dmc-200k         # cheetah-run, walker-walk, 200 k steps, 3 seeds (CPU, hours)
    python benchmarks/run_suite.py --suite gym              # Gymnasium MuJoCo v4, paper mode
    python benchmarks/run_suite.py --suite myo              # MyoSuite's hard hand tasks, paper mode, success rate
    python benchmarks/run_suite.py --suite mine --tasks cartpole-swingup --algos sac --num-seeds 2 --total-steps 20000

Results: benchmarks/results/<suite>/<task>/<algo>.csv (seed, step, eval_return: the mean stochastic eval return; or
eval_success, the stochastic eval success rate, for a task that reports success: MyoSuite's), plus runs.csv there
(one row per finished pair: flags, wall-clock, device, command). Run directories, logs and checkpoints go under
runs/suites/<suite>/<task>/<algo>/ (not committed).

Resumable: a pair whose results CSV exists is skipped; an interrupted pair continues from its newest checkpoint
(the training scripts' --resume). Plot with benchmarks/plot.py --suite <suite>.
"""

import csv
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.record import append_row, provenance  # noqa: E402
from common.checks import require_positive  # noqa: E402
from common.envs.tasks import resolve_task  # noqa: E402
from common.run.plotting import read_eval_csv  # noqa: E402

Algo = Literal["flowrl", "sac"]


@dataclasses.dataclass(frozen=True)
class Suite:
    tasks: dict[str, int]                   # task -> total env steps per seed
    algos: tuple[str, ...] = ("flowrl", "sac")
    num_seeds: int = 5
    flags: tuple[str, ...] = ()             # passed to every training run
    algo_flags: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    evaluations: int = 10                   # evaluations per run, evenly spaced (the last at the end)
    backend: str = "auto"                   # --backend of every run (see common/envs/tasks.py)


PAPER = ("--preset", "paper")  # the reference code's protocol (common/run/presets.py)
REFERENCE_FLOWRL = ("--target-rate", "0.95")  # the one hyperparameter whose default is not the reference's

SUITES = {
    # Dense-reward tasks that both algorithms learn within 10 k updates, with small networks, sized so the whole
    # suite runs in about an hour on the 2-core CPU machine (measured: see the README). The update-to-data ratio is
    # 1/4 (32 envs, 8 updates per step) to fit the budget. Tasks whose reward stays at 0 until the policy finds it
    # (pendulum-swingup, point-mass-easy, finger-spin) stayed there at this budget, and cheetah-run near a random
    # policy's return; cheetah-run has a budget of its own in dmc-200k. SAC starts at α = 0.1: from α = 1 it spends
    # most of 10 k updates near maximum entropy (walker-stand: final 162 against 264; the README).
    "cpu": Suite(
        tasks={"walker-stand": 40_000, "cartpole-balance": 40_000, "cartpole-swingup": 40_000,
               "reacher-easy": 40_000},
        num_seeds=3,
        flags=("--num-envs", "32", "--updates-per-iteration", "8", "--batch-size", "256", "--start-steps", "2560",
               "--log-interval", "2048", "--eval-episodes", "5", "--buffer-size", "100000"),
        algo_flags={"flowrl": ("--hidden-dim", "128"),
                    "sac": ("--actor-hidden-dim", "128", "--critic-hidden-dim", "128", "--init-temperature", "0.1")},
    ),
    # FlowRL against SAC at a budget with a published anchor, on the original DM Control suite and the CPU: 200 k env
    # steps at 1 update per 2 env steps (100 k updates) is the simulated time and the updates of tdmpc2's SAC curves
    # at 200 k frames with action repeat 2 (ANCHORS.md). 3 seeds, not 5: a FlowRL run takes hours on 2 cores.
    # FlowRL ran with the reference's ρ, before the default changed.
    "dmc-200k": Suite(
        tasks={"cheetah-run": 200_000, "walker-walk": 200_000},
        num_seeds=3,
        flags=("--num-envs", "16", "--updates-per-iteration", "8", "--batch-size", "256", "--start-steps", "5000",
               "--buffer-size", "200000", "--log-interval", "4000"),
        algo_flags={"flowrl": ("--hidden-dim", "256", *REFERENCE_FLOWRL),
                    "sac": ("--actor-hidden-dim", "256", "--critic-hidden-dim", "256")},
        evaluations=20, backend="dm_control",
    ),
    # The FlowRL paper's DMC tasks at 1 M env steps and 5 seeds, with the scripts' GPU defaults (128 envs, 8 updates
    # per step, batch 512, reference network sizes). One command on one GPU; resumable across sessions.
    "paper": Suite(
        tasks={task: 1_000_000 for task in ("humanoid-walk", "humanoid-run", "humanoid-stand", "walker-run",
                                            "walker-stand", "cheetah-run", "hopper-hop")},
        num_seeds=5,
    ),
    # The FlowRL paper's own tasks on the original DM Control suite (CPU MuJoCo, stepped on the host), with the
    # reference code's protocol (`--preset paper`). 1 M steps, the lower end of the reference's 1-2 M.
    "dmc-paper": Suite(
        tasks={task: 1_000_000 for task in ("dog-run", "dog-trot", "dog-stand", "dog-walk", "humanoid-walk",
                                            "humanoid-run", "humanoid-stand", "walker-run", "walker-stand",
                                            "quadruped-walk")},
        num_seeds=5, flags=PAPER, evaluations=100, backend="dm_control",
    ),
    # The Gymnasium MuJoCo v4 tasks that third-party tables quote FlowRL on, with the reference's protocol, 1 M steps.
    "gym": Suite(
        tasks={task: 1_000_000 for task in ("Ant-v4", "HalfCheetah-v4", "Walker2d-v4", "Swimmer-v4", "Hopper-v4",
                                            "Humanoid-v4")},
        num_seeds=5, flags=PAPER, evaluations=100, backend="gymnasium",
    ),
    # MyoSuite's hard ("Random") hand tasks that SimbaV2, BRO and TD-MPC2 publish success rates on, at their
    # 1 M steps, with the reference's protocol; scored by success rate (docs/myosuite.md, which also estimates its
    # time).
    "myo": Suite(
        tasks={task: 1_000_000 for task in ("myoHandReachRandom-v0", "myoHandPoseRandom-v0", "myoHandPenTwirlRandom-v0",
                                            "myoHandObjHoldRandom-v0", "myoHandKeyTurnRandom-v0")},
        num_seeds=5, flags=PAPER, evaluations=100, backend="myosuite",
    ),
}


@dataclasses.dataclass
class Args:
    suite: str = "cpu"
    """A named suite (cpu, dmc-200k, paper, dmc-paper, gym, myo), or a new name for a custom suite given by
    --tasks/--total-steps."""
    tasks: tuple[str, ...] = ()
    """Restrict a named suite to these tasks, or list the tasks of a custom suite."""
    algos: tuple[Algo, ...] = ()
    """Restrict to these algorithms (default: the suite's)."""
    num_seeds: int | None = None
    """Seeds per task and algorithm, trained together in one program (default: the suite's)."""
    total_steps: int | None = None
    """Env steps per run, overriding the suite's per-task budgets (required for a custom suite)."""
    results_root: str = "benchmarks/results"
    """Results go to <results-root>/<suite>/<task>/<algo>.csv."""
    runs_root: str = "runs/suites"
    """Run directories (checkpoints, logs) go to <runs-root>/<suite>/<task>/<algo>/."""
    dry_run: bool = False
    """Print the commands and what would be skipped or resumed; run nothing."""


@dataclasses.dataclass(frozen=True)
class Job:
    task: str
    algo: str
    num_seeds: int
    total_steps: int
    flags: tuple[str, ...]


def plan(args: Args) -> list[Job]:
    """The suite's jobs after the command-line restrictions; raises ValueError on bad input."""
    if args.suite in SUITES:
        suite = SUITES[args.suite]
    elif not args.tasks or args.total_steps is None:
        raise ValueError(f"--suite {args.suite!r} is not a named suite ({', '.join(SUITES)}); a custom suite needs "
                         f"--tasks and --total-steps")
    else:
        suite = Suite(tasks={task: args.total_steps for task in args.tasks})
    for task in args.tasks:
        resolve_task(task, suite.backend)  # an unknown task fails now, with the close matches
    unknown = [task for task in args.tasks if task not in suite.tasks]
    if unknown:
        raise ValueError(f"--tasks: {unknown} not in suite {args.suite!r} ({', '.join(suite.tasks)})")
    for name in ("num_seeds", "total_steps"):
        if getattr(args, name) is not None:
            require_positive(name, getattr(args, name))
    num_seeds = args.num_seeds or suite.num_seeds
    jobs = []
    for task, budget in suite.tasks.items():
        if args.tasks and task not in args.tasks:
            continue
        total_steps = args.total_steps or budget
        eval_interval = max(total_steps // suite.evaluations, 1)
        for algo in args.algos or suite.algos:
            flags = (*suite.flags, *suite.algo_flags.get(algo, ()), "--backend", suite.backend,
                     "--eval-interval", str(eval_interval))
            jobs.append(Job(task, algo, num_seeds, total_steps, flags))
    return jobs


def results_path(args: Args, job: Job) -> Path:
    return Path(args.results_root) / args.suite / job.task / f"{job.algo}.csv"


def repo_relative(path: Path) -> Path:
    """Paths in the recorded commands are relative to the repository (where the training scripts run) when inside it."""
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run_root(args: Args, job: Job) -> Path:
    return repo_relative(Path(args.runs_root) / args.suite / job.task / job.algo)


def resumable_run(root: Path) -> Path | None:
    """The newest run directory under root that has a checkpoint to continue from."""
    runs = sorted((d for d in root.glob("*/") if any((d / "checkpoints").glob("checkpoint_*.msgpack"))),
                  key=lambda d: d.stat().st_mtime)
    return runs[-1] if runs else None


def command(args: Args, job: Job) -> list[str]:
    previous = resumable_run(ROOT / run_root(args, job))
    if previous is not None:  # the saved flags are the defaults; only the budget is passed again
        return [sys.executable, f"{job.algo}_jax.py", "--resume", str(repo_relative(previous))]
    return [sys.executable, f"{job.algo}_jax.py", "--env", job.task, "--seed", "1",
            "--num-seeds", str(job.num_seeds), "--total-steps", str(job.total_steps),
            "--run-root", str(run_root(args, job)), *job.flags]


def newest_run(root: Path) -> Path:
    return max(root.glob("*/eval.csv"), key=lambda p: p.stat().st_mtime).parent


def write_results(run_dir: Path, path: Path) -> tuple[str, float]:
    """Copy the stochastic evaluations of a finished run to the suite's CSV: the success rate where the task reports
    success (as MyoSuite is scored), else the return. Returns (that column's name, its final mean over seeds)."""
    evaluations = read_eval_csv(run_dir / "eval.csv")
    keep = evaluations["mode"] == "stochastic"
    scored = not np.isnan(evaluations["success_rate"][keep]).any()
    metric, values = ("eval_success", "success_rate") if scored else ("eval_return", "return_mean")
    rows = sorted(zip(evaluations["seed"][keep], evaluations["step"][keep], evaluations[values][keep]))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["seed", "step", metric])
        writer.writerows((int(seed), int(step), f"{value:.6g}") for seed, step, value in rows)
    temporary.replace(path)  # a CSV that exists is complete: the suite skips it on the next call
    final_step = max(step for _, step, _ in rows)
    finals = [float(value) for _, step, value in rows if step == final_step]
    return metric, sum(finals) / len(finals)


def format_seconds(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def main() -> None:
    args = tyro.cli(Args)
    try:
        jobs = plan(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    pending = [job for job in jobs if not results_path(args, job).exists()]
    print(f"suite {args.suite}: {len(jobs)} runs, {len(jobs) - len(pending)} already done", flush=True)
    started, finished_steps = time.perf_counter(), 0
    pending_steps = sum(job.total_steps for job in pending)
    for index, job in enumerate(pending, 1):
        cmd = command(args, job)
        elapsed = time.perf_counter() - started
        # The estimate scales the time so far by env steps; runs of different tasks cost differently per step.
        eta = f", ~{format_seconds(elapsed / finished_steps * (pending_steps - finished_steps))} left" \
            if finished_steps else ""
        print(f"[{index}/{len(pending)}] {job.task} {job.algo} ({job.num_seeds} seeds, {job.total_steps} steps) "
              f"elapsed {format_seconds(elapsed)}{eta}\n  {' '.join(cmd[1:])}", flush=True)
        if args.dry_run:
            continue
        root = ROOT / run_root(args, job)  # the training scripts run in ROOT
        root.mkdir(parents=True, exist_ok=True)
        log_path = root / "train.log"
        job_start = time.perf_counter()
        with log_path.open("a") as log:
            returncode = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if returncode != 0:
            print(f"error: {job.task} {job.algo} exited with {returncode}; see {log_path} (rerun the suite to "
                  f"continue from its last checkpoint)", file=sys.stderr)
            raise SystemExit(1)
        seconds = time.perf_counter() - job_start
        metric, final = write_results(newest_run(root), results_path(args, job))
        append_row(Path(args.results_root) / args.suite / "runs.csv",
                   dict(task=job.task, algo=job.algo, num_seeds=job.num_seeds, total_steps=job.total_steps,
                        flags=" ".join(job.flags), wall_s=round(seconds, 1), **{f"final_{metric}": round(final, 3)},
                        **dict(provenance(), command=" ".join(cmd[1:]))))
        finished_steps += job.total_steps
        print(f"  done in {format_seconds(seconds)}: final {metric} {final:.3g} (mean over seeds)", flush=True)
    if args.dry_run:
        return
    print(f"suite {args.suite} complete in {format_seconds(time.perf_counter() - started)}; "
          f"plot with: python benchmarks/plot.py --suite {args.suite}", flush=True)


if __name__ == "__main__":
    main()
