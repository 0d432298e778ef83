"""How long a bad command line takes to fail, beside the import of jax, flax.linen and optax that every run pays.

Each command runs as a fresh process, --repeats times; the median wall time is reported. Rows are appended to
--out with the device and the exact command.

    python benchmarks/time_to_error.py --out benchmarks/results/time_to_error_cpu.csv
"""

import dataclasses
import statistics
import subprocess
import sys
import time
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.record import append_row, provenance  # noqa: E402

COMMANDS = {
    "import jax, flax.linen, optax (baseline)": ["-c", "import jax, flax.linen, optax"],
    "misspelt env": ["flowrl_jax.py", "--env", "humanoid-wlk"],
    "Gymnasium env, bad count": ["flowrl_jax.py", "--env", "Ant-v4", "--num-envs", "0"],
    "bad type": ["sac_jax.py", "--hidden-dim", "abc"],
    "missing --resume path": ["flowrl_jax.py", "--resume", "runs/nope"],
}


@dataclasses.dataclass
class Args:
    repeats: int = 5
    """Runs of each command; the median is reported."""
    out: str = "benchmarks/results/time_to_error_cpu.csv"
    """CSV that rows are appended to."""


def main() -> None:
    args = tyro.cli(Args)
    baseline = None
    for what, argv in COMMANDS.items():
        seconds, codes = [], set()
        for _ in range(args.repeats):
            began = time.perf_counter()
            codes.add(subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True).returncode)
            seconds.append(time.perf_counter() - began)
        median = statistics.median(seconds)
        baseline = median if baseline is None else baseline
        row = dict(what=what, measured=" ".join(["python", *argv]), exit_codes=" ".join(map(str, sorted(codes))),
                   median_s=f"{median:.2f}", over_baseline_s=f"{median - baseline:.2f}",
                   min_s=f"{min(seconds):.2f}", max_s=f"{max(seconds):.2f}", repeats=args.repeats, **provenance())
        append_row(args.out, row)
        print(f"{what:45s} exit {row['exit_codes']:>3}  median {median:5.2f} s  (+{median - baseline:.2f} s)")


if __name__ == "__main__":
    main()
