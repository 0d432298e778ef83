"""Evaluation videos: env 0's episode of an evaluation, recorded inside the compiled evaluation and rendered on the
host between chunks (docs/videos.md).

The compiled evaluation only records the state (common.core.evaluation's `record`): Playground's qpos, qvel and mocap
poses per step; a host env keeps env 0's MuJoCo integration state per step on the host. Rendering poses a MuJoCo
model with each step's state and draws it with `mujoco.Renderer`, headless through EGL or OSMesa (`MUJOCO_GL`); the
frames are encoded as H.264 by imageio-ffmpeg's bundled ffmpeg. Where either is missing the run warns once and
trains on without videos.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import mujoco
import numpy as np

from common.envs.playground import BatchedEnv


class Scene(NamedTuple):
    """A model and data to render, and how to pose them as step t of the episode."""

    model: mujoco.MjModel
    data: mujoco.MjData
    show: Callable[[int], None]
    length: int  # steps of env 0's episode


def episode_scene(env, trajectory: dict, recorded: list) -> Scene:
    """The scene of env 0's filmed episode: `trajectory` from the compiled evaluation (one seed's), `recorded` what a
    host env kept meanwhile (HostBatchedEnv.stop_recording; empty on Playground)."""
    length = int(np.sum(trajectory["running"]))  # the episode's steps; later ones belong to the next episode
    if isinstance(env, BatchedEnv):
        model = env.env.mj_model
        data = mujoco.MjData(model)
        fields = [name for name in ("qpos", "qvel", "mocap_pos", "mocap_quat") if name in trajectory]

        def show(t: int) -> None:
            for name in fields:
                getattr(data, name)[:] = trajectory[name][t]
            mujoco.mj_forward(model, data)

        return Scene(model, data, show, length)
    renderer_env = env.scene_env()
    return Scene(renderer_env.model, renderer_env.data, lambda t: renderer_env.show_scene(recorded[t]), length)


def scene_model(env) -> mujoco.MjModel:
    """The MuJoCo model that env 0's scenes are drawn with."""
    return env.env.mj_model if isinstance(env, BatchedEnv) else env.scene_env().model


def open_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    # The offscreen buffer must hold the frame; the model's own default is 640×480.
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    return mujoco.Renderer(model, height=height, width=width)


def render(scene: Scene, width: int, height: int) -> np.ndarray:
    """[T, height, width, 3] uint8 frames, through camera 0 where the model has cameras (the suite's tracking or
    fixed views), else MuJoCo's free camera."""
    camera = 0 if scene.model.ncam else -1
    renderer = open_renderer(scene.model, width, height)
    try:
        frames = np.empty((scene.length, height, width, 3), np.uint8)
        for t in range(scene.length):
            scene.show(t)
            renderer.update_scene(scene.data, camera=camera)
            frames[t] = renderer.render()
    finally:
        renderer.close()  # now, not at interpreter exit, when EGL may already be torn down
    return frames


@contextlib.contextmanager
def starting_ffmpeg():
    """JAX warns at every fork; ffmpeg starts by a fork then exec, which runs no JAX code in the child."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        yield


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Encode frames as H.264 (yuv420p, playable everywhere) into `path`, atomically."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.mp4")  # ffmpeg picks the container from the suffix
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(partial), (width, height), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1)
    with starting_ffmpeg():
        writer.send(None)  # the generator starts ffmpeg on its first send
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    os.replace(partial, path)
    return path


def rendering_problem(model: mujoco.MjModel, width: int, height: int) -> str | None:
    """Why videos cannot be made here (no OpenGL context, no encoder), or None."""
    try:
        import imageio_ffmpeg

        with starting_ffmpeg():
            imageio_ffmpeg.get_ffmpeg_exe()  # runs it once to check it
    except Exception as error:  # not installed, or its ffmpeg binary missing
        return f"no video encoder (pip install imageio-ffmpeg: {type(error).__name__}: {error})"
    try:
        open_renderer(model, width, height).close()
    except Exception as error:  # each GL backend fails its own way when its library is absent
        return (f"no OpenGL context for MuJoCo (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}: "
                f"{type(error).__name__}: {error}); MUJOCO_GL=egl or osmesa needs that library installed")
    return None


def preview_strip(frames: np.ndarray, count: int = 4) -> np.ndarray:
    """`count` evenly spaced frames side by side [H, count·W, 3]: what TensorBoard shows of a video."""
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return np.concatenate(list(frames[picks]), axis=1)


def filmed_episode(env, evaluate_recorded, state, keys, deterministic: bool, film: bool):
    """(Episodes of [seeds, episodes], the scene of the first seed's env 0 or None): one recorded evaluation. A host
    env keeps its scenes only when `film`."""
    if film and not isinstance(env, BatchedEnv):
        env.start_recording()
    try:
        episodes, trajectory = evaluate_recorded(state, keys, deterministic)
        episodes = jax.device_get(episodes)
    finally:
        recorded = [] if isinstance(env, BatchedEnv) or not film else env.stop_recording()
    if not film:
        return episodes, None
    trajectory = {name: np.asarray(values)[0] for name, values in trajectory.items()}  # the first seed
    return episodes, episode_scene(env, trajectory, recorded)


class EvaluationVideos:
    """Films env 0's episode (the first seed's) at every `interval`-th evaluation and at the end, into
    run_dir/videos/<step:012d>.mp4, and logs it. Where rendering is impossible it warns once and stays off."""

    def __init__(self, env, run_dir: Path, interval: int, eval_interval: int, size: tuple[int, int]):
        self.env, self.directory = env, Path(run_dir) / "videos"
        self.interval, self.eval_interval, (self.width, self.height) = interval, eval_interval, size
        self.fps = 1.0 / env.control_dt
        self.enabled = True
        problem = rendering_problem(scene_model(env), self.width, self.height)
        if problem:
            self.disable(problem)

    def disable(self, reason: str) -> None:
        print(f"warning: evaluation videos are off: {reason}; training goes on without them", file=sys.stderr,
              flush=True)
        self.enabled = False

    def due(self, step: int, last: bool) -> bool:
        """Whether the evaluation at `step` is filmed: the evaluations are numbered step // eval_interval, so a
        resumed run films the same ones."""
        return self.enabled and (last or (step // self.eval_interval) % self.interval == 0)

    def evaluate(self, evaluate_recorded, state, keys, deterministic: bool, step: int, logger, film: bool):
        """The evaluation's Episodes of [seeds, episodes]; with `film`, its video written and logged too."""
        episodes, scene = filmed_episode(self.env, evaluate_recorded, state, keys, deterministic, film)
        if scene is not None:
            try:
                frames = render(scene, self.width, self.height)
                path = write_mp4(self.directory / f"{step:012d}.mp4", frames, self.fps)
            except Exception as error:  # a renderer or encoder failing mid-run must not end the training
                self.disable(f"rendering failed ({type(error).__name__}: {error})")
            else:
                logger.log_video(step, path, preview_strip(frames))
        return episodes
