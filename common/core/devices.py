"""Moving the train state between devices and hosts: global values on the host, a host value laid out over devices,
and the check that replicated leaves stayed equal. The layout itself is common.core.layout."""

from __future__ import annotations

import hashlib
from functools import partial

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def as_data(leaf):
    """A typed key array's raw data (collectives and host copies move plain arrays); any other leaf as it is."""
    return jax.random.key_data(leaf) if is_key(leaf) else leaf


def host_data(tree):
    """Every leaf as plain host data (typed keys as their raw data); a template of ShapeDtypeStructs gives the
    shapes and dtypes of that data."""
    return jax.tree.map(lambda leaf: jax.eval_shape(as_data, leaf) if isinstance(leaf, jax.ShapeDtypeStruct)
                        else np.asarray(as_data(leaf)), tree)


def from_host_data(template, data):
    """The inverse of host_data: typed keys wrapped again where `template` (a state or its shapes) has them."""
    def impl(like):  # jax.random.key_impl takes arrays only; a ShapeDtypeStruct's key dtype carries its impl
        return like.dtype._impl if isinstance(like, jax.ShapeDtypeStruct) else jax.random.key_impl(like)

    return jax.tree.map(lambda like, value: jax.random.wrap_key_data(value, impl=impl(like)) if is_key(like)
                        else value, template, data)


def to_host(tree):
    """Every leaf with its global value on the host, on every process: what checkpoints, metrics and the host loop
    read. With several processes a split leaf has parts on other hosts, so this is a collective that every process
    calls."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return from_host_data(tree, multihost_utils.process_allgather(jax.tree.map(as_data, tree), tiled=True))


def put(tree, shardings):
    """Values that every process holds alike (a resumed state) as global arrays laid out by `shardings`."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    data = jax.tree.map(lambda value, sharding: jax.make_array_from_callback(
        value.shape, sharding, lambda index, value=value: value[index]), host_data(tree), shardings)
    return jax.jit(partial(from_host_data, tree), out_shardings=shardings)(data)


class ReplicasDiverged(RuntimeError):
    pass


def check_replicas(tree, what: str) -> None:
    """Every device holds the same copy of each replicated leaf of `tree` (data parallel's parameters and optimiser
    states), bit for bit; raises ReplicasDiverged naming the first leaf that differs. Across processes, each one's
    copies are compared with process 0's through a digest."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        copies = [np.asarray(shard.data) for shard in as_data(leaf).addressable_shards]
        for device_index, copy in enumerate(copies[1:], 1):
            if not np.array_equal(copy, copies[0], equal_nan=True):
                shards = leaf.addressable_shards
                raise ReplicasDiverged(f"{what}: the copy of {jax.tree_util.keystr(path)} on "
                                       f"{shards[device_index].device} differs from the one on {shards[0].device}")
    if jax.process_count() > 1:
        local = np.frombuffer(digest_of(tree), np.uint8)
        try:
            multihost_utils.assert_equal(local, f"{what}: process {jax.process_index()}'s copy differs")
        except AssertionError as error:
            raise ReplicasDiverged(str(error)) from None


def digest_of(tree) -> bytes:
    """A digest of this process's first copy of every leaf."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        digest.update(np.asarray(as_data(leaf).addressable_shards[0].data).tobytes())
    return digest.digest()
