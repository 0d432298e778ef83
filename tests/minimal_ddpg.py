"""A minimal DDPG (Lillicrap et al., 2016), written against common.core.contract alone: the proof that a third algorithm
plugs into the harness without reading it. Like the two real algorithm files it imports only pip packages; nothing
in common/ names it."""

import dataclasses
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


@dataclasses.dataclass
class DDPGConfig:
    """DDPG's hyperparameters."""

    hidden_dim: int = 64
    """Width of the actor's and the critic's 2-layer ReLU MLPs."""
    learning_rate: float = 1e-3
    """Adam step size for both networks."""
    tau: float = 0.005
    """Polyak rate of both targets, after every update."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise added to the actor's action while collecting."""
    gamma: float = 0.99
    """Discount."""

    def validate(self) -> None:
        if self.hidden_dim < 1:
            raise ValueError(f"--hidden-dim must be a positive integer (≥ 1), got {self.hidden_dim}")


class MLP(nn.Module):
    hidden_dim: int
    out_dim: int

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.relu(nn.Dense(self.hidden_dim)(x))
        return nn.Dense(self.out_dim)(x)


class DDPGState(struct.PyTreeNode):
    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    updates: jax.Array


class DDPG(NamedTuple):
    config: DDPGConfig
    init: Callable
    observe: Callable
    act: Callable
    explore: Callable
    update: Callable
    policy_updated: Callable
    policy_metric_names: tuple[str, ...] = ()
    lockstep_fields: tuple[str, ...] = ("updates",)
    recent_share: tuple[float, int] | None = None
    progress_metric: str | None = None


def make_ddpg(config: DDPGConfig, obs_size: int, action_size: int) -> DDPG:
    config.validate()
    actor_net, critic_net = MLP(config.hidden_dim, action_size), MLP(config.hidden_dim, 1)
    optimiser = optax.adam(config.learning_rate)

    def policy(params, obs):
        return jnp.tanh(actor_net.apply(params, obs))

    def q_value(params, obs, action):
        return critic_net.apply(params, jnp.concatenate([obs, action], -1)).squeeze(-1)

    def init(key) -> DDPGState:
        actor_key, critic_key = jax.random.split(key)
        actor = actor_net.init(actor_key, jnp.zeros((1, obs_size)))
        critic = critic_net.init(critic_key, jnp.zeros((1, obs_size + action_size)))
        return DDPGState(actor=actor, critic=critic, actor_target=actor, critic_target=critic,
                         actor_opt=optimiser.init(actor), critic_opt=optimiser.init(critic), updates=jnp.int32(0))

    def act(state: DDPGState, obs, key, deterministic=False):
        action = policy(state.actor, obs)
        noisy = action + config.exploration_noise * jax.random.normal(key, action.shape)
        return jnp.clip(jnp.where(deterministic, action, noisy), -1.0, 1.0)

    def update(state: DDPGState, batch: dict, key):
        del key  # DDPG's update is deterministic
        next_q = q_value(state.critic_target, batch["next_obs"], policy(state.actor_target, batch["next_obs"]))
        target = batch["reward"] + config.gamma * batch["mask"] * next_q

        def critic_loss_fn(params):
            return jnp.mean((q_value(params, batch["obs"], batch["action"]) - target) ** 2)

        critic_loss, grads = jax.value_and_grad(critic_loss_fn)(state.critic)
        updates, critic_opt = optimiser.update(grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)

        def actor_loss_fn(params):
            return -jnp.mean(q_value(critic, batch["obs"], policy(params, batch["obs"])))

        actor_loss, grads = jax.value_and_grad(actor_loss_fn)(state.actor)
        updates, actor_opt = optimiser.update(grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, updates)
        state = DDPGState(actor=actor, critic=critic,
                          actor_target=optax.incremental_update(actor, state.actor_target, config.tau),
                          critic_target=optax.incremental_update(critic, state.critic_target, config.tau),
                          actor_opt=actor_opt, critic_opt=critic_opt, updates=state.updates + 1)
        return state, dict(critic_loss=critic_loss, actor_loss=actor_loss)

    return DDPG(config=config, init=init, observe=lambda state, obs: state, act=act,
                explore=lambda state, obs, key: act(state, obs, key), update=update,
                policy_updated=lambda state: jnp.bool_(True))


if __name__ == "__main__":
    from common.run import cli

    cli.main("ddpg", DDPGConfig, make_ddpg)
