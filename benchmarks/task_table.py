"""The task table's source: every task as the installed libraries list it, with its sizes measured on a built env.
`python -m benchmarks.task_table` prints the rows of common/envs/task_table.py anew; the tests keep the table equal
to what this gives."""

from common.envs.host import dm_control_suite
from common.envs.tasks import BACKENDS, ENV_NAMES, MYOSUITE_BENCHMARK, Task, normalise


def library_tasks(backend: str) -> list[Task]:
    """The tasks as the installed library lists them (imports it): what the literal table must equal."""
    if backend == "playground":
        from mujoco_playground import dm_control_suite as playground

        names = {pg: dm for dm, pg in ENV_NAMES.items()}
        return [Task(names.get(pg, pg), backend, pg) for pg in playground.ALL_ENVS]
    if backend == "myosuite":
        import myosuite

        return [Task(i, backend, i) for i in MYOSUITE_BENCHMARK if i in myosuite.myosuite_myobase_suite]
    if backend == "dm_control":
        return [Task(normalise(f"{d}-{t}"), backend, f"{d}-{t}") for d, t in dm_control_suite().ALL_TASKS]
    import gymnasium

    # v2/v3 need the retired mujoco-py, and Pusher-v4 refuses mujoco >= 3 (Gymnasium issue 950).
    return [Task(i, backend, i) for i, spec in gymnasium.registry.items()
            if "mujoco" in str(spec.entry_point) and i.endswith(("-v4", "-v5")) and i != "Pusher-v4"]


def measure_sizes(task: Task) -> tuple[int, int]:
    """(observation size, action size) of one env of the task, built (seconds each)."""
    if task.backend == "playground":
        from common.envs.playground import BatchedEnv

        env = BatchedEnv(task, 1)
    else:
        from common.envs.host import HostBatchedEnv

        env = HostBatchedEnv(task, 1, episode_length=1000)  # the LQR tasks have no time limit of their own
    return env.obs_size, env.action_size


if __name__ == "__main__":  # the literal table's rows, from the installed libraries
    for backend in BACKENDS:
        for task in library_tasks(backend):
            print(f"    {(task.name, backend, task.source, *measure_sizes(task))!r},".replace("'", '"'))
