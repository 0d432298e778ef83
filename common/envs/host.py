"""Tasks stepped on the host (dm_control, Gymnasium MuJoCo, MyoSuite) as one batch of E envs with jittable reset/step.

`HostBatchedEnv` has the interface of common.envs.playground.BatchedEnv, so the harness and the algorithms cannot tell
the backends apart: reset(key) and step(state, action) are pure-looking JAX functions whose work happens in one
`jax.experimental.io_callback` per call, inside the compiled chunk. The env objects live on the host in a pool,
indexed by position. Under jax.vmap over seeds the seed axis folds into the env axis
(common.envs.playground.fold_vmapped_axis), so one callback steps the envs of every seed: seed k's envs are positions k·E … k·E+E−1, seeded from seed k's key.

Semantics, the same as the Playground backend's:
- `step` returns the true s' of every transition in `StepOutput.next_obs`, then resets the envs whose episode ended
  (on the host, with each env's own random state), so `HostEnvState.obs` is what the policy acts on next.
- Termination is the task's own (Gymnasium's Ant, Hopper, Walker2d and Humanoid when they fall; dm_control when a task
  returns discount 0; MyoSuite when its `done` is set, e.g. a dropped object, or its simulation went unstable). The
  time limit, `episode_length`, is kept here and reported as `truncated`: Gymnasium's and MyoSuite's
  `max_episode_steps`, dm_control's time limit / control timestep (1000 for every suite task).
- `StepOutput.success` is MyoSuite's `solved` flag of the step (1 or 0); NaN for the tasks that report none.
- dm_control's observation dict is flattened in the suite's key order (dm_control's own `flat_observation`).
- A physics error, any exception a task raises in its step, or a NaN/Inf observation or reward resets that env and
  sets `nonfinite` (counted by the harness; the transition stays out of the replay).

The pool is a cache of the train state. Each callback returns a sync token, the pool's call count, and the next
callback refuses a state whose token is not the pool's last one, so a stale state can never silently step envs that
have moved on. `capture(state)` writes every env's full host state into `HostEnvState.snapshot` (uint8 bytes), which
the checkpoint then holds; `restore(state)` puts it back into the pool, so a resumed run continues exactly.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import flax.struct
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax.experimental import io_callback

from common.checks import require_positive
from common.core.contract import StepOutput
from common.envs.playground import fold_vmapped_axis
from common.envs.tasks import require_installed

# MjData arrays that the tasks' observation and reward code may read before the next physics step recomputes them:
# after a step they describe the last substep's state (Gymnasium) or its accelerations (dm_control), which cannot
# be recomputed from qpos and qvel. mjSTATE_INTEGRATION holds the rest (qpos, qvel, act, warm start, time, ctrl, ...).
_DERIVED_FIELDS = (
    "xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos", "site_xmat", "subtree_com",
    "subtree_linvel", "subtree_angmom", "cinert", "cvel", "cacc", "cfrc_int", "cfrc_ext", "qacc", "qfrc_actuator",
    "actuator_force", "actuator_length", "actuator_velocity", "sensordata", "ten_length", "ten_velocity", "qfrc_bias",
    "qfrc_passive", "qfrc_constraint", "energy")
# MjModel arrays that dm_control tasks change at each reset (targets, randomised damping, terrain), found by resetting
# every task of suite.ALL_TASKS and comparing its model with the freshly loaded one.
_DM_CONTROL_MODEL_FIELDS = (
    "body_pos", "body_quat", "dof_damping", "geom_pos", "geom_size", "geom_rgba", "site_pos", "site_size",
    "site_rgba", "light_pos", "wrap_prm", "hfield_data")
# MjModel arrays that the ten MyoSuite benchmark tasks change at each reset (reach targets, the key's place, the pen's
# goal, the held object's size and goal), found the same way; geom_aabb, geom_rbound, dof_length and the object body's
# bounding-volume box follow the object's size.
_MYOSUITE_MODEL_FIELDS = ("site_pos", "site_size", "body_pos", "body_quat", "geom_size", "geom_aabb", "geom_rbound",
                          "dof_length")
_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


def dm_control_suite():
    """dm_control.suite, set up for a headless machine. Training never renders, but quadruped-escape uploads its
    terrain through an OpenGL context at each reset: without a display, dm_control would pick GLFW (importable, but
    unable to open a context), so EGL, or else OSMesa, is chosen where its library exists and MUJOCO_GL is unset.
    The warning that GLFW prints on stderr without a display is silenced."""
    import ctypes.util
    import os
    import warnings

    if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
        for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
            if ctypes.util.find_library(library):
                os.environ["MUJOCO_GL"] = backend
                break
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DISPLAY")
        from dm_control import suite
    return suite


def _integration_state(model, data) -> np.ndarray:
    state = np.empty(mujoco.mj_stateSize(model, _INTEGRATION))
    mujoco.mj_getState(model, data, state, _INTEGRATION)
    return state


def _physics_arrays(model, data) -> list[np.ndarray]:
    return [_integration_state(model, data)] + [getattr(data, name) for name in _DERIVED_FIELDS]


def _set_physics_arrays(model, data, arrays, recompute_positions: bool) -> None:
    mujoco.mj_setState(model, data, arrays[0], _INTEGRATION)
    if recompute_positions:  # dm_control steps as mj_step2 then mj_step1: the next step expects stage 1 done
        mujoco.mj_step1(model, data)
    for name, value in zip(_DERIVED_FIELDS, arrays[1:]):
        np.copyto(getattr(data, name), value)


def _pcg64_words(generator: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's state (two 128-bit integers and a cached 32-bit draw) as six uint64 words."""
    state = generator.bit_generator.state
    words = [state["state"]["state"], state["state"]["inc"]]
    return np.array([w >> shift & (2**64 - 1) for w in words for shift in (0, 64)]
                    + [state["has_uint32"], state["uinteger"]], np.uint64)


def _set_pcg64_words(generator: np.random.Generator, words: np.ndarray) -> None:
    s0, s1, i0, i1, has_uint32, uinteger = (int(word) for word in words)
    generator.bit_generator.state = {"bit_generator": generator.bit_generator.state["bit_generator"],
                                     "state": {"state": s0 | s1 << 64, "inc": i0 | i1 << 64},
                                     "has_uint32": has_uint32, "uinteger": uinteger}


class _PosedByResetFields:
    """Video scenes of a task whose reset changes model fields (`scene_fields`: targets, object sizes): a frame
    needs the integration state and those fields."""

    scene_fields: tuple[str, ...]

    def scene_arrays(self) -> list[np.ndarray]:
        """What a video frame needs: the integration state and the model fields that the episode's reset chose."""
        return [_integration_state(self.model, self.data),
                *(getattr(self.model, name).copy() for name in self.scene_fields)]

    def show_scene(self, arrays: list[np.ndarray]) -> None:
        """Pose this env (one that only renders) as `scene_arrays` captured another."""
        for name, value in zip(self.scene_fields, arrays[1:]):
            np.copyto(getattr(self.model, name), value)
        mujoco.mj_setState(self.model, self.data, arrays[0], _INTEGRATION)
        mujoco.mj_forward(self.model, self.data)


class _DMControlTask(_PosedByResetFields):
    """One dm_control suite env, with its time limit lifted (the pool keeps the limit) and its observation flat."""

    reports_success = False
    scene_fields = _DM_CONTROL_MODEL_FIELDS

    def __init__(self, source: str):
        suite = dm_control_suite()
        domain, task = source.split("-")
        self.env = suite.load(domain, task, task_kwargs={"time_limit": float("inf")},
                              environment_kwargs={"flat_observation": True})
        time_limit = inspect.signature(getattr(suite, domain).SUITE[task]).parameters["time_limit"].default
        steps = time_limit / self.env.control_timestep()
        self.default_episode_length = round(steps) if math.isfinite(steps) else None
        spec = self.env.action_spec()
        self.action_low, self.action_high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
        self.obs_size = int(self.env.observation_spec()["observations"].shape[0])
        self.model, self.data = self.env.physics.model.ptr, self.env.physics.data.ptr
        self.control_dt = float(self.env.control_timestep())

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.env.task.random.seed(seed)
        return self.env.reset().observation["observations"]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, float, bool]:
        """(s', reward, terminated, success (NaN: not reported), diverged)."""
        from dm_control.rl.control import PhysicsError

        try:
            timestep = self.env.step(action)
        except PhysicsError:  # dm_control's check for a diverged simulation (bad accelerations)
            return np.zeros(self.obs_size), 0.0, False, math.nan, True
        terminated = timestep.last() and timestep.discount == 0
        return timestep.observation["observations"], timestep.reward, terminated, math.nan, False

    def state_arrays(self) -> list[np.ndarray]:
        _, keys, position, has_gauss, gauss = self.env.task.random.get_state()
        model_arrays = [getattr(self.model, name) for name in _DM_CONTROL_MODEL_FIELDS]
        return [*_physics_arrays(self.model, self.data), *model_arrays, keys,
                np.array([position, has_gauss]), np.array([gauss])]

    def set_state_arrays(self, arrays: list[np.ndarray]) -> None:
        physics = len(_DERIVED_FIELDS) + 1
        for name, value in zip(_DM_CONTROL_MODEL_FIELDS, arrays[physics:]):
            np.copyto(getattr(self.model, name), value)
        _set_physics_arrays(self.model, self.data, arrays[:physics], recompute_positions=True)
        keys, (position, has_gauss), (gauss,) = arrays[-3:]
        self.env.task.random.set_state(("MT19937", keys, int(position), int(has_gauss), float(gauss)))


class _GymnasiumTask:
    """One Gymnasium MuJoCo env without its wrappers (the pool keeps the time limit)."""

    reports_success = False

    def __init__(self, source: str):
        import warnings

        import gymnasium

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # v4's notice: v4 is what the published tables ran
            wrapped = gymnasium.make(source)
        self.env = wrapped.unwrapped
        self.default_episode_length = wrapped.spec.max_episode_steps
        space = self.env.action_space
        self.action_low, self.action_high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.obs_size = int(self.env.observation_space.shape[0])
        self.model, self.data = self.env.model, self.env.data
        self.control_dt = float(self.env.dt)

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self.env.reset(seed=seed)[0]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, float, bool]:
        obs, reward, terminated, _, _ = self.env.step(action)
        return obs, reward, terminated, math.nan, False

    def state_arrays(self) -> list[np.ndarray]:
        return [*_physics_arrays(self.model, self.data), _pcg64_words(self.env.np_random)]

    def set_state_arrays(self, arrays: list[np.ndarray]) -> None:
        _set_physics_arrays(self.model, self.data, arrays[:-1], recompute_positions=False)
        _set_pcg64_words(self.env.np_random, arrays[-1])

    def scene_arrays(self) -> list[np.ndarray]:
        """What a video frame needs: the integration state (Gymnasium's models do not change at reset)."""
        return [_integration_state(self.model, self.data)]

    def show_scene(self, arrays: list[np.ndarray]) -> None:
        """Pose this env (one that only renders) as `scene_arrays` captured another."""
        mujoco.mj_setState(self.model, self.data, arrays[0], _INTEGRATION)
        mujoco.mj_forward(self.model, self.data)


class _MyoSuiteTask(_PosedByResetFields):
    """One MyoSuite task as gymnasium.make builds it, less its time limit (the pool keeps the limit): MyoSuite's own
    wrapper stays, which ends an episode whose simulation went unstable as a termination."""

    reports_success = True  # MyoSuite's `solved`
    scene_fields = _MYOSUITE_MODEL_FIELDS

    def __init__(self, source: str):
        import dataclasses
        import warnings

        import gymnasium
        import myosuite  # noqa: F401  (registers the MyoSuite ids with Gymnasium)

        spec = gymnasium.spec(source)
        with warnings.catch_warnings():
            # MyoSuite's model builder warns that its spec could not be saved to XML; the project never saves it.
            warnings.filterwarnings("ignore", message="Attaching a spec with an empty prefix")
            self.wrapped = gymnasium.make(dataclasses.replace(spec, max_episode_steps=None), disable_env_checker=True)
        self.env = self.wrapped.unwrapped
        self.default_episode_length = spec.max_episode_steps
        space = self.env.action_space
        self.action_low, self.action_high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.obs_size = int(self.env.observation_space.shape[0])
        self.model, self.data = self.env.model, self.env.data
        self.control_dt = float(self.env.dt)
        # bvh_aabb also holds the meshes' bounding volumes (17 MB for the hand), which no reset changes: only the
        # bodies' few rows are captured.
        self.body_bvh_rows = np.concatenate([np.arange(start, start + count) for start, count
                                             in zip(self.model.body_bvhadr, self.model.body_bvhnum)])

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self.wrapped.reset(seed=seed)[0]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, float, bool]:
        obs, reward, terminated, _, info = self.wrapped.step(action)
        return obs, reward, terminated, float(info["solved"]), False

    def _task_state(self) -> dict:
        # MyoSuite keeps an episode's sampled targets (pose: the target angles) in the env's task-state dict.
        return self.env._task_state

    def state_arrays(self) -> list[np.ndarray]:
        task_state = [np.asarray(self._task_state()[key], np.float64) for key in sorted(self._task_state())]
        model_arrays = [getattr(self.model, name) for name in _MYOSUITE_MODEL_FIELDS]
        body_bounds = self.model.bvh_aabb[self.body_bvh_rows]
        return [*_physics_arrays(self.model, self.data), *model_arrays, body_bounds, *task_state,
                _pcg64_words(self.env.np_random)]

    def set_state_arrays(self, arrays: list[np.ndarray]) -> None:
        physics, models = len(_DERIVED_FIELDS) + 1, len(_MYOSUITE_MODEL_FIELDS)
        for name, value in zip(_MYOSUITE_MODEL_FIELDS, arrays[physics:physics + models]):
            np.copyto(getattr(self.model, name), value)
        self.model.bvh_aabb[self.body_bvh_rows] = arrays[physics + models]
        _set_physics_arrays(self.model, self.data, arrays[:physics], recompute_positions=False)
        for key, value in zip(sorted(self._task_state()), arrays[physics + models + 1:-1]):
            self._task_state()[key] = value.copy()
        _set_pcg64_words(self.env.np_random, arrays[-1])


_TASK_CLASSES = {"dm_control": _DMControlTask, "gymnasium": _GymnasiumTask, "myosuite": _MyoSuiteTask}


def _make_task(task):
    return _TASK_CLASSES[require_installed(task).backend](task.source)


class _Pool:
    """The host envs of one HostBatchedEnv (every seed's), created on first use; see the module docstring."""

    def __init__(self, task, first, episode_length: int, threads: int):
        self.task, self.envs, self.episode_length, self.threads = task, [first], episode_length, threads
        self.executor = None
        self.episode_steps = np.zeros(0, np.int64)
        self.calls = 0
        self.warned = False
        self.recording = None  # a list while an evaluation video is filmed: env 0's scene before each step
        # Each env's snapshot row: its state arrays, then its episode step.
        self.layout = [(a.shape, a.dtype) for a in map(np.asarray, first.state_arrays())] + [((1,), np.dtype(np.int64))]
        self.snapshot_bytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in self.layout)

    def _sync(self) -> np.ndarray:
        self.calls += 1
        return np.full(len(self.episode_steps), self.calls, np.int32)

    def _check(self, sync: np.ndarray) -> None:
        if len(sync) != len(self.episode_steps) or not np.all(sync == self.calls):
            raise RuntimeError("host envs: this env state is not the one the host envs hold (a stale or copied "
                               "train state); HostBatchedEnv.restore(state) puts a captured state back first")

    def reset(self, seeds: np.ndarray):
        while len(self.envs) < len(seeds):
            self.envs.append(_make_task(self.task))
        self.episode_steps = np.zeros(len(seeds), np.int64)
        obs = np.stack([env.reset(int(seed)) for env, seed in zip(self.envs, seeds)]).astype(np.float32)
        return obs, self._sync()

    def step(self, sync: np.ndarray, actions: np.ndarray):
        self._check(sync)
        if self.recording is not None:
            self.recording.append(self.envs[0].scene_arrays())
        n = len(actions)
        out = dict(next_obs=np.zeros((n, self.envs[0].obs_size), np.float32),
                   obs=np.zeros((n, self.envs[0].obs_size), np.float32), reward=np.zeros(n, np.float32),
                   terminated=np.zeros(n, bool), truncated=np.zeros(n, bool), nonfinite=np.zeros(n, bool),
                   success=np.zeros(n, np.float32))
        self.episode_steps += 1
        # Each env is independent, so the order in which threads step them cannot change any result. MuJoCo releases
        # the GIL while it simulates; the tasks' Python code (observations, rewards) does not.
        bounds = np.linspace(0, n, min(self.threads, n) + 1).astype(int)
        ranges = [range(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        if len(ranges) == 1:
            self._step_range(ranges[0], actions, out)
        else:
            list(self._executor().map(lambda envs: self._step_range(envs, actions, out), ranges))
        return dict(out, sync=self._sync())

    def _step_range(self, indices: range, actions: np.ndarray, out: dict) -> None:
        for i in indices:
            env = self.envs[i]
            try:  # float32 actions, as a policy gives them
                next_obs, reward, terminated, success, nonfinite = env.step(actions[i])
            except Exception as error:  # a task's own failure: this env restarts, the run goes on, and it is counted
                self._warn_once(error)
                next_obs, reward, terminated, success, nonfinite = np.zeros(env.obs_size), 0.0, False, math.nan, True
            nonfinite = nonfinite or not (np.isfinite(next_obs).all() and np.isfinite(reward))
            if nonfinite and env.reports_success:  # a failed step solved nothing (NaN stays for tasks without a flag)
                success = 0.0
            terminated = terminated and not nonfinite
            truncated = self.episode_steps[i] >= self.episode_length and not (terminated or nonfinite)
            out["next_obs"][i], out["reward"][i] = next_obs, 0.0 if nonfinite else reward
            out["terminated"][i], out["truncated"][i], out["nonfinite"][i] = terminated, truncated, nonfinite
            out["success"][i] = success
            if terminated or truncated or nonfinite:
                out["obs"][i] = env.reset()
                self.episode_steps[i] = 0
            else:
                out["obs"][i] = next_obs

    def _warn_once(self, error: Exception) -> None:
        if not self.warned:
            self.warned = True
            print(f"warning: a {self.task.name} env raised {type(error).__name__}: {error}; it was reset and its "
                  f"step left out of the replay (counted in nonfinite_env_resets, as a NaN is)", file=sys.stderr,
                  flush=True)

    def _executor(self) -> ThreadPoolExecutor:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="host-envs")
        return self.executor

    def snapshot(self, sync: np.ndarray) -> np.ndarray:
        """[N, snapshot_bytes] uint8: each env's state arrays and its episode step, as raw bytes."""
        self._check(sync)
        rows = []
        for env, episode_step in zip(self.envs, self.episode_steps):
            arrays = [*env.state_arrays(), np.array([episode_step], np.int64)]
            rows.append(np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]))
        return np.stack(rows)

    def restore(self, snapshot: np.ndarray, sync: np.ndarray) -> None:
        while len(self.envs) < len(snapshot):
            self.envs.append(_make_task(self.task))
        for env in self.envs[:len(snapshot)]:
            env.reset(0)  # an env object starts an episode before it steps; the snapshot then replaces that state
        self.episode_steps = np.zeros(len(snapshot), np.int64)
        for i, row in enumerate(snapshot):
            arrays, offset = [], 0
            for shape, dtype in self.layout:
                size = math.prod(shape) * dtype.itemsize
                arrays.append(row[offset:offset + size].view(dtype).reshape(shape))
                offset += size
            self.envs[i].set_state_arrays(arrays[:-1])
            self.episode_steps[i] = arrays[-1][0]
        self.calls = int(sync[0])


@flax.struct.dataclass
class HostEnvState:
    """The JAX side of E host envs: a pytree that can be vmapped over seeds, checkpointed and donated."""

    obs: jax.Array             # [E, obs_size] float32: what the policy acts on now (the reset one after an episode end)
    episode_return: jax.Array  # [E] float32: undiscounted return of the current episode so far
    sync: jax.Array            # [E] int32: the pool's call count when it produced this state
    snapshot: jax.Array        # [E, snapshot_bytes] uint8: full host state, written by capture() (zeros until then)


class HostBatchedEnv:
    """E copies of one dm_control, Gymnasium or MyoSuite task stepped on the host, with the interface of
    common.envs.playground.BatchedEnv. Actions are not clipped: pass them within [action_low, action_high].
    `threads` step the envs (0: one per CPU core): MuJoCo releases the GIL while it simulates."""

    def __init__(self, task, num_envs: int, episode_length: int | None = None, threads: int = 0):
        require_positive("num_envs", num_envs)
        if threads < 0:
            raise ValueError(f"--host-threads must be ≥ 0 (0: one per CPU core), got {threads}")
        if episode_length is not None:
            require_positive("episode_length", episode_length)
        self.name, self.backend, self.backend_task = task.name, task.backend, task.source
        self.task, self._scene_env = task, None
        first = _make_task(task)
        self.episode_length = episode_length or first.default_episode_length
        if self.episode_length is None:
            raise ValueError(f"--episode-length: {task.name} has no time limit of its own; give one")
        self.num_envs = num_envs
        self.obs_size = first.obs_size
        self.action_size = len(first.action_low)
        self.action_low, self.action_high = first.action_low, first.action_high
        self.control_dt = first.control_dt  # simulated seconds per `step`: a video's frame period
        self.pool = _Pool(task, first, self.episode_length, threads or os.cpu_count() or 1)
        self.snapshot_bytes = self.pool.snapshot_bytes
        self._reset_call = self._host_call(self.pool.reset, lambda n: (
            jax.ShapeDtypeStruct((n, self.obs_size), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.int32)))

        def step_shapes(n):
            floats = lambda *shape: jax.ShapeDtypeStruct((n, *shape), jnp.float32)  # noqa: E731
            flags = jax.ShapeDtypeStruct((n,), jnp.bool_)
            return dict(next_obs=floats(self.obs_size), obs=floats(self.obs_size), reward=floats(), terminated=flags,
                        truncated=flags, nonfinite=flags, success=floats(), sync=jax.ShapeDtypeStruct((n,), jnp.int32))

        self._step_call = self._host_call(self.pool.step, step_shapes)

    @staticmethod
    def _host_call(method, result_shapes):
        """method(*[N, ...] arrays) on the host, as a jittable call whose vmapped axes fold into N."""
        def on_host(*args):
            return method(*map(np.asarray, args))  # io_callback passes jax Arrays on the CPU device

        def call(*args):
            return io_callback(on_host, result_shapes(args[0].shape[0]), *args, ordered=False)

        return fold_vmapped_axis(call)

    def reset(self, key: jax.Array) -> HostEnvState:
        obs, sync = self._reset_call(jax.random.bits(key, (self.num_envs,), jnp.uint32))
        return HostEnvState(obs=obs, episode_return=jnp.zeros(self.num_envs, jnp.float32), sync=sync,
                            snapshot=jnp.zeros((self.num_envs, self.snapshot_bytes), jnp.uint8))

    def step(self, state: HostEnvState, action: jax.Array) -> tuple[HostEnvState, StepOutput]:
        out = self._step_call(state.sync, action)
        episode_return = state.episode_return + out["reward"]
        done = out["terminated"] | out["truncated"] | out["nonfinite"]
        step = StepOutput(out["next_obs"], out["reward"], out["terminated"], out["truncated"], episode_return,
                          out["nonfinite"], out["success"])
        return state.replace(obs=out["obs"], episode_return=jnp.where(done, 0.0, episode_return),
                             sync=out["sync"]), step

    def capture(self, state: HostEnvState) -> HostEnvState:
        """`state` with its snapshot filled from the host envs (state may carry leading seed axes)."""
        sync = np.asarray(state.sync).reshape(-1)
        return state.replace(snapshot=jnp.asarray(self.pool.snapshot(sync).reshape(state.snapshot.shape)))

    def restore(self, state: HostEnvState) -> None:
        """Put a captured state back into the host envs, so that stepping continues from it."""
        snapshot = np.asarray(state.snapshot).reshape(-1, self.snapshot_bytes)
        self.pool.restore(snapshot, np.asarray(state.sync).reshape(-1))

    def first_env_scene(self, state: HostEnvState) -> dict:
        """Nothing: the host records env 0's scene itself while `recording` (common.core.evaluation's `record`)."""
        return {}

    def start_recording(self) -> None:
        """From the next step on, keep env 0's scene before each step (of the first seed's env 0 under vmap)."""
        self.pool.recording = []

    def stop_recording(self) -> list[list[np.ndarray]]:
        """The scenes kept since start_recording, one per step, and stop keeping them."""
        recording, self.pool.recording = self.pool.recording or [], None
        return recording

    def scene_env(self):
        """An env of the task that only renders, made on first use: `show_scene(arrays)` poses its model and data."""
        if self._scene_env is None:
            self._scene_env = _make_task(self.task)
        return self._scene_env
