"""Numerical faults in the learner stop the run cleanly; the disk check warns before checkpoints can fail."""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowrl_jax as flowrl
from common.run import checkpoint, cli, resume, training
from common.envs.playground import BatchedEnv
from common.run.args import resolve
from common.envs.tasks import resolve_task
from tests.test_flowrl_train import TINY

Args = cli.script_args(flowrl.FlowRLConfig)
ARGS = dataclasses.replace(TINY, eval_interval=16, checkpoint_interval=16)  # the tiny run's programs


def test_a_nan_loss_stops_the_run_and_names_the_last_good_checkpoint(tmp_path):
    args = dataclasses.replace(ARGS, run_root=str(tmp_path))
    env = BatchedEnv(resolve_task(args.env), args.num_envs, episode_length=args.episode_length)
    trainer = training.build_trainer(resolve(args), flowrl.make_flowrl, env,
                                    BatchedEnv(resolve_task(args.env), args.eval_episodes, episode_length=20))

    def chunk_that_diverges_at_step_40(state):  # the loss the real chunk computed, poisoned from step 40 on
        state, metrics = trainer.chunk(state)
        diverged = state.env_steps >= 40
        return state, {**metrics, "critic_loss": jax.numpy.where(diverged, np.nan, metrics["critic_loss"])}

    with pytest.raises(SystemExit) as stopped:
        training.train(trainer._replace(chunk=chunk_that_diverges_at_step_40), resolve(args), "flowrl", env)
    message = str(stopped.value.code)
    (run_dir,) = tmp_path.iterdir()
    good = checkpoint.list_checkpoints(run_dir / "checkpoints")
    assert [path.name for path in good] == ["checkpoint_000000000016.msgpack", "checkpoint_000000000032.msgpack"]
    assert "non-finite critic_loss" in message and "env step 40" in message and str(good[-1]) in message
    with (run_dir / "metrics.csv").open(newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(4, 40, 4))  # all before the fault
    assert (run_dir / "learning_curve.png").exists()


def test_disk_warning_when_checkpoints_will_not_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10 * 2**30})())
    four_gib = jax.ShapeDtypeStruct((2**30,), jnp.float32)  # one checkpoint of this state: 4 GiB
    resume.warn_if_disk_is_short(tmp_path, four_gib, keep_checkpoints=0)  # one kept and one being written
    assert capsys.readouterr().err == ""
    resume.warn_if_disk_is_short(tmp_path, four_gib, keep_checkpoints=2)
    assert "checkpoints need about 12.00 GiB" in capsys.readouterr().err


def test_checkpoint_size_formula_matches_the_state():
    """docs/checkpoints.md's formula: replay bytes = buffer_size × (2·obs + action + 2) × 4, plus ~70 MB for the
    networks at width 512 (params, targets and Adam moments). Checked on humanoid-walk (obs 67, action 21), 1 M
    buffer, traced only."""
    args = dataclasses.replace(Args(), env="humanoid-walk")
    env = BatchedEnv(resolve_task(args.env), args.num_envs)
    trainer = training.build_trainer(resolve(args), flowrl.make_flowrl, env, BatchedEnv(resolve_task(args.env), 1))
    template = jax.eval_shape(trainer.init, jax.random.key(0))
    replay_bytes = args.buffer_size * (2 * env.obs_size + env.action_size + 2) * 4
    assert env.obs_size == 67 and env.action_size == 21
    assert replay_bytes + 60e6 < checkpoint.checkpoint_bytes(template) < replay_bytes + 80e6


class DivergingEnv(BatchedEnv):
    """Env 0's physics is driven to NaN at the 3rd step of each of its episodes."""

    def step(self, state, action):
        poison = (jax.numpy.arange(self.num_envs) == 0) & (state.episode_step == 2)
        return super().step(state, jax.numpy.where(poison[:, None], jax.numpy.nan, action))


def test_diverged_env_transitions_are_counted_and_kept_out_of_the_replay():
    args = dataclasses.replace(ARGS, log_interval=40)  # one chunk of 10 iterations, no update before step 16
    env = DivergingEnv(resolve_task(args.env), args.num_envs, episode_length=args.episode_length)
    trainer = training.build_trainer(resolve(args), flowrl.make_flowrl, env,
                                    BatchedEnv(resolve_task(args.env), args.eval_episodes, episode_length=20))
    state, metrics = trainer.chunk(trainer.init(jax.random.key(0)))
    # Env 0 restarts after each divergence, so it diverges at steps 3 and 6 and 9 of the chunk: 3 resets.
    assert int(metrics["nonfinite_env_resets"]) == 3
    assert int(state.buffer.size) == 40 - 3 and int(state.env_steps) == 40
    stored = jax.tree.map(lambda x: x[: int(state.buffer.size)], state.buffer.data)
    assert all(bool(jax.numpy.isfinite(x).all()) for x in jax.tree.leaves(stored))
    assert np.isfinite(float(metrics["critic_loss"]))
