"""Device-resident replay buffer: a ring over a pytree of arrays, with pure init / add / sample.

The buffer is part of the train state, so it lives on the accelerator, is donated to the compiled chunk (updated in
place), and can be vmapped over seeds or checkpointed like any other pytree.
"""

import jax
import jax.numpy as jnp
from flax import struct


class ReplayBuffer(struct.PyTreeNode):
    data: dict            # name -> array [capacity, ...]
    position: jax.Array   # int32: the row the next transition goes to
    size: jax.Array       # int32: how many rows hold data (≤ capacity)

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def init(capacity: int, example: dict) -> ReplayBuffer:
    """An empty buffer whose rows have the shapes and dtypes of `example` (one unbatched transition)."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example)
    return ReplayBuffer(data=data, position=jnp.int32(0), size=jnp.int32(0))


def add(buffer: ReplayBuffer, batch: dict, valid: jax.Array | None = None) -> ReplayBuffer:
    """Write a batch of transitions (leading axis = batch) at the ring position, wrapping past the end.

    With `valid` (bool [batch]) only the valid rows are written, packed in order: the shapes stay static while the
    number of rows written varies.
    """
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    if valid is None:
        valid = jnp.ones(batch_size, bool)
    order = jnp.argsort(~valid, stable=True)  # valid rows first, in their original order
    count = valid.sum(dtype=jnp.int32)
    rows = (buffer.position + jnp.arange(batch_size)) % buffer.capacity
    write = jnp.arange(batch_size) < count

    def write_rows(store, new):
        new = new[order]
        keep_old = store[rows]
        return store.at[rows].set(jnp.where(write.reshape(-1, *[1] * (new.ndim - 1)), new, keep_old))

    return buffer.replace(
        data=jax.tree.map(write_rows, buffer.data, batch),
        position=(buffer.position + count) % buffer.capacity,
        size=jnp.minimum(buffer.size + count, buffer.capacity),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int, recent_window: int, recent_fraction: float) -> dict:
    """A batch drawn uniformly over the filled buffer, except a `recent_fraction` share drawn uniformly over the
    `recent_window` newest transitions (FlowRL's reference: 20 % over the newest 2 048). The split rounds as the
    reference's does: int(0.8 · 256) = 204 uniform rows, 52 recent. Rows are drawn with replacement (the reference
    draws each share without), which differs only in the rare repeat of a row."""
    num_uniform = int(round(batch_size * (1.0 - recent_fraction), 6))  # rounded first: 1 − 0.9 is 0.0999…98 in binary
    num_recent = batch_size - num_uniform
    uniform_key, recent_key = jax.random.split(key)
    uniform_rows = jax.random.randint(uniform_key, (num_uniform,), 0, buffer.size)
    window = jnp.minimum(buffer.size, recent_window)
    ages = jax.random.randint(recent_key, (num_recent,), 0, window)  # 0 = newest
    recent_rows = (buffer.position - 1 - ages) % buffer.capacity
    rows = jnp.concatenate([uniform_rows, recent_rows])
    return jax.tree.map(lambda store: store[rows], buffer.data)


def trimmed(buffer: ReplayBuffer, rows: int, row_axis: int = 0) -> ReplayBuffer:
    """The buffer with only its first `rows` rows (along `row_axis`, 1 when a seed axis leads): what a checkpoint
    stores. Rows fill from 0, so the rows at and past `size` were never written (zeros) until the ring wraps."""
    return buffer.replace(data=jax.tree.map(lambda x: jax.lax.slice_in_dim(x, 0, rows, axis=row_axis), buffer.data))


def padded(buffer: ReplayBuffer, capacity: int, row_axis: int = 0) -> ReplayBuffer:
    """The inverse of `trimmed`: zero rows appended up to `capacity`, as `init` leaves them."""
    def pad(x):
        widths = [(0, 0)] * x.ndim
        widths[row_axis] = (0, capacity - x.shape[row_axis])
        return jnp.pad(x, widths)

    return buffer.replace(data=jax.tree.map(pad, buffer.data))
