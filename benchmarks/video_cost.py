"""What an evaluation video costs: recording one full evaluation episode, rendering it and encoding it, per backend.

    python benchmarks/video_cost.py --out benchmarks/results/video_cost_cpu.csv

For each task, one eval env runs an untrained FlowRL policy (hidden 32) through the plain and the recording
evaluator (each compiled first, untimed), then the filmed episode is rendered and encoded as the train loop does
(common.run.video). One CSV row per task, with the device, the date, the commit and the command.
"""

import argparse
import csv
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flowrl_jax as flowrl  # noqa: E402
from common.run import video  # noqa: E402
from common.run.args import parse_video_size  # noqa: E402
from common.core.trainer import make_policy_evaluator  # noqa: E402
from common.envs.make import make_env  # noqa: E402
from common.envs.tasks import resolve_task  # noqa: E402

TASKS = [("cartpole-balance", "playground"), ("cartpole-balance", "dm_control"), ("HalfCheetah-v4", "gymnasium")]


def seconds(fn):
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def measure(name: str, backend: str, width: int, height: int, out_dir: Path) -> dict:
    env = make_env(resolve_task(name, backend), 1)
    agent = flowrl.make_flowrl(flowrl.FlowRLConfig(hidden_dim=32), env.obs_size, env.action_size)
    learner, key = agent.init(jax.random.key(0)), jax.random.key(1)
    plain = make_policy_evaluator(agent, env)
    recorded = make_policy_evaluator(agent, env, record=True)

    def recorded_one_seed(learner, key, deterministic):
        return jax.tree.map(lambda x: x[None], recorded(learner, key, deterministic))

    def filmed():
        return video.filmed_episode(env, recorded_one_seed, learner, key, True, film=True)

    np.asarray(plain(learner, key, True).returns)  # compile
    filmed()
    _, plain_s = seconds(lambda: np.asarray(plain(learner, key, True).returns))
    (_, scene), recorded_s = seconds(filmed)
    frames, render_s = seconds(lambda: video.render(scene, width, height))
    path, encode_s = seconds(lambda: video.write_mp4(out_dir / f"{name}__{backend}.mp4", frames, 1 / env.control_dt))
    return dict(task=name, backend=backend, size=f"{width}x{height}", frames=len(frames),
                fps=round(1 / env.control_dt, 3), eval_plain_s=round(plain_s, 3), eval_recorded_s=round(recorded_s, 3),
                render_s=round(render_s, 3), encode_s=round(encode_s, 3),
                ms_per_frame=round(1000 * (render_s + encode_s) / len(frames), 2), mp4_bytes=path.stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x240", help="video size, as --video-size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/video_cost_cpu.csv")
    args = parser.parse_args()
    width, height = parse_video_size(args.size)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    provenance = dict(date=datetime.date.today().isoformat(), device=str(jax.devices()[0]),
                      cpu_cores=os.cpu_count(), load_average=round(os.getloadavg()[0], 1),
                      mujoco_gl=os.environ.get("MUJOCO_GL", ""), commit=commit,
                      command="python " + " ".join(sys.argv))
    with tempfile.TemporaryDirectory() as videos:
        rows = [dict(measure(name, backend, width, height, Path(videos)), **provenance) for name, backend in TASKS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(row, flush=True)


if __name__ == "__main__":
    main()
