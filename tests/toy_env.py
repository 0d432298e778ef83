"""A VectorEnv in a few lines of jnp: a point mass on a line, pushed toward the origin. For tests of the harness's
mechanics (placement over devices) whose findings do not depend on the physics: its step compiles in well under a
second, where an MJX task's takes ~10 s on a CPU."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from common.core.contract import StepOutput


class ToyState(struct.PyTreeNode):
    obs: jax.Array  # [E, 2] position, velocity
    episode_step: jax.Array  # [E] int32
    episode_return: jax.Array  # [E] float32
    rng: jax.Array  # [E] keys, one per env


class PointMassLine:
    """E point masses on a line: the action is a force in [-1, 1], the reward −position², episodes end by time
    limit only; each reset draws the position and velocity uniformly in [-1, 1]."""

    name, backend, backend_task = "point-mass-line", "playground", "PointMassLine"
    obs_size, action_size = 2, 1
    action_low, action_high = np.full(1, -1.0, np.float32), np.full(1, 1.0, np.float32)
    dt = 0.05

    def __init__(self, num_envs: int, episode_length: int):
        self.num_envs, self.episode_length = num_envs, episode_length

    def _fresh(self, rng):
        keys = jax.vmap(jax.random.split)(rng)  # per env: [next rng, reset key]
        obs = jax.vmap(lambda key: jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0))(keys[:, 1])
        return obs, keys[:, 0]

    def reset(self, key: jax.Array) -> ToyState:
        obs, rng = self._fresh(jax.random.split(key, self.num_envs))
        return ToyState(obs, jnp.zeros(self.num_envs, jnp.int32), jnp.zeros(self.num_envs, jnp.float32), rng)

    def step(self, state: ToyState, action: jax.Array) -> tuple[ToyState, StepOutput]:
        position, velocity = state.obs[:, 0], state.obs[:, 1]
        velocity = velocity + self.dt * action[:, 0]
        position = position + self.dt * velocity
        next_obs = jnp.stack([position, velocity], -1)
        reward = -(position**2)
        episode_step, episode_return = state.episode_step + 1, state.episode_return + reward
        truncated = episode_step >= self.episode_length
        no = jnp.zeros(self.num_envs, bool)
        out = StepOutput(next_obs, reward, no, truncated, episode_return, no,
                         jnp.full(self.num_envs, jnp.nan, jnp.float32))
        fresh_obs, fresh_rng = self._fresh(state.rng)
        reset = truncated[:, None]
        new_state = ToyState(jnp.where(reset, fresh_obs, next_obs), jnp.where(truncated, 0, episode_step),
                             jnp.where(truncated, 0.0, episode_return), jnp.where(truncated, fresh_rng, state.rng))
        return new_state, out

    def capture(self, state: ToyState) -> ToyState:
        return state

    def restore(self, state: ToyState) -> None:
        pass
