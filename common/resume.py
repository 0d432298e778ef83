"""Continuing a run: which checkpoint to load, whether it belongs to the run, which flags may change, and whether
checkpoints fit on disk. Everything here runs before any env is built."""

import json
import shutil
import sys
from pathlib import Path

from common import checkpoint
from common.resources import format_bytes

# What config.json records of the machine and the run's length rather than of the train state.
RUN_FACTS = frozenset({"device", "device_kind", "process_count", "jax_version", "total_steps_run"})
# Flags that do not change what the train state means or how the next chunk computes: they may differ on resume.
SAFE_TO_CHANGE = frozenset({"total_steps", "eval_interval", "eval_episodes", "eval_mode", "checkpoint_interval",
                            "keep_checkpoints", "resume", "run_root", "wandb", "wandb_project",
                            "host_threads", "video_interval", "video_size", "play", "play_episodes"})


def run_dir_of(resume: str) -> Path:
    """`--resume` names a run directory, or one checkpoint file inside its `checkpoints/`."""
    path = Path(resume)
    if not path.exists():
        raise ValueError(f"--resume: {resume} does not exist")
    run_dir = path.parent.parent if path.is_file() else path
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"--resume: {resume} is neither a run directory nor a checkpoint in one (no config.json)")
    return run_dir


def saved_config(resume: str) -> dict:
    return json.loads((run_dir_of(resume) / "config.json").read_text())


def config_differences(saved: dict, args: dict, other: str = "now") -> list[str]:
    """The flags whose values differ from the run being resumed and are not safe to change."""
    return [f"--{name.replace('_', '-')}: {saved[name]!r} in the run, {args[name]!r} {other}"
            for name in args if name in saved and name not in SAFE_TO_CHANGE and saved[name] != args[name]]


def locate(resume: str) -> tuple[Path, checkpoint.Contents]:
    """The run directory and the checkpoint to continue from, read and checksum-verified. A corrupt newest checkpoint
    is refused, never skipped silently: the message names the previous good one, which `--resume` accepts as a
    file."""
    run_dir, path = run_dir_of(resume), Path(resume)
    if not path.is_file():
        path, skipped = checkpoint.latest_valid(run_dir / "checkpoints")
        if skipped:
            reasons = "; ".join(f"{bad.name}: {reason}" for bad, reason in skipped)
            raise checkpoint.CheckpointError(f"refusing to resume from a corrupt checkpoint ({reasons}); to continue "
                                             f"from the last good one instead, pass --resume {path}")
    return run_dir, checkpoint.read(path)


def check_belongs_to_run(run_dir: Path, contents: checkpoint.Contents) -> None:
    """Refuse a checkpoint that another run wrote (its run id or its saved flags differ from the run's config.json)
    or whose step disagrees with its file name: resuming it would overwrite this run's rows and checkpoints."""
    saved, metadata = json.loads((run_dir / "config.json").read_text()), contents.metadata
    name = contents.path.name
    expected_step = checkpoint.step_of(contents.path)
    if expected_step is not None and metadata.get("step") != expected_step:
        raise checkpoint.CheckpointError(f"{name}: its saved step {metadata.get('step')} disagrees with its name")
    if saved.get("run_id") != metadata.get("config", {}).get("run_id"):
        raise checkpoint.CheckpointError(
            f"{name} belongs to another run (run id {metadata.get('config', {}).get('run_id')}, this run's is "
            f"{saved.get('run_id')}); refusing to resume {run_dir} from it")
    written_with = {k: v for k, v in metadata.get("config", {}).items() if k not in RUN_FACTS}
    differences = config_differences(saved, written_with, other="in the checkpoint")
    if differences:
        raise checkpoint.CheckpointError(f"{name} was written with other flags than {run_dir}: "
                                         + "; ".join(differences))


def warn_if_disk_is_short(run_dir: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(run_dir if run_dir.exists() else run_dir.parent).free
    if needed_bytes > free:
        print(f"warning: checkpoints need about {format_bytes(needed_bytes)} (the replay buffer dominates) but only "
              f"{format_bytes(free)} is free under {run_dir}", file=sys.stderr, flush=True)
