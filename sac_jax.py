"""SAC: soft actor-critic with automatic temperature (Haarnoja et al., 2018), in JAX on MJX environments.

The baseline that FlowRL is compared with. The actor is a tanh-squashed Gaussian; twin critics bootstrap from Polyak
targets at a fresh policy action minus α·log π; the temperature α is learned so that the policy's entropy tracks a
target. By default the critics have FlowRL's reference architecture (`--critic reference`), so that a comparison
isolates the policy class; `--critic classic` gives the usual 256×256 ReLU MLP.

Hot path: a Python loop over chunks; each chunk is ONE jitted call that scans over
{act → step all envs → write transitions → U updates}, with the whole train state donated (common/training.py).
Classic SAC (one env, one update per env step): `--num-envs 1 --updates-per-iteration 1 --batch-size 256
--critic classic`.
"""

import dataclasses
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from common import buffer as replay
from common import networks
from common import training
from common.cli import RunArgs, flag, parse_args, require_positive, require_range
from common.envs import BatchedEnv, EnvState

CRITIC_WIDTHS = {"reference": 512, "classic": 256}
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclasses.dataclass
class Args(RunArgs):
    """SAC. The shared flags (envs, updates per iteration, batch, buffer, random start steps, evaluation) mean the
    same as for FlowRL; replay batches are drawn uniformly over the buffer."""

    critic: Literal["reference", "classic"] = "reference"
    """`reference`: FlowRL's reference critic, with its layers (Dense, then LN → Dense → LN → GELU → Dense → LN → GELU
    → Dense → LN, then Dense(1); common/networks.py); `classic`: a 2-layer ReLU MLP as in the SAC paper."""
    critic_hidden_dim: int | None = None
    """Width of each critic (default: 512 for `reference`, as in FlowRL; 256 for `classic`, as in the SAC paper)."""
    actor_hidden_dim: int = 256
    """Width of the actor's 2-layer ReLU MLP."""
    tau: float = 0.005
    """Polyak rate: target ← (1-τ)·target + τ·online after every update."""
    init_temperature: float = 1.0
    """α at the start (Brax/Playground SAC and CleanRL start at 1; DMC-tuned SAC often at 0.1)."""
    target_entropy: float | None = None
    """Entropy that α steers the policy toward (default: −|A|, the action dimension)."""


def validate_args(args: Args) -> None:
    require_positive(args, "actor_hidden_dim")
    if args.critic_hidden_dim is not None:
        require_positive(args, "critic_hidden_dim")
    require_range(args, "tau", 0.0, 1.0, low_open=True)
    require_range(args, "init_temperature", 0.0, float("inf"), low_open=True)
    for name in ("init_temperature", "target_entropy"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{flag(name)} must be a finite number, got {value}")


def with_defaults(args: Args, action_size: int) -> Args:
    """`args` with the defaults that depend on other flags or on the env filled in (recorded so in config.json)."""
    return dataclasses.replace(
        args,
        critic_hidden_dim=args.critic_hidden_dim or CRITIC_WIDTHS[args.critic],
        target_entropy=-float(action_size) if args.target_entropy is None else args.target_entropy,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """π(·|s): 2 × (Dense → ReLU), then the mean and log-std of a Gaussian over the pre-tanh action u.

    log_std = tanh(·) rescaled to [LOG_STD_MIN, LOG_STD_MAX]: a smooth bound, so its gradient never vanishes abruptly.
    """

    hidden_dim: int
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        h = obs
        for _ in range(2):
            h = nn.relu(nn.Dense(self.hidden_dim)(h))
        mean = nn.Dense(self.action_dim)(h)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(nn.Dense(self.action_dim)(h)) + 1.0)
        return mean, log_std


class ClassicCriticHead(nn.Module):
    """One Q(s, a) head as in the SAC paper: 2 × (Dense → ReLU), then Dense(1)."""

    hidden_dim: int

    @nn.compact
    def __call__(self, obs, action):
        h = jnp.concatenate([obs, action], axis=-1)
        for _ in range(2):
            h = nn.relu(nn.Dense(self.hidden_dim)(h))
        return nn.Dense(1)(h).squeeze(-1)


def twin_critic(hidden_dim: int, kind: str) -> nn.Module:
    """Two independent heads of the `kind` architecture (see Args.critic), stacked parameters; output [2, batch]."""
    head = networks.CriticHead if kind == "reference" else ClassicCriticHead
    return networks.ensemble(head, 2, hidden_dim)


# ----------------------------------------------------------------------------------------------------------------------
# The squashed Gaussian and the losses (pure functions, unit-tested on their own)
# ----------------------------------------------------------------------------------------------------------------------
def squashed_log_prob(u, mean, log_std):
    """log π(a|s) of a = tanh(u), u ~ N(mean, exp(log_std)²), summed over action dimensions.

    Change of variables: log π(a) = log N(u) − Σ log(1 − tanh(u)²), and log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u))
    exactly, which stays finite where tanh(u) rounds to ±1.
    """
    gaussian = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det_jacobian = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return (gaussian - log_det_jacobian).sum(-1)


def sample_squashed(key, mean, log_std):
    """A reparameterised action a = tanh(mean + std·ε) in (−1, 1)^d and its log-probability."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(u), squashed_log_prob(u, mean, log_std)


def soft_target(reward, discount, next_q_min, next_log_prob, temperature):
    """y = r + γ·m·(min_i Q̄_i(s′, a′) − α·log π(a′|s′)), a′ ~ π(·|s′)."""
    return reward + discount * (next_q_min - temperature * next_log_prob)


def actor_objective(q_min, log_prob, temperature):
    """E[α·log π(a|s) − min_i Q_i(s, a)], a ~ π(·|s): maximise the soft value."""
    return jnp.mean(temperature * log_prob - q_min)


def temperature_objective(log_temperature, log_prob, target_entropy):
    """−log α · E[log π + H̄] with log π held fixed: its gradient in log α is (entropy − H̄), so a descent step raises
    α while the entropy is below the target and lowers it while above."""
    return -log_temperature * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy)


# ----------------------------------------------------------------------------------------------------------------------
# Train state
# ----------------------------------------------------------------------------------------------------------------------
class TrainState(struct.PyTreeNode):
    actor: dict
    q: dict
    q_target: dict
    log_temperature: jax.Array  # float32 scalar: log α
    actor_opt: optax.OptState
    q_opt: optax.OptState
    temperature_opt: optax.OptState
    buffer: replay.ReplayBuffer
    env: EnvState
    key: jax.Array
    env_steps: jax.Array  # int32, all envs together
    updates: jax.Array    # int32, gradient updates done


def make_trainer(args: Args, env: BatchedEnv, eval_env: BatchedEnv) -> training.Trainer:
    obs_size, action_size = env.obs_size, env.action_size
    args = with_defaults(args, action_size)
    actor_net = Actor(args.actor_hidden_dim, action_size)
    q_net = twin_critic(args.critic_hidden_dim, args.critic)
    optimiser = optax.adam(args.learning_rate)

    def sample_action(actor_params, obs, key):
        return sample_squashed(key, *actor_net.apply(actor_params, obs))

    def init(key) -> TrainState:
        key, actor_key, q_key, env_key = jax.random.split(key, 4)
        obs, act = jnp.zeros((1, obs_size)), jnp.zeros((1, action_size))
        actor = actor_net.init(actor_key, obs)
        q = q_net.init(q_key, obs, act)
        log_temperature = jnp.log(jnp.float32(args.init_temperature))
        return TrainState(
            actor=actor, q=q, q_target=q, log_temperature=log_temperature,
            actor_opt=optimiser.init(actor), q_opt=optimiser.init(q), temperature_opt=optimiser.init(log_temperature),
            buffer=replay.init(args.buffer_size, training.empty_transition(env)), env=env.reset(env_key), key=key,
            env_steps=jnp.int32(0), updates=jnp.int32(0),
        )

    def adam_step(params, opt_state, grads):
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def update(state: TrainState, key):
        """One SAC update on a fresh uniform batch: critics, then actor, then temperature, then Polyak targets."""
        batch_key, next_action_key, action_key = jax.random.split(key, 3)
        batch = replay.sample(state.buffer, batch_key, args.batch_size, recent_window=1, recent_fraction=0.0)
        obs, action, next_obs = batch["obs"], batch["action"], batch["next_obs"]
        temperature = jnp.exp(state.log_temperature)

        # Critics: regress both heads on the soft target from the target twin.
        next_action, next_log_prob = sample_action(state.actor, next_obs, next_action_key)
        next_q_min = q_net.apply(state.q_target, next_obs, next_action).min(0)
        target = soft_target(batch["reward"], args.gamma * batch["mask"], next_q_min, next_log_prob, temperature)

        def q_loss_fn(params):
            q = q_net.apply(params, obs, action)
            return ((q - target) ** 2).mean(1).sum(), q

        (q_loss, q_values), grads = jax.value_and_grad(q_loss_fn, has_aux=True)(state.q)
        q_params, q_opt = adam_step(state.q, state.q_opt, grads)

        # Actor: reparameterised through the updated critics.
        def actor_loss_fn(params):
            new_action, log_prob = sample_action(params, obs, action_key)
            return actor_objective(q_net.apply(q_params, obs, new_action).min(0), log_prob, temperature), log_prob

        (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor)
        actor_params, actor_opt = adam_step(state.actor, state.actor_opt, grads)

        # Temperature: from the log-probabilities of the actions the actor step just saw.
        temperature_loss, grads = jax.value_and_grad(temperature_objective)(
            state.log_temperature, log_prob, args.target_entropy)
        log_temperature, temperature_opt = adam_step(state.log_temperature, state.temperature_opt, grads)

        state = state.replace(
            actor=actor_params, q=q_params, q_target=optax.incremental_update(q_params, state.q_target, args.tau),
            log_temperature=log_temperature, actor_opt=actor_opt, q_opt=q_opt, temperature_opt=temperature_opt,
            updates=state.updates + 1,
        )
        metrics = dict(critic_loss=q_loss, q_mean=q_values.mean(), actor_loss=actor_loss, entropy=-log_prob.mean(),
                       temperature=temperature, temperature_loss=temperature_loss)
        return state, metrics

    chunk, env_steps_per_chunk = training.make_chunk(
        args, env, act=lambda state, obs, key: sample_action(state.actor, obs, key)[0], update=update,
        learned=lambda state: (state.actor, state.q, state.log_temperature))

    def eval_action(actor_params, obs, key, deterministic):
        mean, log_std = actor_net.apply(actor_params, obs)
        return jnp.where(deterministic, jnp.tanh(mean), sample_squashed(key, mean, log_std)[0])

    evaluate = training.make_evaluate(eval_env, eval_action, policy_params=lambda state: state.actor)

    return training.Trainer(init=jax.jit(init), chunk=chunk, evaluate=evaluate, update=update,
                            env_steps_per_chunk=env_steps_per_chunk)


def train(args: Args) -> None:
    env = BatchedEnv(args.env, args.num_envs, physics=args.physics, episode_length=args.episode_length)
    eval_env = BatchedEnv(args.env, args.eval_episodes, physics=args.physics, episode_length=args.episode_length)
    args = with_defaults(args, env.action_size)
    training.train(args, make_trainer(args, env, eval_env), "sac", env)


def main() -> None:
    train(parse_args(Args, validate_args))


if __name__ == "__main__":
    main()
