"""Learning curve (eval return against env steps) from a run's eval.csv."""

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter


def read_eval_csv(path) -> dict[str, np.ndarray]:
    """Columns step, seed, mode, return_mean, return_std and success_rate of an eval.csv, one entry per row in file
    order.

    Several eval modes and seeds share the file; select with data["mode"] == mode, data["seed"] == seed. A file
    without a seed column (written by a bare RunLogger) reads as seed 0; one without success_rate (a task that reports
    no success) reads as NaN there.
    """
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "step": np.array([int(r["step"]) for r in rows], dtype=np.int64),
        "seed": np.array([int(r.get("seed") or 0) for r in rows], dtype=np.int64),
        "mode": np.array([r["mode"] for r in rows], dtype=str),
        "return_mean": np.array([float(r["return_mean"]) for r in rows], dtype=np.float64),
        "return_std": np.array([float(r["return_std"]) for r in rows], dtype=np.float64),
        "success_rate": np.array([float(r.get("success_rate") or "nan") for r in rows], dtype=np.float64),
    }


def plot_learning_curve(eval_csv: Path, png_path: Path, title: str) -> Path:
    """One line per eval mode: for one seed, the mean eval return with a ±std band over the eval episodes; for
    several, the mean over seeds with a thin line per seed."""
    data = eval_rows_to_plot(eval_csv)
    # A bare Figure renders PNGs with Agg and leaves pyplot's global backend alone (headless-safe).
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    draw_learning_curve(fig.add_subplot(), data, title)
    fig.savefig(png_path, dpi=120)
    return Path(png_path)


def plot_learning_curves(eval_csvs: list[Path], png_path: Path, columns: int = 3) -> Path:
    """One panel per eval.csv (titled by its file name), on a shared return axis, so that runs compare by eye."""
    columns = min(columns, len(eval_csvs))
    rows = -(-len(eval_csvs) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    for ax, path in zip(axes.flat, eval_csvs):
        draw_learning_curve(ax, eval_rows_to_plot(path), Path(path).stem)
    for ax in axes.flat[len(eval_csvs):]:
        ax.set_axis_off()
    fig.savefig(png_path, dpi=110)
    return Path(png_path)


def eval_rows_to_plot(eval_csv) -> dict[str, np.ndarray]:
    """`read_eval_csv`, refusing a file without evaluations (nothing to draw)."""
    data = read_eval_csv(eval_csv)
    if not len(data["step"]):
        raise ValueError(f"{eval_csv} has no eval rows to plot")
    return data


def draw_learning_curve(ax, data: dict[str, np.ndarray], title: str) -> None:
    """Draw one run's eval curves (`read_eval_csv`'s columns) on `ax`."""
    seeds = np.unique(data["seed"])
    for mode in dict.fromkeys(data["mode"]):  # modes in order of first appearance
        per_seed = []
        for seed in seeds:
            sel = (data["mode"] == mode) & (data["seed"] == seed)
            order = np.argsort(data["step"][sel], kind="stable")  # a resumed run may repeat earlier steps
            per_seed.append(tuple(data[k][sel][order] for k in ("step", "return_mean", "return_std")))
        if len(seeds) == 1:
            step, mean, std = per_seed[0]
            (line,) = ax.plot(step, mean, marker="o", markersize=3, label=str(mode))
            ax.fill_between(step, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        else:  # seeds run in lockstep, so they share their eval steps
            step = per_seed[0][0]
            (line,) = ax.plot(step, np.mean([mean for _, mean, _ in per_seed], axis=0), marker="o", markersize=3,
                              label=f"{mode} (mean of {len(seeds)} seeds)")
            for seed_step, mean, _ in per_seed:
                ax.plot(seed_step, mean, color=line.get_color(), alpha=0.35, linewidth=0.8)
    steps = np.unique(data["step"])
    # A lone dot would sit on an axis that matplotlib centres on it: show the run from step 0.
    if len(steps) <= 2 and steps.max() > 0:
        for line in ax.get_lines():
            line.set_markersize(7)
        ax.set_xlim(0, steps.max() * 1.15)
    ylabel = "eval return (mean ± std over episodes)" if len(seeds) == 1 else "eval return (thin lines: seeds)"
    ax.set(xlabel="env steps", ylabel=ylabel, title=title)
    ax.xaxis.set_major_formatter(EngFormatter())  # 500k, 1M rather than an offset like 1e6
    ax.grid(alpha=0.3)
    ax.legend(title="eval mode")
