"""How far one update with `--compute-dtype bfloat16` lands from the float32 one, for FlowRL and SAC.

Both updates start from the same state (initialised, then WARMUP_UPDATES float32 updates, so that Adam has moments
and FlowRL's compared update moves its policy) and take the same batch (random observations, actions in [-1, 1],
rewards ~ N(0, 1)) and key. Reported: the relative difference |bf16 − f32| / |f32| of each loss (and of FlowRL's
flow-matching weight and error), and of each network's parameter step, ‖Δ_bf16 − Δ_f32‖ / ‖Δ_f32‖ with
Δ = after − before. The table goes to --out as markdown, with the device, the CPU's bf16 flags and the command.

    python benchmarks/precision_agreement.py --width 512 --batch-size 256
"""

import dataclasses
import datetime
import shlex
import sys
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import algorithms  # noqa: E402
from benchmarks.record import cpu_flags  # noqa: E402
from common.envs.tasks import resolve_task, task_sizes  # noqa: E402

WARMUP_UPDATES = 2
NETWORKS = {"flowrl": ("policy", "q", "q_beta", "v_beta"), "sac": ("actor", "q")}
# Metrics far from zero by construction (a relative difference of a mean near zero says nothing). SAC's temperature
# loss is exactly 0 while α is 1 (its initial value): -log α · (…).
METRICS = {"flowrl": ("critic_loss", "q_beta_loss", "v_beta_loss", "policy_loss", "cfm_error", "weight_mean"),
           "sac": ("critic_loss", "actor_loss")}


@dataclasses.dataclass
class Args:
    width: int = 512
    """Width of every network (FlowRL's reference size is 512)."""
    batch_size: int = 256
    """Transitions in the batch (the reference size is 256)."""
    env: str = "humanoid-walk"
    """Task whose observation and action sizes the networks get (no env is built)."""
    algos: tuple[Literal["flowrl", "sac"], ...] = ("flowrl", "sac")
    seed: int = 0
    """Seed of the initial parameters, the batch and the keys."""
    out: str = "benchmarks/results/precision/agreement.md"
    """Markdown file the table is written to."""


class Agreement(NamedTuple):
    updates: dict      # compute dtype -> the jitted update (compiled for the batch's shapes)
    batch: dict
    before: Any        # the learner state both updates start from
    after: dict        # compute dtype -> the learner state after the update
    metrics: dict      # compute dtype -> the update's metrics
    differences: dict  # quantity -> relative difference of bf16 from float32


def random_batch(key, batch_size: int, obs_size: int, action_size: int) -> dict:
    keys = jax.random.split(key, 4)
    return dict(obs=jax.random.normal(keys[0], (batch_size, obs_size)),
                next_obs=jax.random.normal(keys[1], (batch_size, obs_size)),
                action=jax.random.uniform(keys[2], (batch_size, action_size), minval=-1.0, maxval=1.0),
                reward=jax.random.normal(keys[3], (batch_size,)), mask=jnp.ones(batch_size))


def global_norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(leaf, dtype=np.float64)) for leaf in jax.tree.leaves(tree))))


def measure(algo: str, config, obs_size: int, action_size: int, batch_size: int, seed: int = 0) -> Agreement:
    """One update of `algo` with `config` in float32 and in bfloat16 from the same state, batch and key."""
    make = algorithms.ALGORITHMS[algo][1]
    updates = {dtype: jax.jit(make(dataclasses.replace(config, compute_dtype=dtype), obs_size, action_size).update)
               for dtype in ("float32", "bfloat16")}
    batch_key, init_key, *update_keys = jax.random.split(jax.random.key(seed), WARMUP_UPDATES + 3)
    batch = random_batch(batch_key, batch_size, obs_size, action_size)
    state = jax.jit(make(config, obs_size, action_size).init)(init_key)
    for key in update_keys[:-1]:
        state, _ = updates["float32"](state, batch, key)
    before = jax.device_get(state)
    after, metrics = {}, {}
    for dtype, update in updates.items():
        after[dtype], metrics[dtype] = jax.device_get(update(state, batch, update_keys[-1]))
    differences = {name: abs(float(metrics["bfloat16"][name]) - float(metrics["float32"][name]))
                   / abs(float(metrics["float32"][name])) for name in METRICS[algo]}
    for network in NETWORKS[algo]:
        steps = {dtype: jax.tree.map(np.subtract, getattr(after[dtype], network), getattr(before, network))
                 for dtype in after}
        differences[f"{network} step"] = (global_norm(jax.tree.map(np.subtract, steps["bfloat16"], steps["float32"]))
                                          / global_norm(steps["float32"]))
    return Agreement(updates, batch, before, after, metrics, differences)


def main() -> None:
    args = tyro.cli(Args)
    task = resolve_task(args.env)
    obs_size, action_size = task_sizes()[task.name, task.backend]
    lines = [f"# bfloat16 against float32: one update ({datetime.date.today().isoformat()})", "",
             f"`python {shlex.join(sys.argv)}` on {jax.devices()[0]} (jax {jax.__version__}; CPU flags: "
             + ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in cpu_flags().items()) + ").",
             "", f"Width {args.width}, batch {args.batch_size}, {task.name}'s sizes (obs {obs_size}, action "
             f"{action_size}), seed {args.seed}; the state after {WARMUP_UPDATES} float32 updates, then one update in "
             f"each precision on the same batch and key. Relative difference of bf16 from float32: |bf16 − f32| / "
             f"|f32| for a metric, ‖Δ_bf16 − Δ_f32‖ / ‖Δ_f32‖ for a network's parameter step Δ.", "",
             "| algorithm | quantity | float32 | bfloat16 | relative difference |", "|---|---|---|---|---|"]
    for algo in args.algos:
        config_class = algorithms.ALGORITHMS[algo][0]
        result = measure(algo, config_class(hidden_dim=args.width), obs_size, action_size, args.batch_size, args.seed)
        for name, difference in result.differences.items():
            values = ([f"{float(result.metrics[dtype][name]):.6g}" for dtype in ("float32", "bfloat16")]
                      if name in result.metrics["float32"] else ["", ""])
            lines.append(f"| {algo} | {name} | {' | '.join(values)} | {difference:.2e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
