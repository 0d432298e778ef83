"""Each algorithm file stands alone: the README's examples run from a lone copy, and the harness runs exactly the
public `update`."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from common import training
from common.envs import BatchedEnv
from tests.test_flowrl_train import TINY
from tests.test_sac import TINY as SAC_TINY

ROOT = Path(__file__).resolve().parents[1]
README_SECTION = "## Use the algorithm in your own code"

# Appended to a README block: it names `initial_state`, `state`, `actions`, `greedy_actions` and `metrics`.
CHECKS = """
import sys
assert "common" not in sys.modules, "the harness was imported"
leaves = lambda tree: jax.tree.leaves(jax.device_get(tree))
assert all(np.isfinite(leaf).all() for leaf in leaves((state, actions, greedy_actions, metrics))), "non-finite output"
assert actions.shape == greedy_actions.shape == (8, action_size) and np.abs(actions).max() <= 1.0
changed = [not np.array_equal(a, b) for a, b in zip(leaves(initial_state), leaves(state)) if a.dtype.kind == "f"]
assert changed and all(changed), f"{changed.count(False)} of {len(changed)} parameter arrays did not move"
print("checks passed")
"""


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.mark.parametrize("index, filename", [(0, "flowrl_jax.py"), (1, "sac_jax.py")], ids=["flowrl", "sac"])
def test_readme_example_runs_from_the_lone_copied_file(tmp_path, index, filename):
    blocks = readme_blocks()
    assert len(blocks) == 2 and filename.removesuffix(".py") in blocks[index]
    assert len(blocks[index].splitlines()) <= 26  # the README promises short examples
    shutil.copy(ROOT / filename, tmp_path / filename)
    (tmp_path / "example.py").write_text("import numpy as np\n" + blocks[index] + CHECKS)
    # Only the copied file is importable: the script's own directory is the first entry of sys.path, and nothing
    # points back at the repository.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checks passed" in result.stdout and "loss" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == ".py") == ["example.py", filename]


@pytest.mark.parametrize("make_agent, args", [(flowrl.make_flowrl, TINY), (sac.make_sac, SAC_TINY)],
                         ids=["flowrl", "sac"])
def test_a_harness_update_is_the_public_update_on_the_harness_batch(make_agent, args):
    """The chunk scans Trainer.update, which draws a batch from the replay and calls the algorithm's `update`; the
    same batch and key through the public function give identical parameters, bit for bit."""
    env = BatchedEnv(args.env, args.num_envs, episode_length=args.episode_length)
    trainer = training.make_trainer(args, make_agent, env,
                                    BatchedEnv(args.env, args.eval_episodes, episode_length=args.episode_length))
    state = trainer.init(jax.random.key(0))
    for _ in range(5):  # 20 transitions stored, and one update per chunk from step 16 on
        state, _ = trainer.chunk(state)
    assert int(state.learner.updates) == 2 * args.updates_per_iteration
    key = jax.random.key(11)
    through_harness, harness_metrics = jax.device_get(jax.jit(trainer.update)(state, key))

    batch_key, update_key = jax.random.split(key)
    batch = training.sample_batch(trainer.agent.config, state.buffer, batch_key, args.batch_size)
    assert batch["obs"].shape == (args.batch_size, env.obs_size) and batch["action"].shape[1] == env.action_size
    public, public_metrics = jax.device_get(jax.jit(trainer.agent.update)(state.learner, batch, update_key))
    for found, expected in zip(jax.tree.leaves(through_harness.learner), jax.tree.leaves(public)):
        np.testing.assert_array_equal(found, expected)
    before = jax.device_get(state.learner)
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(public.q), jax.tree.leaves(before.q)))
    assert harness_metrics.keys() == public_metrics.keys()
    for name in public_metrics:
        np.testing.assert_array_equal(harness_metrics[name], public_metrics[name], err_msg=name)
