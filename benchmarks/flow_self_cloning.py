"""What FlowRL's flow-matching term does to the policy's spread when the reward is zero everywhere.

With no reward the critic is flat, the flow-matching weight sits at λ, and the policy loss is a behaviour cloning of
the replay buffer, which holds the policy's own earlier actions. This script isolates that loop, without a critic
or an env: a velocity field (flowrl_jax's, conditioned on a constant state) is fitted by FlowRL's CFM loss to a
buffer that starts as uniform random actions (the start steps); then, generation after generation, the fitted
policy's actions (tanh of the integrated flow, as FlowRL acts, plus any exploration noise) join the buffer and the
field is fitted again. It prints the policy's action spread per generation for each variant:

- `reference`: one midpoint step, and the buffer action regressed as stored while acting squashes with tanh;
- `flow-steps 8`: eight midpoint steps instead of one;
- `no tanh`: acting without the final tanh, so that the policy reproduces what it regressed (a probe only);
- `noise σ`: the reference, collecting with `--exploration-noise σ`.

    python benchmarks/flow_self_cloning.py --out benchmarks/results/exploration/flow_self_cloning.csv
"""

import csv
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flowrl_jax as flowrl  # noqa: E402


@dataclasses.dataclass
class Args:
    generations: int = 10
    """Rounds of fit → act → add to the buffer."""
    samples_per_generation: int = 4096
    """Actions each generation adds to the buffer (the start steps put in as many uniform ones)."""
    updates_per_generation: int = 1000
    """CFM updates (Adam, batch 256, FlowRL's learning rate) per generation."""
    action_size: int = 2
    hidden_dim: int = 128
    noise: float = 0.3
    """σ of the `noise` variant."""
    seed: int = 0
    out: str | None = None
    """CSV to write (variant, generation, spread, buffer_std); printed either way."""


VARIANTS = {"reference": dict(flow_steps=1, squash=True, noise=False),
            "flow-steps 8": dict(flow_steps=8, squash=True, noise=False),
            "no tanh": dict(flow_steps=1, squash=False, noise=False),
            "noise": dict(flow_steps=1, squash=True, noise=True)}


def run_variant(args: Args, flow_steps: int, squash: bool, noise: bool) -> list[tuple[int, float, float]]:
    net = flowrl.VelocityField(args.hidden_dim, args.action_size)
    obs = jnp.zeros((1, 1))
    optimiser = optax.adam(flowrl.FlowRLConfig().learning_rate)
    key, init_key, start_key = jax.random.split(jax.random.key(args.seed), 3)
    params = net.init(init_key, obs, jnp.zeros((1, args.action_size)), jnp.zeros((1, 1)))
    opt_state = optimiser.init(params)

    def cfm_loss(params, actions, key):
        noise_key, time_key = jax.random.split(key)
        t = jax.random.uniform(time_key, (actions.shape[0], 1))
        x_t, target = flowrl.flow_matching_pairs(actions, flowrl.clipped_noise(noise_key, actions.shape), t)
        states = jnp.broadcast_to(obs, (actions.shape[0], 1))
        return ((net.apply(params, states, x_t, t) - target) ** 2).mean()

    @jax.jit
    def fit(params, opt_state, buffer, key):
        def step(carry, key):
            params, opt_state = carry
            batch_key, loss_key = jax.random.split(key)
            actions = buffer[jax.random.randint(batch_key, (256,), 0, buffer.shape[0])]
            grads = jax.grad(cfm_loss)(params, actions, loss_key)
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state),
                                              jax.random.split(key, args.updates_per_generation))
        return params, opt_state

    def act(params, key, count):
        states = jnp.broadcast_to(obs, (count, 1))
        x1 = flowrl.integrate_midpoint(lambda x, t: net.apply(params, states, x, jnp.full((count, 1), t)),
                                       flowrl.clipped_noise(key, (count, args.action_size)), flow_steps)
        return jnp.tanh(x1) if squash else x1

    buffer = jax.random.uniform(start_key, (args.samples_per_generation, args.action_size), minval=-1.0, maxval=1.0)
    rows = []
    for generation in range(1, args.generations + 1):
        key, fit_key, act_key, noise_key = jax.random.split(key, 4)
        params, opt_state = fit(params, opt_state, buffer, fit_key)
        actions = act(params, act_key, args.samples_per_generation)
        rows.append((generation, float(actions.std(0).mean()), float(buffer.std(0).mean())))
        if noise:
            actions = jnp.clip(actions + args.noise * jax.random.normal(noise_key, actions.shape), -1.0, 1.0)
        buffer = jnp.concatenate([buffer, jnp.clip(actions, -1.0, 1.0)])
    return rows


def main(args: Args) -> None:
    table = []
    for name, variant in VARIANTS.items():
        label = f"noise {args.noise}" if name == "noise" else name
        for generation, spread, buffer_std in run_variant(args, **variant):
            table.append(dict(variant=label, generation=generation, spread=round(spread, 4),
                              buffer_std=round(buffer_std, 4)))
            print(f"{label:>14}  generation {generation:2d}: policy spread {spread:.3f}, buffer std {buffer_std:.3f}")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)


if __name__ == "__main__":
    main(tyro.cli(Args))
