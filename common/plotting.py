"""Learning curve (eval return against env steps) from a run's eval.csv."""

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter


def read_eval_csv(path) -> dict[str, np.ndarray]:
    """Columns step, mode, return_mean, return_std of an eval.csv, one entry per row in file order.

    Several eval modes share the file; select one with data["mode"] == mode.
    """
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "step": np.array([int(r["step"]) for r in rows], dtype=np.int64),
        "mode": np.array([r["mode"] for r in rows], dtype=str),
        "return_mean": np.array([float(r["return_mean"]) for r in rows], dtype=np.float64),
        "return_std": np.array([float(r["return_std"]) for r in rows], dtype=np.float64),
    }


def plot_learning_curve(eval_csv: Path, png_path: Path, title: str) -> Path:
    """Mean eval return with a ±std band over the eval episodes, one line per eval mode."""
    data = read_eval_csv(eval_csv)
    if not len(data["step"]):
        raise ValueError(f"{eval_csv} has no eval rows to plot")
    # A bare Figure renders PNGs with Agg and leaves pyplot's global backend alone (headless-safe).
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for mode in dict.fromkeys(data["mode"]):  # modes in order of first appearance
        sel = data["mode"] == mode
        order = np.argsort(data["step"][sel], kind="stable")  # a resumed run may repeat earlier steps
        step, mean, std = (data[k][sel][order] for k in ("step", "return_mean", "return_std"))
        (line,) = ax.plot(step, mean, marker="o", markersize=3, label=str(mode))
        ax.fill_between(step, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel="env steps", ylabel="eval return (mean ± std over episodes)", title=title)
    ax.xaxis.set_major_formatter(EngFormatter())  # 500k, 1M rather than an offset like 1e6
    ax.grid(alpha=0.3)
    ax.legend(title="eval mode")
    fig.savefig(png_path, dpi=120)
    return Path(png_path)
