"""The H200 projection (benchmarks/projection.py): the committed CSV must agree with the FLOPs that
benchmarks/flops.py counts in the algorithm files as they are now (so a change to an update makes it stale, and this
fails), and with the arithmetic that turns FLOPs and a peak into rates."""

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import flowrl_jax
import sac_jax
from benchmarks import flops
from benchmarks.projection import MJX_HUMANOID_CONTROL_STEPS_PER_S
from common.envs.tasks import resolve_task

CSV = Path(__file__).resolve().parents[1] / "benchmarks/results/projection_h200.csv"
ALGORITHMS = {"flowrl": (flowrl_jax.FlowRLConfig, flowrl_jax.make_flowrl), "sac": (sac_jax.SACConfig, sac_jax.make_sac)}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with CSV.open(newline="") as file:
        return list(csv.DictReader(file))


def test_every_row_is_a_projection_of_the_scripts_defaults(rows):
    assert {row["figure"] for row in rows} == {"projection"}
    for algo in ALGORITHMS:
        mine = [row for row in rows if row["algo"] == algo]
        assert sorted({int(row["num_envs"]) for row in mine}) == [128, 512, 2048, 4096]
        assert {(row["updates_per_iteration"], row["batch_size"]) for row in mine} == {("8", "512")}
        assert len(mine) == 4 * 4  # four E × four peaks


def test_humanoid_walk_sizes(rows):
    from common.envs.playground import BatchedEnv

    env = BatchedEnv(resolve_task("humanoid-walk"), 1)
    assert {(int(row["obs_size"]), int(row["action_size"])) for row in rows} == {(env.obs_size, env.action_size)}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_flops_match_what_flops_py_counts_now(rows, algo):
    mine = [row for row in rows if row["algo"] == algo]
    obs_size, action_size, batch_size = (int(mine[0][k]) for k in ("obs_size", "action_size", "batch_size"))
    config_class, make = ALGORITHMS[algo]
    agent = make(config_class(), obs_size, action_size)
    state = agent.init(jax.random.key(0))
    batch = dict(obs=jnp.ones((batch_size, obs_size)), action=jnp.ones((batch_size, action_size)),
                 reward=jnp.ones(batch_size), next_obs=jnp.ones((batch_size, obs_size)), mask=jnp.ones(batch_size))
    fewest, most = flops.matmul_flops(agent.update, state, batch, jax.random.key(3))
    per_update = fewest + (most - fewest) / getattr(agent.config, "policy_delay", 1)
    for row in mine:
        per_act = flops.matmul_flops(agent.act, state, jnp.ones((int(row["num_envs"]), obs_size)),
                                     jax.random.key(4))[1]
        assert float(row["gflop_per_update"]) == pytest.approx(per_update / 1e9, rel=1e-5)
        assert float(row["gflop_per_act"]) == pytest.approx(per_act / 1e9, rel=1e-5)


def test_rates_follow_from_flops_and_peak(rows):
    for row in rows:
        num_envs, updates = int(row["num_envs"]), int(row["updates_per_iteration"])
        iteration_flop = updates * float(row["gflop_per_update"]) * 1e9 + float(row["gflop_per_act"]) * 1e9
        iteration_s = iteration_flop / (float(row["peak_tflops"]) * 1e12)
        assert float(row["updates_per_s"]) == pytest.approx(updates / iteration_s, rel=1e-5)
        assert float(row["env_steps_per_s"]) == pytest.approx(num_envs / iteration_s, rel=1e-5)
        with_mjx_s = num_envs / MJX_HUMANOID_CONTROL_STEPS_PER_S + iteration_s
        assert float(row["env_steps_per_s_with_mjx"]) == pytest.approx(num_envs / with_mjx_s, rel=1e-5)
        assert float(row["updates_per_s_with_mjx"]) == pytest.approx(updates / with_mjx_s, rel=1e-5)
        # the envs at the anchor rate can only slow the iteration down, and never past the anchor itself
        assert float(row["env_steps_per_s_with_mjx"]) < min(float(row["env_steps_per_s"]),
                                                              MJX_HUMANOID_CONTROL_STEPS_PER_S)
