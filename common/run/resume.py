"""Starting or continuing a run: which checkpoint to load, whether it belongs to the run, which flags may change,
whether checkpoints fit on disk (all before any env is built), and the resumed train state, laid out as the run's
layout says and sent from process 0 to the others."""

import dataclasses
import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from common.core import devices
from common.run import checkpoint, processes
from common.run.logger import make_run_dir
from common.run.resources import format_bytes
from common.run.run_lock import RunLocked, lock_run_dir

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
    path = run_dir_of(resume) / "config.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--resume: {path} is damaged and cannot be read ({error})") from None


def values_it_ran_with(config_class: type, saved: dict) -> dict:
    """A run's saved flags, completed: a flag that the run's record lacks is newer than the run, which ran as its
    default does, or as the value that `config_class.VALUES_BEFORE_FLAGS` names for runs written before it existed."""
    return {**dataclasses.asdict(config_class()), **getattr(config_class, "VALUES_BEFORE_FLAGS", {}), **saved}


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
        directory = run_dir / "checkpoints"
        if not directory.is_dir() or not checkpoint.list_checkpoints(directory):
            raise ValueError(f"--resume: {run_dir} has no checkpoint yet (it stopped before its first one); start it "
                             f"again without --resume")
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


def warn_if_disk_is_short(run_dir: Path, template, keep_checkpoints: int) -> None:
    """Warn where the checkpoints that a run keeps (and the one being written) may not fit on its disk."""
    needed_bytes = checkpoint.checkpoint_bytes(template) * (keep_checkpoints + 1)
    free = shutil.disk_usage(run_dir if run_dir.exists() else run_dir.parent).free
    if needed_bytes > free:
        print(f"warning: checkpoints need about {format_bytes(needed_bytes)} (the replay buffer dominates) but only "
              f"{format_bytes(free)} is free under {run_dir}", file=sys.stderr, flush=True)


def describe_last(path: Path | None) -> str:
    """The last good checkpoint, as the messages of a stopped run name it."""
    return str(path) if path is not None else "none was written yet"


class ResumedRun(NamedTuple):
    run_dir: Path
    contents: checkpoint.Contents  # the checkpoint to continue from, checksum and identity verified
    lock: Any                      # held for the life of the process


def open_resumed_run(resume: str) -> ResumedRun | None:
    """The run `--resume` names, locked for this process, with its checkpoint read and verified as the run's own;
    anything wrong exits 2 before a file of the run is touched. With several processes, process 0 alone reads the
    run (the others get its state in `start_or_resume`) and all of them exit when it refuses; the others return
    None."""
    problem = None
    if processes.is_main():
        try:
            run_dir, contents = locate(resume)
            check_belongs_to_run(run_dir, contents)  # read-only: a refused resume leaves the run as it was
            lock = lock_run_dir(run_dir)
        except (checkpoint.CheckpointError, RunLocked, ValueError) as error:
            problem = error
    if processes.any_process(problem is not None):
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return ResumedRun(run_dir, contents, lock) if processes.is_main() else None


class RunStart(NamedTuple):
    run_dir: Path | None     # None on a process other than 0
    run_id: str | None       # the run's identity, in config.json and in every checkpoint
    state: Any               # the resumed train state, or None for a fresh run
    step: int                # env steps already done
    checkpoint: Path | None  # the checkpoint resumed from
    lock: Any                # the run directory's lock, held for the life of the process


def start_or_resume(run, algo: str, env, template, resumed: ResumedRun | None, shardings=None) -> RunStart:
    """For a ResolvedRun `run`: a fresh, locked run directory; or the resumed run's state, fitted to `template` (a
    checkpoint stores only the replay's filled rows), with host envs restored, and laid out by `shardings` (several
    devices). With several processes only process 0 has a run directory; it sends the resumed state to the
    others."""
    args, layout = run.args, run.layout
    if not processes.is_main():
        return RunStart(None, None, *resumed_from_main(run, template, shardings), None, None)
    if not args.resume:
        run_dir = make_run_dir(args.run_root, env.name, env.backend, algo, run.seed_label)
        return RunStart(run_dir, uuid.uuid4().hex, None, 0, None, lock_run_dir(run_dir))
    resumed = resumed or open_resumed_run(args.resume)
    metadata = resumed.contents.metadata
    rows = metadata.get("replay_rows")
    try:
        state = checkpoint.to_state(resumed.contents, layout.stored_template(template, rows))
    except checkpoint.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    if jax.process_count() > 1:
        processes.from_main(np.array([metadata["step"], -1 if rows is None else rows], np.int64))
        processes.from_main(jax.tree.leaves(devices.host_data(state)))
    state = placed_state(layout.fitted(state, rows, args.buffer_size), shardings)
    env.restore(state.env)  # host envs take back their saved state; Playground's lives in the pytree
    print(f"resuming {resumed.run_dir} from {resumed.contents.path.name} (env step {metadata['step']})", flush=True)
    return RunStart(resumed.run_dir, metadata["config"]["run_id"], state, metadata["step"], resumed.contents.path,
                    resumed.lock)


def placed_state(state, shardings):
    return state if shardings is None else devices.put(state, shardings)


def resumed_from_main(run, template, shardings) -> tuple[Any, int]:
    """On a process other than 0: (state, step) as process 0 resumed them, or (None, 0) for a fresh run."""
    if not run.args.resume:
        return None, 0
    step, rows = (int(value) for value in processes.from_main(np.zeros(2, np.int64)))
    rows = None if rows < 0 else rows
    stored = run.layout.stored_template(template, rows)
    leaves = processes.from_main([np.zeros(leaf.shape, leaf.dtype) for leaf in
                                  jax.tree.leaves(devices.host_data(stored))])
    state = devices.from_host_data(stored, jax.tree.unflatten(jax.tree.structure(stored), leaves))
    return placed_state(run.layout.fitted(state, rows, run.args.buffer_size), shardings), step
