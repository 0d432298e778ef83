"""`--play`: replay an exported policy on its task, print each episode's return and write an mp4 (docs/videos.md).

Its evaluation is the run's own: the same evaluator, on an env built from the run's flags, with the key the run's
evaluation derived from (seed, step, mode). With the run's number of episodes, deterministic returns therefore equal
those the run logged at that step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from common.core.layout import Layout
from common.core.trainer import make_policy_evaluator
from common.envs.make import make_env
from common.envs.tasks import resolve_task
from common.run import policy_export, video
from common.run.args import RunArgs, parse_video_size
from common.run.callbacks import eval_modes_of, evaluation_key


def main(args: RunArgs, load_policy: Callable) -> dict[str, np.ndarray]:
    """Play `args.play` in each mode of `--eval-mode`; {mode: returns [episodes]}. A missing or damaged policy file
    exits 2 with one line."""
    try:
        path = policy_export.locate(args.play)
        agent, learner, metadata = load_policy(path)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    run, step = metadata["run"], metadata["step"]
    env = make_env(resolve_task(run["env"], run["backend"]), args.play_episodes or run["eval_episodes"],
                   physics=run["physics"], episode_length=run["episode_length"], host_threads=args.host_threads)
    evaluate = make_policy_evaluator(agent, env, record=True)

    def evaluate_one_seed(learner, key, deterministic):  # filmed_episode takes a leading seed axis
        return jax.tree.map(lambda x: x[None], evaluate(learner, key, deterministic))

    width, height = parse_video_size(args.video_size)
    problem = video.rendering_problem(video.scene_model(env), width, height)
    if problem:
        print(f"warning: no video: {problem}", file=sys.stderr, flush=True)
    run_dir = path.parent.parent
    videos = run_dir / "videos" if (run_dir / "config.json").is_file() else path.parent
    seed_eval_key = Layout(num_seeds=1).seed_keys(metadata["seed"])[1][0]
    run_modes, played = eval_modes_of(run["eval_mode"]), {}
    for mode in eval_modes_of(args.eval_mode):
        # The key of the run's own evaluation in this mode; a mode that the run did not evaluate takes the index it
        # has under `--eval-mode both`.
        index = run_modes.index(mode) if mode in run_modes else eval_modes_of("both").index(mode)
        key = evaluation_key(seed_eval_key, step, index)
        episodes, scene = video.filmed_episode(env, evaluate_one_seed, learner, key, mode == "deterministic",
                                               film=problem is None)
        played[mode] = returns = episodes.returns[0]
        success = episodes.success[0]
        scored = "" if np.isnan(success).any() else f", success rate {success.mean():.6g}"
        print(f"{path.name} (env step {step}), {mode}: returns {' '.join(f'{r:.6g}' for r in returns)}, mean "
              f"{returns.mean():.6g}{scored}", flush=True)
        if scene is not None:
            mp4 = video.write_mp4(Path(videos) / f"play_{step:012d}_{mode}.mp4",
                                  video.render(scene, width, height), 1.0 / env.control_dt)
            print(f"video: {mp4}", flush=True)
    return played
