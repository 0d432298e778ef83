"""What a run will hold in memory, against what the device has, checked before anything compiles."""

import os
import sys

import jax
import numpy as np

# Above this share of the memory available the run is warned: XLA needs room for temporaries, and on the CPU a
# checkpoint copies the filled replay to the host.
WARN_SHARE = 0.7


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KiB', 3 * 2**30 -> '3.00 GiB': units that read well at any size."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}" if unit == "GiB" else f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def tree_bytes(tree) -> int:
    """Bytes of every array in a pytree of arrays or ShapeDtypeStructs (typed PRNG keys count their key data)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.eval_shape(jax.random.key_data, leaf)
        total += int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    return total


def available_bytes(device) -> tuple[int | None, str]:
    """(bytes free for the run, where that figure comes from): an accelerator's own allocator limit, or on the CPU
    the host's available memory."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"{device.device_kind} memory"
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024, "available host memory"
    except (OSError, KeyError, ValueError):
        return None, "host memory"


def check_memory(state_template, device, what: str, share: int = 1) -> None:
    """Exit 2 with the figures if the train state (split over `share` devices) cannot fit on `device`; warn when it
    comes near."""
    needed = tree_bytes(state_template) // share
    free, source = available_bytes(device)
    if free is None:
        return
    if needed > free:
        print(f"error: {what} needs {format_bytes(needed)} but only {format_bytes(free)} of {source} is free; "
              f"lower --buffer-size, --num-envs or --num-seeds", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if needed > WARN_SHARE * free:
        print(f"warning: {what} needs {format_bytes(needed)} of the {format_bytes(free)} of {source} that is free",
              file=sys.stderr, flush=True)


def check_run_root(run_root: str) -> None:
    """The run root exists or can be made, is a directory, and is writable (ValueError naming --run-root)."""
    if os.path.exists(run_root) and not os.path.isdir(run_root):
        raise ValueError(f"--run-root: {run_root} exists and is not a directory")
    try:
        os.makedirs(run_root, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--run-root: cannot create {run_root} ({error.strerror})") from error
    if not os.access(run_root, os.W_OK | os.X_OK):
        raise ValueError(f"--run-root: {run_root} is not writable")
