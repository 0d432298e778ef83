"""The minimal DDPG's command line (tests/minimal_ddpg.py) with every env built as tests/toy_env.py's point masses,
whatever `--env` names: for the tests of process mechanics (several processes, their waits, signals and resume)
whose findings do not depend on the physics. Its step compiles in well under a second, an MJX task's in ~10 s.
The run directory is named after the toy env, config.json's `env` is the flag given; `--episode-length` is required."""

from common.run import cli, training
from tests.minimal_ddpg import DDPGConfig, make_ddpg
from tests.toy_env import PointMassLine


def toy_env(task, num_envs: int, episode_length: int | None = None, **_):
    if episode_length is None:
        raise ValueError("tests.toy_cli needs --episode-length (the toy env has no length of its own)")
    return PointMassLine(num_envs, episode_length)


if __name__ == "__main__":
    training.make_env = toy_env
    cli.main("ddpg", DDPGConfig, make_ddpg)
