"""`--num-seeds`: S seeds vmapped in one program, each equal to the single run with its seed."""

import csv
import dataclasses

import jax
import numpy as np
import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from common.run import training
from common.envs.playground import BatchedEnv
from common.run.args import resolve
from common.core.layout import Layout
from common.envs.tasks import resolve_task
from tests.checkpoints import numbers
from tests.test_flowrl_train import TINY, TINY_FLAGS, Args
from tests.test_sac import TINY as SAC_TINY
from tests.toy_env import PointMassLine

NUM_SEEDS, FIRST_SEED, CHECKED = 3, 1, 1  # seed 2 is compared with a single run of seed 2


def mjx_env(args, num_envs):
    return BatchedEnv(resolve_task(args.env), num_envs, episode_length=args.episode_length)


def toy_env(args, num_envs):
    return PointMassLine(num_envs, args.episode_length)


def trainers(make_agent, args, make_env):
    env, eval_env = make_env(args, args.num_envs), make_env(args, args.eval_episodes)
    trainer = training.build_trainer(resolve(args), make_agent, env, eval_env)
    return Layout(NUM_SEEDS).over_seeds(trainer), Layout(1).over_seeds(trainer)


# FlowRL's case steps MJX (whose resets fold the seed axis into the env axis, common.envs.playground); SAC's steps
# tests/toy_env.py, as what it checks of SAC does not depend on the physics and an MJX step compiles for ~10 s.
@pytest.mark.parametrize("make_agent, args, make_env", [(flowrl.make_flowrl, TINY, mjx_env),
                                                        (sac.make_sac, SAC_TINY, toy_env)], ids=["flowrl", "sac"])
def test_seed_k_of_a_vmapped_run_equals_the_single_run_with_that_seed(make_agent, args, make_env):
    vmapped, single = trainers(make_agent, args, make_env)
    init_keys, eval_keys = Layout(NUM_SEEDS).seed_keys(FIRST_SEED)
    single_init_keys, single_eval_keys = Layout(1).seed_keys(FIRST_SEED + CHECKED)
    many, one = vmapped.init(init_keys), single.init(single_init_keys)
    for _ in range(6):  # 24 env steps: random actions until 16, then one update per chunk (the policy moves too)
        many, many_metrics = vmapped.chunk(many)
        one, one_metrics = single.chunk(one)
    many, one = jax.device_get((many, one))
    updates = 3 * args.updates_per_iteration
    assert int(one.learner.updates) == updates and int(many.learner.updates) == updates  # shared, not per seed

    leaves_many, leaves_one = jax.tree.leaves(many), jax.tree.leaves(one)
    assert np.shape(many.env_steps) == () and np.shape(many.learner.updates) == ()
    batched = [(m, o) for m, o in zip(leaves_many, leaves_one) if np.shape(m) != np.shape(o)]
    assert len(batched) == len(leaves_one) - 2 and all(m.shape == (NUM_SEEDS, *np.shape(o)) for m, o in batched)
    for m, o in batched:
        m, o = numbers(m), numbers(o)
        np.testing.assert_allclose(m[CHECKED], o, rtol=1e-4, atol=1e-5)
    # The seeds really differ (a vmap that broadcast one seed would pass the comparison above).
    q_leaf = jax.tree.leaves(many.learner.q)[0]
    assert not np.allclose(q_leaf[0], q_leaf[1])

    for name, value in one_metrics.items():
        np.testing.assert_allclose(np.asarray(many_metrics[name])[CHECKED], value, rtol=1e-4, atol=1e-5, err_msg=name)
    for deterministic in (False, True):
        returns_many = np.asarray(vmapped.evaluate(many, eval_keys, deterministic).returns)
        returns_one = np.asarray(single.evaluate(one, single_eval_keys, deterministic).returns)
        assert returns_many.shape == (NUM_SEEDS, args.eval_episodes) and returns_one.shape == (1, args.eval_episodes)
        np.testing.assert_allclose(returns_many[CHECKED], returns_one[0], rtol=1e-4)


def test_num_seeds_run_writes_a_seed_column(tmp_path):
    training.run(resolve(dataclasses.replace(TINY, num_seeds=NUM_SEEDS, run_root=str(tmp_path))), flowrl.make_flowrl,
                 "flowrl")
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith(f"{TINY.env}__playground__flowrl__1-3__")
    for name in ("metrics.csv", "eval.csv"):
        with (run_dir / name).open(newline="") as f:
            rows = list(csv.DictReader(f))
        steps = sorted({int(row["step"]) for row in rows})
        # every step has exactly one row per seed
        assert sorted((int(row["step"]), int(row["seed"])) for row in rows) == [
            (step, seed) for step in steps for seed in (1, 2, 3)], name
    assert (run_dir / "learning_curve.png").stat().st_size > 0


def test_num_seeds_must_be_positive(refused):
    assert "--num-seeds must be a positive integer" in refused(Args, flowrl.make_flowrl, [*TINY_FLAGS, "--num-seeds=0"])
