"""What a second CPU core gives the update: updates/s on one core and on two, side by side in one run.

Each measurement runs in a subprocess pinned to the first N cores (sched_setaffinity before JAX starts, so XLA's
thread pools see N cores), for N in --cores. Per algorithm and width it times:

- the harness's update alone (benchmarks/precision_throughput.py's, random replay, batch --batch-size), one seed;
- the same update for --seeds seeds in one program (vmapped, as `--num-seeds` trains): seed-updates/s, which says
  whether wider work uses the second core where one seed's chain does not;
- one forward matmul at the update's largest shape (batch × width · width × width), as
  benchmarks/matmul_ceiling.py times it: how far the matmuls alone scale.

    python benchmarks/thread_scaling.py   # appends to benchmarks/results/thread_scaling/thread_scaling_cpu.csv

--xla-flags is passed to every worker as XLA_FLAGS, to try XLA CPU options against the same baseline.

With --reference (a checkout of bytedance/FlowRL) and --reference-python (an interpreter with torch), the FlowRL
reference's update is timed the same way, pinned to the same cores with as many torch threads, after this project's
(benchmarks/reference_update.py); its rows say `reference` in the `implementation` column.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import tyro

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Args:
    algos: tuple[Literal["flowrl", "sac"], ...] = ("flowrl", "sac")
    widths: tuple[int, ...] = (256, 512)
    """Width of every network."""
    batch_size: int = 256
    """Transitions per update."""
    cores: tuple[int, ...] = (1, 2)
    """Each measurement runs pinned to this many cores, one after the other."""
    seeds: int = 2
    """Seeds of the vmapped measurement."""
    env: str = "humanoid-walk"
    """Task whose observation and action sizes the networks get (no env is built)."""
    updates: int = 50
    """Updates per timed call (one compiled scan)."""
    repeats: int = 3
    """Timed calls per measurement; the best is reported."""
    xla_flags: str = ""
    """XLA_FLAGS for every worker (empty: XLA's defaults)."""
    reference: str = ""
    """A checkout of bytedance/FlowRL whose update is timed beside FlowRL's (empty: not timed)."""
    reference_python: str = ""
    """The Python that runs the reference (it needs torch and numpy; neither is a dependency here)."""
    out: str = "benchmarks/results/thread_scaling/thread_scaling_cpu.csv"
    """CSV that rows are appended to."""
    worker: str = ""
    """Internal: the JSON of one measurement, run in this process."""


def work(args: Args, job: dict) -> dict:
    """One pinned measurement; JAX is imported here, after the parent pinned this process."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT))
    from benchmarks.matmul_ceiling import Args as MatmulArgs
    from benchmarks.matmul_ceiling import gflops
    from benchmarks.precision_throughput import harness_update
    from benchmarks.timing import seconds_per_update

    update, state = harness_update(job["algo"], args.env, job["width"], args.batch_size)
    one = seconds_per_update(update, state, args.updates, args.repeats)
    seeds = jax.tree.map(lambda leaf: jnp.stack([leaf] * args.seeds), state)  # copies: the cost ignores the values
    vmapped = jax.vmap(update)
    many = seconds_per_update(lambda s, key: vmapped(s, jax.random.split(key, args.seeds)), seeds, args.updates,
                              args.repeats)
    matmul = gflops(MatmulArgs(batch_size=args.batch_size, width=job["width"], calls=args.repeats), "bi,io->bo",
                    True, jnp.float32)
    return dict(updates_per_s=round(1 / one, 2), seed_updates_per_s=round(args.seeds / many, 2),
                forward_matmul_gflops=round(matmul, 1), threads_seen=len(os.sched_getaffinity(0)))


def pinned(command: list[str], cores: int, what: str, env: dict | None = None) -> dict:
    """The JSON line that `command` prints last, run pinned to the first `cores` cores."""
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                            preexec_fn=lambda: os.sched_setaffinity(0, set(range(cores))))
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_pinned(args: Args, job: dict) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps(job), "--env", args.env, "--batch-size",
               str(args.batch_size), "--seeds", str(args.seeds), "--updates", str(args.updates), "--repeats",
               str(args.repeats)]
    env = dict(os.environ, XLA_FLAGS=args.xla_flags) if args.xla_flags else dict(os.environ)
    return dict(implementation="flowrl-jax", **pinned(command, job["cores"], f"worker {job}", env))


def run_reference_pinned(args: Args, job: dict, obs_size: int, action_size: int) -> dict:
    command = [args.reference_python, str(ROOT / "benchmarks" / "reference_update.py"), "--reference",
               args.reference, "--obs-size", str(obs_size), "--action-size", str(action_size), "--width",
               str(job["width"]), "--batch-size", str(args.batch_size), "--threads", str(job["cores"]), "--updates",
               str(args.updates), "--repeats", str(args.repeats)]
    measured = pinned(command, job["cores"], f"reference worker {job}")
    return dict(updates_per_s=measured["updates_per_s"], threads_seen=measured["threads"],
                implementation=f"reference (torch {measured['torch_version']})")


def main() -> None:
    args = tyro.cli(Args)
    if args.worker:
        print(json.dumps(work(args, json.loads(args.worker))))
        return
    if max(args.cores) > len(os.sched_getaffinity(0)):
        raise SystemExit(f"--cores {max(args.cores)}: this process may use {len(os.sched_getaffinity(0))} cores")
    if bool(args.reference) != bool(args.reference_python):
        raise SystemExit("--reference and --reference-python go together")
    if args.reference and not (Path(args.reference) / "model" / "algo.py").is_file():
        raise SystemExit(f"--reference {args.reference}: no model/algo.py there (a checkout of bytedance/FlowRL?)")
    measured = [(job, run_pinned(args, job)) for job in (dict(algo=algo, width=width, cores=cores)
                                                         for algo in args.algos for width in args.widths
                                                         for cores in args.cores)]
    sys.path.insert(0, str(ROOT))
    if args.reference:
        from common.envs.tasks import resolve_task, task_sizes

        task = resolve_task(args.env)
        obs_size, action_size = task_sizes()[(task.name, task.backend)]
        measured += [(job, run_reference_pinned(args, job, obs_size, action_size))
                     for job in (dict(algo="flowrl", width=width, cores=cores) for width in args.widths
                                 for cores in args.cores)]
    # JAX starts in this process only now: the workers were forked from one without its threads.
    from benchmarks.record import append_row, cpu_flags, provenance

    for job, result in measured:
        append_row(args.out, dict(algo=job["algo"], implementation=result["implementation"], env=args.env,
                                  hidden_dim=job["width"], batch_size=args.batch_size, cores=job["cores"],
                                  seeds=args.seeds if result["implementation"] == "flowrl-jax" else "",
                                  updates_per_s=result["updates_per_s"],
                                  seed_updates_per_s=result.get("seed_updates_per_s", ""),
                                  forward_matmul_gflops=result.get("forward_matmul_gflops", ""),
                                  threads_seen=result["threads_seen"], xla_flags=args.xla_flags,
                                  updates=args.updates, repeats=args.repeats, **cpu_flags(), **provenance()))


if __name__ == "__main__":
    main()
