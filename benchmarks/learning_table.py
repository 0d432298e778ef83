"""Per-seed learning summary of one or more eval.csv files: the evaluations, the final return, the mean of the last
three evaluations, and the largest drop after the curve first reaches 90 % of its best (how far a seed falls back
once it has learned). Judges final performance, never the best evaluation.

    python benchmarks/learning_table.py benchmarks/results/learning_cpu/flowrl_cartpole_balance_rho0.95.csv
    python benchmarks/learning_table.py a.csv b.csv --plot curves.png   # also one panel of curves per file
"""

import dataclasses
import statistics
import sys
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.run.plotting import plot_learning_curves, read_eval_csv  # noqa: E402


@dataclasses.dataclass
class Args:
    paths: tyro.conf.Positional[tuple[str, ...]]
    """eval.csv files (one run each, any number of seeds)."""
    mode: str = "stochastic"
    """Evaluation mode to summarise (`stochastic` or `deterministic`)."""
    plot: str | None = None
    """Also draw every file's curves (each seed and their mean, every eval mode), one panel per file, to this PNG."""


def largest_drop(returns: list[float]) -> float:
    """The largest fall from a running peak, counted from the first evaluation at ≥ 90 % of the best one."""
    best, peak, drop, started = max(returns), float("-inf"), 0.0, False
    for value in returns:
        started = started or value >= 0.9 * best
        if started:
            peak = max(peak, value)
            drop = max(drop, peak - value)
    return drop


def curves(path: str, mode: str) -> dict[int, list[float]]:
    """seed -> its evaluations in step order."""
    data = read_eval_csv(path)
    curves_by_seed = {}
    for seed in np.unique(data["seed"]):
        rows = (data["seed"] == seed) & (data["mode"] == mode)
        if rows.any():
            order = np.argsort(data["step"][rows])
            curves_by_seed[int(seed)] = data["return_mean"][rows][order].tolist()
    return curves_by_seed


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv)
    for path in args.paths:
        runs = curves(path, args.mode)
        print(f"{path} ({args.mode})")
        if not runs:
            print(f"  no {args.mode} evaluations")
            continue
        for seed, returns in runs.items():
            print(f"  seed {seed}: {' '.join(f'{value:4.0f}' for value in returns)} | final {returns[-1]:.0f}, "
                  f"last 3 {statistics.mean(returns[-3:]):.0f}, largest drop {largest_drop(returns):.0f}")
        finals = [returns[-1] for returns in runs.values()]
        last_three = [statistics.mean(returns[-3:]) for returns in runs.values()]
        drops = [largest_drop(returns) for returns in runs.values()]
        print(f"  final: mean {statistics.mean(finals):.0f}, median {statistics.median(finals):.0f}, range "
              f"{min(finals):.0f}–{max(finals):.0f} | last 3: mean {statistics.mean(last_three):.0f}, range "
              f"{min(last_three):.0f}–{max(last_three):.0f} | largest drop: mean {statistics.mean(drops):.0f}, "
              f"max {max(drops):.0f}")
    if args.plot:
        print(f"curves: {plot_learning_curves([Path(path) for path in args.paths], Path(args.plot))}")


if __name__ == "__main__":
    main()
