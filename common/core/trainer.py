"""The trainer: an algorithm joined to its envs as pure, compiled functions (init, chunk, evaluate), for one seed.
common.core.layout extends it over seeds and devices; the run (common.run) calls it."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from common.core.chunk import ChunkSpec, make_chunk, make_init, to_env_bounds
from common.core.contract import Algorithm, VectorEnv
from common.core.evaluation import make_evaluator


class Trainer(NamedTuple):
    agent: Algorithm    # the algorithm built for the env's sizes
    init: Callable      # key -> train state
    chunk: Callable     # state -> (state, metrics): one compiled call; the input state is donated
    evaluate: Callable  # (state, key, deterministic: bool) -> Episodes: returns and success [eval_episodes]
    env_steps_per_chunk: int
    eval_env: VectorEnv | None = None
    evaluate_recorded: Callable | None = None  # as evaluate, returning (episodes, trajectory); with videos on only
    state_shardings: Any = None  # the train state's layout over several devices (Layout.placed); None: one device


def make_trainer(spec: ChunkSpec, agent: Algorithm, env: VectorEnv, eval_env: VectorEnv,
                 record: bool = False) -> Trainer:
    """`agent` (built for env's sizes) trained on `env` and evaluated on `eval_env`. With `record`, a second,
    recording evaluator is compiled for videos; without it no second program exists."""
    chunk, env_steps_per_chunk = make_chunk(spec, agent, env)
    evaluate_policy = make_policy_evaluator(agent, eval_env)
    evaluate_recorded = make_policy_evaluator(agent, eval_env, record=True) if record else None

    def evaluate(state, key, deterministic):
        return evaluate_policy(state.learner, key, deterministic)

    def evaluate_and_record(state, key, deterministic):
        return evaluate_recorded(state.learner, key, deterministic)

    return Trainer(agent=agent, init=jax.jit(make_init(spec, agent, env)), chunk=chunk, evaluate=evaluate,
                   env_steps_per_chunk=env_steps_per_chunk, eval_env=eval_env,
                   evaluate_recorded=evaluate_and_record if record else None)


def make_policy_evaluator(agent: Algorithm, eval_env: VectorEnv, record: bool = False) -> Callable:
    """(learner, key, deterministic) -> Episodes [eval episodes] (with `record`: (episodes, trajectory), see
    common.core.evaluation): the run's evaluation, and `--play`'s."""

    def act_in_bounds(learner_and_mode, obs, key):
        learner, deterministic = learner_and_mode
        return to_env_bounds(eval_env, agent.act(learner, obs, key, deterministic))

    # Compiled once for both modes: the mode is a traced bool.
    evaluate_episodes = jax.jit(make_evaluator(eval_env, act_in_bounds, record))
    return lambda learner, key, deterministic: evaluate_episodes((learner, jnp.asarray(deterministic, bool)), key)
