"""The device replay buffer: ring semantics and the 80/20 uniform/recent sampling."""

import jax
import jax.numpy as jnp
import numpy as np

from common.core import replay


def filled(capacity: int, count: int, batch: int = 1):
    """A buffer after writing transitions 0, 1, …, count−1 (the value is its write index), `batch` at a time."""
    buf = replay.init(capacity, {"index": jnp.int32(0), "obs": jnp.zeros(2)})
    add = jax.jit(replay.add)
    for start in range(0, count, batch):
        index = jnp.arange(start, start + batch, dtype=jnp.int32)
        buf = add(buf, {"index": index, "obs": jnp.stack([index, -index], 1).astype(jnp.float32)})
    return buf


def test_add_wraps_around_and_overwrites_the_oldest():
    buf = filled(capacity=5, count=7)
    assert int(buf.size) == 5 and int(buf.position) == 2
    np.testing.assert_array_equal(buf.data["index"], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buf.data["obs"][:, 1], -buf.data["index"])


def test_batched_add_wraps_within_one_write():
    buf = filled(capacity=8, count=12, batch=4)
    np.testing.assert_array_equal(buf.data["index"], [8, 9, 10, 11, 4, 5, 6, 7])
    assert int(buf.position) == 4 and int(buf.size) == 8


def test_samples_only_filled_rows_before_the_buffer_is_full():
    buf = filled(capacity=100, count=10)
    batch = replay.sample(buf, jax.random.key(0), 1000, recent_window=4, recent_fraction=0.2)
    assert set(np.asarray(batch["index"]).tolist()) <= set(range(10))
    np.testing.assert_array_equal(batch["obs"][:, 0], batch["index"])  # fields of one row stay together


def test_recent_share_is_uniform_over_the_newest_window_after_wrap_around():
    capacity, written, window = 64, 150, 8
    buf = filled(capacity, written, batch=2)
    batch = replay.sample(buf, jax.random.key(1), 20_000, recent_window=window, recent_fraction=0.2)
    index = np.asarray(batch["index"])
    recent, uniform = index[16_000:], index[:16_000]
    # The recent 20 % comes from exactly the 8 newest transitions, close to uniformly.
    assert set(recent.tolist()) == set(range(written - window, written))
    counts = np.bincount(recent - (written - window), minlength=window)
    assert np.all(np.abs(counts / len(recent) - 1 / window) < 0.02)
    # The uniform 80 % covers everything still stored (the 64 newest), and nothing overwritten.
    assert set(uniform.tolist()) == set(range(written - capacity, written))
    # So the newest window is over-represented: its expected share is 0.2 + 0.8·8/64 = 0.3.
    assert abs(np.mean(index >= written - window) - 0.3) < 0.01


def test_batch_splits_as_the_reference_rounds_it():
    """The reference draws int(0.8 · B) rows uniformly and the rest from the window: 204 + 52 for B = 256."""
    buf = filled(capacity=10_000, count=10_000)
    for batch_size, fraction, num_recent in ((256, 0.2, 52), (512, 0.2, 103), (20, 0.2, 4), (10, 0.9, 9)):
        batch = replay.sample(buf, jax.random.key(2), batch_size, recent_window=1, recent_fraction=fraction)
        newest = np.asarray(batch["index"]) == 9_999  # a uniform row is the newest with probability 1e-4 only
        assert newest[-num_recent:].all() and not newest[-num_recent - 1]


def test_masked_add_packs_only_the_valid_rows():
    buf = filled(capacity=6, count=4)
    index = jnp.array([10, 11, 12, 13], jnp.int32)
    valid = jnp.array([True, False, True, False])
    buf = jax.jit(replay.add)(buf, {"index": index, "obs": jnp.zeros((4, 2))}, valid)
    # 10 and 12 are written next (rows 4, 5), in order; the invalid rows are dropped, nothing else is touched.
    np.testing.assert_array_equal(buf.data["index"], [0, 1, 2, 3, 10, 12])
    assert int(buf.position) == 0 and int(buf.size) == 6
    buf = jax.jit(replay.add)(buf, {"index": index, "obs": jnp.zeros((4, 2))}, jnp.zeros(4, bool))
    np.testing.assert_array_equal(buf.data["index"], [0, 1, 2, 3, 10, 12])
    assert int(buf.position) == 0
