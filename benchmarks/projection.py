"""Projected rates on one NVIDIA H200, on paper: what the matmul FLOPs of the hot path allow at the GPU's peaks.

A PROJECTION, not a measurement. For each algorithm at its scripts' defaults and each E, it counts the matmul FLOPs
of one update and of acting on E observations (benchmarks/flops.py, read from the jaxpr of the algorithm file's own
`update` and `act`), and divides a peak by the FLOPs of one iteration {act on E envs, U updates}:

    iterations/s = peak / (U · FLOPs per update + FLOPs to act on E),  updates/s = U · that,  env-steps/s = E · that.

That is a ceiling: every matmul at peak, and nothing else costing time (no elementwise work, no kernel launches, no
env stepping). Beside it, the same with the envs stepped one after the other at the MJX humanoid rate of the
anchors (~190 k control steps/s, A100, 8 192 envs; lower at smaller E, and not scaled to the H200):

    env-steps/s with MJX = E / (E / MJX rate + iteration FLOPs / peak).

    python benchmarks/projection.py   # writes benchmarks/results/projection_h200.csv
"""

import csv
import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flowrl_jax  # noqa: E402
import sac_jax  # noqa: E402
from benchmarks.flops import matmul_flops  # noqa: E402
from benchmarks.record import provenance  # noqa: E402

# H200 peaks in TFLOP/s (dense, no sparsity). JAX runs float32 matmuls on a recent NVIDIA GPU as TF32 by default
# (jax_default_matmul_precision), so TF32 is the ceiling of the scripts as they are; bf16 needs bf16 matmuls, which
# the scripts do not use; FP32 without tensor cores is the ceiling at precision "highest".
PEAKS = (
    ("bf16", 790.0, "bf16 dense, what an 8192³ bf16 matrix product reaches on an H200 (769–798 TFLOP/s measured)"),
    ("bf16", 989.0, "bf16 dense, NVIDIA's H200 SXM datasheet"),
    ("tf32", 495.0, "TF32 tensor cores, dense, NVIDIA's datasheet: JAX's default for float32 matmuls on this GPU"),
    ("fp32", 67.0, "FP32 without tensor cores, NVIDIA's datasheet: float32 matmuls at precision 'highest'"),
)
# MJX (JAX physics) humanoid, A100, 8 192 envs: ~950 k physics steps/s = ~190 k control steps/s at 5 substeps.
MJX_HUMANOID_CONTROL_STEPS_PER_S = 190_000.0
NUM_ENVS = (128, 512, 2048, 4096)
ALGORITHMS = {"flowrl": (flowrl_jax.FlowRLConfig, flowrl_jax.make_flowrl), "sac": (sac_jax.SACConfig, sac_jax.make_sac)}


@dataclasses.dataclass
class Args:
    obs_size: int = 67
    """Observation size of the task (humanoid-walk on Playground: 67)."""
    action_size: int = 21
    """Action size of the task (humanoid-walk: 21)."""
    num_envs: tuple[int, ...] = NUM_ENVS
    """E values to project."""
    updates_per_iteration: int = 8
    """U: the scripts' default (--updates-per-iteration)."""
    batch_size: int = 512
    """Batch per update: the scripts' default (--batch-size)."""
    out: str = "benchmarks/results/projection_h200.csv"
    """CSV to write (replaced)."""


def widths(config) -> str:
    """The network widths of a resolved config, as the CSV names them."""
    if hasattr(config, "hidden_dim"):
        return f"hidden {config.hidden_dim}"
    return f"critic {config.critic_hidden_dim}, actor {config.actor_hidden_dim}"


@functools.cache
def agent_and_state(algo: str, obs_size: int, action_size: int):
    """`algo` built from the algorithm file at its default hyperparameters, and its initial state."""
    config_class, make = ALGORITHMS[algo]
    agent = make(config_class(), obs_size, action_size)
    return agent, agent.init(jax.random.key(0))


def update_flops(algo: str, obs_size: int, action_size: int, batch_size: int) -> float:
    """Matmul FLOPs of one update, averaged over `policy_delay` (FlowRL's policy branch runs on one update in
    policy_delay), as benchmarks/throughput.py averages them."""
    agent, state = agent_and_state(algo, obs_size, action_size)
    batch = dict(obs=jnp.zeros((batch_size, obs_size)), action=jnp.zeros((batch_size, action_size)),
                 reward=jnp.zeros(batch_size), next_obs=jnp.zeros((batch_size, obs_size)), mask=jnp.ones(batch_size))
    fewest, most = matmul_flops(agent.update, state, batch, jax.random.key(1))
    return fewest + (most - fewest) / getattr(agent.config, "policy_delay", 1)


def act_flops(algo: str, obs_size: int, action_size: int, num_envs: int) -> int:
    """Matmul FLOPs of acting on `num_envs` observations (no branch: both ends are equal)."""
    agent, state = agent_and_state(algo, obs_size, action_size)
    return matmul_flops(agent.act, state, jnp.zeros((num_envs, obs_size)), jax.random.key(2))[1]


def project(flops_per_update: float, flops_per_act: float, num_envs: int, updates_per_iteration: int,
            peak_tflops: float) -> dict:
    """The rates one iteration's FLOPs allow at `peak_tflops`, alone and with the envs at the MJX anchor rate."""
    iteration_seconds = (updates_per_iteration * flops_per_update + flops_per_act) / (peak_tflops * 1e12)
    with_mjx_seconds = num_envs / MJX_HUMANOID_CONTROL_STEPS_PER_S + iteration_seconds
    return dict(updates_per_s=updates_per_iteration / iteration_seconds, env_steps_per_s=num_envs / iteration_seconds,
                updates_per_s_with_mjx=updates_per_iteration / with_mjx_seconds,
                env_steps_per_s_with_mjx=num_envs / with_mjx_seconds)


def significant(value: float) -> float:
    """`value` to 7 significant digits: exact enough to recompute every column from the others."""
    return float(f"{value:.7g}")


def commit() -> str:
    result = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent)
    return result.stdout.strip() or "unknown"


def rows(args: Args) -> list[dict]:
    origin = dict(commit=commit(), **{k: v for k, v in provenance().items() if k in ("date", "command")})
    out = []
    for algo in ALGORITHMS:
        per_update = update_flops(algo, args.obs_size, args.action_size, args.batch_size)
        for num_envs in args.num_envs:
            per_act = act_flops(algo, args.obs_size, args.action_size, num_envs)
            for precision, peak_tflops, source in PEAKS:
                rates = project(per_update, per_act, num_envs, args.updates_per_iteration, peak_tflops)
                out.append(dict(
                    figure="projection", algo=algo, env="humanoid-walk", obs_size=args.obs_size,
                    action_size=args.action_size, num_envs=num_envs, updates_per_iteration=args.updates_per_iteration,
                    batch_size=args.batch_size, widths=widths(agent_and_state(algo, args.obs_size,
                                                                              args.action_size)[0].config),
                    gflop_per_update=significant(per_update / 1e9), gflop_per_act=significant(per_act / 1e9),
                    precision=precision, peak_tflops=peak_tflops, peak_source=source,
                    **{name: significant(value) for name, value in rates.items()},
                    mjx_control_steps_per_s=MJX_HUMANOID_CONTROL_STEPS_PER_S, **origin))
    return out


def main() -> None:
    args = tyro.cli(Args)
    table = rows(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    for row in table:
        print(f"{row['algo']:6} E={row['num_envs']:5} {row['precision']} {row['peak_tflops']:5.0f} TFLOP/s: "
              f"{row['updates_per_s']:10.0f} updates/s, {row['env_steps_per_s']:12.0f} env-steps/s "
              f"({row['env_steps_per_s_with_mjx']:8.0f} with MJX at the anchor rate)")
    print(f"projection (not a measurement) written to {args.out}")


if __name__ == "__main__":
    main()
