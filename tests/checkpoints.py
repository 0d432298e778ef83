"""Reading checkpoints back in tests: a whole state against a template, or every stored leaf."""

from pathlib import Path

import numpy as np

from common.run import checkpoint


def load_checkpoint(path: Path, template) -> tuple[object, dict]:
    """(state, metadata) of a verified checkpoint whose leaves match `template` (a state or its shapes)."""
    contents = checkpoint.read(Path(path))
    return checkpoint.to_state(contents, template), contents.metadata


def checkpoint_leaves(path: Path) -> dict[str, np.ndarray]:
    """{"leaf_<i>": array as stored} of a verified checkpoint (the names its payload gives them), for comparing
    checkpoints array by array."""
    return {f"leaf_{i}": array for i, array in enumerate(checkpoint.read_by_path(Path(path))[0].values())}
