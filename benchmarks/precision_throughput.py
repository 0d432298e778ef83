"""Updates/s of FlowRL and SAC in float32 and with `--compute-dtype bfloat16`, side by side.

For each algorithm, width and batch size, the update runs in each compute dtype in turn, one row each: the harness's
update (common.core.chunk.make_update: a batch drawn from the replay, then the algorithm's `update`) timed as
benchmarks/throughput.py times it alone (benchmarks.timing.seconds_per_update). The replay holds random transitions
of the task's sizes, so no env is built or compiled. Rows are appended to --out with the device, the CPU's bf16 flags
and the exact command.

    python benchmarks/precision_throughput.py
    python benchmarks/precision_throughput.py --algos flowrl --widths 512 --batch-sizes 256 --repeats 0  # compile only
"""

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import algorithms  # noqa: E402
from benchmarks.precision_agreement import random_batch  # noqa: E402
from benchmarks.record import append_row, cpu_flags, provenance  # noqa: E402
from benchmarks.timing import seconds_per_update  # noqa: E402
from common.core import replay  # noqa: E402
from common.core.chunk import ChunkSpec, TrainState, make_update  # noqa: E402
from common.envs.tasks import resolve_task, task_sizes  # noqa: E402

REPLAY_ROWS = 8192  # more than FlowRL's recent window (2 048), as in training; the update's cost does not grow with it


@dataclasses.dataclass
class Args:
    algos: tuple[Literal["flowrl", "sac"], ...] = ("flowrl", "sac")
    widths: tuple[int, ...] = (256, 512)
    """Width of every network (SAC: of the actor and of the critics)."""
    batch_sizes: tuple[int, ...] = (256, 512)
    """Transitions per update."""
    compute_dtypes: tuple[Literal["float32", "bfloat16"], ...] = ("float32", "bfloat16")
    """Each width and batch size is measured in each of these, one row after the other."""
    env: str = "humanoid-walk"
    """Task whose observation and action sizes the networks get (no env is built)."""
    updates: int = 50
    """Updates per timed call (one compiled scan)."""
    repeats: int = 3
    """Timed calls per row; the best is reported (0: compile only, the rate left blank)."""
    out: str = "benchmarks/results/precision/update_rate.csv"
    """CSV that rows are appended to."""


def harness_update(algo: str, env: str, width: int, batch_size: int, compute_dtype: str = "float32"):
    """The harness's update of `algo` at these sizes and a state whose replay holds random transitions of `env`'s
    sizes: (update(state, key) -> (state, metrics), state)."""
    config_class, make = algorithms.ALGORITHMS[algo]
    task = resolve_task(env)
    obs_size, action_size = task_sizes()[task.name, task.backend]
    agent = make(config_class(hidden_dim=width, compute_dtype=compute_dtype), obs_size, action_size)
    init_key, replay_key, state_key = jax.random.split(jax.random.key(0), 3)
    buffer = replay.ReplayBuffer(data=random_batch(replay_key, REPLAY_ROWS, obs_size, action_size),
                                 position=jnp.int32(0), size=jnp.int32(REPLAY_ROWS))
    state = TrainState(learner=jax.jit(agent.init)(init_key), buffer=buffer, env=None, key=state_key,
                       env_steps=jnp.int32(0))
    spec = ChunkSpec(updates_per_iteration=1, batch_size=batch_size, start_steps=0, log_interval=1,
                     replay_capacity=REPLAY_ROWS)
    return make_update(spec, agent), state


def measure(args: Args, algo: str, width: int, batch_size: int, compute_dtype: str) -> dict:
    update, state = harness_update(algo, args.env, width, batch_size, compute_dtype)
    seconds = seconds_per_update(update, state, args.updates, args.repeats)
    return dict(algo=algo, env=args.env, hidden_dim=width, batch_size=batch_size, compute_dtype=compute_dtype,
                updates=args.updates, repeats=args.repeats,
                updates_per_s=round(1.0 / seconds, 2) if seconds else "",
                device_kind=jax.devices()[0].device_kind, **cpu_flags(), **provenance())


def main() -> None:
    args = tyro.cli(Args)
    for algo in args.algos:
        for width in args.widths:
            for batch_size in args.batch_sizes:
                for compute_dtype in args.compute_dtypes:
                    append_row(args.out, measure(args, algo, width, batch_size, compute_dtype))


if __name__ == "__main__":
    main()
