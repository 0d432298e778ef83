"""Throughput with a host backend (dm_control, Gymnasium, MyoSuite): the bare env rate, the rate inside training, and
the share of each training step that the host envs take.

For each E in --num-envs:
- bare: E task objects stepped with uniform random actions, without JAX, by one thread and by --host-threads
  (HostBatchedEnv's pool): env steps/s;
- training: the algorithm's trainer (benchmarks/throughput.py's config: width, batch, U) runs one chunk to compile and
  fill the buffer, then --repeats timed chunks: env steps/s, updates/s, and the share of the chunks' wall time spent
  inside the host step callback (HostBatchedEnv's pool times it). The rest is acting, storing and the updates.
Rows are appended to --out with the device and the exact command.

    python benchmarks/host_throughput.py --env dog-run --num-envs 1 16
"""

import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import algorithms  # noqa: E402
from benchmarks.record import append_row, provenance  # noqa: E402
from benchmarks.throughput import Args as ThroughputArgs, algorithm_args  # noqa: E402
from common.envs import host  # noqa: E402
from common.envs.host import HostBatchedEnv  # noqa: E402
from common.envs.tasks import resolve_task  # noqa: E402


@dataclasses.dataclass
class Args:
    env: str = "dog-run"
    """A dm_control, Gymnasium or MyoSuite task."""
    backend: Literal["auto", "dm_control", "gymnasium", "myosuite"] = "auto"
    """Its backend (auto: the first of dm_control, Gymnasium and MyoSuite that has the task)."""
    algo: Literal["flowrl", "sac"] = "flowrl"
    num_envs: tuple[int, ...] = (1, 16)
    """E values to measure, one row each (E = 1 with U = 1 is paper mode)."""
    updates_per_iteration: int = 1
    hidden_dim: int = 512
    """Width of every network (the reference size is 512)."""
    batch_size: int = 256
    timed_steps: int = 512
    """Env steps per timed chunk (at least one iteration)."""
    repeats: int = 2
    bare_steps: int = 2_000
    """Env steps (all envs together) in the bare-rate loop."""
    host_threads: int = 0
    """Threads that step the envs in training and in the second bare rate (0: one per CPU core)."""
    out: str = "benchmarks/results/host_throughput_cpu.csv"


def bare_rate(task, num_envs: int, steps: int, threads: int) -> float:
    """Env steps/s of num_envs task objects stepped with random actions by `threads` threads, resets included."""
    env = HostBatchedEnv(task, 1, threads=threads)
    pool = env.pool
    pool.reset(np.arange(num_envs))
    rng = np.random.default_rng(0)
    iterations = max(1, steps // num_envs)
    actions = rng.uniform(env.action_low, env.action_high, (iterations, num_envs, env.action_size)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        pool.step(np.full(num_envs, pool.calls, np.int32), action)
    return iterations * num_envs / (time.perf_counter() - start)


HOST_STEP_SECONDS = [0.0]  # wall time of the host env steps since it was last set to 0 (see time_host_steps)


def time_host_steps() -> None:
    """Count the wall time of every host env step (the host's share of a chunk) in HOST_STEP_SECONDS. An env's
    callback binds its pool's `step` when the env is built, so this wraps the class's method, once, before any env
    is built."""
    step = host._Pool.step

    def timed(pool, *args):
        start = time.perf_counter()
        try:
            return step(pool, *args)
        finally:
            HOST_STEP_SECONDS[0] += time.perf_counter() - start

    host._Pool.step = timed


def measure(args: Args, task, num_envs: int) -> dict:
    iterations = max(1, -(-max(args.timed_steps, args.batch_size) // num_envs))
    throughput_args = ThroughputArgs(algo=args.algo, env=task.name, updates_per_iteration=args.updates_per_iteration,
                                     hidden_dim=args.hidden_dim, batch_size=args.batch_size)
    run_args = dataclasses.replace(algorithm_args(throughput_args, num_envs, iterations), backend=task.backend)
    env = HostBatchedEnv(task, num_envs, threads=args.host_threads)
    trainer = algorithms.make_trainer(args.algo, run_args, env, HostBatchedEnv(task, 1))
    state = trainer.init(jax.random.key(0))
    state, _ = jax.block_until_ready(trainer.chunk(state))  # compiles, and fills the buffer past one batch
    seconds, host_seconds = [], []
    for _ in range(args.repeats):
        HOST_STEP_SECONDS[0] = 0.0
        start = time.perf_counter()
        state, _ = jax.block_until_ready(trainer.chunk(state))
        seconds.append(time.perf_counter() - start)
        host_seconds.append(HOST_STEP_SECONDS[0])
    best = int(np.argmin(seconds))
    return dict(
        algo=args.algo, env=task.name, backend=task.backend, num_envs=num_envs,
        updates_per_iteration=args.updates_per_iteration, hidden_dim=args.hidden_dim, batch_size=args.batch_size,
        threads=env.pool.threads,
        bare_1_thread_env_steps_per_s=round(bare_rate(task, num_envs, args.bare_steps, 1), 1),
        bare_env_steps_per_s=round(bare_rate(task, num_envs, args.bare_steps, args.host_threads), 1),
        env_steps_per_s=round(iterations * num_envs / seconds[best], 1),
        updates_per_s=round(iterations * args.updates_per_iteration / seconds[best], 2),
        host_share=round(host_seconds[best] / seconds[best], 3), **provenance(),
    )


def main() -> None:
    args = tyro.cli(Args)
    task = resolve_task(args.env, args.backend)
    if task.backend == "playground":  # a host benchmark: the original task, not Playground's port of it
        task = resolve_task(args.env, "dm_control")
    time_host_steps()
    for num_envs in args.num_envs:
        append_row(args.out, measure(args, task, num_envs))


if __name__ == "__main__":
    main()
