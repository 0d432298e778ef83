"""Each algorithm file stands alone: the documented examples run from a lone copy, and the harness runs exactly the
public `update`."""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from common.run import policy_export, training
from common.envs.playground import BatchedEnv
from common.run.args import resolve
from common.core.layout import Layout
from common.envs.tasks import resolve_task
from common.core.chunk import make_update, sample_batch
from tests.checkpoints import numbers
from tests.test_flowrl_train import TINY
from tests.test_sac import TINY as SAC_TINY

ROOT = Path(__file__).resolve().parents[1]
# The documented examples: the README's section holds FlowRL's, then the policy block; docs/algorithm.md's SAC section
# holds SAC's.
README_EXAMPLES = (ROOT / "README.md", "## Use the algorithm in your own code")
SAC_EXAMPLE = (ROOT / "docs" / "algorithm.md", "## SAC, the baseline")

# Appended to an example: it names `initial_state`, `state`, `actions`, `greedy_actions` and `metrics`.
CHECKS = """
import sys
assert "common" not in sys.modules, "the harness was imported"
leaves = lambda tree: [leaf for leaf in jax.tree.leaves(jax.device_get(tree))
                       if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]  # keys hold no numbers
assert all(np.isfinite(leaf).all() for leaf in leaves((state, actions, greedy_actions, metrics))), "non-finite output"
assert actions.shape == greedy_actions.shape == (8, action_size) and np.abs(actions).max() <= 1.0
changed = [not np.array_equal(a, b) for a, b in zip(leaves(initial_state), leaves(state)) if a.dtype.kind == "f"]
assert changed and all(changed), f"{changed.count(False)} of {len(changed)} parameter arrays did not move"
print("checks passed")
"""


def python_blocks(document: Path, heading: str) -> list[str]:
    """The python code blocks of one section (`heading` to the next heading of its level) of a document."""
    section = document.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.mark.parametrize("example, count, filename", [(README_EXAMPLES, 2, "flowrl_jax.py"),
                                                      (SAC_EXAMPLE, 1, "sac_jax.py")], ids=["flowrl", "sac"])
def test_the_documented_example_runs_from_the_lone_copied_file(tmp_path, example, count, filename):
    blocks = python_blocks(*example)
    assert len(blocks) == count and filename.removesuffix(".py") in blocks[0]
    assert len(blocks[0].splitlines()) <= 26  # the documents promise short examples
    shutil.copy(ROOT / filename, tmp_path / filename)
    (tmp_path / "example.py").write_text("import numpy as np\n" + blocks[0] + CHECKS)
    # Only the copied file is importable: the script's own directory is the first entry of sys.path, and nothing
    # points back at the repository.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checks passed" in result.stdout and "loss" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == ".py") == ["example.py", filename]


# Appended to the README's policy block: it names `action` and `env_action`.
POLICY_CHECKS = """
import sys
assert "common" not in sys.modules, "the harness was imported"
np.testing.assert_allclose(np.asarray(action), np.load("expected_action.npy"), rtol=1e-5, atol=1e-6)
assert np.all((low <= env_action) & (env_action <= high)) and not np.array_equal(action, env_action)
print("checks passed")
"""


@pytest.mark.parametrize("module, config", [(flowrl, flowrl.FlowRLConfig(hidden_dim=16, normalize_observations=True)),
                                            (sac, sac.SACConfig(actor_hidden_dim=16, critic_hidden_dim=16,
                                                                normalize_observations=True))],
                         ids=["flowrl", "sac"])
def test_an_exported_policy_loads_and_acts_in_the_lone_copied_file(tmp_path, module, config):
    """The README's policy block (with sac_jax for SAC) acts as the exported agent did: its parameters and its
    observation statistics, not those of a fresh init."""
    make = module.make_flowrl if module is flowrl else module.make_sac
    obs_size, action_size = 5, 2
    agent = make(config, obs_size, action_size)
    state = agent.observe(agent.init(jax.random.key(7)), jax.random.normal(jax.random.key(8), (16, obs_size)) + 3.0)
    env = SimpleNamespace(obs_size=obs_size, action_size=action_size, action_low=np.array([-2.0, 0.0]),
                          action_high=np.array([2.0, 1.0]))
    written = policy_export.save(tmp_path, 40, state, agent, env, module.POLICY_FIELDS,
                                 dict(algo="x", seed=1, env="cartpole-balance"), Layout(num_seeds=1))
    written.rename(tmp_path / "policy.msgpack")
    obs = np.zeros((1, obs_size), np.float32)
    np.save(tmp_path / "expected_action.npy", np.asarray(agent.act(state, obs, jax.random.key(0), True)))
    fresh = make(config, obs_size, action_size).init(jax.random.key(0))
    assert not np.allclose(agent.act(fresh, obs, jax.random.key(0), True), np.load(tmp_path / "expected_action.npy"))

    block = python_blocks(*README_EXAMPLES)[1].replace("flowrl_jax", module.__name__)
    filename = f"{module.__name__}.py"
    shutil.copy(ROOT / filename, tmp_path / filename)
    (tmp_path / "example.py").write_text("import numpy as np\n" + block + POLICY_CHECKS)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checks passed" in result.stdout


@pytest.mark.parametrize("make_agent, args", [(flowrl.make_flowrl, TINY), (sac.make_sac, SAC_TINY)],
                         ids=["flowrl", "sac"])
def test_a_harness_update_is_the_public_update_on_the_harness_batch(make_agent, args):
    """The chunk scans the harness's update, which draws a batch from the replay and calls the algorithm's `update`; the
    same batch and key through the public function give identical parameters, bit for bit."""
    env = BatchedEnv(resolve_task(args.env), args.num_envs, episode_length=args.episode_length)
    eval_env = BatchedEnv(resolve_task(args.env), args.eval_episodes, episode_length=args.episode_length)
    trainer = training.build_trainer(resolve(args), make_agent, env, eval_env)
    state = trainer.init(jax.random.key(0))
    for _ in range(5):  # 20 transitions stored, and one update per chunk from step 16 on
        state, _ = trainer.chunk(state)
    assert int(state.learner.updates) == 2 * args.updates_per_iteration
    key = jax.random.key(11)
    spec = resolve(args).spec
    through_harness, harness_metrics = jax.device_get(jax.jit(make_update(spec, trainer.agent))(state, key))

    batch_key, update_key = jax.random.split(key)
    batch = sample_batch(spec, trainer.agent, state.buffer, batch_key)
    assert batch["obs"].shape == (args.batch_size, env.obs_size) and batch["action"].shape[1] == env.action_size
    public, public_metrics = jax.device_get(jax.jit(trainer.agent.update)(state.learner, batch, update_key))
    for found, expected in zip(jax.tree.leaves(through_harness.learner), jax.tree.leaves(public)):
        np.testing.assert_array_equal(numbers(found), numbers(expected))  # FlowRL's held x_0 key too
    before = jax.device_get(state.learner)
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(public.q), jax.tree.leaves(before.q)))
    assert harness_metrics.keys() == public_metrics.keys()
    for name in public_metrics:
        np.testing.assert_array_equal(harness_metrics[name], public_metrics[name], err_msg=name)


@pytest.mark.parametrize("module, config", [(flowrl, flowrl.FlowRLConfig(hidden_dim=16)),
                                            (sac, sac.SACConfig(actor_hidden_dim=16, critic_hidden_dim=16))],
                         ids=["flowrl", "sac"])
def test_gradient_clipping_bounds_what_reaches_adam(module, config):
    """With --max-grad-norm 1e-12 every gradient reaches Adam at a norm far below Adam's ε (1e-8), so the step that
    Adam normalises by √v + ε shrinks ~10⁴-fold; without clipping the same update moves the parameters by ~lr."""
    make = module.make_flowrl if module is flowrl else module.make_sac
    obs_size, action_size = 3, 2
    keys = jax.random.split(jax.random.key(0), 5)
    batch = dict(obs=jax.random.normal(keys[0], (32, obs_size)), next_obs=jax.random.normal(keys[1], (32, obs_size)),
                 action=jax.random.uniform(keys[2], (32, action_size), minval=-1, maxval=1),
                 reward=jax.random.normal(keys[3], (32,)), mask=np.ones(32, np.float32))

    def largest_step(max_grad_norm):
        agent = make(dataclasses.replace(config, max_grad_norm=max_grad_norm), obs_size, action_size)
        state = agent.init(jax.random.key(1))
        new_state, _ = jax.jit(agent.update)(state, batch, keys[4])  # compiled: op by op takes longer
        return max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                   for a, b in zip(jax.tree.leaves(new_state.q), jax.tree.leaves(state.q)))

    assert largest_step(None) > 1e-4  # Adam's first step moves some weight by ~lr = 3e-4
    assert largest_step(1e-12) < 1e-7
    with pytest.raises(ValueError, match="--max-grad-norm must be a positive number"):
        make(dataclasses.replace(config, max_grad_norm=0.0), obs_size, action_size)


# FlowRL with a fresh x_0 every step, whose `observe` does nothing but normalise.
@pytest.mark.parametrize("module, config", [(flowrl, flowrl.FlowRLConfig(hidden_dim=16, x0_hold=1)),
                                            (sac, sac.SACConfig(actor_hidden_dim=16, critic_hidden_dim=16))],
                         ids=["flowrl", "sac"])
def test_observation_normalisation_uses_exact_running_statistics(module, config):
    make = module.make_flowrl if module is flowrl else module.make_sac
    plain = make(config, 3, 2)
    normalised = make(dataclasses.replace(config, normalize_observations=True), 3, 2)
    assert plain.init(jax.random.key(0)).obs_stats is None  # off by default: the state and `observe` stay as they are
    state = plain.init(jax.random.key(0))
    assert plain.observe(state, np.ones((4, 3), np.float32)) is state

    rng = np.random.default_rng(0)
    seen = [rng.normal([5.0, -2.0, 0.0], [3.0, 0.5, 1e-3], (n, 3)).astype(np.float32) for n in (1, 7, 16)]
    state = normalised.init(jax.random.key(0))
    for obs in seen:
        state = jax.jit(normalised.observe)(state, obs)
    everything = np.concatenate(seen)
    assert float(state.obs_stats.count) == len(everything)
    np.testing.assert_allclose(state.obs_stats.mean, everything.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.obs_stats.m2 / len(everything), everything.var(0), rtol=1e-4, atol=1e-9)

    # act sees (obs − mean) / std: the same parameters acting on hand-normalised observations give the same actions
    obs = rng.normal(size=(8, 3)).astype(np.float32)
    by_hand = np.clip((obs - everything.mean(0)) / np.sqrt(everything.var(0) + 1e-8), -10, 10)
    key = jax.random.key(3)
    np.testing.assert_allclose(normalised.act(state, obs, key, True),
                               plain.act(state.replace(obs_stats=None), by_hand, key, True), rtol=1e-4, atol=1e-5)
