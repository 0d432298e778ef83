"""The compiled chunk: the train state, and one jitted call that scans over iterations of
{act → step all E envs → store E transitions → draw a batch → U updates}.

This is the whole hot path of a run. The train state is one pytree (the algorithm's state, the replay, the envs'
state, the key and the env-step counter), donated to the chunk so that the replay is updated in place. Everything the
chunk needs from the run is in `ChunkSpec`; the algorithm meets it through `common.core.contract.Algorithm`, the envs
through `VectorEnv` (Playground's MJX envs, or host envs stepped through a callback inside the scan).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from common.core import replay
from common.core.contract import Algorithm, VectorEnv


class TrainState(struct.PyTreeNode):
    learner: Any  # the algorithm's state: parameters, optimiser states, counters
    buffer: replay.ReplayBuffer
    env: Any  # the envs' state: common.envs.playground.EnvState, or common.envs.host.HostEnvState
    key: jax.Array
    env_steps: jax.Array  # int32, all envs together


@dataclasses.dataclass(frozen=True)
class ChunkSpec:
    """What the chunk needs to know of the run: sizes and counts, nothing else."""

    updates_per_iteration: int  # U: updates after each step of all E envs
    batch_size: int
    start_steps: int  # env steps of uniform random actions before the first update
    log_interval: int  # env steps per chunk (rounded up to whole iterations of E envs)
    replay_capacity: int  # transitions, all shards together
    replay_shards: int = 1  # data parallel: one ring of capacity / shards rows per device

    def iterations(self, num_envs: int) -> int:
        return -(-self.log_interval // num_envs)


def to_env_bounds(env: VectorEnv, action):
    """Map a squashed action in [-1, 1] to the env's actuator range."""
    low, high = jnp.asarray(env.action_low), jnp.asarray(env.action_high)
    return low + (action + 1.0) * 0.5 * (high - low)


def empty_transition(env: VectorEnv) -> dict:
    """One unbatched transition: the replay row layout, and the batch layout that `update` takes."""
    obs = jnp.zeros(env.obs_size)
    return dict(obs=obs, action=jnp.zeros(env.action_size), reward=jnp.float32(0), next_obs=obs, mask=jnp.float32(0))


def init_replay(spec: ChunkSpec, env: VectorEnv) -> replay.ReplayBuffer:
    """An empty replay; with several shards, one ring of capacity / shards per shard, on a leading shard axis."""
    shards = spec.replay_shards
    if shards == 1:
        return replay.init(spec.replay_capacity, empty_transition(env))
    return jax.vmap(lambda _: replay.init(spec.replay_capacity // shards, empty_transition(env)))(jnp.arange(shards))


def add_transitions(spec: ChunkSpec, buffer: replay.ReplayBuffer, transitions: dict, valid) -> replay.ReplayBuffer:
    """Store one step of all E envs; with several shards, shard k takes envs k·E/shards … (k+1)·E/shards − 1."""
    shards = spec.replay_shards
    if shards == 1:
        return replay.add(buffer, transitions, valid=valid)

    def split(x):
        return x.reshape(shards, -1, *x.shape[1:])

    return jax.vmap(replay.add)(buffer, jax.tree.map(split, transitions), split(valid))


def sample_batch(spec: ChunkSpec, agent: Algorithm, buffer: replay.ReplayBuffer, key) -> dict:
    """A batch drawn as the algorithm asks (`recent_share`): FlowRL draws 20 % from the newest 2 048 transitions,
    SAC uniformly. With several shards, each shard draws batch / shards rows the same way (the recent share from its
    own newest recent_window / shards rows) with its own key, split from `key`; the batch is the shards' draws in
    shard order."""
    recent_fraction, recent_window = agent.recent_share or (0.0, 1)
    shards, batch_size = spec.replay_shards, spec.batch_size
    if shards == 1:
        return replay.sample(buffer, key, batch_size, recent_window=recent_window, recent_fraction=recent_fraction)
    draws = jax.vmap(lambda shard, shard_key: replay.sample(
        shard, shard_key, batch_size // shards, recent_window=max(recent_window // shards, 1),
        recent_fraction=recent_fraction))(buffer, jax.random.split(key, shards))
    return jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), draws)


def make_init(spec: ChunkSpec, agent: Algorithm, env: VectorEnv) -> Callable:
    """key -> a fresh train state: the algorithm's, an empty replay and freshly reset envs."""

    def init(key) -> TrainState:
        key, learner_key, env_key = jax.random.split(key, 3)
        return TrainState(learner=agent.init(learner_key), buffer=init_replay(spec, env), env=env.reset(env_key),
                          key=key, env_steps=jnp.int32(0))

    return init


def make_update(spec: ChunkSpec, agent: Algorithm) -> Callable:
    """(state, key) -> (state, metrics): draw a batch and run one update of the algorithm."""

    def update(state: TrainState, key):
        batch_key, update_key = jax.random.split(key)
        batch = sample_batch(spec, agent, state.buffer, batch_key)
        learner, metrics = agent.update(state.learner, batch, update_key)
        return state.replace(learner=learner), metrics

    return update


def params_finite(learner) -> jax.Array:
    """Whether every floating leaf of the learner state is finite: the run stops on False (callbacks.check_finite)."""
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(learner)
                              if jnp.issubdtype(x.dtype, jnp.floating)]))


def make_chunk(spec: ChunkSpec, agent: Algorithm, env: VectorEnv) -> tuple[Callable, int]:
    """The compiled chunk `state -> (state, metrics)`, and the env steps it covers. The metrics in
    agent.policy_metric_names average over the updates that moved the policy only (agent.policy_updated), every
    other update metric over all updates."""
    num_envs, iterations, updates = env.num_envs, spec.iterations(env.num_envs), spec.updates_per_iteration
    update = make_update(spec, agent)

    def update_and_mark(state, key):
        state, metrics = update(state, key)
        return state, (metrics, agent.policy_updated(state.learner))

    def run_updates(state):
        key, update_key = jax.random.split(state.key)
        return jax.lax.scan(update_and_mark, state.replace(key=key), jax.random.split(update_key, updates))

    def skip_updates(state):
        metric_shapes = jax.eval_shape(lambda state: run_updates(state)[1], state)
        return state, jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), metric_shapes)

    def iteration(state, _):
        key, policy_key, random_key = jax.random.split(state.key, 3)
        obs = state.env.obs
        state = state.replace(learner=agent.observe(state.learner, obs))  # every observation the policy meets, once
        action = jnp.where(
            state.env_steps < spec.start_steps,
            jax.random.uniform(random_key, (num_envs, env.action_size), minval=-1.0, maxval=1.0),
            agent.explore(state.learner, obs, policy_key),
        )
        env_state, step = env.step(state.env, to_env_bounds(env, action))
        # The mask cuts the bootstrap only on true termination; a time limit still bootstraps from the true s'.
        transition = dict(obs=obs, action=action, reward=step.reward, next_obs=step.next_obs,
                          mask=1.0 - step.terminated.astype(jnp.float32))
        # A diverged env's transition never enters the replay (the env was reset, and counted).
        state = state.replace(buffer=add_transitions(spec, state.buffer, transition, ~step.nonfinite), env=env_state,
                              key=key, env_steps=state.env_steps + num_envs)
        learning = state.env_steps >= spec.start_steps
        state, metrics = jax.lax.cond(learning, run_updates, skip_updates, state)
        done = step.terminated | step.truncated
        stats = dict(episodes=done.sum(), return_sum=jnp.where(done, step.episode_return, 0.0).sum(),
                     nonfinite=step.nonfinite.sum(), learning=learning.astype(jnp.float32))
        return state, (metrics, stats)

    @partial(jax.jit, donate_argnums=0)
    def chunk(state):
        state, ((update_metrics, policy_moved), stats) = jax.lax.scan(iteration, state, None, length=iterations)
        # [iterations, U]: no updates before learning starts
        update_weight = jnp.broadcast_to(stats["learning"][:, None], (iterations, updates))
        policy_weight = update_weight * policy_moved.astype(jnp.float32)
        metrics = {}
        for name, values in update_metrics.items():
            weight = policy_weight if name in agent.policy_metric_names else update_weight
            metrics[name] = (values * weight).sum() / jnp.maximum(weight.sum(), 1.0)
        metrics["updates"] = stats["learning"].sum() * updates
        episodes = stats["episodes"].sum()
        metrics["train_episodes"] = episodes
        metrics["nonfinite_env_resets"] = stats["nonfinite"].sum()
        metrics["train_return"] = jnp.where(episodes > 0, stats["return_sum"].sum() / jnp.maximum(episodes, 1), jnp.nan)
        metrics["params_finite"] = params_finite(state.learner)
        return state, metrics

    return chunk, iterations * num_envs
