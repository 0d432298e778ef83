"""The batched env of a resolved task: Playground's MJX envs on the device, or a host backend's envs stepped from
inside the compiled chunk. Both are VectorEnvs (common.core.contract)."""

from common.core.contract import VectorEnv
from common.envs.tasks import Task


def make_env(task: Task, num_envs: int, physics: str = "jax", episode_length: int | None = None,
             host_threads: int = 0) -> VectorEnv:
    if task.backend == "playground":
        from common.envs.playground import BatchedEnv

        return BatchedEnv(task, num_envs, physics=physics, episode_length=episode_length)
    from common.envs.host import HostBatchedEnv  # MuJoCo's C bindings and the host backends: only when used

    return HostBatchedEnv(task, num_envs, episode_length=episode_length, threads=host_threads)
