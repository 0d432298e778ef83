"""How hard each term of FlowRL's policy loss pulls, at a saved checkpoint: the gradient norms, with respect to the
velocity field's parameters, of the Q term (−mean Q(s, π(s))) and of the flow-matching term (the weighted CFM error
on buffer actions), and the cosine between the two gradients. With λ too large for a task, the flow-matching term
(a weighted behaviour cloning of the replay buffer) outweighs or opposes Q-maximisation. Also printed: how steep the
critic is in the action (mean |∂Q/∂a| at the policy's action, beside the mean Q there), which sets the size of the Q
term's gradient.

    python benchmarks/policy_gradient_terms.py runs/<run>/checkpoints/checkpoint_000000100000.msgpack

Batches are drawn uniformly from each seed's replay buffer, as big as the run's batch size; the run's config (width,
λ, policy loss, observation normalisation) is read from the checkpoint.
"""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flowrl_jax  # noqa: E402
from common.run import checkpoint, resume  # noqa: E402


@dataclasses.dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]
    """A FlowRL run's checkpoint file."""
    batches: int = 8
    """Batches averaged per seed."""
    seed: int = 0
    """Seed of the batches and of the policy's noise."""


def global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum((leaf ** 2).sum() for leaf in jax.tree.leaves(tree)))


def one_seed(stored: np.ndarray, ndim: int, seed_index: int) -> np.ndarray:
    """Seed `seed_index`'s part of a stored leaf: a run of several seeds stacks them on a leading axis, except on its
    step counters (see common.core.layout); a single-seed run has no such axis."""
    return stored[seed_index] if stored.ndim > ndim else stored


def restore_learner(template, arrays: dict, seed_index: int):
    """The template filled with one seed's arrays of the checkpoint's `.learner` subtree (a random key is stored as
    its key data, one trailing axis more than the key)."""
    def restored(path, leaf):
        stored = arrays[".learner" + jax.tree_util.keystr(path)]
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = one_seed(stored, jax.random.key_data(leaf).ndim, seed_index)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return jnp.asarray(one_seed(stored, leaf.ndim, seed_index))

    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(treedef, [restored(path, leaf) for path, leaf in paths_leaves])


def measure(args: Args) -> tuple[dict, flowrl_jax.FlowRLConfig, list[dict]]:
    """(the checkpoint's metadata, the run's FlowRL config, per seed the mean over batches of each quantity)."""
    arrays, metadata = checkpoint.read_by_path(Path(args.checkpoint))
    if metadata.get("algo") != "flowrl":
        raise SystemExit(f"{args.checkpoint}: a {metadata.get('algo')} checkpoint, not a FlowRL one")
    run_config = metadata["config"]
    saved = resume.values_it_ran_with(flowrl_jax.FlowRLConfig, run_config)
    config = flowrl_jax.FlowRLConfig(**{field.name: saved[field.name]
                                        for field in dataclasses.fields(flowrl_jax.FlowRLConfig)
                                        if field.name in saved})
    observations, actions = arrays[".buffer.data['obs']"], arrays[".buffer.data['action']"]
    obs_size, action_size = observations.shape[-1], actions.shape[-1]
    flowrl = flowrl_jax.make_flowrl(config, obs_size, action_size)
    q_net = flowrl_jax.twin_critic(config.hidden_dim)
    velocity_net = flowrl_jax.VelocityField(config.hidden_dim, action_size)
    template = flowrl.init(jax.random.key(0))
    batch_size = run_config["batch_size"]

    @jax.jit
    def terms(state, obs, action, key):
        policy_key, noise_key, time_key = jax.random.split(key, 3)
        normalised = obs if state.obs_stats is None else state.obs_stats.normalise(obs)

        def q_policy(params):
            return q_net.apply(state.q, normalised, flowrl.act(state.replace(policy=params), obs, policy_key)).min(0)

        policy_action = flowrl.act(state, obs, policy_key)
        q_at_policy = q_net.apply(state.q, normalised, policy_action).min(0)
        weights = flowrl_jax.flow_matching_weights(q_net.apply(state.q_beta, normalised, action).min(0),
                                                   q_at_policy, config.lagrange)
        t = jax.random.uniform(time_key, (batch_size, 1))
        x_t, target_velocity = flowrl_jax.flow_matching_pairs(
            action, flowrl_jax.clipped_noise(noise_key, action.shape), t)

        def q_term(params):
            return flowrl_jax.policy_objective(q_policy(params), jnp.zeros(batch_size), weights, config.policy_loss)

        def cfm_term(params):
            cfm_error = ((velocity_net.apply(params, normalised, x_t, t) - target_velocity) ** 2).mean(-1)
            return flowrl_jax.policy_objective(jnp.zeros(batch_size), cfm_error, weights, config.policy_loss)

        q_grad, cfm_grad = jax.grad(q_term)(state.policy), jax.grad(cfm_term)(state.policy)
        dot = sum((a * b).sum() for a, b in zip(jax.tree.leaves(q_grad), jax.tree.leaves(cfm_grad)))
        action_slope = jax.vmap(jax.grad(lambda a, s: q_net.apply(state.q, s[None], a[None]).min(0)[0]))(
            policy_action, normalised)
        q_norm, cfm_norm = global_norm(q_grad), global_norm(cfm_grad)
        return dict(weight_mean=weights.mean(), q_term_grad=q_norm, cfm_term_grad=cfm_norm,
                    cosine=dot / (q_norm * cfm_norm), q_policy=q_at_policy.mean(),
                    dq_da=jnp.abs(action_slope).mean())

    rng, per_seed = np.random.default_rng(args.seed), []
    for index in range(run_config["num_seeds"]):
        state = restore_learner(template, arrays, index)
        seed_obs, seed_actions = one_seed(observations, 2, index), one_seed(actions, 2, index)
        stored = int(one_seed(arrays[".buffer.size"], 0, index))
        rows = []
        for batch in range(args.batches):
            picked = rng.integers(0, stored, batch_size)
            rows.append(terms(state, jnp.asarray(seed_obs[picked]), jnp.asarray(seed_actions[picked]),
                              jax.random.key(args.seed * 1000 + batch)))
        per_seed.append({name: float(np.mean([row[name] for row in rows])) for name in rows[0]})
    return metadata, config, per_seed


def main(args: Args) -> None:
    metadata, config, per_seed = measure(args)
    run_config = metadata["config"]
    print(f"{args.checkpoint} (step {metadata['step']}, λ {config.lagrange}, width {config.hidden_dim}, "
          f"policy loss {config.policy_loss}, {args.batches} batches of {run_config['batch_size']} per seed)")
    for index, mean in enumerate(per_seed):
        print(f"  seed {run_config['seed'] + index}: mean weight {mean['weight_mean']:.3f} | "
              f"‖∇ Q term‖ {mean['q_term_grad']:.3f}, ‖∇ CFM term‖ {mean['cfm_term_grad']:.3f} "
              f"(ratio {mean['cfm_term_grad'] / mean['q_term_grad']:.2f}), cosine {mean['cosine']:+.2f} | "
              f"mean Q(s, π(s)) {mean['q_policy']:.2f}, mean |∂Q/∂a| {mean['dq_da']:.4f}")


if __name__ == "__main__":
    main(tyro.cli(Args))
