"""The one timing rule of the benchmarks: the best of several calls, each waited on until the device is done."""

import time

import jax


def best_seconds(function, repeats: int) -> float:
    """Shortest wall time of `repeats` calls of `function()` (already compiled), blocking on its result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return min(times)
