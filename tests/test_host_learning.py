"""FlowRL learns on a host backend: Gymnasium's InvertedPendulum-v4, whose episodes end when the pole falls, so the
terminal mask and the resets on the host both matter."""

import numpy as np

import flowrl_jax as flowrl
from common.run import cli, training
from common.run.plotting import read_eval_csv
from common.run.args import resolve


def test_flowrl_learns_inverted_pendulum_on_the_host(tmp_path):
    """Judges the final performance: the mean of the last three evaluations (6 k, 7 k and 8 k env steps; 15
    episodes), never the best one.

    Calibration (2-core CPU, this config, 2026-11-30): a uniform random policy scores 6.1 ± 3.4 per episode (200
    episodes, at most 23), so a 15-episode mean of it sits at 6.1 ± 0.9. FlowRL, seeds 1–5 in one program
    (`python flowrl_jax.py --env InvertedPendulum-v4 --num-seeds 5 --num-envs 8 --updates-per-iteration 8
    --batch-size 128 --hidden-dim 64 --start-steps 1000 --total-steps 8000 --log-interval 1000 --eval-interval 1000
    --eval-episodes 5 --buffer-size 100000`, with a fresh x₀ per action as `--x0-hold 1` does): the mean of the last three evaluations was 615 / 502 / 1000 / 711 /
    185 (seed 5 learns later: 297 at 8 k); the single run of seed 1 that this test makes gave 404 (126, 87, 1000).
    The pendulum is balanced for the full 1 000 steps or falls within tens, so evaluations jump between the two. The
    threshold, 60, is ~60 standard errors above random and 125 below the weakest seed, as exact numbers differ
    between CPU hosts."""
    args = cli.script_args(flowrl.FlowRLConfig)(
        env="InvertedPendulum-v4", backend="gymnasium", num_envs=8, updates_per_iteration=8, batch_size=128,
        hidden_dim=64, start_steps=1_000, total_steps=8_000, log_interval=1_000, eval_interval=1_000,
        eval_episodes=5, buffer_size=100_000, run_root=str(tmp_path), seed=1, x0_hold=1)
    training.run(resolve(args), flowrl.make_flowrl, "flowrl")
    (run_dir,) = tmp_path.iterdir()
    final_returns = read_eval_csv(run_dir / "eval.csv")["return_mean"][-3:]
    assert len(final_returns) == 3 and np.mean(final_returns) > 60, final_returns
