"""benchmarks/gpu_check.sh, the prepared GPU check, run whole on the CPU at tiny sizes so that it cannot rot unseen
between the rare runs on a GPU; and its rate arithmetic on synthetic chunks. To keep the suite's compile time down
the whole run measures FlowRL alone (SAC's jobs are the same commands with sac_jax.py), and its precision job
bfloat16 alone, at one width and batch size."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]
# Learning starts at env step 16, in the first chunk of 16 env steps (E = 4), so every timed chunk updates.
TINY = ("--updates-per-iteration 1 --batch-size 16 --start-steps 16 --log-interval 16 --episode-length 20 "
        "--eval-episodes 2")


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def test_summarise_times_the_chunks_after_the_first():
    # 100 env steps per chunk: a first chunk of 10 s (compiling), then 1 s and 4 s with 50 and 10 updates/s.
    rows = [dict(step=100, env_steps_per_s=10.0, updates_per_s=0.0), dict(step=200, env_steps_per_s=100.0,
            updates_per_s=50.0), dict(step=300, env_steps_per_s=25.0, updates_per_s=10.0)]
    summary = gpu_check.summarise(rows)
    assert summary["env_steps_per_chunk"] == 100 and summary["timed_chunks"] == 2
    assert summary["first_chunk_s"] == pytest.approx(10.0)
    assert summary["env_steps_per_s"] == pytest.approx(200 / 5)
    assert summary["updates_per_s"] == pytest.approx((50 * 1 + 10 * 4) / 5)
    assert "env_steps_per_s" not in gpu_check.summarise(rows[:1])  # one chunk: compile only, no rate


def test_gpu_check_runs_every_stage_and_writes_its_csvs(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_ENV="cartpole-balance", GPU_CHECK_NUM_ENVS="4",
               GPU_CHECK_ALGOS="flowrl", GPU_CHECK_CHUNKS="3", GPU_CHECK_ENV_STEPS="8", GPU_CHECK_ENV_REPEATS="2",
               GPU_CHECK_FLOWRL_FLAGS=f"{TINY} --hidden-dim 16", GPU_CHECK_PRECISION_WIDTHS="16",
               GPU_CHECK_PRECISION_FLAGS="--batch-sizes 16 --compute-dtypes bfloat16 --updates 2",
               # the flagship's E as the timed job's, so that it loads that job's compiled chunk
               GPU_CHECK_FLAGSHIP_FLAGS="--num-envs 4 --total-steps 48 --eval-interval 32",
               # budgets far above what the CPU needs: nothing may be cut short here
               GPU_CHECK_TOTAL_S="3000", GPU_CHECK_COMPILE_S="900", GPU_CHECK_TIMED_S="900", GPU_CHECK_JOB_S="450")
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=2400)
    log = (out / "gpu_check.log").read_text()
    assert result.returncode == 0, result.stdout + result.stderr + log[-4000:]

    files = sorted(path.name for path in out.iterdir())
    assert files == sorted(["gpu_check.log", "versions.txt", "stages.csv", "env_rate.csv", "train_rate.csv",
                            "precision_rate.csv", "flagship_metrics.csv", "flagship_eval.csv",
                            "flagship_config.json"])
    _, stages = read_csv(out / "stages.csv")
    assert {(s["stage"], s["job"]) for s in stages} == {
        ("setup", "versions"), ("compile", "env-4"), ("compile", "flowrl-4"), ("compile", "precision-flowrl-16"),
        ("timed", "env-4"), ("timed", "flowrl-4"), ("timed", "precision-flowrl-16"), ("flagship", "flagship")}
    assert all(s["rc"] == "0" for s in stages), stages  # the tiny flagship ends by its --total-steps
    assert "jax " in (out / "versions.txt").read_text()

    columns, rows = read_csv(out / "train_rate.csv")
    assert columns == [*gpu_check.TRAIN_COLUMNS, *gpu_check.ORIGIN_COLUMNS]
    compiled, = [r for r in rows if r["chunks"] == "1"]
    timed, = [r for r in rows if r["chunks"] == "3"]
    assert compiled["algo"] == timed["algo"] == "flowrl"
    assert float(compiled["compile_s"]) > 0 and compiled["env_steps_per_s"] == ""
    assert timed["timed_chunks"] == "2" and timed["env_steps_per_chunk"] == "16"
    assert float(timed["env_steps_per_s"]) > 0 and float(timed["updates_per_s"]) > 0
    assert (timed["num_envs"], timed["updates_per_iteration"], timed["batch_size"]) == ("4", "1", "16")
    assert timed["device"].startswith("cpu") and timed["command"].startswith("python ")

    columns, rows = read_csv(out / "env_rate.csv")
    assert columns == [*gpu_check.ENV_COLUMNS, *gpu_check.ORIGIN_COLUMNS]
    compiled, = [r for r in rows if r["repeats"] == "0"]
    timed, = [r for r in rows if r["repeats"] == "2"]
    assert compiled["env_steps_per_s"] == "" and float(timed["env_steps_per_s"]) > 0

    _, rows = read_csv(out / "precision_rate.csv")
    compiled, = [r for r in rows if r["repeats"] == "0"]
    timed, = [r for r in rows if r["repeats"] != "0"]
    assert compiled["updates_per_s"] == "" and float(timed["updates_per_s"]) > 0
    assert (timed["algo"], timed["env"], timed["hidden_dim"], timed["batch_size"], timed["compute_dtype"]) == (
        "flowrl", "cartpole-balance", "16", "16", "bfloat16")
    assert timed["avx512_bf16"] in ("True", "False") and timed["device"].startswith("cpu")

    _, evaluations = read_csv(out / "flagship_eval.csv")
    assert [int(e["step"]) for e in evaluations] == [32, 48]
    _, metrics = read_csv(out / "flagship_metrics.csv")
    assert [int(m["step"]) for m in metrics] == [16, 32, 48]
    config = json.loads((out / "flagship_config.json").read_text())
    assert config["env"] == "cartpole-balance" and config["hidden_dim"] == 16
