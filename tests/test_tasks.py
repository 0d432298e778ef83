"""Task names across the four backends (common.envs.tasks): resolution, backend choice, errors and `--env list`.
No physics is compiled here."""

import pathlib
import subprocess
import sys

import pytest

from benchmarks.task_table import library_tasks, measure_sizes
from common.envs.host import dm_control_suite
from common.envs.tasks import (BACKENDS, ENV_NAMES, Task, UnknownEnvError, all_tasks, format_task_list, resolve_task,
                               task_sizes)


def resolve_env_name(name: str) -> str:
    """The Playground name of a task name, as the playground backend resolves it."""
    return resolve_task(name, "playground").source


def test_env_names_cover_all_playground_dmc_tasks_once():
    from mujoco_playground import dm_control_suite

    assert len(ENV_NAMES) == 25
    assert sorted(ENV_NAMES.values()) == sorted(dm_control_suite.ALL_ENVS)  # also catches a duplicate value
    assert all(n == n.lower() and "_" not in n and n.count("-") >= 1 for n in ENV_NAMES)


def test_playground_names_round_trip_and_aliases():
    for dm, pg in ENV_NAMES.items():
        assert resolve_env_name(dm) == pg
        assert resolve_env_name(pg) == pg
        assert resolve_task(pg) == Task(dm, "playground", pg)
    # dm_control's own spellings
    assert resolve_env_name("point_mass-easy") == "PointMass"
    assert resolve_env_name("ball_in_cup-catch") == "BallInCup"
    assert resolve_env_name("finger-turn_hard") == "FingerTurnHard"
    assert resolve_env_name("cartpole-swingup_sparse") == "CartpoleSwingupSparse"


def test_every_dm_control_and_gymnasium_task_resolves_on_its_backend():
    for domain, task in dm_control_suite().ALL_TASKS:
        resolved = resolve_task(f"{domain}-{task}", "dm_control")
        assert (resolved.backend, resolved.source) == ("dm_control", f"{domain}-{task}")
        assert resolved.name == resolved.name.lower() and "_" not in resolved.name
    for name in ("Ant-v4", "HalfCheetah-v4", "Walker2d-v4", "Swimmer-v4", "Hopper-v4", "Humanoid-v4", "Ant-v5"):
        assert resolve_task(name.lower()) == Task(name, "gymnasium", name)


def test_auto_backend_keeps_playground_where_it_has_the_task():
    assert resolve_task("humanoid-walk") == Task("humanoid-walk", "playground", "HumanoidWalk")
    assert resolve_task("humanoid-walk", "dm_control") == Task("humanoid-walk", "dm_control", "humanoid-walk")
    assert resolve_task("dog-run") == Task("dog-run", "dm_control", "dog-run")  # only dm_control has the dog
    assert resolve_task("humanoid_CMU-run").source == "humanoid_CMU-run"
    assert resolve_task("Ant-v4").backend == "gymnasium"


def test_a_backend_without_the_task_names_the_ones_with_it():
    with pytest.raises(UnknownEnvError, match=r"the playground backend has no task 'dog-run'; it is in: dm_control"):
        resolve_task("dog-run", "playground")
    with pytest.raises(UnknownEnvError, match="it is in: gymnasium"):
        resolve_task("Ant-v4", "dm_control")
    with pytest.raises(ValueError, match="--backend must be auto or one of playground, dm_control, gymnasium, myo"):
        resolve_task("dog-run", "mjx")


def test_unknown_env_name_lists_close_matches():
    with pytest.raises(UnknownEnvError) as err:
        resolve_task("humanoid-wlk")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--env: unknown environment 'humanoid-wlk'")
    assert "close matches: humanoid-walk, " in msg and "`--env list` prints all 107" in msg
    assert "close matches: Ant-v4" in str(pytest.raises(UnknownEnvError, resolve_task, "Ant-v44").value)
    assert "close matches: dog-run" in str(pytest.raises(UnknownEnvError, resolve_task, "dog-rn").value)
    assert "no close matches" in str(pytest.raises(ValueError, resolve_task, "zzz").value)


def test_task_list_has_every_task_with_its_backend():
    header, *lines = format_task_list().splitlines()
    assert header.split() == ["task", "backend", "backend's", "name", "sizes"]
    rows = [line.split() for line in lines]
    assert [row[:3] for row in rows] == [[t.name, t.backend, t.source] for t in all_tasks()]
    assert all(row[3] == "obs" and row[5] == "action" for row in rows)  # sizes for every backend
    assert {t.backend for t in all_tasks()} == set(BACKENDS)
    assert ["Humanoid-v4", "gymnasium", "Humanoid-v4", "obs", "376,", "action", "17"] in rows
    assert "Pusher-v4" not in {t.name for t in all_tasks()}  # Gymnasium refuses to build it with mujoco >= 3


def test_name_checks_do_not_import_physics():
    # `--env list` and a typo must fail fast, before the seconds-long import of every MJX task module
    code = ("import sys; from common.envs.tasks import format_task_list, resolve_task; format_task_list();"
            "resolve_task('humanoid-walk'); resolve_task('dog-run');"
            "assert 'mujoco_playground' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_literal_task_table_equals_the_libraries(backend):
    assert sorted(t for t in all_tasks() if t.backend == backend) == sorted(library_tasks(backend))


@pytest.mark.parametrize("name", ["cartpole-balance", "dog-run", "lqr-lqr-2-1", "Humanoid-v5",
                                  "myoHandKeyTurnRandom-v0"])
def test_the_table_sizes_are_those_of_the_built_env(name):
    task = resolve_task(name)
    assert task_sizes()[task.name, task.backend] == measure_sizes(task)


def test_env_list_prints_no_library_warnings():
    result = subprocess.run([sys.executable, "flowrl_jax.py", "--env", "list"], capture_output=True, text=True,
                            cwd=pathlib.Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("task ")
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr


def test_a_bad_name_is_refused_without_importing_any_simulator():
    code = ("import sys; from common.envs.tasks import resolve_task\n"
            "try:\n    resolve_task('humanoid-wlk')\nexcept ValueError as e:\n    assert 'humanoid-walk' in str(e)\n"
            "resolve_task('Ant-v4'); resolve_task('dog-run'); resolve_task('myoHandPoseRandom-v0')\n"
            "loaded = {'mujoco', 'mujoco_playground', 'dm_control', 'gymnasium', 'myosuite'} & set(sys.modules)\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])
