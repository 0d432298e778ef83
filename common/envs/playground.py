"""DM Control tasks from MuJoCo Playground (MJX) as one batch of E envs with pure, jittable reset/step.

It takes a task that common.envs.tasks resolved (`resolve_task("humanoid-walk")`): the name is resolved once, on
the command line, and the task flows down from there.

Auto-reset keeps the true final observation: `step` returns s' of every transition in `StepOutput.next_obs` and
only then resets the envs whose episode ended, so `EnvState.obs` is what the policy acts on next. Playground's own
AutoResetWrapper overwrites s' with the reset observation, and DMC episodes end by time limit, so a time limit is
reported as `truncated` (bootstrap from next_obs), never as `terminated`.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from common.checks import require_positive
from common.core.contract import StepOutput
from common.envs.tasks import Task

PHYSICS_BACKENDS = ("jax", "warp")


@flax.struct.dataclass
class EnvState:
    """State of E envs. A pure pytree: it can be vmapped over seeds, checkpointed and donated."""

    physics: object  # mujoco_playground State, batched over E
    episode_step: jax.Array  # int32 [E], agent steps taken in the current episode
    episode_return: jax.Array  # float32 [E], undiscounted return of the current episode so far
    rng: jax.Array  # [E] keys, consumed by the resets of each env

    @property
    def obs(self) -> jax.Array:
        """[E, obs_size]: the observation the policy acts on now (already the reset one where an episode ended)."""
        return self.physics.obs


def _conform(new, like):
    """`new` (a Playground State) with the pytree structure and dtypes of `like`.

    lax.cond/scan need identical types on both sides. Playground's reset and step disagree on weak types (e.g.
    `reward`, `data.time`, some metrics), and an env may in principle add or drop info/metrics keys; no DMC task does
    the latter today. Keys missing from `new` keep `like`'s value, keys absent from `like` are dropped.
    """
    fill = lambda n, l: {k: n.get(k, v) for k, v in l.items()}  # noqa: E731
    new = new.replace(info=fill(new.info, like.info), metrics=fill(new.metrics, like.metrics))
    return jax.tree.map(lambda n, l: jax.lax.convert_element_type(n, l.dtype), new, like)


def _patch_mujoco_for_playground():
    # Playground 0.2.0's reacher picks the MjSpec API by comparing version strings ("3.17.0" >= "3.3.0" is False),
    # so with mujoco 3.17 it calls MjSpec.find_body, which mujoco >= 3.3 renamed to MjSpec.body.
    import mujoco

    if not hasattr(mujoco.MjSpec, "find_body"):
        mujoco.MjSpec.find_body = mujoco.MjSpec.body


def fold_vmapped_axis(fn):
    """fn(*args), args all with a leading env axis [N, ...], as a function whose jax.vmap folds the vmapped axis into
    the env axis ([B, N, ...] -> [B*N, ...]) and calls fn once, instead of batching what fn does inside. An outer
    vmap applies the rule again, so the folded axes are outermost first."""
    fn = jax.custom_batching.custom_vmap(fn)

    @fn.def_vmap
    def fold(axis_size, in_batched, *args):
        bcast = lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *x.shape))  # noqa: E731
        args = jax.tree.map(bcast, args, tuple(in_batched))
        merged = jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), args)
        out = fn(*merged)
        out = jax.tree.map(lambda x: x.reshape(axis_size, x.shape[0] // axis_size, *x.shape[1:]), out)
        return out, jax.tree.map(lambda _: True, out)

    return fn


def _lazy_reset(reset_physics):
    """reset_done(done [E], physics, rng [E]) -> (physics, rng): fresh resets where done, computed only if any is.

    A reset costs an mjx.forward per env, and some tasks simulate far more in it (cheetah-run settles for 200 physics
    steps), so it runs under lax.cond(any(done)). DMC episodes all end together by
    time limit, so resets run once per episode_length steps. Under jax.vmap (e.g. over seeds) a batched cond predicate
    would turn the cond into a select that computes the resets on every step, so fold_vmapped_axis keeps one cond over
    all envs of all seeds.
    """

    def reset_where_done(done, physics, rng):
        keys = jax.vmap(jax.random.split)(rng)  # per env: [next rng, reset key]
        fresh = _conform(reset_physics(keys[:, 1]), physics)
        select = lambda new, old: jnp.where(done.reshape(done.shape + (1,) * (old.ndim - 1)), new, old)  # noqa: E731
        return jax.tree.map(select, (fresh, keys[:, 0]), (physics, rng))

    @fold_vmapped_axis
    def reset_done(done, physics, rng):
        return jax.lax.cond(jnp.any(done), reset_where_done, lambda _, p, r: (p, r), done, physics, rng)

    return reset_done


class BatchedEnv:
    """E copies of one Playground DMC task, stepped together with jax.vmap.

    `episode_length` counts calls to `step` (agent steps). It defaults to the task config's episode_length divided by
    its action_repeat (1000 / 1 for every DMC task); with action_repeat R each `step` applies the action R times and
    sums the rewards, like Brax's EpisodeWrapper that Playground trains with.
    Actions are not clipped: pass them within [action_low, action_high].
    """

    def __init__(self, task: Task, num_envs: int, physics: str = "jax", episode_length: int | None = None):
        if task.backend != "playground":
            raise ValueError(f"BatchedEnv steps Playground tasks; {task.name} is {task.backend}'s")
        self.name, self.playground_name = task.name, task.source
        self.backend, self.backend_task = "playground", self.playground_name
        require_positive("num_envs", num_envs)
        if physics not in PHYSICS_BACKENDS:
            raise ValueError(f"--physics must be one of {', '.join(PHYSICS_BACKENDS)}, got {physics!r}")
        if episode_length is not None:
            require_positive("episode_length", episode_length)

        _patch_mujoco_for_playground()
        from mujoco_playground import dm_control_suite  # heavy import (all MJX task modules): only when used

        # Playground 0.2.0 defaults to impl="warp", which is much slower on a CPU and needs warp: always choose.
        config = dm_control_suite.get_default_config(self.playground_name)
        self.env = dm_control_suite.load(self.playground_name, config=config, config_overrides={"impl": physics})
        if jax.process_count() > 1:  # MJX put the model on jax.devices()[0], which another process owns
            from mujoco import mjx

            self.env._mjx_model = mjx.put_model(self.env.mj_model, impl=physics, device=jax.local_devices()[0])
        self.action_repeat = int(config.action_repeat)
        self.episode_length = (
            math.ceil(config.episode_length / self.action_repeat) if episode_length is None else episode_length)
        self.num_envs = num_envs
        self.obs_size = int(self.env.observation_size)  # traced with eval_shape, not compiled
        self.action_size = int(self.env.action_size)
        ctrlrange = np.asarray(self.env.mj_model.actuator_ctrlrange, dtype=np.float32)
        self.action_low, self.action_high = ctrlrange[:, 0].copy(), ctrlrange[:, 1].copy()

        self._reset_done = _lazy_reset(self._reset_physics)

    def _reset_physics(self, keys: jax.Array):
        return jax.vmap(self.env.reset)(keys)

    def _step_physics(self, physics, action: jax.Array):
        def repeat(state, a):
            state = self.env.step(state, a)
            reward, done = state.reward, state.done
            for _ in range(self.action_repeat - 1):  # no DMC task repeats actions (action_repeat=1)
                state = self.env.step(state, a)
                reward = reward + (1.0 - done) * state.reward  # nothing is earned after a termination
                done = jnp.maximum(done, state.done)
            return state.replace(reward=reward, done=done)

        return jax.vmap(repeat)(physics, action)

    def reset(self, key: jax.Array) -> EnvState:
        rng, reset_keys = jax.random.split(key, (2, self.num_envs))
        physics = self._reset_physics(reset_keys)
        physics = jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), physics)  # drop weak types
        return EnvState(
            physics=physics,
            episode_step=jnp.zeros(self.num_envs, jnp.int32),
            episode_return=jnp.zeros(self.num_envs, jnp.float32),
            rng=rng,
        )

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepOutput]:
        physics = _conform(self._step_physics(state.physics, action), state.physics)
        episode_step = state.episode_step + 1
        reward = physics.reward.astype(jnp.float32)
        episode_return = state.episode_return + reward
        # A diverged simulation (NaN/Inf) is reset like an ended episode and flagged, so that the caller keeps the
        # transition out of the replay. (Playground's DMC `done` is itself a NaN check, hence `& ~nonfinite` below.)
        nonfinite = ~(jnp.isfinite(physics.obs).all(-1) & jnp.isfinite(reward))
        terminated = (physics.done > 0.5) & ~nonfinite  # Playground's done is a float
        truncated = (episode_step >= self.episode_length) & ~terminated & ~nonfinite
        done = terminated | truncated | nonfinite
        out = StepOutput(physics.obs, reward, terminated, truncated, episode_return, nonfinite,
                         jnp.full(self.num_envs, jnp.nan, jnp.float32))

        physics, rng = self._reset_done(done, physics, state.rng)
        new_state = EnvState(
            physics=physics,
            episode_step=jnp.where(done, 0, episode_step),
            episode_return=jnp.where(done, 0.0, episode_return),
            rng=rng,
        )
        return new_state, out

    @property
    def control_dt(self) -> float:
        """Simulated seconds per call of `step`: a video's frame period."""
        return float(self.env.dt) * self.action_repeat

    def first_env_scene(self, state: EnvState) -> dict:
        """What a video frame of env 0 needs from the state (common.core.evaluation's `record`): its positions and
        velocities, and its mocap poses where the task moves mocap bodies (reacher's target)."""
        data = state.physics.data
        scene = dict(qpos=data.qpos[0], qvel=data.qvel[0])
        if self.env.mj_model.nmocap:
            scene.update(mocap_pos=data.mocap_pos[0], mocap_quat=data.mocap_quat[0])
        return scene

    def capture(self, state: EnvState) -> EnvState:
        """The state as a checkpoint must hold it: already complete, as all of it lives in the pytree."""
        return state

    def restore(self, state: EnvState) -> None:
        """Nothing to put back: stepping continues from the pytree alone."""
