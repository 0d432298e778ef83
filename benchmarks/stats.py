"""Aggregate statistics over runs and tasks: interquartile mean and percentile-bootstrap confidence intervals.

The method follows Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice" (the rliable library),
reimplemented in numpy: rliable 1.2.0 ships only as a source archive and pulls in arch, statsmodels, pandas and
seaborn, none of which the project otherwise needs.

Every statistic here is a numpy-style reduction called as `statistic(x, axis=...)`, so that all bootstrap
resamples are reduced in one vectorised call instead of a Python loop.
"""

import numpy as np

DMC_MAX_RETURN = 1000.0
"""A DM Control episode lasts 1000 steps with a reward in [0, 1] per step, so returns lie in [0, 1000]."""


def dmc_normalized_score(returns) -> np.ndarray:
    """DM Control return as a score in [0, 1], comparable across tasks."""
    return np.asarray(returns, dtype=np.float64) / DMC_MAX_RETURN


def normalized_score(values, metric: str) -> np.ndarray:
    """A results column as a score in [0, 1]: `eval_success` (MyoSuite's success rate, as its published numbers are
    aggregated) is one already; `eval_return` is a DM Control return."""
    if metric == "eval_success":
        return np.asarray(values, dtype=np.float64)
    return dmc_normalized_score(values)


def iqm(scores, axis=None):
    """Interquartile mean: the mean of the middle 50 % of the entries over `axis` (default: all entries).

    The definition is rliable's `aggregate_iqm`, which is `scipy.stats.trim_mean(scores, 0.25, axis=None)`:
    int(0.25 * n) whole entries are cut from each end and the rest averaged. There is no fractional weighting
    of the boundary entries, so when n is not a multiple of 4 slightly more than half of the entries are kept
    (n = 10 keeps the middle 6).
    """
    scores = np.asarray(scores, dtype=np.float64)
    axes = tuple(range(scores.ndim)) if axis is None else tuple(np.atleast_1d(axis))
    # Gather the reduced axes at the end and flatten them into one, so one sort serves any set of axes.
    moved = np.moveaxis(scores, axes, tuple(range(scores.ndim - len(axes), scores.ndim)))
    flat = moved.reshape(*moved.shape[: moved.ndim - len(axes)], -1)
    count = flat.shape[-1]
    if count == 0:
        raise ValueError("iqm of no scores")
    cut = int(0.25 * count)
    return np.sort(flat, axis=-1)[..., cut : count - cut].mean(axis=-1)


def percentile_interval(bootstrap_statistics, confidence: float = 0.95):
    """(low, high): the central `confidence` mass of the bootstrap distribution (axis 0 holds the resamples)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(bootstrap_statistics, [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_ci(values, statistic=np.mean, confidence: float = 0.95, resamples: int = 10_000, rng=0):
    """Percentile-bootstrap CI of `statistic` over runs: the runs (axis 0) are resampled with replacement.

    values: [runs] or [runs, ...]; with extra axes (e.g. one per eval step) each column gets its own interval
    from the same resampled runs. `statistic(x, axis=1)` reduces the runs axis of x [resamples, runs, ...].
    rng: a seed or a np.random.Generator; the same seed gives the same interval.
    Returns (low, high), scalars or arrays of shape values.shape[1:].
    """
    values = np.asarray(values, dtype=np.float64)
    runs = len(values)
    if runs == 0:
        raise ValueError("bootstrap_ci of no runs")
    run_picks = np.random.default_rng(rng).integers(0, runs, size=(resamples, runs))
    return percentile_interval(statistic(values[run_picks], axis=1), confidence)


def stratified_bootstrap_ci(scores, statistic=iqm, confidence: float = 0.95, resamples: int = 10_000, rng=0):
    """Stratified-bootstrap CI of an aggregate over tasks (Agarwal et al. 2021).

    scores: [runs, tasks]. Each resample draws, within every task separately, `runs` runs with replacement from
    that task's own runs (tasks themselves are never resampled or mixed), then computes
    `statistic(x, axis=(1, 2))` over the resampled [runs, tasks] matrix; the interval is the percentile one.
    rng: a seed or a np.random.Generator; the same seed gives the same interval.
    Returns (low, high).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, tasks] matrix, got shape {scores.shape}")
    runs, tasks = scores.shape
    # Drawn task by task (task-major), so task 0 uses the same draws as a one-task bootstrap_ci with this rng.
    run_picks = np.random.default_rng(rng).integers(0, runs, size=(tasks, resamples, runs))
    task_index = np.arange(tasks)[:, None, None]
    resampled = np.moveaxis(scores.T[task_index, run_picks], 0, -1)  # [resamples, runs, tasks]
    return percentile_interval(statistic(resampled, axis=(1, 2)), confidence)
