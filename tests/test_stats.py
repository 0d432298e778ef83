"""Benchmark statistics (IQM, bootstrap and stratified-bootstrap CIs) and the suite plotter, on hand-checked data."""

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from benchmarks import plot
from benchmarks.stats import bootstrap_ci, dmc_normalized_score, iqm, stratified_bootstrap_ci

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_iqm_multiple_of_four():
    # 8 values: int(0.25 * 8) = 2 cut from each end (1, 2 and 7, 100), leaving 3, 4, 5, 6 -> 18 / 4 = 4.5.
    scores = np.array([[7, 2, 100, 4], [1, 6, 3, 5]])
    assert iqm(scores) == pytest.approx(4.5)


def test_iqm_cuts_whole_entries_like_rliable():
    # 10 values 1, 4, ..., 100 (squares): int(0.25 * 10) = 2 cut from each end, leaving 9, 16, 25, 36, 49, 64
    # -> 199 / 6. Weighting the boundary entries fractionally (cut 2.5 per end: half of 9 and of 64 kept) would
    # give (4.5 + 16 + 25 + 36 + 49 + 32) / 5 = 32.5 instead; rliable (scipy.stats.trim_mean) cuts whole entries.
    squares = np.arange(1, 11) ** 2
    assert iqm(squares[::-1]) == pytest.approx(199 / 6)
    assert iqm(squares) != pytest.approx(32.5)
    # 6 values: int(1.5) = 1 cut per end, leaving 2, 3, 4, 10 -> 19 / 4.
    assert iqm([10, 1, 3, 100, 2, 4]) == pytest.approx(19 / 4)
    # second check against rliable's own definition
    rng = np.random.default_rng(0)
    for count in range(1, 23):
        scores = rng.normal(size=count) ** 3
        assert iqm(scores) == pytest.approx(scipy.stats.trim_mean(scores, 0.25, axis=None))


def test_iqm_over_axes_reduces_each_slice():
    scores = np.stack([np.arange(8.0).reshape(2, 4), np.arange(8.0).reshape(2, 4) ** 2])  # [2, 2, 4]
    # slice 0: 0..7 -> mean(2, 3, 4, 5) = 3.5; slice 1: squares 0..49 -> mean(4, 9, 16, 25) = 13.5
    np.testing.assert_allclose(iqm(scores, axis=(1, 2)), [3.5, 13.5])
    np.testing.assert_allclose(iqm(scores.transpose(1, 2, 0), axis=(0, 1)), [3.5, 13.5])


def test_dmc_normalized_score():
    np.testing.assert_allclose(dmc_normalized_score([0, 250, 1000]), [0.0, 0.25, 1.0])


def test_bootstrap_ci_coverage_on_a_normal_mean():
    # 95 % percentile CIs of the mean of 30 draws from N(0, 1): about 95 % of them (a little less: the percentile
    # bootstrap undercovers at small n) must contain 0. A too narrow or too wide interval misses this band.
    rng = np.random.default_rng(42)
    experiments = 400
    covered = 0
    widths = []
    for _ in range(experiments):
        low, high = bootstrap_ci(rng.normal(size=30), np.mean, resamples=1_000, rng=rng)
        covered += low <= 0 <= high
        widths.append(high - low)
    assert 0.88 <= covered / experiments <= 0.99
    # the width matches 2 * 1.96 standard errors of the mean, 1 / sqrt(30)
    assert np.mean(widths) == pytest.approx(2 * 1.96 / np.sqrt(30), rel=0.1)


def test_bootstrap_ci_is_deterministic_and_per_column():
    values = np.random.default_rng(0).normal(size=(12, 3))
    columns = np.array([bootstrap_ci(column, rng=7) for column in values.T])
    np.testing.assert_allclose(np.array(bootstrap_ci(values, rng=7)).T, columns)
    assert bootstrap_ci(values[:, 0], rng=7) == bootstrap_ci(values[:, 0], rng=np.random.default_rng(7))
    assert bootstrap_ci(values[:, 0], rng=7) != bootstrap_ci(values[:, 0], rng=8)


def test_stratified_bootstrap_of_identical_runs_has_zero_width():
    scores = np.array([[0.2, 0.5, 0.9]] * 4)  # 4 runs, each task's runs all equal
    low, high = stratified_bootstrap_ci(scores, iqm, resamples=500)
    # every resample is the same matrix; its IQM: 12 values, cut 3 per end, leaving 0.2, 0.5 x4, 0.9 -> 3.1 / 6
    assert low == pytest.approx(3.1 / 6) and high == pytest.approx(3.1 / 6)


def test_constant_task_adds_no_width():
    # Mean over [varying task, constant task]: each resample's statistic is (mean of the resampled varying runs + c)
    # / 2, so the interval is the varying task's own interval shifted by c and halved; the constant task adds none.
    varying = np.array([0.1, 0.4, 0.5, 0.9, 0.3])
    scores = np.stack([varying, np.full(5, 0.6)], axis=1)
    low, high = stratified_bootstrap_ci(scores, np.mean, resamples=2_000, rng=3)
    alone_low, alone_high = bootstrap_ci(varying, np.mean, resamples=2_000, rng=3)
    assert alone_high - alone_low > 0.1
    assert (low, high) == pytest.approx(((alone_low + 0.6) / 2, (alone_high + 0.6) / 2))


def test_one_task_stratified_equals_plain_bootstrap():
    runs = np.random.default_rng(1).uniform(size=9)
    stratified = stratified_bootstrap_ci(runs[:, None], iqm, resamples=3_000, rng=5)
    plain = bootstrap_ci(runs, iqm, resamples=3_000, rng=5)
    assert stratified == pytest.approx(plain)
    assert plain[1] - plain[0] > 0.05


def test_stratified_ci_contains_point_and_shrinks_with_runs():
    rng = np.random.default_rng(0)
    widths = []
    for runs in (5, 100):
        scores = rng.normal(loc=[0.2, 0.5, 0.8], scale=0.1, size=(runs, 3))
        low, high = stratified_bootstrap_ci(scores, iqm, resamples=2_000)
        assert low <= iqm(scores) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1 / sqrt(runs): 20x the runs, ~4.5x narrower


def test_stratified_bootstrap_resamples_within_each_task():
    # task t holds values in [10 t, 10 t + 1): a resampled column must hold only its own task's values
    rng = np.random.default_rng(0)
    scores = 10 * np.arange(4) + rng.uniform(size=(6, 4))
    seen = []

    def recording_mean(resampled, axis):
        seen.append(resampled)
        return np.mean(resampled, axis=axis)

    stratified_bootstrap_ci(scores, recording_mean, resamples=300, rng=1)
    (resampled,) = seen
    assert resampled.shape == (300, 6, 4)
    for task in range(4):
        assert np.isin(resampled[:, :, task], scores[:, task]).all()
    # and it does resample: some resamples repeat a run, and the resamples differ from each other
    assert any(len(np.unique(resample[:, 0])) < 6 for resample in resampled)
    assert len({resample.tobytes() for resample in resampled}) > 250


# Synthetic suite: final eval returns per seed (seeds 0, 1, 2); earlier evals are the final ones scaled by the fraction.
FINALS = {
    ("cartpole-swingup", "flowrl"): [700, 760, 850],
    ("cartpole-swingup", "sac"): [400, 500, 900],
    ("walker-walk", "flowrl"): [300, 450, 900],
    ("walker-walk", "sac"): [100, 200, 600],
}
STEPS = {"cartpole-swingup": [0, 500, 1000], "walker-walk": [500, 1000, 1500, 2000]}  # budgets 1000 and 2000


def write_results(path, rows, header="seed,step,eval_return"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{seed},{step},{value}\n" for seed, step, value in rows))


@pytest.fixture
def suite_dir(tmp_path):
    for (task, algo), finals in FINALS.items():
        steps = STEPS[task]
        rows = [(seed, step, final * step / steps[-1]) for step in steps for seed, final in enumerate(finals)]
        write_results(tmp_path / task / f"{algo}.csv", rows)  # step-major, as seeds evaluated side by side
    return tmp_path


def test_plot_end_to_end(suite_dir, capsys):
    plot.main(["--results-dir", str(suite_dir), "--resamples", "2000"])
    for name in ("curves.png", "aggregate.png"):
        assert (suite_dir / name).read_bytes().startswith(PNG_MAGIC)
    with (suite_dir / "summary.csv").open(newline="") as file:
        summary = {(row["task"], row["algo"]): row for row in csv.DictReader(file)}
    # With 3 seeds a resample of one seed three times has probability 1/27 = 3.7 % > 2.5 %, so the ends of the
    # 95 % percentile CI of the mean are exactly the smallest and the largest seed.
    expected = {
        ("cartpole-swingup", "flowrl"): (1000, 770, 700, 850),
        ("cartpole-swingup", "sac"): (1000, 600, 400, 900),
        ("walker-walk", "flowrl"): (2000, 550, 300, 900),
        ("walker-walk", "sac"): (2000, 300, 100, 600),
    }
    assert set(summary) == set(expected)
    for key, (final_step, mean, low, high) in expected.items():
        row = summary[key]
        assert row["seeds"] == "3" and int(row["final_step"]) == final_step
        assert row["metric"] == "eval_return"
        assert [float(row[k]) for k in ("final_mean", "ci95_low", "ci95_high")] == [mean, low, high]
    assert "770.0 [700.0, 850.0]" in capsys.readouterr().out


def test_aggregate_by_hand(suite_dir):
    result = plot.aggregate(plot.read_suite(suite_dir), resamples=2000, seed=0)
    # Final normalised scores over both tasks, 6 per algorithm, int(1.5) = 1 cut per end:
    # FlowRL .30 .45 .70 .76 .85 .90 -> (.45 + .70 + .76 + .85) / 4 = .69
    # SAC    .10 .20 .40 .50 .60 .90 -> (.20 + .40 + .50 + .60) / 4 = .425
    expected_final = {"flowrl": 0.69, "sac": 0.425}
    assert result["tasks"] == ["cartpole-swingup", "walker-walk"]
    for algo, value in expected_final.items():
        point, low, high = result["final"][algo]
        assert point == pytest.approx(value)
        assert low <= point <= high and high - low > 0.05
        curve, curve_low, curve_high = result["curves"][algo]
        assert curve[-1] == pytest.approx(value)  # fraction 1 is the last evaluation
        assert np.all(curve_low <= curve + 1e-12) and np.all(curve <= curve_high + 1e-12)
    # walker-walk is first evaluated at 500 / 2000 of its budget: the common grid starts there
    assert result["fraction"][0] == pytest.approx(0.25) and result["fraction"][-1] == 1.0
    # returns grow linearly with the fraction, so the IQM curve at fraction 0.5 is half the final IQM
    middle = np.argmin(np.abs(result["fraction"] - 0.5))
    assert result["curves"]["flowrl"][0][middle] == pytest.approx(0.69 * result["fraction"][middle])


def test_aggregate_skips_a_task_missing_an_algorithm(suite_dir, capsys):
    write_results(suite_dir / "hopper-hop" / "sac.csv", [(0, 1000, 5.0)])
    result = plot.aggregate(plot.read_suite(suite_dir), resamples=200, seed=0)
    assert result["tasks"] == ["cartpole-swingup", "walker-walk"]
    assert "hopper-hop" in capsys.readouterr().err


@pytest.mark.parametrize("header", ["seed,step,return", "step,seed,eval_return", ""])
def test_bad_header_exits_2(suite_dir, header, capsys):
    write_results(suite_dir / "walker-walk" / "sac.csv", [(0, 1000, 5.0)], header=header)
    with pytest.raises(SystemExit) as exit_info:
        plot.main(["--results-dir", str(suite_dir)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "header" in error and "sac.csv" in error
    assert not (suite_dir / "curves.png").exists()


def test_no_results_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main(["--results-dir", str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    assert "no <task>/<algo>.csv" in capsys.readouterr().err


def test_learning_table_largest_drop_counts_only_after_the_curve_nears_its_best():
    from benchmarks.learning_table import largest_drop

    # Best 1000: 90 % of it is first reached at 950; the dip before it (500 -> 200) does not count, the one after
    # (980 -> 400) does.
    assert largest_drop([500.0, 200.0, 950.0, 980.0, 400.0, 1000.0]) == pytest.approx(580.0)
    assert largest_drop([100.0, 400.0, 990.0, 1000.0]) == 0.0  # a climb that never falls back


def test_learning_table_plots_one_panel_per_file_and_names_an_empty_one(tmp_path, capsys):
    import matplotlib.image as mpimg

    from benchmarks import learning_table

    header = "step,seed,mode,return_mean,return_std\n"
    paths = []
    for name, offset in (("rho0.95", 0.0), ("rho0.05", 100.0)):
        path = tmp_path / f"{name}.csv"
        path.write_text(header + "".join(f"{step},{seed},stochastic,{offset + step / 10 + seed},1.0\n"
                                         for step in (1000, 2000, 3000) for seed in (1, 2)))
        paths.append(str(path))
    png = tmp_path / "curves.png"
    learning_table.main([*paths, "--plot", str(png)])
    out = capsys.readouterr().out
    assert "final: mean 402, median 402, range 401–402" in out  # rho0.05: 100 + 3000/10 + seed
    assert png.read_bytes()[:8] == PNG_MAGIC
    pixels = mpimg.imread(png)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # two panels side by side
    assert pixels.std() > 0.05

    empty = tmp_path / "empty.csv"
    empty.write_text(header)
    with pytest.raises(ValueError, match="empty.csv has no eval rows"):
        learning_table.plot_learning_curves([Path(paths[0]), empty], tmp_path / "bad.png")


def test_a_task_scored_by_success_enters_the_aggregate_as_its_success_rate(tmp_path, capsys):
    for algo, success in (("flowrl", 0.8), ("sac", 0.2)):
        write_results(tmp_path / "myoHandReachRandom-v0" / f"{algo}.csv",
                      [(seed, step, success * step / 1000) for step in (500, 1000) for seed in range(3)],
                      header="seed,step,eval_success")
    result = plot.plot_suite(tmp_path, resamples=200)
    assert result["aggregate"]["final"]["flowrl"][0] == pytest.approx(0.8)  # not divided by 1000 like a return
    assert result["aggregate"]["final"]["sac"][0] == pytest.approx(0.2)
    assert [row["metric"] for row in result["summary"]] == ["eval_success", "eval_success"]
    assert "0.800 [0.800, 0.800]" in capsys.readouterr().out
