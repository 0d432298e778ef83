"""The run's flags (`RunArgs`), shared by every algorithm script, and what is derived from them once
(`ResolvedRun`): the task, the device layout, the chunk's spec, and the flag values that config.json records.

The parsed flags are never changed after parsing; `resolve` derives everything the run needs from them.
"""

import dataclasses
import sys
from typing import Any, Literal

import jax

from common.core.chunk import ChunkSpec
from common.core.layout import Layout
from common.envs.tasks import Task, resolve_task


@dataclasses.dataclass
class RunArgs:
    preset: Literal["paper", "playground-sac"] | None = None
    """Named flag values for a benchmark family, applied before the flags given (which win): `paper` (the FlowRL
    reference code's protocol) or `playground-sac` (MuJoCo Playground's SAC configuration); docs/flags.md lists
    their values."""
    env: str = "humanoid-walk"
    """Task: DM Control style (`humanoid-walk`, `dog-run`, ...), Gymnasium (`Ant-v4`) or MyoSuite
    (`myoHandReachRandom-v0`); `list` prints all of them with their backends."""
    backend: Literal["auto", "playground", "dm_control", "gymnasium", "myosuite"] = "auto"
    """Where the task comes from: `playground` (MJX ports of DM Control, on the accelerator), `dm_control` (the
    original suite, stepped on the host), `gymnasium` (MuJoCo tasks, on the host) or `myosuite` (musculoskeletal hand
    tasks, on the host). `auto`: the first of these that has the task, so Playground wherever it has a port. The
    chosen backend is saved in config.json."""
    seed: int = 1
    """Random seed: network init, noise, environment resets."""
    num_seeds: int = 1
    """S: independent seeds `seed … seed+S-1` trained together in one program (jax.vmap over the train state); each
    equals a single run with that seed. Metrics rows carry a seed column."""
    num_envs: int = 128
    """E: environments stepped together on the device."""
    devices: int = 1
    """D: devices the run spreads over (0: all of them, every process's). Several seeds are split across them (S a
    multiple of D), or with `--data-parallel` one seed's envs and replay are; docs/devices.md."""
    data_parallel: bool = False
    """With `--devices D`: split one seed's envs, replay and batch over the D devices, with parameters replicated
    and gradients averaged (num-envs, batch-size and buffer-size multiples of D)."""
    total_steps: int = 1_000_000
    """Environment steps to train for, all envs together (rounded up to whole chunks)."""
    updates_per_iteration: int = 8
    """U: gradient updates after each step of all E envs (update-to-data ratio U/E)."""
    batch_size: int = 512
    """Transitions per gradient update."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    start_steps: int = 5_000
    """Env steps of uniform random actions before learning starts."""
    physics: Literal["jax", "warp"] = "jax"
    """MJX physics implementation for the playground backend (`jax` is much faster than warp on a CPU, and needs no
    warp)."""
    host_threads: int = 0
    """Threads that step a host backend's envs (0: one per CPU core); results do not depend on it."""
    episode_length: int | None = None
    """Time limit in env steps (default: the task's own, 1000 for DMC)."""
    eval_interval: int = 10_000
    """Env steps between evaluations."""
    eval_episodes: int = 5
    """Evaluation episodes, run in parallel on separate envs."""
    eval_mode: Literal["stochastic", "deterministic", "both"] = "stochastic"
    """Policy noise at evaluation: `stochastic` samples as in training, `deterministic` uses the noise mean."""
    log_interval: int = 5_000
    """Env steps per compiled chunk: metrics, progress bar and checks happen between chunks."""
    run_root: str = "runs"
    """Directory that run directories are created in."""
    checkpoint_interval: int = 100_000
    """Env steps between checkpoints of the whole train state (one is also written at the end and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept in the run directory."""
    resume: str | None = None
    """Continue a run: its run directory (newest checkpoint) or one checkpoint file. Its saved flags are the defaults;
    only safe ones (total steps, evaluation, checkpointing, logging) may change."""
    wandb: bool = False
    """Also log to Weights & Biases (needs `pip install wandb`)."""
    wandb_project: str = "flowrl-jax"
    """W&B project name."""
    video_interval: int = 0
    """K: film one evaluation episode every K-th evaluation and at the end, into <run>/videos/<step>.mp4 and the
    logs (0: no videos)."""
    video_size: str = "320x240"
    """Video frame size: WIDTHxHEIGHT, or a height alone (the width is 4/3 of it); both even."""
    play: str | None = None
    """Instead of training, replay an exported policy: a run directory (its newest), a checkpoint (the policy file
    beside it) or a policy file; prints each episode's return and writes an mp4. `--eval-mode` picks the mode."""
    play_episodes: int | None = None
    """Episodes that `--play` runs (default: the run's `--eval-episodes`, so that deterministic returns equal the
    run's own evaluation at that step)."""


DEFAULT_ASPECT = 4 / 3  # width / height when --video-size gives the height alone (dm_control's 320×240)


def parse_video_size(text: str) -> tuple[int, int]:
    """(width, height) from `WIDTHxHEIGHT` or a height alone (width = 4/3 of it, rounded to even); both even, as
    H.264's 4:2:0 colour needs, and within 16–4096. Raises ValueError naming the flag."""
    try:
        width, height = (int(part) for part in text.lower().split("x")) if "x" in text.lower() else (
            2 * round(int(text) * DEFAULT_ASPECT / 2), int(text))
    except ValueError:
        raise ValueError(f"--video-size must be WIDTHxHEIGHT or a height, e.g. 320x240 or 240, got {text!r}") from None
    if not all(16 <= side <= 4096 and side % 2 == 0 for side in (width, height)):
        raise ValueError(f"--video-size: width and height must be even and within 16–4096, got {width}x{height}")
    return width, height


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """The flags resolved once, before any env is built: everything below the command line reads this."""

    args: RunArgs  # the flags as config.json records them: backend resolved, `--devices 0` counted, batch as used
    config: Any    # the algorithm's own config (its hyperparameters)
    task: Task     # the env name, resolved on its backend
    layout: Layout

    @property
    def spec(self) -> ChunkSpec:
        args = self.args
        return ChunkSpec(updates_per_iteration=args.updates_per_iteration, batch_size=args.batch_size,
                         start_steps=args.start_steps, log_interval=args.log_interval,
                         replay_capacity=args.buffer_size, replay_shards=self.layout.replay_shards)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.args.seed, self.args.seed + self.args.num_seeds))

    @property
    def seed_label(self) -> str:
        """`3`, or `first-last` with several seeds: the run directory's and the curve's name for them."""
        seeds = self.seeds
        return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


def resolve(flags, lower_default_batch: bool = False) -> ResolvedRun:
    """A script's parsed flags (common.run.cli.script_args), resolved. With `lower_default_batch` (the batch size
    was not given), a batch larger than what the first update has stored is lowered to it, with a note."""
    args, config = flags.split()
    task = resolve_task(args.env, args.backend)
    batch_size = args.batch_size
    if lower_default_batch and args.num_envs >= 1 and batch_size > first_update_rows(args) >= 1:
        batch_size = first_update_rows(args)
        print(f"note: --batch-size {args.batch_size} (the default) is more than the {batch_size} transitions stored "
              f"at the first update; using {batch_size}", file=sys.stderr)
    device_count = args.devices or jax.device_count()
    args = dataclasses.replace(args, backend=task.backend, devices=device_count, batch_size=batch_size)
    layout = Layout.of(args.num_seeds, device_count, args.data_parallel)
    return ResolvedRun(args, config, task, layout)


def first_update_rows(args: RunArgs) -> int:
    """Transitions stored when the first update draws its batch."""
    # Updates start at the first iteration whose env-step count reaches start_steps (at least one iteration).
    return min(max(-(-args.start_steps // args.num_envs), 1) * args.num_envs, args.buffer_size)
