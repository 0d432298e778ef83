"""Memory and checkpoint cost of a training configuration: peak host RSS, device memory, checkpoint size and the
time to save and restore it. Appends one row to --out with the device and the exact command.

    python benchmarks/memory_checkpoint.py --algo flowrl --env humanoid-walk
"""

import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import jax
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import algorithms  # noqa: E402
from benchmarks.record import append_row, provenance  # noqa: E402
from common.run import checkpoint  # noqa: E402
from common.envs.playground import BatchedEnv  # noqa: E402
from common.envs.tasks import resolve_task


@dataclasses.dataclass
class Args:
    algo: Literal["flowrl", "sac"] = "flowrl"
    """Algorithm script whose default configuration is measured."""
    env: str = "humanoid-walk"
    """Task."""
    chunks: int = 1
    """Training chunks run before measuring (the first one compiles)."""
    out: str = "benchmarks/results/memory_checkpoint_cpu.csv"
    """CSV that the row is appended to."""


def main() -> None:
    args = tyro.cli(Args)
    run_args = dataclasses.replace(algorithms.script_args(args.algo)(), env=args.env)  # the script's defaults
    env = BatchedEnv(resolve_task(run_args.env), run_args.num_envs)
    eval_env = BatchedEnv(resolve_task(run_args.env), run_args.eval_episodes)
    trainer = algorithms.make_trainer(args.algo, run_args, env, eval_env)
    state = trainer.init(jax.random.key(0))
    for _ in range(args.chunks):
        state, _ = jax.block_until_ready(trainer.chunk(state))
    template = jax.eval_shape(trainer.init, jax.random.key(0))

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        path = checkpoint.save(Path(directory), 1, state, {"step": 1}, keep=1)
        save_seconds = time.perf_counter() - start
        size = path.stat().st_size
        start = time.perf_counter()
        jax.block_until_ready(checkpoint.to_state(checkpoint.read(path), template))
        load_seconds = time.perf_counter() - start

    stats = jax.devices()[0].memory_stats() or {}  # None on CPU: host RSS is the device memory there
    row = dict(
        algo=args.algo, env=args.env,
        num_envs=run_args.num_envs, buffer_size=run_args.buffer_size,
        peak_host_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        peak_device_mib=round(stats["peak_bytes_in_use"] / 2**20, 1) if "peak_bytes_in_use" in stats else "n/a",
        checkpoint_mib=round(size / 2**20, 1), predicted_mib=round(checkpoint.checkpoint_bytes(template) / 2**20, 1),
        save_s=round(save_seconds, 2), restore_s=round(load_seconds, 2), **provenance(),
    )
    append_row(args.out, row)

if __name__ == "__main__":
    main()
