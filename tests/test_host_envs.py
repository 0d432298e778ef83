"""Host backends (dm_control, Gymnasium) stepped through io_callback: checked against the raw envs for true final
observations, truncation apart from termination and no dummy reset steps; then exact resume, determinism, vmapped
seeds and both scripts end to end. Host physics needs no XLA compile, so only the small networks compile here."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowrl_jax as flowrl
from common.run import cli, training
from common.envs.host import HostBatchedEnv, dm_control_suite
from common.envs.tasks import resolve_task
from common.envs.make import make_env
from common.run.args import resolve
from common.core.layout import Layout
from tests.test_resume import assert_same_run, leaves, table

ROOT = Path(__file__).resolve().parents[1]
E, KEY = 3, jax.random.key(7)


def host_seeds(key, num_envs) -> list[int]:
    """The seeds HostBatchedEnv.reset gives its envs: num_envs uint32 draws from the reset key."""
    return [int(seed) for seed in np.asarray(jax.random.bits(key, (num_envs,), jnp.uint32))]


def check_against_raw(env, raw_envs, steps: int, action_seed: int = 0) -> tuple[int, int]:
    """Steps `env` and the raw envs (already reset to the seeds of KEY) with the same random actions and asserts that
    every transition matches; returns (terminations, truncations) seen."""
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(KEY)
    first_obs = [raw.first_obs for raw in raw_envs]
    np.testing.assert_array_equal(state.obs, np.float32(first_obs))
    actions = np.random.default_rng(action_seed).uniform(env.action_low, env.action_high, (steps, E, env.action_size))
    terminations = truncations = 0
    for action in actions.astype(np.float32):
        obs_before = np.asarray(state.obs)
        state, out = step(state, action)
        for i, raw in enumerate(raw_envs):
            next_obs, reward, terminated, truncated = raw.step(action[i])
            np.testing.assert_array_equal(out.next_obs[i], np.float32(next_obs))  # the true s', also at episode ends
            assert out.reward[i] == np.float32(reward)
            assert bool(out.terminated[i]) == terminated
            assert bool(out.truncated[i]) == (truncated and not terminated)
            assert not out.nonfinite[i]
            terminations, truncations = terminations + terminated, truncations + (truncated and not terminated)
            # What the policy acts on next (and the next transition's s): the reset observation after an episode
            # end. A dummy reset step would show up here as a transition that starts from the final observation.
            expected = raw.reset() if terminated or truncated else next_obs
            np.testing.assert_array_equal(state.obs[i], np.float32(expected))
            assert not np.array_equal(obs_before[i], out.next_obs[i])
    return terminations, truncations


class RawGymnasium:
    """Gymnasium's own env with its own TimeLimit wrapper: the reference for our time limit."""

    def __init__(self, name, seed, episode_length):
        self.env = gymnasium.make(name, max_episode_steps=episode_length)
        self.first_obs = self.env.reset(seed=seed)[0]

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return obs, reward, terminated, truncated

    def reset(self):
        return self.env.reset()[0]


class RawDMControl:
    """dm_control's own env with its own time limit: the reference for our time limit and flattening."""

    def __init__(self, source, seed, episode_length):
        suite = dm_control_suite()  # as the host envs import it (the OpenGL backend is chosen at the first import)
        domain, task = source.split("-")
        probe = suite.load(domain, task)
        self.env = suite.load(domain, task, task_kwargs={"random": seed,
                                                         "time_limit": episode_length * probe.control_timestep()},
                              environment_kwargs={"flat_observation": True})
        self.first_obs = self.reset()

    def step(self, action):
        timestep = self.env.step(action)
        last = timestep.last()
        return timestep.observation["observations"], timestep.reward, last and timestep.discount == 0, last

    def reset(self):
        return self.env.reset().observation["observations"]


def test_gymnasium_transitions_match_the_raw_env_at_time_limits_and_terminations():
    # Hopper falls within tens of random steps (termination, no bootstrap); a 25-step limit truncates the others.
    # Two threads split the envs 1 + 2.
    env = make_env(resolve_task("Hopper-v4", "gymnasium"), E, episode_length=25, host_threads=2)
    raws = [RawGymnasium("Hopper-v4", seed, 25) for seed in host_seeds(KEY, E)]
    terminations, truncations = check_against_raw(env, raws, steps=80)
    assert terminations > 0 and truncations > 0


def test_dm_control_transitions_match_the_raw_env_at_time_limits():
    env = make_env(resolve_task("cartpole-swingup", "dm_control"), E, episode_length=5, host_threads=2)
    assert (env.obs_size, env.action_size) == (5, 1)
    raws = [RawDMControl("cartpole-swingup", seed, 5) for seed in host_seeds(KEY, E)]
    terminations, truncations = check_against_raw(env, raws, steps=12)
    assert terminations == 0 and truncations == 2 * E  # DMC tasks only truncate


def test_default_time_limits_and_action_bounds_are_the_tasks_own():
    humanoid = HostBatchedEnv(resolve_task("Humanoid-v4"), 1)
    assert humanoid.episode_length == 1000 and np.all(humanoid.action_high == 0.4)  # Humanoid-v4's bounds: ±0.4
    dog = HostBatchedEnv(resolve_task("dog-run"), 1)
    assert dog.episode_length == 1000  # 15 s at a 15 ms control step
    with pytest.raises(ValueError, match="--episode-length: lqr-lqr-2-1 has no time limit"):
        HostBatchedEnv(resolve_task("lqr-lqr-2-1"), 1)
    # quadruped-escape uploads its random terrain through an OpenGL context at every reset, even headless
    escape = HostBatchedEnv(resolve_task("quadruped-escape"), 1)
    assert np.isfinite(escape.pool.reset(np.array([3]))[0]).all()


def test_a_captured_state_restores_exactly_into_fresh_envs_and_a_stale_one_is_refused():
    def rollout(env, state, actions):
        step, outputs = jax.jit(env.step), []
        for action in actions:
            state, out = step(state, action)
            outputs.append(jax.device_get(out))
        return state, outputs

    env = make_env(resolve_task("Ant-v4", "gymnasium"), 2, episode_length=15)
    actions = np.random.default_rng(1).uniform(-1, 1, (40, 2, env.action_size)).astype(np.float32)
    state, _ = rollout(env, env.reset(KEY), actions[:20])
    captured = env.capture(state)
    _, expected = rollout(env, captured, actions[20:])  # crosses the time limit at step 30: a reset on the host
    with pytest.raises(Exception, match="not the one the host envs hold"):
        rollout(env, captured, actions[20:21])

    fresh = make_env(resolve_task("Ant-v4", "gymnasium"), 2, episode_length=15)
    fresh.restore(captured)
    _, found = rollout(fresh, captured, actions[20:])
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(found)):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------- training on a host backend

# 8-step episodes (or a fall) end within both halves of the resume test, so the host resets envs in both.
HOST = cli.script_args(flowrl.FlowRLConfig)(
    env="Hopper-v4", backend="gymnasium", num_envs=3, updates_per_iteration=1, batch_size=16, start_steps=18,
    hidden_dim=16, log_interval=6, total_steps=72, eval_interval=36, eval_episodes=2, episode_length=8,
    checkpoint_interval=36, keep_checkpoints=5, buffer_size=1000)


def host_run(root: Path, **changes) -> Path:
    training.run(resolve(dataclasses.replace(HOST, run_root=str(root), **changes)), flowrl.make_flowrl, "flowrl")
    (run_dir,) = root.iterdir()
    return run_dir


def test_host_runs_are_deterministic_and_resume_exactly(tmp_path):
    full = host_run(tmp_path / "full")
    assert full.name.startswith("Hopper-v4__gymnasium__flowrl__1__")
    episodes = [float(row["train_episodes"]) for row in table(full / "metrics.csv")]
    assert sum(episodes[:6]) > 0 and sum(episodes[6:]) > 0  # episodes end on the host in both halves

    # A second run of the same seed: its first half must equal the full run's (determinism), and its resumed second
    # half too (exact resume); the final states are compared with the host envs' snapshots.
    half = host_run(tmp_path / "half", total_steps=36)
    # The resumed half runs in a fresh process state: new host env objects that only the checkpoint can set.
    resumed = dataclasses.replace(HOST, run_root=str(tmp_path / "unused"), resume=str(half))
    training.run(resolve(resumed), flowrl.make_flowrl, "flowrl")
    assert_same_run(full, half)
    snapshot = next(v for k, v in leaves(full).items() if v.dtype == np.uint8 and v.ndim == 2)
    assert snapshot.shape[0] == HOST.num_envs and snapshot.any()  # the host envs' state is in the checkpoint


def test_seed_k_of_a_vmapped_host_run_equals_the_single_run_with_that_seed():
    def trainer(num_seeds):  # own env objects per trainer: each pool follows one train state
        env, eval_env = (make_env(resolve_task(HOST.env, HOST.backend), n, episode_length=HOST.episode_length)
                         for n in (HOST.num_envs, HOST.eval_episodes))
        return Layout(num_seeds).over_seeds(training.build_trainer(resolve(HOST), flowrl.make_flowrl, env, eval_env))

    vmapped, single = trainer(2), trainer(1)
    many, one = vmapped.init(Layout(2).seed_keys(1)[0]), single.init(Layout(1).seed_keys(2)[0])
    for _ in range(5):  # 30 env steps: random actions until 18, then the policy acts and learns
        many, _ = vmapped.chunk(many)
        one, _ = single.chunk(one)
    many, one = jax.device_get((many, one))
    # Random-action steps are bit-identical; after that the vmapped network differs from the single one by float
    # rounding only, which a short rollout keeps small.
    np.testing.assert_array_equal(many.buffer.data["obs"][1][:18], one.buffer.data["obs"][:18])
    np.testing.assert_allclose(many.buffer.data["next_obs"][1][:30], one.buffer.data["next_obs"][:30], atol=1e-4)
    assert not np.allclose(many.buffer.data["obs"][0][:18], one.buffer.data["obs"][:18])  # seed 1 is another run
    returns_many = vmapped.evaluate(many, Layout(2).seed_keys(1)[1], False).returns
    returns_one = single.evaluate(one, Layout(1).seed_keys(2)[1], False).returns
    np.testing.assert_allclose(returns_many[1], returns_one[0], rtol=1e-4)


@pytest.mark.parametrize("script", ["flowrl_jax.py", "sac_jax.py"])
@pytest.mark.parametrize("env", ["dog-run", "Ant-v4"])
def test_both_scripts_train_on_dog_run_and_ant(script, env, tmp_path):
    small = ["--hidden-dim=16"] if script == "flowrl_jax.py" else ["--actor-hidden-dim=16", "--critic-hidden-dim=16"]
    result = subprocess.run(
        [sys.executable, script, f"--env={env}", "--num-envs=2", "--updates-per-iteration=1", "--batch-size=16",
         "--start-steps=100", "--total-steps=300", "--log-interval=100", "--eval-interval=300", "--eval-episodes=1",
         "--episode-length=100", f"--run-root={tmp_path}", *small],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    backend = "dm_control" if env == "dog-run" else "gymnasium"
    assert run_dir.name.startswith(f"{env}__{backend}__")
    rows = table(run_dir / "metrics.csv")
    assert [int(row["step"]) for row in rows] == [100, 200, 300]
    loss = float(rows[-1]["critic_loss"])
    assert np.isfinite(loss) and loss != 0.0  # updates ran (before learning starts the chunk reports zeros)
    assert sum(float(row["train_episodes"]) for row in rows) >= 2  # each env ended an episode (100-step limit)
    (evaluation,) = table(run_dir / "eval.csv")
    assert np.isfinite(float(evaluation["return_mean"]))


def test_the_harness_observes_each_observation_the_policy_meets_once():
    args = dataclasses.replace(HOST, normalize_observations=True)
    env, eval_env = (make_env(resolve_task(args.env, args.backend), n, episode_length=args.episode_length)
                     for n in (args.num_envs, args.eval_episodes))
    trainer = training.build_trainer(resolve(args), flowrl.make_flowrl, env, eval_env)
    state = trainer.init(jax.random.key(0))
    for _ in range(4):  # 24 env steps: 18 random, then the policy acts on normalised observations and learns
        state, _ = trainer.chunk(state)
    state = jax.device_get(state)
    stored = state.buffer.data["obs"][:24]  # the replay holds each observation the policy met, as it met it
    assert float(state.learner.obs_stats.count) == 24
    np.testing.assert_allclose(state.learner.obs_stats.mean, stored.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.learner.obs_stats.m2 / 24, stored.var(0), rtol=1e-4, atol=1e-7)
