"""Playground env layer: physics implementation choice, auto-reset that keeps the true final observation, evaluation.

Compiling MJX programs is the cost here (~15-30 s each on CPU), so all checks share three compiled programs of one tiny
config (cartpole-balance, 3 envs, 5-step episodes): a rollout vmapped over 2 seeds, the raw Playground env stepped
without our wrapper (the ground truth), and the evaluator.
"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
import numpy as np
import pytest

from common.core.contract import StepOutput
from common.envs.playground import BatchedEnv
from common.core.evaluation import make_evaluator
from common.envs.tasks import resolve_task

NAME, E, L = "cartpole-balance", 3, 5
T = 2 * L + 2  # rollout steps: every env finishes two episodes
# Seed 0 starts its envs part-way through an episode so they end at different steps (env i after L - i steps):
# resets must then apply to the finished envs only. Seed 1 starts fresh and is the reference for the evaluator.
START_STEPS = np.array([[0, 1, 2], [0, 0, 0]], np.int32)
EVAL_KEY = jax.random.PRNGKey(1)
# These programs run a few steps, so compile time is all that counts: XLA's backend optimisation level 0 compiles
# them ~40% faster on CPU.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def act_fn(params, obs, key):
    del key  # deterministic, so that the evaluator and the manual rollout take the same actions
    return jnp.tanh(obs @ params)


@pytest.fixture(scope="module")
def env():
    return BatchedEnv(resolve_task(NAME), E, episode_length=L)


@pytest.fixture(scope="module")
def params(env):
    return jnp.full((env.obs_size, env.action_size), 0.7, jnp.float32)


@pytest.fixture(scope="module")
def rollout(env, params):
    """T steps of act_fn for 2 seeds in one jitted lax.scan under jax.vmap, as the training loop runs them."""

    def run(key, start_steps):
        state0 = env.reset(key).replace(episode_step=start_steps)

        def body(state, _):
            action = act_fn(params, state.obs, None)
            state, out = env.step(state, action)
            return state, (action, (state.obs, state.episode_step, state.episode_return), out)

        _, (actions, states, outs) = jax.lax.scan(body, state0, None, T)  # states: (obs, episode_step, return)
        return state0, actions, states, outs

    # seed 1 is reset with the key the evaluator derives from EVAL_KEY (make_evaluator documents the split)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.split(EVAL_KEY)[0]])
    return jax.device_get(fast_jit(jax.vmap(run))(keys, jnp.asarray(START_STEPS)))


@pytest.fixture(scope="module")
def raw(env, rollout):
    """Ground truth: Playground's env stepped from the same initial physics with the same actions, no wrapper."""
    state0, actions, _, _ = rollout

    def run(physics, actions):
        def body(p, a):
            p = jax.vmap(env.env.step)(p, a)
            return p, (p.obs, p.reward)

        return jax.lax.scan(body, physics, actions)[1]

    return jax.device_get(fast_jit(jax.vmap(run))(state0.physics, actions[:, :L]))


# ------------------------------------------------------------------------------------------- construction

def test_env_attributes_and_physics_backend(env):
    from mujoco import mjx

    assert (env.name, env.playground_name) == (NAME, "CartpoleBalance")
    assert (env.num_envs, env.obs_size, env.action_size, env.episode_length) == (E, 5, 1, L)
    np.testing.assert_array_equal(env.action_low, [-1.0])
    np.testing.assert_array_equal(env.action_high, [1.0])
    assert env.env.mjx_model.impl == mjx.Impl.JAX  # Playground 0.2.0 defaults to warp: catches an ignored backend
    assert BatchedEnv(resolve_task("CartpoleBalance"), 1).episode_length == 1000  # the task's own time limit by default


def test_warp_backend_is_passed_through():
    pytest.importorskip("warp")
    from mujoco import mjx

    warp = BatchedEnv(resolve_task(NAME), 1, physics="warp")
    assert warp.env.mjx_model.impl == mjx.Impl.WARP  # catches a hard-coded "jax"


@pytest.mark.parametrize("kwargs, flag", [
    ({"physics": "cuda"}, "--physics"), ({"num_envs": 0}, "--num-envs"), ({"episode_length": 0}, "--episode-length")])
def test_bad_arguments_are_rejected(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        BatchedEnv(**{"task": resolve_task(NAME), "num_envs": 2, **kwargs})


# ---------------------------------------------------------------------------------------------- stepping

def _lazy_conds(jaxpr) -> int:
    """Number of lax.conds (searched recursively) with an empty branch, i.e. `cond(pred, work, keep)`."""
    n = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            n += any(not b.jaxpr.eqns for b in eqn.params["branches"])
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, (jax_core.ClosedJaxpr, jax_core.Jaxpr)):
                    n += _lazy_conds(getattr(sub, "jaxpr", sub))
    return n


def test_step_keeps_state_types_and_resets_lazily_also_under_vmap(env):
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(env.reset, key)
    action = jnp.zeros((E, env.action_size))
    new_state, _ = jax.eval_shape(env.step, state, action)
    # lax.scan/cond and donation need identical structure, shapes, dtypes and weak types before and after a step
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert jax.tree.leaves(new_state) == jax.tree.leaves(state)
    # The reset (an mjx.forward per env) must sit behind a lax.cond, not run every step; also when the step is
    # vmapped over seeds, where a plain lax.cond with a batched predicate becomes a select computing both branches.
    seeds = jax.eval_shape(jax.vmap(env.reset), jax.random.split(key, 2))
    assert _lazy_conds(jax.make_jaxpr(env.step)(state, action).jaxpr) == 1
    assert _lazy_conds(jax.make_jaxpr(jax.vmap(env.step, (0, None)))(seeds, action).jaxpr) == 1


def test_time_limit_keeps_true_final_obs_then_resets(rollout, raw):
    state0, _, (states_obs, states_step, states_return), outs = rollout
    raw_obs, raw_reward = raw
    assert not outs.terminated.any()  # DMC tasks end only by time limit
    for s in range(2):
        for i in range(E):
            first_end = L - START_STEPS[s, i] - 1  # index of the step that reaches the time limit
            ends = [first_end, first_end + L]
            np.testing.assert_array_equal(np.flatnonzero(outs.truncated[s, :, i]), ends)
            # s' of every transition of the first episode, the time-limit one included, is the raw env's observation
            # (Playground's AutoResetWrapper would give the reset observation at the time-limit step)
            np.testing.assert_allclose(outs.next_obs[s, :first_end + 1, i], raw_obs[s, :first_end + 1, i],
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(outs.reward[s, :first_end + 1, i], raw_reward[s, :first_end + 1, i],
                                       rtol=1e-5, atol=1e-6)
            # the return of the ending episode is the sum of its rewards, and the counters restart
            for start, end in [(0, first_end), (first_end + 1, first_end + L)]:
                np.testing.assert_allclose(outs.episode_return[s, end, i], outs.reward[s, start:end + 1, i].sum(),
                                           rtol=1e-5)
            np.testing.assert_array_equal(states_step[s, ends, i], 0)
            np.testing.assert_array_equal(states_return[s, ends, i], 0.0)
            steps_after = (START_STEPS[s, i] + np.arange(1, T + 1)) % L  # what episode_step must read after each step
            np.testing.assert_array_equal(states_step[s, :, i], steps_after)
            # after a time limit the policy sees a fresh reset, a different one each episode (per-env rng advances);
            # everywhere else the obs it sees next is s'
            reset_obs = states_obs[s, ends, i]
            for obs in (outs.next_obs[s, ends, i], state0.physics.obs[s, i][None], reset_obs[::-1]):
                assert np.abs(reset_obs - obs).max(axis=-1).min() > 1e-3
            cont = np.setdiff1d(np.arange(T), ends)
            np.testing.assert_array_equal(states_obs[s, cont, i], outs.next_obs[s, cont, i])


def test_evaluator_returns_one_episode_per_env(env, params, rollout):
    *_, outs = rollout
    returns = fast_jit(make_evaluator(env, act_fn))(params, EVAL_KEY).returns
    assert returns.shape == (E,) and returns.dtype == jnp.float32
    # exactly the first episode (L steps) of each env: not fewer steps, and nothing from the next episode
    np.testing.assert_allclose(returns, outs.reward[1, :L].sum(0), rtol=1e-5)


@flax.struct.dataclass
class _State:
    obs: jax.Array
    t: jax.Array


class _CountingEnv:
    """Stand-in with BatchedEnv's interface: reward 1 per step, env i terminates after i + 1 steps (no MJX)."""

    num_envs, episode_length = 3, 4

    def reset(self, key):
        return _State(obs=jnp.zeros((self.num_envs, 1)), t=jnp.zeros(self.num_envs, jnp.int32))

    def step(self, state, action):
        t = state.t + 1
        terminated = t >= jnp.arange(1, self.num_envs + 1)
        truncated = (t >= self.episode_length) & ~terminated
        # auto-reset like BatchedEnv: an env that ended starts a new episode and keeps earning reward
        new = _State(obs=state.obs, t=jnp.where(terminated | truncated, 0, t))
        return new, StepOutput(state.obs, jnp.ones(self.num_envs), terminated, truncated, t.astype(jnp.float32),
                               jnp.zeros(self.num_envs, bool), jnp.full(self.num_envs, jnp.nan))


def test_evaluator_masks_rewards_after_the_first_episode_ends():
    returns = jax.jit(make_evaluator(_CountingEnv(), lambda p, obs, k: obs))(None, EVAL_KEY).returns
    np.testing.assert_array_equal(returns, [1.0, 2.0, 3.0])  # 4.0 each if rewards after a termination counted


def test_a_diverged_env_is_flagged_and_reset_while_the_others_run_on(env):
    """A NaN action makes env 0's physics diverge: the step is flagged nonfinite (not terminal, not truncated, so the
    trainer drops it from the replay), env 0 restarts from a finite reset state, envs 1–2 are untouched."""
    state = fast_jit(env.reset)(jax.random.PRNGKey(3))
    action = jnp.zeros((E, env.action_size)).at[0].set(jnp.nan)
    new_state, out = fast_jit(env.step)(state, action)
    assert list(np.asarray(out.nonfinite)) == [True, False, False]
    assert not bool(out.terminated[0]) and not bool(out.truncated[0])
    assert bool(jnp.isfinite(new_state.obs).all()) and int(new_state.episode_step[0]) == 0
    np.testing.assert_array_equal(new_state.episode_step[1:], [1, 1])
    np.testing.assert_array_equal(new_state.obs[1:], out.next_obs[1:])
