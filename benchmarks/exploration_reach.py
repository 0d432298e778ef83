"""How often an action process with no learning finds a sparse task's reward: i.i.d. noise against correlated noise.

A FlowRL seed stuck on point-mass-easy acts with a spread of ~0.4 per action dimension around a flat critic's
choice, fresh noise at every step (benchmarks/results/exploration/). This script steps the task with action
processes that have no policy at all, each for --episodes episodes of the task's full length, and reports per
process the share of episodes that earn any reward above --reward-threshold, and the mean return:

- `uniform`: i.i.d. uniform actions in [−1, 1] (the start steps);
- `gaussian σ`: i.i.d. N(0, σ²) clipped to [−1, 1], a stuck seed's spread around a zero action;
- `ar1 σ ρ`: the same marginal N(0, σ²), correlated in time: a_t = ρ·a_{t−1} + √(1−ρ²)·σ·ε_t, clipped;
- `held σ K`: N(0, σ²) clipped, drawn afresh every K steps and held in between (what `--x0-hold K` does to
  FlowRL's x_0, here with no flow between the noise and the action).

    python benchmarks/exploration_reach.py --out benchmarks/results/exploration/exploration_reach.csv
"""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.record import append_row, provenance  # noqa: E402
from common.envs.make import make_env  # noqa: E402
from common.envs.tasks import resolve_task  # noqa: E402


@dataclasses.dataclass
class Args:
    env: str = "point-mass-easy"
    """Task to step (its own episode length)."""
    backend: str = "playground"
    """Backend of the task."""
    episodes: int = 64
    """Episodes per process, stepped together."""
    spread: float = 0.4
    """σ of the Gaussian processes."""
    correlations: tuple[float, ...] = (0.9, 0.99)
    """ρ of each AR(1) process."""
    holds: tuple[int, ...] = (10, 100)
    """K of each held process."""
    families: tuple[str, ...] = ("uniform", "gaussian", "ar1", "held")
    """Which processes to step."""
    reward_threshold: float = 0.01
    """An episode "finds the reward" if one of its steps earns more than this."""
    seed: int = 0
    out: str = "benchmarks/results/exploration/exploration_reach.csv"
    """CSV that rows are appended to."""


def reach(env, key, step_noise, correlation: float, start_spread: float, episodes: int) -> tuple[jax.Array, jax.Array]:
    """(share of episodes with a step above threshold's reward, mean return) for one action process."""

    def step(carry, noise):
        state, action, best = carry
        action = correlation * action + noise
        state, out = env.step(state, jnp.clip(action, -1.0, 1.0))
        return (state, action, jnp.maximum(best, out.reward)), out.reward

    reset_key, noise_key, start_key = jax.random.split(key, 3)
    noise = step_noise(noise_key, (env.episode_length, episodes, env.action_size))
    start = start_spread * jax.random.normal(start_key, (episodes, env.action_size))  # AR(1)'s stationary law
    (_, _, best), rewards = jax.lax.scan(step, (env.reset(reset_key), start, jnp.zeros(episodes)), noise)
    return best, rewards.sum(0)


def main() -> None:
    args = tyro.cli(Args)
    env = make_env(resolve_task(args.env, args.backend), args.episodes)
    sigma = args.spread
    processes = [("uniform", 0.0, lambda key, shape: jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)),
                 (f"gaussian {sigma}", 0.0, lambda key, shape: sigma * jax.random.normal(key, shape))]
    for rho in args.correlations:
        scale = sigma * (1.0 - rho**2) ** 0.5  # keeps the stationary std at σ
        processes.append((f"ar1 {sigma} {rho}", rho,
                          lambda key, shape, scale=scale: scale * jax.random.normal(key, shape)))
    for hold in args.holds:
        processes.append((f"held {sigma} {hold}", 0.0, lambda key, shape, hold=hold: jnp.repeat(
            sigma * jax.random.normal(key, (-(-shape[0] // hold), *shape[1:])), hold, axis=0)[:shape[0]]))
    processes = [process for process in processes if process[0].split()[0] in args.families]
    for name, rho, noise in processes:
        run = jax.jit(lambda key, noise=noise, rho=rho: reach(env, key, noise, rho, sigma if rho else 0.0,
                                                              args.episodes))
        best, returns = run(jax.random.key(args.seed))
        append_row(args.out, dict(env=args.env, backend=args.backend, process=name, episodes=args.episodes,
                                  episode_length=env.episode_length, reward_threshold=args.reward_threshold,
                                  share_finding_reward=round(float((best > args.reward_threshold).mean()), 3),
                                  mean_return=round(float(returns.mean()), 2),
                                  max_return=round(float(returns.max()), 2), seed=args.seed, **provenance()))


if __name__ == "__main__":
    main()
