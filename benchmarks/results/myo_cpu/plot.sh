#!/usr/bin/env bash
# The curves of run.sh's two runs: each run's stochastic evaluations as results CSVs (return and success rate, one
# directory each), drawn by benchmarks/plot.py. The return view's aggregate.png is dropped: it would divide these
# negative returns by DM Control's 1000. Run from the repository root after run.sh.
set -euo pipefail
out=benchmarks/results/myo_cpu
python - <<'PY'
import csv
from pathlib import Path

from common.run.plotting import read_eval_csv

for algo in ("flowrl", "sac"):
    run = max(Path(f"runs/myo_cpu/{algo}").glob("*/eval.csv"), key=lambda p: p.stat().st_mtime)
    data = read_eval_csv(run)
    keep = data["mode"] == "stochastic"
    for metric, column in (("eval_return", "return_mean"), ("eval_success", "success_rate")):
        path = Path(f"benchmarks/results/myo_cpu/{metric}/myoHandPoseFixed-v0/{algo}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = sorted(zip(data["seed"][keep], data["step"][keep], data[column][keep]))
        with path.open("w", newline="") as file:
            csv.writer(file).writerows([["seed", "step", metric], *((s, t, f"{v:.6g}") for s, t, v in rows)])
PY
python benchmarks/plot.py --results-dir "$out/eval_return" --resamples 2000 | tee "$out/eval_return/summary.txt"
rm "$out/eval_return/aggregate.png"
python benchmarks/plot.py --results-dir "$out/eval_success" --resamples 2000 | tee "$out/eval_success/summary.txt"
