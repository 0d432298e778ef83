"""The harness's command line with every env built as tests/toy_env.py's point masses, whatever `--env` names: for
the tests of process mechanics (several processes, their waits, signals, kills and resume) whose findings do not
depend on the physics. Its step compiles in well under a second, an MJX task's in ~10 s.

    python -m tests.toy_cli [flowrl] FLAGS

trains the minimal DDPG (tests/minimal_ddpg.py), or FlowRL when the first argument is `flowrl`. The run
directory is named after the toy env, config.json's `env` is the flag given; `--episode-length` is required."""

import sys

import flowrl_jax
from common.run import cli, training
from common.run.policy_export import PolicyFile
from tests.minimal_ddpg import DDPGConfig, make_ddpg
from tests.toy_env import PointMassLine

ALGORITHMS = {"ddpg": (DDPGConfig, make_ddpg, None),
              "flowrl": (flowrl_jax.FlowRLConfig, flowrl_jax.make_flowrl,
                         PolicyFile(flowrl_jax.POLICY_FIELDS, flowrl_jax.load_policy))}


def toy_env(task, num_envs: int, episode_length: int | None = None, **_):
    if episode_length is None:
        raise ValueError("tests.toy_cli needs --episode-length (the toy env has no length of its own)")
    return PointMassLine(num_envs, episode_length)


if __name__ == "__main__":
    algo = sys.argv.pop(1) if sys.argv[1:2] == ["flowrl"] else "ddpg"
    training.make_env = toy_env
    cli.main(algo, *ALGORITHMS[algo])
