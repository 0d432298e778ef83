"""The exported policy: a small file beside each checkpoint with what acting needs and nothing else (docs/videos.md).

checkpoints/policy_<step:012d>.msgpack is one msgpack map in flax.serialization's encoding, so that an algorithm
file reads it with flax alone (its `load_policy`), and reading it can never run code:
  format    "flowrl-jax-policy/1"
  metadata  JSON text: algo, step, seed, the algorithm's config, obs_size, action_size, action_low/high (the env's
            bounds that actions in [-1, 1] map to) and the run's config (config.json)
  sha256    hex digest of the metadata text, then of each array in `fields` by sorted path ("policy/params/...":
            its path, dtype, shape and bytes)
  fields    {learner-state field: its flax state dict}, for the fields `act` reads (FlowRL: policy, obs_stats;
            SAC: actor, obs_stats); a field that is None (no observation normalisation) is left out
With several seeds, the first seed's policy is exported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from flax import serialization, traverse_util

from common.core.layout import Layout

FORMAT = "flowrl-jax-policy/1"
_NAME = re.compile(r"policy_(\d+)\.msgpack")


class PolicyFile(NamedTuple):
    """How an algorithm's policy is exported and read back."""

    fields: tuple[str, ...]  # the learner-state fields that `act` reads
    load: Callable[[Path], tuple[Any, Any, dict]]  # the algorithm file's own `load_policy`: (agent, state, metadata)


def digest(metadata_text: str, fields: dict) -> str:
    sha = hashlib.sha256(metadata_text.encode())
    for name, array in sorted(traverse_util.flatten_dict(fields, sep="/").items()):
        sha.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def policy_path(checkpoint_path: Path) -> Path:
    """The exported policy beside a checkpoint_<step>.msgpack."""
    return checkpoint_path.with_name(checkpoint_path.name.replace("checkpoint_", "policy_", 1))


def save(directory: Path, step: int, learner, agent, env, fields: tuple[str, ...], run_config: dict,
         layout: Layout) -> Path:
    """Write directory/policy_<step>.msgpack atomically (the first seed's policy), then delete the other policy files
    whose checkpoint is gone (so that they follow the checkpoints' `--keep-checkpoints`)."""
    exported = {name: serialization.to_state_dict(jax.tree.map(lambda leaf: np.asarray(layout.first_seed(leaf)),
                                                               jax.device_get(getattr(learner, name))))
                for name in fields if getattr(learner, name) is not None}
    metadata = json.dumps(dict(
        algo=run_config["algo"], step=step, seed=run_config["seed"], config=dataclasses.asdict(agent.config),
        obs_size=env.obs_size, action_size=env.action_size, action_low=np.asarray(env.action_low).tolist(),
        action_high=np.asarray(env.action_high).tolist(), run=run_config), default=str)
    payload = dict(format=FORMAT, metadata=metadata, sha256=digest(metadata, exported), fields=exported)
    path = Path(directory) / f"policy_{step:012d}.msgpack"
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(serialization.msgpack_serialize(payload))
    os.replace(partial, path)
    for stale in Path(directory).iterdir():
        match = _NAME.fullmatch(stale.name)
        if match and stale != path and not (stale.parent / f"checkpoint_{match.group(1)}.msgpack").exists():
            stale.unlink()
    return path


def locate(target: str) -> Path:
    """The policy file that `--play` names: a policy file itself, the one beside a checkpoint, or a run directory's
    newest. Raises ValueError when there is none."""
    path = Path(target)
    if path.is_dir():
        found = sorted((int(m.group(1)), p) for p in (path / "checkpoints").glob("policy_*.msgpack")
                       if (m := _NAME.fullmatch(p.name)))
        if not found:
            raise ValueError(f"--play: {target} has no exported policy (checkpoints/policy_<step>.msgpack)")
        return found[-1][1]
    if path.name.startswith("checkpoint_"):
        path = policy_path(path)
    if not path.is_file():
        raise ValueError(f"--play: no policy file at {path}")
    return path
