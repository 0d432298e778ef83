"""The written contract (common.core.contract) is the whole interface: both algorithms and both env classes conform, and
a third algorithm written against it alone trains through the unchanged harness, checkpoints and resumes exactly."""

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from common.run import checkpoint, cli, training
from common.core.contract import Algorithm, VectorEnv
from common.run.args import resolve
from common.run.args import RunArgs
from common.envs.make import make_env
from common.envs.tasks import resolve_task
from tests import minimal_ddpg as ddpg
from tests import toy_cli
from tests.test_resume import leaves, table

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = [(flowrl.FlowRLConfig, flowrl.make_flowrl), (sac.SACConfig, sac.make_sac),
              (ddpg.DDPGConfig, ddpg.make_ddpg)]
SMALL = {flowrl.FlowRLConfig: dict(hidden_dim=16), sac.SACConfig: dict(actor_hidden_dim=16, critic_hidden_dim=16),
         ddpg.DDPGConfig: dict(hidden_dim=16)}


@pytest.mark.parametrize("config_class, make", ALGORITHMS, ids=["flowrl", "sac", "ddpg"])
def test_each_algorithm_conforms_to_the_contract(config_class, make):
    agent = make(config_class(**SMALL[config_class]), 3, 2)
    assert isinstance(agent, Algorithm)
    assert type(agent.config) is config_class  # the algorithm gets its own config, not the script's flags
    assert all(isinstance(name, str) for name in (*agent.policy_metric_names, *agent.lockstep_fields))
    state = jax.jit(agent.init)(jax.random.key(0))  # compiled: FlowRL's update runs op by op for ~20 s otherwise
    assert all(hasattr(state, name) for name in agent.lockstep_fields)
    batch = dict(obs=np.ones((4, 3), np.float32), action=np.zeros((4, 2), np.float32), reward=np.ones(4, np.float32),
                 next_obs=np.ones((4, 3), np.float32), mask=np.ones(4, np.float32))
    state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    assert set(agent.policy_metric_names) <= set(metrics)
    assert np.asarray(agent.policy_updated(state)).dtype == bool
    assert agent.recent_share is None or (0 <= agent.recent_share[0] <= 1 and agent.recent_share[1] >= 1)


def test_the_script_flags_split_into_run_flags_and_the_algorithm_config():
    flags = cli.script_args(flowrl.FlowRLConfig)(env="cheetah-run", hidden_dim=7, buffer_size=99)
    run_args, config = flags.split()
    assert type(run_args) is RunArgs and type(config) is flowrl.FlowRLConfig
    assert (run_args.env, run_args.buffer_size, config.hidden_dim) == ("cheetah-run", 99, 7)
    run_fields = {f.name for f in dataclasses.fields(RunArgs)}
    for config_class, _ in ALGORITHMS:  # a shared name would be one flag with two meanings
        assert not run_fields & {f.name for f in dataclasses.fields(config_class)}


def test_both_env_classes_implement_the_env_interface():
    methods = {name: value for name, value in vars(VectorEnv).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    assert set(methods) == {"reset", "step", "capture", "restore"}
    envs = [make_env(resolve_task("cartpole-balance", "playground"), 2),
            make_env(resolve_task("Ant-v4", "gymnasium"), 2)]
    for env in envs:
        assert isinstance(env, VectorEnv), type(env).__name__  # every attribute and method is there
        for name, declared in methods.items():  # and the methods take the parameters the interface names
            assert list(inspect.signature(getattr(env, name)).parameters) == \
                list(inspect.signature(declared).parameters)[1:], (type(env).__name__, name)
        assert env.action_low.shape == env.action_high.shape == (env.action_size,)


def test_nothing_in_common_names_the_third_algorithm():
    for path in (ROOT / "common").glob("*.py"):
        assert "ddpg" not in path.read_text().lower(), path.name


# Updates from step 16, a checkpoint every 24 steps: the resumed half starts mid-learning.
DDPG_ARGS = cli.script_args(ddpg.DDPGConfig)(
    env="cartpole-balance", num_envs=4, updates_per_iteration=1, batch_size=16, start_steps=16, hidden_dim=16,
    log_interval=8, total_steps=48, eval_interval=24, eval_episodes=2, episode_length=20, checkpoint_interval=24,
    keep_checkpoints=5)


def ddpg_run(root: Path, **changes) -> Path:
    training.run(resolve(dataclasses.replace(DDPG_ARGS, run_root=str(root), **changes)), ddpg.make_ddpg, "ddpg")
    (run_dir,) = root.iterdir()
    return run_dir


def test_a_third_algorithm_trains_through_the_harness_and_resumes_exactly(tmp_path, monkeypatch):
    # The run's envs are tests/toy_env.py's: what is checked is the harness around the algorithm, not the physics
    # (tests/test_resume.py resumes FlowRL on MJX).
    monkeypatch.setattr(training, "make_env", toy_cli.toy_env)
    full = ddpg_run(tmp_path / "full")
    assert full.name.startswith("point-mass-line__playground__ddpg__1__")
    rows = table(full / "metrics.csv")
    assert [int(row["step"]) for row in rows] == [8, 16, 24, 32, 40, 48]
    assert float(rows[-1]["critic_loss"]) > 0 and float(rows[0]["critic_loss"]) == 0  # no update before step 16
    assert len(table(full / "eval.csv")) == 2

    half = ddpg_run(tmp_path / "half", total_steps=24)
    resumed = dataclasses.replace(DDPG_ARGS, run_root=str(tmp_path / "unused"), resume=str(half))
    training.run(resolve(resumed), ddpg.make_ddpg, "ddpg")
    assert table(half / "metrics.csv") == rows and table(half / "eval.csv") == table(full / "eval.csv")
    expected, found = leaves(full), leaves(half)
    assert expected.keys() == found.keys()
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)
    assert [p.name for p in checkpoint.list_checkpoints(half / "checkpoints")] == [
        "checkpoint_000000000024.msgpack", "checkpoint_000000000048.msgpack"]


def test_the_third_algorithm_has_a_command_line_from_the_harness():
    result = subprocess.run([sys.executable, "-m", "tests.minimal_ddpg", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--exploration-noise" in result.stdout and "--num-envs" in result.stdout


def test_the_envs_are_stepped_with_explore_after_the_start_steps_and_evaluated_with_act():
    """The chunk collects with `explore` (an algorithm's exploration noise lives there), evaluation acts with `act`:
    a DDPG whose explore always answers 0.5 fills the replay with 0.5 once the random start steps are over, and
    evaluates as the unchanged DDPG does."""
    from tests.toy_env import PointMassLine

    base = ddpg.make_ddpg(ddpg.DDPGConfig(hidden_dim=16), PointMassLine.obs_size, PointMassLine.action_size)
    marked = base._replace(explore=lambda state, obs, key: jax.numpy.full((obs.shape[0], 1), 0.5))
    args = dataclasses.replace(DDPG_ARGS, total_steps=32, log_interval=32, buffer_size=64)
    trainers = [training.make_trainer(resolve(args).spec, agent, PointMassLine(args.num_envs, args.episode_length),
                                      PointMassLine(args.eval_episodes, args.episode_length))
                for agent in (marked, base)]
    state, _ = trainers[0].chunk(trainers[0].init(jax.random.key(0)))
    actions = np.asarray(state.buffer.data["action"])[:32, 0]  # rows in step order: 4 envs × 8 steps
    start = args.start_steps  # 16 env steps of uniform random actions, then explore's
    assert np.all(actions[start:] == 0.5) and not np.any(actions[:start] == 0.5)
    for deterministic in (True, False):
        marked_returns, base_returns = (np.asarray(trainer.evaluate(state, jax.random.key(1), deterministic))
                                        for trainer in trainers)
        np.testing.assert_array_equal(marked_returns, base_returns)
