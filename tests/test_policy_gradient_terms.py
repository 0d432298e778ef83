"""benchmarks/policy_gradient_terms.py reads one seed's learner out of a several-seed checkpoint exactly, and weights
the flow-matching term with the run's own λ."""

import jax
import jax.numpy as jnp
import numpy as np

import flowrl_jax as flowrl
from benchmarks import policy_gradient_terms
from common.core import replay
from common.run import checkpoint
from common.core.chunk import TrainState
from tests.checkpoints import numbers

OBS_SIZE, ACTION_SIZE, ROWS = 3, 2, 64


def save_two_seed_run(directory, lagrange: float):
    """A checkpoint laid out as a `--num-seeds 2` FlowRL run's (seed axis first, none on the update counter)."""
    agent = flowrl.make_flowrl(flowrl.FlowRLConfig(hidden_dim=16, lagrange=lagrange), OBS_SIZE, ACTION_SIZE)
    learners = [agent.init(jax.random.key(seed)) for seed in (1, 2)]
    learner = jax.tree.map(lambda *leaves: jnp.stack(leaves), *learners).replace(updates=learners[0].updates)
    data = dict(obs=jax.random.normal(jax.random.key(3), (2, ROWS, OBS_SIZE)),
                action=jax.random.uniform(jax.random.key(4), (2, ROWS, ACTION_SIZE), minval=-1.0, maxval=1.0))
    buffer = replay.ReplayBuffer(data=data, position=jnp.zeros(2, jnp.int32), size=jnp.full(2, ROWS, jnp.int32))
    state = TrainState(learner=learner, buffer=buffer, env=jnp.zeros(2), key=jax.random.split(
        jax.random.key(5), 2), env_steps=jnp.int32(ROWS))
    config = dict(seed=1, num_seeds=2, batch_size=32, hidden_dim=16, lagrange=lagrange, policy_loss="reference")
    path = checkpoint.save(directory, ROWS, state, {"algo": "flowrl", "config": config}, keep=1)
    return path, learners, agent


def test_one_seeds_learner_is_restored_exactly(tmp_path):
    path, learners, agent = save_two_seed_run(tmp_path, lagrange=0.1)
    arrays, _ = checkpoint.read_by_path(path)
    restored = policy_gradient_terms.restore_learner(agent.init(jax.random.key(0)), arrays, 1)
    for found, expected in zip(jax.tree.leaves(restored), jax.tree.leaves(learners[1])):
        np.testing.assert_array_equal(numbers(found), numbers(expected))  # the held x_0's key too


def test_the_flow_matching_term_scales_with_the_runs_lambda(tmp_path):
    # At initialisation the gaps q_β − q_π are small, so every weight λ·exp(g − mean g) sits inside its clip range
    # [1e-3, 1] for both λ: ten times λ is ten times the flow-matching term's gradient, and the Q term's is unchanged.
    measured = {}
    for lagrange in (0.01, 0.1):
        (tmp_path / str(lagrange)).mkdir()
        path, _, _ = save_two_seed_run(tmp_path / str(lagrange), lagrange)
        metadata, _, measured[lagrange] = policy_gradient_terms.measure(
            policy_gradient_terms.Args(checkpoint=str(path), batches=2))
        assert metadata["config"]["lagrange"] == lagrange and len(measured[lagrange]) == 2
    for small, large in zip(measured[0.01], measured[0.1]):
        assert np.isclose(large["q_term_grad"], small["q_term_grad"], rtol=1e-5)
        assert np.isclose(large["cfm_term_grad"], 10 * small["cfm_term_grad"], rtol=1e-3)
        assert 0 < small["dq_da"] and -1 <= small["cosine"] <= 1
