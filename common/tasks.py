"""Task names across the three backends, resolved before anything heavy is imported or compiled.

- `playground`: MuJoCo Playground's MJX ports of DM Control (common.envs), stepped on the accelerator.
- `dm_control`: the original DM Control suite (CPU MuJoCo), dog included; the tasks of the FlowRL paper.
- `gymnasium`: Gymnasium's MuJoCo tasks, v4 and v5 (`Ant-v4`, `Humanoid-v5`, ...).
The last two are stepped on the host, inside the compiled chunk (common.host_envs); common.training.make_env builds
the env of a resolved task.

Names are case- and `_`/`-`-insensitive: `humanoid-walk`, `humanoid_CMU-run`, `ant-v4`. DM Control tasks are named
`domain-task`, all lower case and hyphenated (`ball-in-cup-catch`, `point-mass-easy`). With `--backend auto` a name
means the first backend that has it, in the order above, so the Playground port stays the default wherever it exists:
`humanoid-walk` is Playground's, `dog-run` is dm_control's, `Ant-v4` is Gymnasium's.
"""

from __future__ import annotations

import difflib
import functools
from typing import NamedTuple

BACKENDS = ("playground", "dm_control", "gymnasium")

# dm_control-style name -> Playground name, all 25 tasks of mujoco_playground.dm_control_suite.ALL_ENVS.
# Kept as a literal so that name checks and `--env list` need no MJX import.
ENV_NAMES: dict[str, str] = {
    "acrobot-swingup": "AcrobotSwingup",
    "acrobot-swingup-sparse": "AcrobotSwingupSparse",
    "ball-in-cup-catch": "BallInCup",
    "cartpole-balance": "CartpoleBalance",
    "cartpole-balance-sparse": "CartpoleBalanceSparse",
    "cartpole-swingup": "CartpoleSwingup",
    "cartpole-swingup-sparse": "CartpoleSwingupSparse",
    "cheetah-run": "CheetahRun",
    "finger-spin": "FingerSpin",
    "finger-turn-easy": "FingerTurnEasy",
    "finger-turn-hard": "FingerTurnHard",
    "fish-swim": "FishSwim",
    "hopper-hop": "HopperHop",
    "hopper-stand": "HopperStand",
    "humanoid-stand": "HumanoidStand",
    "humanoid-walk": "HumanoidWalk",
    "humanoid-run": "HumanoidRun",
    "pendulum-swingup": "PendulumSwingup",
    "point-mass-easy": "PointMass",  # Playground's PointMass is dm_control's point_mass-easy (fixed gains)
    "reacher-easy": "ReacherEasy",
    "reacher-hard": "ReacherHard",
    "swimmer-swimmer6": "SwimmerSwimmer6",
    "walker-stand": "WalkerStand",
    "walker-walk": "WalkerWalk",
    "walker-run": "WalkerRun",
}


class UnknownEnvError(ValueError):
    """An --env value that names no task of the chosen backend."""


class Task(NamedTuple):
    name: str      # the canonical name: `humanoid-walk`, `dog-run`, `Ant-v4`
    backend: str   # one of BACKENDS
    source: str    # the backend's own name: Playground's `HumanoidWalk`, dm_control's `dog-run`, Gymnasium's `Ant-v4`


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


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@functools.cache
def _tasks(backend: str) -> dict[str, Task]:
    """Normalised spelling -> Task, for one backend (imports that backend's task list, not its physics). A host
    backend whose package is not installed has no tasks: GPU machines may carry Playground alone."""
    try:
        return _backend_tasks(backend)
    except ImportError:
        return {}


def _backend_tasks(backend: str) -> dict[str, Task]:
    if backend == "playground":
        tasks = {dm: Task(dm, backend, pg) for dm, pg in ENV_NAMES.items()}
        # Playground names contain no '_' or '-', so they cannot collide with dm_control-style ones.
        return {**tasks, **{pg.lower(): tasks[dm] for dm, pg in ENV_NAMES.items()}}
    if backend == "dm_control":
        suite = dm_control_suite()
        return {_normalise(f"{d}-{t}"): Task(_normalise(f"{d}-{t}"), backend, f"{d}-{t}") for d, t in suite.ALL_TASKS}
    import gymnasium

    # v2/v3 need the retired mujoco-py, and Pusher-v4 refuses mujoco >= 3 (Gymnasium issue 950).
    ids = [i for i, spec in gymnasium.registry.items()
           if "mujoco" in str(spec.entry_point) and i.endswith(("-v4", "-v5")) and i != "Pusher-v4"]
    return {_normalise(i): Task(i, backend, i) for i in ids}


def resolve_task(name: str, backend: str = "auto") -> Task:
    """The task `name` on `backend` (`auto`: the first backend that has it); raises UnknownEnvError with the close
    matches, or with the backends that do have the task."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"--backend must be auto or one of {', '.join(BACKENDS)}, got {backend!r}")
    key = _normalise(name)
    for candidate in BACKENDS if backend == "auto" else (backend,):
        if key in _tasks(candidate):
            return _tasks(candidate)[key]
    holders = [b for b in BACKENDS if key in _tasks(b)]
    if holders:
        raise UnknownEnvError(f"--env: the {backend} backend has no task {name!r}; it is in: {', '.join(holders)} "
                              f"(--backend)")
    names = {spelling: task.name for b in BACKENDS for spelling, task in _tasks(b).items()}
    close = dict.fromkeys(names[m] for m in difflib.get_close_matches(key, names, n=4, cutoff=0.6))
    hint = f"close matches: {', '.join(close)}" if close else "no close matches"
    raise UnknownEnvError(f"--env: unknown environment {name!r}; {hint} (`--env list` prints all "
                          f"{len(all_tasks())})")


def all_tasks() -> list[Task]:
    """Every task of every backend, in backend order (a task in two backends is listed twice)."""
    return [task for backend in BACKENDS for task in dict.fromkeys(_tasks(backend).values())]


def format_task_list() -> str:
    """What `--env list` prints: name, backend, the backend's own name, and for Gymnasium (cheap to build) the
    observation and action sizes."""
    import warnings

    rows = []
    for task in all_tasks():
        sizes = ""
        if task.backend == "gymnasium":
            import gymnasium

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # v4's deprecation notice, once per task
                env = gymnasium.make(task.source)
            sizes = f"obs {env.observation_space.shape[0]}, action {env.action_space.shape[0]}"
            env.close()
        rows.append((task.name, task.backend, task.source, sizes))
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
    return "\n".join(("".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + row[3]).rstrip() for row in rows)
