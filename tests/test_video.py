"""Evaluation videos on every backend, the exported policy, and `--play` replaying the run's own evaluation."""

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import jax
import mujoco
import numpy as np
import pytest

import flowrl_jax as flowrl
from common.run import play, training
from common.run.args import parse_video_size
from common.run.plotting import read_eval_csv
from common.run.args import resolve
from common.run.args import RunArgs
from tests.test_flowrl_train import TINY
from tests.test_host_envs import HOST

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("reused_trainers")  # tests/conftest.py
POLICY_FIELDS = flowrl.POLICY_FIELDS
# Evaluations at 16, 32, 48 and 64 env steps; every third is filmed (48), and the last one (64).
PLAYGROUND = dataclasses.replace(TINY, eval_interval=16, checkpoint_interval=32, eval_mode="deterministic",
                                 video_interval=3, video_size="64x48")
DM_CONTROL = dataclasses.replace(PLAYGROUND, backend="dm_control")
GYMNASIUM = dataclasses.replace(HOST, eval_mode="deterministic", video_interval=1, video_size="48")
RUNS = {"playground": (PLAYGROUND, [48, 64]), "dm_control": (DM_CONTROL, [48, 64]), "gymnasium": (GYMNASIUM, [36, 72])}


def decode(path) -> np.ndarray:
    frames = imageio_ffmpeg.read_frames(str(path))
    width, height = next(frames)["size"]
    return np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in frames])


def train(args, run_root):
    training.run(resolve(dataclasses.replace(args, run_root=str(run_root))), flowrl.make_flowrl, "flowrl",
                 POLICY_FIELDS)
    (run_dir,) = run_root.iterdir()
    return run_dir


@pytest.fixture(scope="module", params=list(RUNS))
def tiny_run(request, tmp_path_factory):
    args, filmed_steps = RUNS[request.param]
    return args, filmed_steps, train(args, tmp_path_factory.mktemp(request.param))


def test_a_run_films_every_kth_evaluation_and_the_last(tiny_run):
    args, filmed_steps, run_dir = tiny_run
    assert sorted(path.name for path in (run_dir / "videos").iterdir()) == [f"{s:012d}.mp4" for s in filmed_steps]
    width, height = parse_video_size(args.video_size)
    for step in filmed_steps:
        frames = decode(run_dir / "videos" / f"{step:012d}.mp4")
        assert frames.shape == (args.episode_length, height, width, 3)  # one frame per step of env 0's episode
        assert all(frame.std() > 5 for frame in frames), "a frame is (nearly) one colour"


def test_play_returns_what_the_evaluation_returned(tiny_run, capsys):
    args, filmed_steps, run_dir = tiny_run
    with (run_dir / "eval.csv").open(newline="") as f:
        logged = {int(row["step"]): row["returns"] for row in csv.DictReader(f)}  # each episode's, as %.6g
    play_args = dataclasses.replace(RunArgs(), eval_mode="deterministic", video_size="32x24")
    oldest_checkpoint = sorted((run_dir / "checkpoints").glob("checkpoint_*.msgpack"))[0]
    oldest_step = int(oldest_checkpoint.stem.split("_")[1])
    for target, step in [(run_dir, filmed_steps[-1]), (oldest_checkpoint, oldest_step)]:  # the newest, an older
        returns = play.main(dataclasses.replace(play_args, play=str(target)), flowrl.load_policy)["deterministic"]
        assert " ".join(f"{r:.6g}" for r in returns) == logged[step]
        assert len(decode(run_dir / "videos" / f"play_{step:012d}_deterministic.mp4")) == args.episode_length
    assert "returns " + logged[oldest_step] in capsys.readouterr().out


def test_the_script_plays_a_run_and_refuses_a_missing_policy_with_one_line(tiny_run, tmp_path):
    args, filmed_steps, run_dir = tiny_run
    if args.backend != "auto":
        pytest.skip("the command line is the same for every backend: checked once, on Playground")
    with (run_dir / "eval.csv").open(newline="") as f:
        logged = [row["returns"] for row in csv.DictReader(f)][-1]
    run_root = tmp_path / "run-root"  # --play trains nothing, so it creates no run root
    script = [sys.executable, "flowrl_jax.py", "--eval-mode", "deterministic", "--video-size", "32x24",
              "--run-root", str(run_root)]
    played = subprocess.run([*script, "--play", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert played.returncode == 0, played.stderr[-3000:]
    assert f"deterministic: returns {logged}," in played.stdout and "video: " in played.stdout
    (tmp_path / "empty").mkdir()
    missing = subprocess.run([*script, "--play", str(tmp_path / "empty")], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "has no exported policy" in missing.stderr and not run_root.exists()


def test_the_exported_policy_is_small_follows_the_checkpoints_and_refuses_damage(tiny_run, tmp_path, capsys):
    args, filmed_steps, run_dir = tiny_run
    checkpoints = run_dir / "checkpoints"
    policies = sorted(checkpoints.glob("policy_*.msgpack"))
    assert [p.name.replace("policy_", "checkpoint_") for p in policies] == sorted(
        p.name for p in checkpoints.glob("checkpoint_*.msgpack"))
    assert policies[-1].stat().st_size < 100_000 < (checkpoints / policies[-1].name.replace("policy", "checkpoint")
                                                    ).stat().st_size
    agent, state, metadata = flowrl.load_policy(policies[-1])
    assert metadata["run"]["env"] == args.env and metadata["step"] == filmed_steps[-1]
    assert len(metadata["action_low"]) == metadata["action_size"] == agent.act(
        state, np.zeros((1, metadata["obs_size"]), np.float32), jax.random.key(0), True).shape[1]

    data = bytearray(policies[-1].read_bytes())
    damaged, truncated = tmp_path / "damaged.msgpack", tmp_path / "truncated.msgpack"
    data[data.find(np.asarray(state.policy["params"]["Dense_0"]["kernel"]).tobytes()) + 5] ^= 0xFF  # a weight
    damaged.write_bytes(data)
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid exported policy.*checksum mismatch"):
        flowrl.load_policy(damaged)
    with pytest.raises(ValueError, match="not a valid exported policy"):
        flowrl.load_policy(truncated)
    with pytest.raises(SystemExit) as stop:
        play.main(dataclasses.replace(RunArgs(), play=str(damaged)), flowrl.load_policy)
    assert stop.value.code == 2 and "checksum mismatch" in capsys.readouterr().err


def test_without_opengl_the_run_warns_once_and_trains_on(tmp_path, monkeypatch, capsys):
    def no_gl(*args, **kwargs):  # what mujoco.Renderer raises when no GL backend can be loaded (MUJOCO_GL=disable)
        raise AttributeError("module 'mujoco.rendering.classic.gl_context' has no attribute 'GLContext'")

    monkeypatch.setattr(mujoco, "Renderer", no_gl)
    run_dir = train(PLAYGROUND, tmp_path)
    assert capsys.readouterr().err.count("warning: evaluation videos are off: no OpenGL context") == 1
    assert list(read_eval_csv(run_dir / "eval.csv")["step"]) == [16, 32, 48, 64]
    assert not (run_dir / "videos").exists() and (run_dir / "checkpoints" / f"policy_{64:012d}.msgpack").is_file()


@pytest.mark.parametrize("text, size", [("320x240", (320, 240)), ("240", (320, 240)), ("48", (64, 48))])
def test_video_size_flag(text, size):
    assert parse_video_size(text) == size


@pytest.mark.parametrize("text", ["321x240", "big", "8x8"])
def test_a_bad_video_size_is_refused(text):
    with pytest.raises(ValueError, match="--video-size"):
        parse_video_size(text)
