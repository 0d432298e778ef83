"""Learning curves and aggregate scores (IQM, stratified-bootstrap 95 % CIs) of a benchmark suite.

Reads <results-dir>/<task>/<algo>.csv (header `seed,step,eval_return`, or `seed,step,eval_success` for a task scored
by success rate such as MyoSuite's; one row per seed per evaluation) and writes, into <results-dir>:
  curves.png     one panel per task: mean eval return (or success rate) over seeds against env steps, 95 % bootstrap
                 CI over seeds
  aggregate.png  algorithms across tasks: IQM of the normalised score (return / 1000, or the success rate) against
                 the fraction of the training budget, and the final IQM, both with 95 % stratified-bootstrap CIs
  summary.csv    task, algo, seeds, final step, metric, its final mean and 95 % bootstrap CI (also printed)

    python benchmarks/plot.py --suite cpu          # benchmarks/results/cpu
    python benchmarks/plot.py --results-dir /tmp/my_suite
"""

import csv
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import tyro
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.stats import bootstrap_ci, iqm, normalized_score, stratified_bootstrap_ci  # noqa: E402

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
METRICS = ("eval_return", "eval_success")  # the third column of a results CSV
ALGO_LABELS = {"flowrl": "FlowRL", "sac": "SAC"}
ALGO_ORDER = list(ALGO_LABELS)  # known algorithms first, in this order, so colours stay fixed across plots
GRID_POINTS = 51  # budget fractions on which the aggregate curve is evaluated


@dataclasses.dataclass
class Args:
    suite: str = "cpu"
    """Suite to plot: reads and writes benchmarks/results/<suite>/."""
    results_dir: str | None = None
    """Directory holding <task>/<algo>.csv, read and written instead of the suite's (overrides --suite)."""
    resamples: int = 10_000
    """Bootstrap resamples per confidence interval."""
    seed: int = 0
    """Seed of the bootstrap resampling (same seed, same intervals)."""


class ResultsError(Exception):
    """Results that cannot be plotted; the CLI prints it as one line and exits 2."""


@dataclasses.dataclass
class Runs:
    """All seeds of one task and algorithm."""

    seeds: list[int]
    steps: np.ndarray  # [evals], shared by every seed
    returns: np.ndarray  # [seeds, evals]: eval returns, or success rates where metric is eval_success
    metric: str = "eval_return"  # one of METRICS

    def scores(self, values) -> np.ndarray:
        """`values` (some of `returns`) as normalised scores in [0, 1]."""
        return normalized_score(values, self.metric)


def warn(message: str) -> None:
    sys.stdout.flush()  # keep the warning in place among the printed tables
    print(f"warning: {message}", file=sys.stderr)


def label(algo: str) -> str:
    return ALGO_LABELS.get(algo, algo)


def read_runs(path: Path) -> Runs:
    with path.open(newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or header[:2] != ["seed", "step"] or len(header) != 3 or header[2] not in METRICS:
            raise ResultsError(f"{path}: header is {header}, expected seed,step, then one of {', '.join(METRICS)}")
        by_seed: dict[int, dict[int, float]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                seed, step, eval_return = int(row[0]), int(row[1]), float(row[2])
            except (ValueError, IndexError):
                raise ResultsError(f"{path}:{line}: cannot read row {row}") from None
            if step in by_seed.setdefault(seed, {}):
                raise ResultsError(f"{path}:{line}: seed {seed} has step {step} twice")
            by_seed[seed][step] = eval_return
    if not by_seed:
        raise ResultsError(f"{path}: no rows")
    seeds = sorted(by_seed)
    steps = sorted(by_seed[seeds[0]])
    for seed in seeds:
        if sorted(by_seed[seed]) != steps:
            raise ResultsError(f"{path}: seed {seed} was evaluated at other steps than seed {seeds[0]}")
    returns = np.array([[by_seed[seed][step] for step in steps] for seed in seeds])
    return Runs(seeds, np.array(steps, dtype=np.int64), returns, header[2])


def read_suite(results_dir: Path) -> dict[str, dict[str, Runs]]:
    """{task: {algo: Runs}}, tasks sorted by name and algorithms in ALGO_ORDER, then by name."""
    paths = sorted(results_dir.glob("*/*.csv"))
    if not paths:
        raise ResultsError(f"no <task>/<algo>.csv files under {results_dir}")
    suite: dict[str, dict[str, Runs]] = {}
    for path in paths:
        suite.setdefault(path.parent.name, {})[path.stem] = read_runs(path)
    order = lambda algo: (ALGO_ORDER.index(algo) if algo in ALGO_ORDER else len(ALGO_ORDER), algo)  # noqa: E731
    return {task: {algo: runs[algo] for algo in sorted(runs, key=order)} for task, runs in suite.items()}


def algorithms(suite: dict[str, dict[str, Runs]]) -> list[str]:
    return list(dict.fromkeys(algo for runs in suite.values() for algo in runs))


def summarize(suite, resamples: int, seed: int) -> list[dict]:
    """One row per task and algorithm: the final eval return (or success rate), mean over seeds with a 95 %
    bootstrap CI."""
    rows = []
    for task, by_algo in suite.items():
        for algo, runs in by_algo.items():
            final = runs.returns[:, -1]
            low, high = bootstrap_ci(final, np.mean, resamples=resamples, rng=seed)
            digits = 3 if runs.metric == "eval_success" else 2
            rows.append(dict(task=task, algo=algo, seeds=len(runs.seeds), final_step=int(runs.steps[-1]),
                             metric=runs.metric, final_mean=round(float(final.mean()), digits),
                             ci95_low=round(float(low), digits), ci95_high=round(float(high), digits)))
    return rows


def write_summary(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    width = max(len(row["task"]) for row in rows)
    print(f"{'task':<{width}}  {'algo':<8}{'seeds':>5}  {'final step':>10}  final eval return or success, mean "
          f"[95% CI]")
    for row in rows:
        form = ".3f" if row["metric"] == "eval_success" else ".1f"
        print(f"{row['task']:<{width}}  {row['algo']:<8}{row['seeds']:>5}  {row['final_step']:>10}  "
              f"{row['final_mean']:{form}} [{row['ci95_low']:{form}}, {row['ci95_high']:{form}}]")


def plot_curves(suite, colors: dict[str, str], resamples: int, seed: int, path: Path) -> None:
    columns = min(3, len(suite))
    rows = math.ceil(len(suite) / columns)
    fig = Figure(figsize=(max(4.3 * columns, 6.0), 3.3 * rows + 0.6), layout="constrained")  # room for the legend
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (task, by_algo) in zip(axes, suite.items()):
        for algo, runs in by_algo.items():
            # one CI per eval step, computed step by step to keep memory at [resamples, seeds]
            low, high = np.array([bootstrap_ci(returns_at_step, np.mean, resamples=resamples, rng=seed)
                                  for returns_at_step in runs.returns.T]).T
            ax.plot(runs.steps, runs.returns.mean(axis=0), color=colors[algo], label=label(algo))
            ax.fill_between(runs.steps, low, high, color=colors[algo], alpha=0.2, linewidth=0)
        seed_counts = {len(runs.seeds) for runs in by_algo.values()}
        seeds_text = (f"{seed_counts.pop()} seeds" if len(seed_counts) == 1 else
                      "seeds: " + ", ".join(f"{label(a)} {len(r.seeds)}" for a, r in by_algo.items()))
        ax.set_title(f"{task} ({seeds_text})", fontsize="medium")
        metric = next(iter(by_algo.values())).metric
        ax.set(xlabel="env steps", ylabel="eval success rate" if metric == "eval_success" else "eval return")
        ax.xaxis.set_major_formatter(EngFormatter())  # 500k, 1M rather than an offset like 1e6
        ax.grid(alpha=0.3)
    for ax in axes[len(suite):]:
        ax.set_visible(False)
    handles = [next(line for ax in axes for line in ax.get_lines() if line.get_label() == label(algo))
               for algo in colors]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(colors), frameon=False,
               title="mean eval return (or success rate) over seeds; shaded: 95 % bootstrap CI over seeds")
    fig.savefig(path, dpi=120)


def aggregate(suite, resamples: int, seed: int) -> dict:
    """IQM of the normalised score across the tasks that every algorithm has, over the budget and at the end.

    Returns {"tasks", "fraction" [grid], "curves": {algo: (iqm, low, high) [grid]}, "final": {algo: (iqm, low, high)}}.
    """
    algos = algorithms(suite)
    tasks = [task for task, by_algo in suite.items() if set(by_algo) == set(algos)]
    if skipped := [task for task in suite if task not in tasks]:
        warn(f"left out of the aggregate (not run by every algorithm): {', '.join(skipped)}")
    if not tasks:
        raise ResultsError(f"no task has results for every algorithm ({', '.join(algos)})")
    for task in tasks:
        if any(runs.steps[-1] <= 0 for runs in suite[task].values()):
            raise ResultsError(f"{task}: the last evaluation is at step 0, so there is no training budget to scale by")
        if len({int(runs.steps[-1]) for runs in suite[task].values()}) > 1:
            warn(f"{task}: the algorithms were trained for different budgets; fractions are of each one's own")
    # Each run's own budget is its last eval step; the grid starts where every run has been evaluated, so the
    # interpolation never extrapolates before a run's first evaluation.
    start = max(runs.steps[0] / runs.steps[-1] for task in tasks for runs in suite[task].values())
    fraction = np.linspace(start, 1.0, GRID_POINTS)
    result = dict(tasks=tasks, fraction=fraction, curves={}, final={})
    for algo in algos:
        per_task = [suite[task][algo] for task in tasks]
        runs_per_task = min(len(runs.seeds) for runs in per_task)
        if any(len(runs.seeds) != runs_per_task for runs in per_task):
            warn(f"{label(algo)}: tasks have different seed counts; the aggregate uses the first {runs_per_task} "
                 f"seeds of each")
        # scores[grid point, run, task]: normalised return, interpolated onto the common budget fractions
        scores = np.stack([
            np.stack([np.interp(fraction, runs.steps / runs.steps[-1], runs.scores(returns))
                      for returns in runs.returns[:runs_per_task]], axis=1)
            for runs in per_task], axis=2)
        bands = [stratified_bootstrap_ci(at_fraction, iqm, resamples=resamples, rng=seed) for at_fraction in scores]
        result["curves"][algo] = (iqm(scores, axis=(1, 2)), *np.array(bands).T)
        final = np.stack([runs.scores(runs.returns[:runs_per_task, -1]) for runs in per_task], axis=1)
        low, high = stratified_bootstrap_ci(final, iqm, resamples=resamples, rng=seed)
        result["final"][algo] = (float(iqm(final)), float(low), float(high))
    return result


def plot_aggregate(result: dict, colors: dict[str, str], path: Path) -> None:
    fig = Figure(figsize=(10, 4), layout="constrained")
    curve_ax, final_ax = fig.subplots(1, 2, width_ratios=[2, 1])
    for algo, (point, low, high) in result["curves"].items():
        curve_ax.plot(result["fraction"], point, color=colors[algo], label=label(algo))
        curve_ax.fill_between(result["fraction"], low, high, color=colors[algo], alpha=0.2, linewidth=0)
    curve_ax.set(xlabel="fraction of the training budget",
                 ylabel="IQM normalised score\n(return / 1000; success rate where scored)")
    curve_ax.grid(alpha=0.3)
    curve_ax.legend(loc="best")
    final = result["final"]
    for row, (algo, (point, low, high)) in enumerate(final.items()):
        # a percentile CI need not contain the point estimate; matplotlib refuses negative error lengths
        final_ax.errorbar(point, row, xerr=[[max(point - low, 0)], [max(high - point, 0)]], fmt="o",
                          color=colors[algo], capsize=5)
    final_ax.set_yticks(range(len(final)), [label(algo) for algo in final])
    final_ax.set_ylim(-0.7, len(final) - 0.3)
    final_ax.invert_yaxis()  # first algorithm on top, as in the legend
    final_ax.set_xlabel("final IQM normalised score\n(last evaluation of each run)")
    final_ax.grid(axis="x", alpha=0.3)
    count, names = len(result["tasks"]), ", ".join(result["tasks"])
    tasks_text = f"{count} task{'s' * (count != 1)}" + (f" ({names})" if len(names) <= 80 else "")
    fig.suptitle(f"{tasks_text}; shaded / bars: 95 % stratified-bootstrap CI", fontsize="medium")
    fig.savefig(path, dpi=120)


def plot_suite(results_dir: Path, resamples: int = 10_000, seed: int = 0) -> dict:
    """Read a suite, write curves.png, aggregate.png and summary.csv into it, print the tables.

    Returns {"summary": rows of summary.csv, "aggregate": aggregate()'s result}.
    """
    results_dir = Path(results_dir)
    suite = read_suite(results_dir)
    colors = {algo: f"C{i}" for i, algo in enumerate(algorithms(suite))}
    rows = summarize(suite, resamples, seed)
    write_summary(rows, results_dir / "summary.csv")
    plot_curves(suite, colors, resamples, seed, results_dir / "curves.png")
    result = aggregate(suite, resamples, seed)
    print(f"\nfinal IQM normalised score over {len(result['tasks'])} task(s) [95% stratified-bootstrap CI]")
    for algo, (point, low, high) in result["final"].items():
        print(f"{label(algo):<8}{point:.3f} [{low:.3f}, {high:.3f}]")
    plot_aggregate(result, colors, results_dir / "aggregate.png")
    print(f"wrote {results_dir / 'curves.png'}, {results_dir / 'aggregate.png'}, {results_dir / 'summary.csv'}")
    return dict(summary=rows, aggregate=result)


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv)
    results_dir = Path(args.results_dir) if args.results_dir else RESULTS_ROOT / args.suite
    try:
        if args.resamples < 1:
            raise ResultsError(f"--resamples must be at least 1, got {args.resamples}")
        plot_suite(results_dir, args.resamples, args.seed)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
