"""The algorithms that the benchmarks build by name: each one's script flags and its trainer, as its script makes them."""

import flowrl_jax
import sac_jax
from common.core.trainer import Trainer
from common.run import cli, training
from common.envs.playground import BatchedEnv
from common.run.args import resolve

ALGORITHMS = {"flowrl": (flowrl_jax.FlowRLConfig, flowrl_jax.make_flowrl), "sac": (sac_jax.SACConfig, sac_jax.make_sac)}


def script_args(algo: str) -> type:
    """The flags class of `algo`'s script (its defaults are the script's)."""
    return cli.script_args(ALGORITHMS[algo][0])


def make_trainer(algo: str, run_args, env: BatchedEnv, eval_env: BatchedEnv) -> Trainer:
    return training.build_trainer(resolve(run_args), ALGORITHMS[algo][1], env, eval_env)
