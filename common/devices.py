"""Where the train state lives: one device, or a `Mesh` over several, of one process or of several (common.processes).

Two ways to use D devices, both one compiled program whose inputs and outputs carry `NamedSharding`s, so that XLA
partitions it (nothing here is a hand-written collective):
- `seeds`: with `--num-seeds S`, the seed axis of the train state is split over the devices, S / D seeds on each,
  every seed's envs, replay and networks on its device. The seeds never communicate, so each computes what it
  computes on one device.
- `data` (`--data-parallel`): one seed's E envs and its replay are split along the env axis, E / D envs and a replay
  shard of capacity / D rows on each device; parameters, optimiser states and the key are replicated. Each update
  draws batch / D rows from every shard (common.training.sample_batch), and since the loss is a mean over the whole
  batch, XLA sums the gradient contributions of the shards: every device applies the same step.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import partial
from typing import Literal

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Mode = Literal["single", "seeds", "data"]


def device_count(args) -> int:
    """D: the devices a run uses (`--devices 0`: all of them, every process's)."""
    return args.devices or jax.device_count()


def mode_of(args) -> Mode:
    if device_count(args) == 1:
        return "single"
    return "data" if args.data_parallel else "seeds"


def replay_shards(args) -> int:
    """Replay shards of the run's one seed: D with `--data-parallel`, else 1."""
    return device_count(args) if args.data_parallel else 1


def nearest_multiples(value: int, of: int) -> str:
    lower = value // of * of
    return " or ".join(str(n) for n in (lower, lower + of) if n > 0)


def check_args(args, backend: str) -> None:
    """The placement flags against this machine and the other flags; raises ValueError with one line. Runs after
    jax.distributed is initialised, before anything compiles."""
    if args.devices < 0:
        raise ValueError(f"--devices must be ≥ 0 (0: every device), got {args.devices}")
    visible, processes = jax.device_count(), jax.process_count()
    count = device_count(args)
    if count > visible:
        hint = (f"; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={count} makes {count} (they share "
                f"its cores)" if jax.default_backend() == "cpu" else "")
        raise ValueError(f"--devices {count}: only {visible} device{'s' * (visible > 1)} "
                         f"({jax.devices()[0].device_kind}) {'are' if visible > 1 else 'is'} visible{hint}")
    if processes > 1 and count != visible:
        raise ValueError(f"--devices {args.devices}: with {processes} processes every device takes part; pass 0 or "
                         f"{visible}")
    if count > 1 and backend != "playground":
        raise ValueError(f"--devices {count}: {backend} envs step on the host, which one device feeds (the host, not "
                         f"the device, bounds their speed: docs/devices.md); use --num-seeds on one device, or a "
                         f"playground task")
    if args.data_parallel:
        if args.num_seeds > 1:
            raise ValueError(f"--data-parallel splits one seed over the devices; with --num-seeds {args.num_seeds} "
                             f"drop it, and the seeds are split instead")
        for name in ("num_envs", "batch_size", "buffer_size"):
            value = getattr(args, name)
            if value % count:
                raise ValueError(f"--{name.replace('_', '-')} {value} does not split over {count} devices "
                                 f"(--data-parallel); use {nearest_multiples(value, count)}")
    elif count > 1:
        if args.num_seeds == 1:
            raise ValueError(f"--devices {count} with one seed: add --data-parallel to split its envs and replay, or "
                             f"--num-seeds {count} to train {count} seeds")
        if args.num_seeds % count:
            raise ValueError(f"--num-seeds {args.num_seeds} does not split over {count} devices; use "
                             f"{nearest_multiples(args.num_seeds, count)}")


@dataclasses.dataclass(frozen=True)
class Placement:
    """A run's devices and how the train state is split over them (see the module docstring)."""

    mode: Mode
    mesh: Mesh | None  # None: one device, no sharding at all (the program of a run without --devices)

    @staticmethod
    def of(args, devices: list | None = None) -> Placement:
        """The run's placement; `devices` (default: the first D of jax.devices()) lets a test put a multi-device
        program's layout on one device."""
        mode = mode_of(args)
        if mode == "single":
            return Placement("single", None)
        devices = jax.devices()[:device_count(args)] if devices is None else devices
        return Placement(mode, Mesh(np.asarray(devices), (mode,)))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def split(self) -> NamedSharding:
        """Split along a leaf's leading axis (seeds, env or replay shard)."""
        return NamedSharding(self.mesh, PartitionSpec(self.mode))

    def state_shardings(self, split_leaves):
        """A sharding per leaf of `split_leaves` (a pytree of bools: leaf split along its leading axis, or not)."""
        return jax.tree.map(lambda split: self.split if split else self.replicated, split_leaves)

    def describe(self) -> dict:
        """What config.json records of the placement."""
        devices = jax.devices() if self.mesh is None else list(self.mesh.devices.flat)
        return dict(placement=self.mode, device_kind=devices[0].device_kind,
                    device_count=1 if self.mesh is None else len(devices),
                    mesh_shape={} if self.mesh is None else dict(self.mesh.shape), process_count=jax.process_count())


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
