"""Policy evaluation on a separate VectorEnv: one full episode per eval env, inside one lax.scan."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from common.core.contract import VectorEnv


class Episodes(NamedTuple):
    returns: jax.Array  # [E] float32: undiscounted return of each eval episode
    success: jax.Array  # [E] float32: 1/0, solved at the episode's last step (MyoSuite); NaN where the task has none


def make_evaluator(env: VectorEnv, act_fn: Callable[[Any, jax.Array, jax.Array], jax.Array], record: bool = False):
    """Returns a pure, jittable `evaluate(params, key) -> Episodes`, one episode per eval env.

    act_fn(params, obs [E, obs_size], key) -> actions [E, action_size] within the env's bounds. Each eval env runs
    exactly one episode of env.episode_length steps; rewards after a termination are masked out. An episode's success
    is the task's success flag at its last step (its termination or its time limit), as the published MyoSuite
    success rates count it. Keys: `key` is split into (reset_key, act_key); the envs are reset with reset_key and step
    t acts with jax.random.split(act_key, T)[t].

    With `record`, evaluate returns (episodes, trajectory): what a video of env 0's episode needs, per step t, from
    the state before step t acts: trajectory["running"] [T] (false once that episode has ended) and whatever
    `env.first_env_scene(state)` gives (Playground: qpos, qvel, mocap poses; a host env records on the host and gives
    nothing). The episodes are those of the plain evaluator.
    """

    def evaluate(params, key: jax.Array):
        reset_key, act_key = jax.random.split(key)

        def body(carry, step_key):
            state, returns, success, running = carry
            scene = dict(running=running[0], **env.first_env_scene(state)) if record else None
            state, out = env.step(state, act_fn(params, state.obs, step_key))
            returns = returns + jnp.where(running & ~out.nonfinite, out.reward, 0.0)
            success = jnp.where(running, out.success, success)  # frozen once the episode has ended
            return (state, returns, success, running & ~(out.terminated | out.truncated | out.nonfinite)), scene

        zeros = jnp.zeros(env.num_envs, jnp.float32)
        init = (env.reset(reset_key), zeros, zeros + jnp.nan, jnp.ones(env.num_envs, bool))
        (_, returns, success, _), trajectory = jax.lax.scan(body, init, jax.random.split(act_key, env.episode_length))
        episodes = Episodes(returns, success)
        return (episodes, trajectory) if record else episodes

    return evaluate
