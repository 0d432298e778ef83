"""Continuing a run: which checkpoint to load, which flags may change, and whether checkpoints fit on disk."""

import json
import shutil
import sys
from pathlib import Path

from common import checkpoint

# Flags that do not change what the train state means or how the next chunk computes: they may differ on resume.
SAFE_TO_CHANGE = frozenset({"total_steps", "eval_interval", "eval_episodes", "eval_mode", "checkpoint_interval",
                            "keep_checkpoints", "resume", "run_root", "wandb", "wandb_project",
                            "host_threads"})


def run_dir_of(resume: str) -> Path:
    """`--resume` names a run directory, or one checkpoint file inside its `checkpoints/`."""
    path = Path(resume)
    run_dir = path.parent.parent if path.is_file() else path
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"--resume: {resume} is neither a run directory nor a checkpoint in one (no config.json)")
    return run_dir


def saved_config(resume: str) -> dict:
    return json.loads((run_dir_of(resume) / "config.json").read_text())


def config_differences(saved: dict, args: dict) -> list[str]:
    """The flags whose values differ from the run being resumed and are not safe to change."""
    return [f"--{name.replace('_', '-')}: {saved[name]!r} in the run, {args[name]!r} now"
            for name in args if name in saved and name not in SAFE_TO_CHANGE and saved[name] != args[name]]


def locate(resume: str, template) -> tuple[Path, Path]:
    """The run directory and the checkpoint to continue from. A corrupt newest checkpoint is refused, never skipped
    silently: the message names the previous good one, which `--resume` accepts as a file."""
    run_dir, path = run_dir_of(resume), Path(resume)
    if path.is_file():
        return run_dir, path
    good, skipped = checkpoint.latest_valid(run_dir / "checkpoints", template)
    if skipped:
        reasons = "; ".join(f"{bad.name}: {reason}" for bad, reason in skipped)
        raise checkpoint.CheckpointError(f"refusing to resume from a corrupt checkpoint ({reasons}); to continue from "
                                         f"the last good one instead, pass --resume {good}")
    return run_dir, good


def warn_if_disk_is_short(run_dir: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(run_dir if run_dir.exists() else run_dir.parent).free
    if needed_bytes > free:
        print(f"warning: checkpoints need about {needed_bytes / 2**30:.2f} GiB (the replay buffer dominates) but "
              f"only {free / 2**30:.2f} GiB is free under {run_dir}", file=sys.stderr, flush=True)
