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


def seconds_per_update(update, state, count: int, repeats: int) -> float | None:
    """Seconds per call of `update(state, key) -> (state, metrics)` (common.core.chunk.make_update's), from one
    compiled scan of `count` calls from `state`, the best of `repeats` scans; compiled before any timing, and only
    compiled (None) with `repeats` 0."""
    keys = jax.random.split(jax.random.key(1), count)
    updates = jax.jit(lambda state, keys: jax.lax.scan(update, state, keys)[1])
    compiled = updates.lower(state, keys).compile()
    return best_seconds(lambda: compiled(state, keys), repeats) / count if repeats else None
