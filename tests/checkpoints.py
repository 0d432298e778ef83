"""Reading checkpoints back in tests: a whole state against a template, or every stored leaf."""

from pathlib import Path

import jax
import numpy as np

from common.run import checkpoint


def numbers(leaf):
    """A state leaf as comparable numbers: a random key as its key data, anything else as it is."""
    return jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf


def load_checkpoint(path: Path, template) -> tuple[object, dict]:
    """(state, metadata) of a verified checkpoint whose leaves match `template` (a state or its shapes)."""
    contents = checkpoint.read(Path(path))
    return checkpoint.to_state(contents, template), contents.metadata


def checkpoint_leaves(path: Path) -> dict[str, np.ndarray]:
    """{"leaf_<i>": array as stored} of a verified checkpoint (the names its payload gives them), for comparing
    checkpoints array by array."""
    return {f"leaf_{i}": array for i, array in enumerate(checkpoint.read_by_path(Path(path))[0].values())}
