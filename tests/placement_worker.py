"""Runs in a subprocess of tests/test_devices.py with XLA_FLAGS=--xla_force_host_platform_device_count=4: each
placement of the minimal DDPG on 4 CPU "devices" against the same program on one device, and the replica check.
Prints one JSON line of findings; the test asserts on them. The envs are tests/toy_env.py's (a placement does not
depend on the physics; test_devices' data-parallel resume places MJX's state through the command line)."""

import dataclasses
import json

import jax
import numpy as np

from common.core import devices
from common.run import training
from common.run.args import resolve
from common.core.layout import Layout
from common.run import callbacks
from tests import minimal_ddpg as ddpg
from tests.test_contract import DDPG_ARGS
from tests.toy_env import PointMassLine

CHUNKS = 5  # 40 env steps: updates from step 16 on, so the networks, optimisers and replay all move


def trainer_on(args, placed_on: list):
    """The harness's trainer for `args`, with its train state laid out over `placed_on` (fewer devices than the
    placement names: the same program's layout, unsplit)."""
    env = PointMassLine(args.num_envs, args.episode_length)
    eval_env = PointMassLine(args.eval_episodes, args.episode_length)
    layout = Layout.of(args.num_seeds, args.devices, args.data_parallel, devices=placed_on)
    trainer = layout.over_seeds(training.build_trainer(resolve(args), ddpg.make_ddpg, env, eval_env))
    init_keys, eval_keys = layout.seed_keys(args.seed)
    trainer = layout.placed(trainer, jax.eval_shape(trainer.init, init_keys))
    return trainer, init_keys, eval_keys


def train(args, placed_on: list):
    trainer, init_keys, eval_keys = trainer_on(args, placed_on)
    state = trainer.init(init_keys)
    for _ in range(CHUNKS):
        state, metrics = trainer.chunk(state)
    returns = trainer.evaluate(state, eval_keys, True)
    return state, metrics, returns, trainer


def nan_check_after_poisoning_the_last_seed(trainer, state) -> str:
    """One more chunk after a NaN is planted in the last seed's actor (on the last device): what the run's NaN
    check says."""
    def poisoned(leaf):
        return jax.device_put(leaf.at[-1].set(np.nan), leaf.sharding)

    state = state.replace(learner=state.learner.replace(actor=jax.tree.map(poisoned, state.learner.actor)))
    _, metrics = trainer.chunk(state)
    try:
        callbacks.check_finite({name: np.asarray(values) for name, values in metrics.items()}, 48, [1, 2, 3, 4])
    except FloatingPointError as error:
        return str(error)
    return ""


def max_difference(a, b) -> float:
    """Largest absolute difference over all leaves (keys compared as their data)."""
    def leaves(tree):
        return [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(devices.host_data(jax.device_get(tree)))]

    return max(float(np.max(np.abs(x - y), initial=0)) for x, y in zip(leaves(a), leaves(b)))


def devices_holding(leaf) -> int:
    return len({shard.device for shard in leaf.addressable_shards if shard.data.size})


def main() -> None:
    four, one = jax.devices()[:4], jax.devices()[:1]
    findings = {}

    seeds = dataclasses.replace(DDPG_ARGS, num_seeds=4, devices=4, buffer_size=256)
    split, split_metrics, split_returns, split_trainer = train(seeds, four)
    whole, whole_metrics, whole_returns, _ = train(seeds, one)
    findings["seeds"] = dict(state=max_difference(split, whole), metrics=max_difference(split_metrics, whole_metrics),
                             returns=max_difference(split_returns, whole_returns),
                             replay_devices=devices_holding(split.buffer.data["obs"]),
                             replay_shard_shape=list(split.buffer.data["obs"].addressable_shards[0].data.shape),
                             params_devices=devices_holding(jax.tree.leaves(split.learner.actor)[0]),
                             seeds_differ=bool(np.any(np.asarray(jax.tree.leaves(split.learner.actor)[0])[0]
                                                      != np.asarray(jax.tree.leaves(split.learner.actor)[0])[1])),
                             nan_check=nan_check_after_poisoning_the_last_seed(split_trainer, split))

    data = dataclasses.replace(DDPG_ARGS, devices=4, data_parallel=True, num_envs=8, batch_size=16, buffer_size=256)
    split, split_metrics, _, _ = train(data, four)
    whole, whole_metrics, _, _ = train(data, one)
    devices.check_replicas(split.learner, "data parallel")  # raises if the copies differ
    actor = jax.tree.leaves(split.learner.actor)[0]
    copies = [shard.data for shard in actor.addressable_shards]
    diverged = jax.make_array_from_single_device_arrays(
        actor.shape, actor.sharding, [copies[0], *copies[1:3], copies[3] + 1e-6])
    try:
        devices.check_replicas({"actor": diverged}, "a planted divergence")
        caught = ""
    except devices.ReplicasDiverged as error:
        caught = str(error)
    findings["data"] = dict(state=max_difference(split, whole), metrics=max_difference(split_metrics, whole_metrics),
                            updates=int(split.learner.updates), replay_shape=list(split.buffer.data["obs"].shape),
                            replay_devices=devices_holding(split.buffer.data["obs"]),
                            env_devices=devices_holding(split.env.episode_step),
                            params_replicated=actor.is_fully_replicated and len(copies) == 4, caught=caught)
    print("FINDINGS " + json.dumps(findings))


if __name__ == "__main__":
    main()
