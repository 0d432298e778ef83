"""The contract between an algorithm, the envs and the harness: everything the harness relies on, in one place.

An algorithm file (flowrl_jax.py, sac_jax.py, or a user's own) provides a config dataclass and
`make(config, obs_size, action_size) -> Algorithm`. It imports nothing of this repository: `Algorithm` is a Protocol,
so any object with these members conforms (a NamedTuple is the usual choice). The envs are `VectorEnv`s: Playground's
MJX tasks (common.envs.playground.BatchedEnv) and the host-stepped dm_control/Gymnasium/MyoSuite tasks
(common.envs.host.HostBatchedEnv).

The harness owns everything else: the envs, the replay buffer and how its rows are laid out, the train state, the
compiled chunk, logging, evaluation and checkpoints. Batches reach `update` as a dict of arrays:
obs [B, obs_size], action [B, action_size] in [-1, 1], reward [B], next_obs [B, obs_size] and mask [B] (0 where the
episode truly terminated, 1 otherwise: a time limit still bootstraps).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import flax.struct
import jax
import numpy as np


@runtime_checkable
class Algorithm(Protocol):
    """An RL algorithm for fixed observation and action sizes. Every function is pure and jittable.

    `make(config, obs_size, action_size)` must be cheap (no compile, no env): the harness calls it once with sizes 1
    to check the flags before it builds anything, and raises its ValueError as a flag error.
    """

    config: Any
    """The algorithm's own config, with any defaults that depend on the sizes filled in (saved in config.json)."""
    init: Callable[[jax.Array], Any]
    """key -> learner state (a pytree: parameters, optimiser states, counters)."""
    observe: Callable[[Any, jax.Array], Any]
    """(state, obs [..., obs_size]) -> state: called once on every observation the policy acts on, e.g. for
    observation normalisation; return the state unchanged if nothing is tracked."""
    act: Callable[..., jax.Array]
    """(state, obs [B, obs_size], key, deterministic) -> actions [B, action_size] in [-1, 1]; `deterministic` may be
    a traced bool. The policy as it is evaluated."""
    explore: Callable[[Any, jax.Array, jax.Array], jax.Array]
    """(state, obs [B, obs_size], key) -> actions [B, action_size] in [-1, 1]: the actions the envs are stepped with
    while collecting (after the random start steps). An algorithm without exploration of its own returns act's
    sample; one with exploration noise adds it here, so that evaluation stays free of it."""
    update: Callable[[Any, dict, jax.Array], tuple[Any, dict]]
    """(state, batch, key) -> (state, metrics): one gradient update on a batch (module docstring); metrics are
    scalar arrays with the same keys on every update."""
    policy_updated: Callable[[Any], jax.Array]
    """state after an update -> bool scalar: whether that update moved the policy (an actor delayed like TD3's moves
    on some updates only)."""
    policy_metric_names: tuple[str, ...]
    """Metrics that only a policy update computes (zeros on the others): the harness averages them over the updates
    that moved the policy, and every other metric over all updates."""
    lockstep_fields: tuple[str, ...]
    """Fields of the learner state that are the same for every seed at every update (step counters). Several seeds
    vmap over everything else; an unbatched counter keeps a `lax.cond` on it a real branch."""
    recent_share: tuple[float, int] | None
    """(fraction, window): that share of each batch is drawn uniformly from the `window` newest transitions and the
    rest uniformly from the whole replay (its window flag is `--recent-window`); None draws the whole batch
    uniformly."""
    progress_metric: str | None
    """The metric that the progress bar shows beside the evaluation (None: none)."""


MakeAlgorithm = Callable[[Any, int, int], Algorithm]


@flax.struct.dataclass
class StepOutput:
    """What one step of E envs returns beside the next env state."""

    next_obs: jax.Array  # [E, obs_size] true s' of this transition, before any auto-reset
    reward: jax.Array  # [E] float32
    terminated: jax.Array  # [E] bool, the env's own termination: do not bootstrap
    truncated: jax.Array  # [E] bool, time limit reached and not terminated: bootstrap from next_obs
    episode_return: jax.Array  # [E] float32, return of the episode ending here (meaningful where terminated|truncated)
    nonfinite: jax.Array  # [E] bool, the physics produced a NaN/Inf observation or reward: env reset, step unusable
    success: jax.Array  # [E] float32, 1/0: the task counts this step as solved (MyoSuite); NaN: it reports no success


@runtime_checkable
class VectorEnv(Protocol):
    """E copies of one task stepped together, with jittable reset/step and auto-reset that keeps the true s'.

    The env state is a pytree with an `obs` [E, obs_size] field: what the policy acts on now (the reset observation
    where an episode just ended). Actions are not clipped: pass them within [action_low, action_high].
    """

    name: str  # the task's canonical name (`humanoid-walk`, `Ant-v4`)
    backend: str  # `playground`, `dm_control`, `gymnasium` or `myosuite`
    backend_task: str  # the backend's own name for the task
    num_envs: int
    obs_size: int
    action_size: int
    action_low: np.ndarray  # [action_size] float32
    action_high: np.ndarray  # [action_size] float32
    episode_length: int  # time limit in calls to `step`

    def reset(self, key: jax.Array) -> Any:
        """A fresh env state for E envs."""

    def step(self, state: Any, action: jax.Array) -> tuple[Any, StepOutput]:
        """Step every env, then reset those whose episode ended (terminated, truncated or non-finite)."""

    def capture(self, state: Any) -> Any:
        """The state as a checkpoint must hold it (a host env writes its host-side state into the pytree)."""

    def restore(self, state: Any) -> None:
        """Make a captured state current again before stepping resumes from it."""
