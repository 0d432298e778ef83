"""Throughput of the compiled hot path: env-steps/s and updates/s, and the arithmetic rate of the update alone.

For each E in --num-envs it builds the algorithm's trainer, runs one chunk to compile and fill the buffer, then
times whole chunks of {act → step E envs → store → U updates}. Separately it times a scan of updates alone and
counts an update's matmul FLOPs (benchmarks/flops.py), to report achieved GFLOP/s against --peak-gflops.
Rows are appended to --out (CSV) with the device and the exact command.

    python benchmarks/throughput.py --algo flowrl --env cheetah-run --num-envs 1 256 --updates-per-iteration 1

With --plot, it also draws env-steps/s and updates/s against E for the rows just measured (or, with --replot, those
already in --out) and marks the knee: the E at which stepping the envs takes as long as the U updates. Below it,
more envs come almost free (the updates dominate); above it, env-steps/s grows ever slower toward the envs' rate.

    python benchmarks/throughput.py --algo flowrl --env humanoid-walk --num-envs 1 4 16 64 256 \
        --out benchmarks/results/scaling_cpu.csv --plot benchmarks/results/scaling_cpu.png

With --devices, each E is measured on each device count D, the train state split as `--split` says
(common.core.layout):
`data` splits the E envs, the replay and each batch over D devices; `seeds` trains D seeds, one per device (the
env-steps/s then count every seed's). D = 1 is the unsplit program. On forced CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N) the devices share the same cores, so the rows measure only
what splitting the program costs, never a speed-up; the update-only columns are measured at D = 1 only.
"""

import csv
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Literal

import jax
import tyro
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import algorithms  # noqa: E402
from benchmarks.flops import CPU_PEAK_GFLOPS, matmul_flops  # noqa: E402
from benchmarks.record import append_row, provenance  # noqa: E402
from benchmarks.timing import best_seconds, seconds_per_update  # noqa: E402
from common.core.chunk import make_update  # noqa: E402
from common.envs.playground import BatchedEnv  # noqa: E402
from common.envs.tasks import resolve_task  # noqa: E402
from common.run.args import resolve  # noqa: E402


@dataclasses.dataclass
class Args:
    algo: Literal["flowrl", "sac"] = "flowrl"
    """Algorithm script to measure (flowrl_jax.py or sac_jax.py)."""
    env: str = "cheetah-run"
    """Task, as for the training scripts."""
    num_envs: tuple[int, ...] = (1, 256)
    """E values to measure, one row each."""
    updates_per_iteration: int = 1
    """U: updates after each step of all envs."""
    hidden_dim: int = 512
    """Width of every network (the reference size is 512)."""
    batch_size: int = 256
    """Batch per update (the reference size is 256)."""
    timed_steps: int = 2_000
    """Env steps per timed chunk (at least one iteration)."""
    repeats: int = 3
    """Timed chunks per E; the best is reported."""
    devices: tuple[int, ...] = (1,)
    """D values to measure each E on."""
    split: Literal["data", "seeds"] = "data"
    """How the train state is split over D > 1 devices: one seed's envs and replay (`data`), or D seeds."""
    update_only: int = 50
    """Updates in the update-only timing."""
    peak_gflops: float = CPU_PEAK_GFLOPS
    """Peak FP32 GFLOP/s of the device (default: this project's 2-core CPU)."""
    out: str = "benchmarks/results/throughput_cpu.csv"
    """CSV that rows are appended to."""
    plot: str | None = None
    """PNG of env-steps/s and updates/s against E for the rows measured now, with the knee marked."""
    replot: bool = False
    """Measure nothing: draw --plot from the rows already in --out that match --algo, --env, U, width and batch."""


def algorithm_args(args: Args, num_envs: int, iterations: int, devices: int = 1):
    script_args = algorithms.script_args(args.algo)
    sizes = {name: args.hidden_dim for name in ("hidden_dim", "actor_hidden_dim", "critic_hidden_dim")
             if name in {f.name for f in dataclasses.fields(script_args)}}
    return dataclasses.replace(
        script_args(), env=args.env, num_envs=num_envs, updates_per_iteration=args.updates_per_iteration,
        batch_size=args.batch_size, start_steps=args.batch_size, log_interval=iterations * num_envs,
        total_steps=10 * iterations * num_envs, eval_episodes=1, devices=devices,
        data_parallel=args.split == "data" and devices > 1, num_seeds=devices if args.split == "seeds" else 1,
        buffer_size=script_args().buffer_size // devices * devices, **sizes)


def measure(args: Args, num_envs: int, devices: int = 1) -> dict:
    iterations = max(1, -(-max(args.timed_steps, args.batch_size) // num_envs))
    run_args = algorithm_args(args, num_envs, iterations, devices)
    env = BatchedEnv(resolve_task(args.env), num_envs)
    run = resolve(run_args)
    layout = run.layout
    eval_env = BatchedEnv(resolve_task(args.env), 1)
    trainer = layout.over_seeds(algorithms.make_trainer(args.algo, run_args, env, eval_env))
    init_keys = layout.seed_keys(0)[0]
    trainer = layout.placed(trainer, jax.eval_shape(trainer.init, init_keys))
    state = trainer.init(init_keys)
    start = time.perf_counter()
    state, _ = jax.block_until_ready(trainer.chunk(state))  # compiles, and fills the buffer past one batch
    compile_seconds = time.perf_counter() - start

    holder = [state]

    def run_chunk():
        holder[0], metrics = trainer.chunk(holder[0])
        return metrics

    chunk_seconds = best_seconds(run_chunk, args.repeats)
    env_steps_per_s = round(iterations * num_envs * run_args.num_seeds / chunk_seconds, 1)
    updates_per_s = round(iterations * args.updates_per_iteration * run_args.num_seeds / chunk_seconds, 2)
    row = dict(algo=args.algo, env=args.env, num_envs=num_envs, updates_per_iteration=args.updates_per_iteration,
               hidden_dim=args.hidden_dim, batch_size=args.batch_size,
               # placement columns only in a devices sweep, so that earlier CSVs keep their header
               **(dict(devices=devices, split=args.split if devices > 1 else "") if args.devices != (1,) else {}),
               env_steps_per_s=env_steps_per_s, updates_per_s=updates_per_s)
    if devices > 1:  # the update-only timing runs the unsplit update: blank, in the same columns
        return dict(row, **dict.fromkeys(("update_only_per_s", "gflop_per_update", "update_gflops", "peak_fraction"),
                                         ""), compile_s=round(compile_seconds, 1), **provenance())

    # Average matmul FLOPs of an update: the policy branch runs on one update in `policy_delay` (FlowRL).
    update = make_update(run.spec, trainer.agent)  # one update as the chunk runs it: a batch drawn, then the step
    fewest, most = matmul_flops(update, holder[0], jax.random.key(1))
    update_flops = fewest + (most - fewest) / getattr(run_args, "policy_delay", 1)
    update_seconds = seconds_per_update(update, holder[0], args.update_only, args.repeats)

    return dict(
        row, update_only_per_s=round(1.0 / update_seconds, 2), gflop_per_update=round(update_flops / 1e9, 3),
        update_gflops=round(update_flops / update_seconds / 1e9, 1),
        peak_fraction=round(update_flops / update_seconds / 1e9 / args.peak_gflops, 3),
        compile_s=round(compile_seconds, 1), **provenance(),
    )


def knee(rows: list[dict]) -> float | None:
    """The E at which stepping the envs takes as long as the iteration's U updates, interpolated on log-log between
    measured E; past it env-steps/s grows ever slower toward the envs' own rate. None if the range does not cross it.

    Per iteration (one step of all E envs + U updates): time = E / env-steps/s, updates = U / update-only rate, and
    env stepping (with acting and storing) is the rest."""
    points = []
    for row in sorted(rows, key=lambda row: row["num_envs"]):
        iteration = row["num_envs"] / row["env_steps_per_s"]
        updates = row["updates_per_iteration"] / row["update_only_per_s"]
        points.append((math.log(row["num_envs"]), math.log(max(iteration - updates, 1e-12) / updates)))
    for (log_e, log_ratio), (next_log_e, next_log_ratio) in zip(points, points[1:]):
        if log_ratio < 0 <= next_log_ratio:
            return math.exp(log_e + (next_log_e - log_e) * -log_ratio / (next_log_ratio - log_ratio))
    return None


def plot_scaling(rows: list[dict], path: str) -> float | None:
    """Log-log env-steps/s and updates/s against E, the knee marked; returns the knee."""
    rows = sorted(rows, key=lambda row: row["num_envs"])
    num_envs = [row["num_envs"] for row in rows]
    knee_envs = knee(rows)
    first = rows[0]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.loglog(num_envs, [row["env_steps_per_s"] for row in rows], marker="o", label="env steps/s")
    ax.loglog(num_envs, [row["updates_per_s"] for row in rows], marker="s", label="updates/s")
    if knee_envs is not None:
        ax.axvline(knee_envs, color="grey", linestyle="--", linewidth=1,
                   label=f"knee: E ≈ {knee_envs:.0f} (env stepping = updates)")
    ax.set(xlabel="E (environments stepped together)", ylabel="per second",
           title=f"{first['algo']} on {first['env']}: U={first['updates_per_iteration']}, width "
                 f"{first['hidden_dim']}, batch {first['batch_size']} ({first['device']})")
    ax.set_xticks(num_envs, [str(e) for e in num_envs])
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.savefig(path, dpi=120)
    return knee_envs


def read_rows(path: str, args: Args) -> list[dict]:
    """The rows of --out measured with this algo, env, U, width and batch (numbers as numbers)."""
    with open(path, newline="") as file:
        rows = [{k: int(v) if v.isdigit() else float(v) if k.endswith(("_per_s", "_s")) else v
                 for k, v in row.items()} for row in csv.DictReader(file)]
    return [row for row in rows if (row["algo"], row["env"], row["updates_per_iteration"], row["hidden_dim"],
                                    row["batch_size"]) == (args.algo, args.env, args.updates_per_iteration,
                                                           args.hidden_dim, args.batch_size)]


def main() -> None:
    args = tyro.cli(Args)
    if args.replot:
        rows = read_rows(args.out, args)
    else:
        rows = []
        for num_envs in args.num_envs:
            for devices in args.devices:
                rows.append(measure(args, num_envs, devices))
                append_row(args.out, rows[-1])
    if args.plot:
        knee_envs = plot_scaling(rows, args.plot)
        print(f"knee at E ≈ {knee_envs:.0f}" if knee_envs else "no knee in the measured range", f"(plot: {args.plot})")

if __name__ == "__main__":
    main()
