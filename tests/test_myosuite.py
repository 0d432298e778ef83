"""The MyoSuite backend (common.envs.tasks, common.envs.host): its ids and sizes, a missing package, transitions against
the raw MyoSuite env (terminations, time limits, the `solved` flag), a task's exception, exact restore across resets
that move targets and resize objects, success scored at each eval episode's last step, and one tiny training run
(success in eval.csv, its video, --play, and an exact resume). At most 8 MyoSuite envs (~81 MB each) live at once."""

import dataclasses
import gc
import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowrl_jax as flowrl
from common.run import cli, play, training
from common.envs import tasks
from common.core.contract import StepOutput
from common.core.evaluation import make_evaluator
from benchmarks.task_table import measure_sizes
from common.envs.tasks import (MYOSUITE_BENCHMARK, Task, UnknownEnvError, format_task_list, resolve_task,
                               task_sizes)
from common.envs.make import make_env
from common.run.args import resolve
from common.run.args import parse_video_size
from tests.test_host_envs import assert_same_run, host_seeds, leaves
from tests.test_resume import table
from tests.test_video import decode

E, KEY = 3, jax.random.key(7)


def raw_env(source):
    """MyoSuite's own env with its own TimeLimit: the reference."""
    import myosuite  # noqa: F401  (registers the ids)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MyoSuite's model builder warns about spec prefixes
        return gymnasium.make(source)


def test_ids_resolve_without_regard_to_case_and_after_the_other_backends():
    assert len(set(MYOSUITE_BENCHMARK)) == 10
    for name in MYOSUITE_BENCHMARK:
        assert resolve_task(name.upper()) == Task(name, "myosuite", name)
        assert resolve_task(name.lower(), "myosuite") == Task(name, "myosuite", name)
    assert tasks.BACKENDS[-1] == "myosuite"
    with pytest.raises(UnknownEnvError, match="close matches: myoHandReachRandom-v0"):
        resolve_task("myoHandReachRandm-v0")
    with pytest.raises(UnknownEnvError, match="it is in: myosuite"):
        resolve_task("myoHandPoseFixed-v0", "gymnasium")
    rows = [line.split() for line in format_task_list().splitlines()]
    assert ["myoHandReachRandom-v0", "myosuite", "myoHandReachRandom-v0", "obs", "115,", "action", "39"] in rows


def test_without_myosuite_the_names_still_resolve_and_building_exits_2_with_the_install_line(monkeypatch, refused):
    installed = tasks.installed
    monkeypatch.setattr(tasks, "installed", lambda package: package != "myosuite" and installed(package))
    assert resolve_task("myohandposerandom-v0") == Task("myoHandPoseRandom-v0", "myosuite", "myoHandPoseRandom-v0")
    assert "myoHandPoseRandom-v0" in format_task_list()
    with pytest.raises(UnknownEnvError, match="needs MyoSuite, which is not installed: pip install -r requirements"):
        make_env(resolve_task("myoHandPoseRandom-v0"), 1)
    error = refused(cli.script_args(flowrl.FlowRLConfig), flowrl.make_flowrl, ["--env", "myoHandPoseRandom-v0"])
    assert "needs MyoSuite, which is not installed: pip install -r requirements.txt" in error


def test_every_row_of_the_table_has_the_sizes_of_the_built_env():
    for name in MYOSUITE_BENCHMARK:  # one env at a time
        assert task_sizes()[name, "myosuite"] == measure_sizes(resolve_task(name)), name
        gc.collect()


def check_against_raw_myosuite(name: str, steps: int) -> tuple[int, int, int]:
    """Steps HostBatchedEnv and the raw envs with the same random actions; every transition, its end and its success
    flag must match. Returns (terminations, truncations, solved steps)."""
    env = make_env(resolve_task(name, "myosuite"), E, host_threads=2)
    raws = [raw_env(name) for _ in range(E)]
    first = [raw.reset(seed=seed)[0] for raw, seed in zip(raws, host_seeds(KEY, E))]
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(KEY)
    np.testing.assert_array_equal(state.obs, np.float32(first))
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, E, env.action_size)).astype(np.float32)
    terminations = truncations = solved = 0
    for action in actions:
        state, out = step(state, action)
        for i, raw in enumerate(raws):
            next_obs, reward, terminated, truncated, info = raw.step(action[i])
            np.testing.assert_array_equal(out.next_obs[i], np.float32(next_obs))  # the true s', at time limits too
            assert out.reward[i] == np.float32(reward)
            assert bool(out.terminated[i]) == terminated
            assert bool(out.truncated[i]) == (truncated and not terminated)
            assert out.success[i] == float(info["solved"])
            terminations, truncations = terminations + terminated, truncations + (truncated and not terminated)
            solved += bool(info["solved"])
            expected = raw.reset()[0] if terminated or truncated else next_obs
            np.testing.assert_array_equal(state.obs[i], np.float32(expected))
    return terminations, truncations, solved


def test_transitions_match_the_raw_env_at_its_time_limit():
    reach = make_env(resolve_task("myoHandReachRandom-v0", "myosuite"), 1)
    assert reach.episode_length == 100  # MyoSuite's max_episode_steps
    terminations, truncations, _ = check_against_raw_myosuite("myoHandReachRandom-v0", steps=105)
    assert terminations == 0 and truncations == E


def test_transitions_match_the_raw_env_at_terminations_and_report_solved():
    # The object falls within ~20 random steps (MyoSuite's `done`); on the way it is sometimes within the goal.
    terminations, truncations, solved = check_against_raw_myosuite("myoHandObjHoldRandom-v0", steps=60)
    assert terminations >= E and truncations == 0 and solved > 0


def test_an_exception_in_a_myosuite_step_resets_that_env_and_solves_nothing():
    env = make_env(resolve_task("myoHandReachRandom-v0", "myosuite"), 2)
    state = env.reset(KEY)
    failing = env.pool.envs[1]
    failing.step = lambda action: (_ for _ in ()).throw(RuntimeError("simulator fault"))
    state, out = jax.jit(env.step)(state, np.zeros((2, env.action_size), np.float32))
    np.testing.assert_array_equal(out.nonfinite, [False, True])
    assert out.success[1] == 0.0 and out.reward[1] == 0.0  # scored as a failure, not as a task without success
    assert env.pool.episode_steps[1] == 0 and env.pool.episode_steps[0] == 1


@pytest.mark.parametrize("name", ["myoHandObjHoldRandom-v0", "myoHandPoseRandom-v0"])
def test_a_captured_state_restores_exactly_into_fresh_envs(name):
    # ObjHold resizes its object and moves its goal at each reset (model arrays); Pose draws target angles (the
    # task's state dict) and a random start; both draw from the env's own generator.
    def rollout(env, state, actions):
        step, outputs = jax.jit(env.step), []
        for action in actions:
            state, out = step(state, action)
            outputs.append(jax.device_get(out))
        return outputs

    env = make_env(resolve_task(name, "myosuite"), 2, episode_length=12)
    actions = np.random.default_rng(1).uniform(-1, 1, (40, 2, env.action_size)).astype(np.float32)
    state = env.reset(KEY)
    for action in actions[:18]:
        state, _ = env.step(state, action)
    captured = env.capture(state)
    expected = rollout(env, captured, actions[18:])  # two more resets on the host
    fresh = make_env(resolve_task(name, "myosuite"), 2, episode_length=12)
    fresh.restore(captured)
    found = rollout(fresh, captured, actions[18:])
    assert sum(int(out.truncated.sum() + out.terminated.sum()) for out in expected) >= 2
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(found)):
        np.testing.assert_array_equal(a, b)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Clock:
    t: jax.Array  # [3] int32: steps into the current episode

    @property
    def obs(self):
        return jnp.zeros((self.t.shape[0], 1))


class _ScriptedSuccessEnv:
    """Three envs whose first episodes end at steps 3 and 2 (terminations) and 4 (the time limit), each step solved
    on odd steps only: env 0 ends solved; env 1 and env 2 were solved before their last step, not at it."""

    num_envs, episode_length = 3, 4

    def reset(self, key):
        return _Clock(jnp.zeros(self.num_envs, jnp.int32))

    def step(self, state, action):
        t = state.t + 1
        terminated = t == jnp.array([3, 2, 99])
        truncated = (t >= self.episode_length) & ~terminated
        success = (t % 2 == 1).astype(jnp.float32)
        out = StepOutput(state.obs, jnp.ones(3), terminated, truncated, jnp.zeros(3), jnp.zeros(3, bool), success)
        return _Clock(jnp.where(terminated | truncated, 0, t)), out


def test_success_is_the_flag_at_each_episode_s_last_step():
    episodes = jax.jit(make_evaluator(_ScriptedSuccessEnv(), lambda p, obs, k: obs))(None, KEY)
    np.testing.assert_array_equal(episodes.success, [1.0, 0.0, 0.0])  # the steps after an episode's end do not count
    np.testing.assert_array_equal(episodes.returns, [3.0, 2.0, 4.0])


# 10-step episodes end in both halves of the resume; 2 train + 2 eval envs + 1 that renders per run.
TINY = cli.script_args(flowrl.FlowRLConfig)(
    env="myoHandPenTwirlRandom-v0", backend="myosuite", num_envs=2, updates_per_iteration=1, batch_size=16,
    start_steps=10, hidden_dim=16, log_interval=10, total_steps=40, eval_interval=20, eval_episodes=2,
    episode_length=10, checkpoint_interval=20, keep_checkpoints=5, buffer_size=1000, eval_mode="stochastic",
    video_interval=1, video_size="32")


def tiny_run(root, **changes):
    training.run(resolve(dataclasses.replace(TINY, run_root=str(root), **changes)), flowrl.make_flowrl, "flowrl",
                 flowrl.POLICY_FIELDS)
    (run_dir,) = root.iterdir()
    gc.collect()  # the run's host envs go with it
    return run_dir


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("myo_full"))


def test_a_tiny_training_run_logs_success_beside_the_return_and_films_it(full_run):
    assert full_run.name.startswith("myoHandPenTwirlRandom-v0__myosuite__flowrl__1__")
    rows = table(full_run / "metrics.csv")
    assert np.isfinite(float(rows[-1]["critic_loss"])) and float(rows[-1]["critic_loss"]) != 0.0
    evaluations = table(full_run / "eval.csv")
    assert [int(row["step"]) for row in evaluations] == [20, 40]
    for evaluation in evaluations:
        assert list(evaluation)[3:5] == ["return_mean", "success_rate"]
        successes = [int(s) for s in evaluation["successes"].split()]
        assert len(successes) == 2 and set(successes) <= {0, 1}
        assert float(evaluation["success_rate"]) == pytest.approx(np.mean(successes))
    width, height = parse_video_size(TINY.video_size)
    for step in (20, 40):
        frames = decode(full_run / "videos" / f"{step:012d}.mp4")
        assert frames.shape == (10, height, width, 3) and all(frame.std() > 5 for frame in frames)


def test_play_prints_the_success_rate_of_the_run_s_evaluation(full_run, capsys):
    args = dataclasses.replace(cli.script_args(flowrl.FlowRLConfig)(), play=str(full_run), eval_mode="stochastic")
    returns = play.main(args, flowrl.load_policy)["stochastic"]
    last = table(full_run / "eval.csv")[-1]
    assert " ".join(f"{r:.6g}" for r in returns) == last["returns"]
    assert f"success rate {float(last['success_rate']):.6g}" in capsys.readouterr().out


def test_a_resumed_run_equals_the_uninterrupted_one(full_run, tmp_path):
    half = tiny_run(tmp_path / "half", total_steps=20)
    resumed = dataclasses.replace(TINY, run_root=str(tmp_path / "unused"), resume=str(half))
    training.run(resolve(resumed), flowrl.make_flowrl, "flowrl", flowrl.POLICY_FIELDS)
    gc.collect()
    assert_same_run(full_run, half)  # metrics, eval.csv with its success column, every leaf, the host snapshots
    snapshot = next(v for v in leaves(full_run).values() if v.dtype == np.uint8 and v.ndim == 2)
    assert snapshot.shape[0] == TINY.num_envs and snapshot.any()
