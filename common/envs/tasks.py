"""Task names across the four backends, resolved before anything heavy is imported or compiled.

- `playground`: MuJoCo Playground's MJX ports of DM Control (common.envs.playground), stepped on the accelerator.
- `dm_control`: the original DM Control suite (CPU MuJoCo), dog included; the tasks of the FlowRL paper.
- `gymnasium`: Gymnasium's MuJoCo tasks, v4 and v5 (`Ant-v4`, `Humanoid-v5`, ...).
- `myosuite`: MyoSuite's ten musculoskeletal hand tasks of the published benchmark, by their ids
  (`myoHandReachRandom-v0`, ...), scored by success rate (docs/myosuite.md).
The last three are stepped on the host, inside the compiled chunk (common.envs.host); common.envs.make builds the env
of a resolved task.

Names are case- and `_`/`-`-insensitive: `humanoid-walk`, `humanoid_CMU-run`, `ant-v4`. DM Control tasks are named
`domain-task`, all lower case and hyphenated (`ball-in-cup-catch`, `point-mass-easy`). With `--backend auto` a name
means the first backend that has it, in the order above, so the Playground port stays the default wherever it exists:
`humanoid-walk` is Playground's, `dog-run` is dm_control's, `Ant-v4` is Gymnasium's, `myohandposerandom-v0` MyoSuite's.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from typing import NamedTuple

from common.envs.task_table import TASKS

BACKENDS = ("playground", "dm_control", "gymnasium", "myosuite")

# dm_control-style name -> Playground name, all 25 tasks of mujoco_playground.dm_control_suite.ALL_ENVS.
ENV_NAMES: dict[str, str] = {name: source for name, backend, source, _, _ in TASKS if backend == "playground"}
# The package each backend needs: a backend whose package is not installed has no tasks (GPU machines may carry
# Playground alone), except MyoSuite's: requirements.txt installs it everywhere, so a missing one is an incomplete
# install, and its tasks still resolve for require_installed to name the install line.
PACKAGES = {"playground": "mujoco_playground", "dm_control": "dm_control", "gymnasium": "gymnasium",
            "myosuite": "myosuite"}
MYOSUITE_INSTALL = "pip install -r requirements.txt (it pins myosuite==3.0.0)"
# The published MyoSuite benchmark (TD-MPC2's, SimbaV2's and BRO's tables): reach, pose, object hold, key turn and
# pen twirl, each Fixed and Random, the latter being the "hard" variants.
MYOSUITE_BENCHMARK = tuple(f"myoHand{task}{variant}-v0" for task in ("Reach", "Pose", "ObjHold", "KeyTurn", "PenTwirl")
                           for variant in ("Fixed", "Random"))


class UnknownEnvError(ValueError):
    """An --env value that names no task of the chosen backend."""


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class Task(NamedTuple):
    name: str      # the canonical name: `humanoid-walk`, `dog-run`, `Ant-v4`
    backend: str   # one of BACKENDS
    source: str    # the backend's own name: Playground's `HumanoidWalk`, dm_control's `dog-run`, Gymnasium's `Ant-v4`


def installed(package: str) -> bool:
    """Whether `package` can be imported, found without importing it."""
    return importlib.util.find_spec(package) is not None


@functools.cache
def _tasks(backend: str) -> dict[str, Task]:
    """Normalised spelling -> Task, for one backend, from the literal table (no simulator is imported)."""
    if backend != "myosuite" and not installed(PACKAGES[backend]):
        return {}
    tasks = {normalise(name): Task(name, backend, source) for name, owner, source, _, _ in TASKS if owner == backend}
    if backend == "playground":  # Playground's own names work too; they contain no '_' or '-', so cannot collide
        tasks.update({task.source.lower(): task for task in list(tasks.values())})
    return tasks


def resolve_task(name: str, backend: str = "auto") -> Task:
    """The task `name` on `backend` (`auto`: the first backend that has it); raises UnknownEnvError with the close
    matches, or with the backends that do have the task."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"--backend must be auto or one of {', '.join(BACKENDS)}, got {backend!r}")
    key = normalise(name)
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


def require_installed(task: Task) -> Task:
    """`task`, or UnknownEnvError with the install line where it is MyoSuite's and MyoSuite is missing (only its
    tasks resolve without their package)."""
    if task.backend == "myosuite" and not installed("myosuite"):
        raise UnknownEnvError(f"--env: {task.name} needs MyoSuite, which is not installed: {MYOSUITE_INSTALL}")
    return task


def all_tasks() -> list[Task]:
    """Every task of every backend, in backend order (a task in two backends is listed twice)."""
    return [task for backend in BACKENDS for task in dict.fromkeys(_tasks(backend).values())]


def task_sizes() -> dict[tuple[str, str], tuple[int, int]]:
    """(name, backend) -> (observation size, action size), from the literal table."""
    return {(name, backend): (obs, action) for name, backend, _, obs, action in TASKS}


def format_task_list() -> str:
    """What `--env list` prints: a header, then each task's name, backend, the backend's own name and its
    observation and action sizes."""
    sizes = task_sizes()
    rows = [(task.name, task.backend, task.source, "obs {}, action {}".format(*sizes[task.name, task.backend]))
            for task in all_tasks()]
    widths = [max(len(row[i]) for row in rows + [("task", "backend", "backend's name")]) + 2 for i in range(3)]
    header = "".join(f"{cell:<{w}}" for cell, w in zip(("task", "backend", "backend's name"), widths)) + "sizes"
    return "\n".join([header] + ["".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + row[3] for row in rows])
