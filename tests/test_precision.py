"""`--compute-dtype bfloat16`: one update agrees with float32 closely but not exactly, every matmul runs in bfloat16
while the state stays float32, a non-finite value still stops the run, a resume keeps the run's precision, and the
exported policy acts in it."""

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from benchmarks import algorithms, precision_agreement
from common.core.chunk import params_finite
from common.core.layout import Layout
from common.envs.tasks import task_sizes
from common.run import cli, policy_export
from common.run.callbacks import check_finite
from tests.test_flowrl_train import TINY as FLOWRL_TINY
from tests.test_sac import TINY as SAC_TINY

# The tiny runs' configs (width 32) and task sizes, at their batch of 16: the shapes the rest of the suite compiles.
CASES = {"flowrl": (flowrl, FLOWRL_TINY.split()[1]), "sac": (sac, SAC_TINY.split()[1])}
OBS_SIZE, ACTION_SIZE = task_sizes()["cartpole-balance", "playground"]
BATCH_SIZE = 16
# Bounds set from precision_agreement.measure at these sizes over seeds 0–7 (the test runs seed 0): the largest
# relative difference of a loss or weight was 1.6e-2 (SAC's critic loss), of a parameter step 5.4e-2 (SAC's actor),
# the smallest of a parameter step 2.8e-3. The upper bounds leave about 3× that margin; the lower one fails when
# both runs are float32 (their difference is exactly 0).
METRIC_BOUND, STEP_BOUND, STEP_FLOOR = 5e-2, 0.15, 1e-3
OLD_RUN = Path(__file__).parent / "fixtures" / "run_before_layout"


@pytest.fixture(scope="module", params=list(CASES))
def agreement(request):
    _, config = CASES[request.param]
    return request.param, precision_agreement.measure(request.param, config, OBS_SIZE, ACTION_SIZE, BATCH_SIZE)


def float_leaves(tree) -> list:
    return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]


def test_a_bfloat16_update_agrees_with_float32_within_bfloat16_rounding(agreement):
    algo, result = agreement
    differences = result.differences
    assert set(differences) == {*precision_agreement.METRICS[algo],
                                *(f"{network} step" for network in precision_agreement.NETWORKS[algo])}
    for name, difference in differences.items():
        if name.endswith(" step"):
            assert STEP_FLOOR < difference < STEP_BOUND, (name, difference)
        else:
            assert 0 < difference < METRIC_BOUND, (name, difference)
    # The state stays float32 (parameters, optimiser states, statistics), leaf for leaf as the float32 update's.
    after, expected = result.after["bfloat16"], result.after["float32"]
    assert jax.tree.structure(after) == jax.tree.structure(expected)
    assert [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(after)] == [
        (leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(expected)]
    assert {leaf.dtype for leaf in float_leaves(after)} == {np.dtype(np.float32)}
    assert all(value.dtype == np.float32 for value in result.metrics["bfloat16"].values())


@pytest.mark.parametrize("algo", list(CASES))
def test_every_matmul_of_the_update_runs_in_the_compute_dtype(algo):
    _, config = CASES[algo]
    make = algorithms.ALGORITHMS[algo][1]
    batch = precision_agreement.random_batch(jax.random.key(0), BATCH_SIZE, OBS_SIZE, ACTION_SIZE)

    def matmul_dtypes(compute_dtype: str) -> list[str]:
        agent = make(dataclasses.replace(config, compute_dtype=compute_dtype), OBS_SIZE, ACTION_SIZE)
        state = jax.eval_shape(agent.init, jax.random.key(1))
        jaxpr = str(jax.make_jaxpr(agent.update)(state, batch, jax.random.key(2)))
        return re.findall(r"(\w+)\[[\d,]*\] = dot_general", jaxpr)

    float32, bfloat16 = matmul_dtypes("float32"), matmul_dtypes("bfloat16")
    assert len(float32) == len(bfloat16) > 10
    assert set(float32) == {"f32"} and set(bfloat16) == {"bf16"}


def test_a_non_finite_value_in_a_bfloat16_update_stops_the_run(agreement):
    """bfloat16 keeps NaN as NaN: the harness's check after each chunk (check_finite) sees it in the float32
    metrics and parameters, as in a float32 run."""
    _, result = agreement
    batch = dict(result.batch, obs=result.batch["obs"].at[0, 0].set(jnp.nan))
    state, metrics = jax.device_get(result.updates["bfloat16"](result.before, batch, jax.random.key(3)))
    chunk_metrics = {name: np.array([value]) for name, value in metrics.items()}
    chunk_metrics["params_finite"] = np.array([params_finite(state)])
    assert not chunk_metrics["params_finite"][0] and np.isnan(chunk_metrics["critic_loss"][0])
    with pytest.raises(FloatingPointError, match="non-finite network parameters"):
        check_finite(chunk_metrics, step=64, seeds=[1])


def test_an_exported_policy_acts_in_the_precision_it_was_trained_in(agreement, tmp_path):
    algo, result = agreement
    module, config = CASES[algo]
    make = algorithms.ALGORITHMS[algo][1]
    agent = make(dataclasses.replace(config, compute_dtype="bfloat16"), OBS_SIZE, ACTION_SIZE)
    trained = result.after["bfloat16"]
    env = SimpleNamespace(obs_size=OBS_SIZE, action_size=ACTION_SIZE, action_low=-np.ones(ACTION_SIZE),
                          action_high=np.ones(ACTION_SIZE))
    path = policy_export.save(tmp_path, 64, trained, agent, env, module.POLICY_FIELDS,
                              dict(algo=algo, seed=1, env="cartpole-balance"), Layout(num_seeds=1))
    loaded_agent, loaded_state, _ = module.load_policy(path)
    assert loaded_agent.config.compute_dtype == "bfloat16"

    obs, key = np.asarray(result.batch["obs"][:8]), jax.random.key(4)
    action = np.asarray(agent.act(trained, obs, key, True))
    np.testing.assert_array_equal(loaded_agent.act(loaded_state, obs, key, True), action)
    in_float32 = make(dataclasses.replace(config, compute_dtype="float32"), OBS_SIZE, ACTION_SIZE)
    assert not np.array_equal(in_float32.act(trained, obs, key, True), action)  # the precision shows in the actions


def test_a_resumed_run_keeps_its_precision_and_refuses_another(tmp_path, refused):
    """The precision is a flag that config.json records. Parameters and optimiser states are float32 in either
    precision (above), but another precision changes how every later update computes, so a resumed run would no
    longer equal the uninterrupted one: a resume with another precision is refused like any such flag."""
    args_class = cli.script_args(flowrl.FlowRLConfig)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(
        dataclasses.replace(FLOWRL_TINY, compute_dtype="bfloat16"))))
    resumed = cli.parse_args(args_class, flowrl.make_flowrl, ["--resume", str(tmp_path)])
    assert resumed.config.compute_dtype == "bfloat16"
    error = refused(args_class, flowrl.make_flowrl, ["--resume", str(tmp_path), "--compute-dtype", "float32"])
    assert "--compute-dtype: 'bfloat16' in the run, 'float32' now" in error
    # A run written before the flag existed trained in float32: it is refused bfloat16 too.
    assert "compute_dtype" not in json.loads((OLD_RUN / "config.json").read_text())
    error = refused(args_class, flowrl.make_flowrl, ["--resume", str(OLD_RUN), "--compute-dtype", "bfloat16"])
    assert "--compute-dtype: 'float32' in the run, 'bfloat16' now" in error


@pytest.mark.parametrize("make, config_class", [(flowrl.make_flowrl, flowrl.FlowRLConfig),
                                                (sac.make_sac, sac.SACConfig)], ids=["flowrl", "sac"])
def test_an_unknown_compute_dtype_is_refused_before_anything_is_built(make, config_class):
    with pytest.raises(ValueError, match="--compute-dtype must be `float32` or `bfloat16`, got 'float16'"):
        make(config_class(compute_dtype="float16"), 1, 1)
