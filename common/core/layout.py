"""The train state's layout: its axes (seeds, replay shards, replay rows) and its placement over devices, in one
object built once from the run's flags.

- Seeds: with S > 1 seeds every leaf of the train state carries a leading seed axis and the trainer is vmapped over
  it, except the counters that every seed shares (the env steps, and the algorithm's `lockstep_fields`): seeds run
  in lockstep, and an unbatched counter keeps a `lax.cond` on it a real branch instead of a select that computes
  both. One seed has no axis, so its program and its checkpoints are those of a plain single-seed run.
- Replay shards (`data` mode): one seed's replay is D rings of capacity / D rows on a leading shard axis.
- Placement over D devices, one compiled program whose inputs and outputs carry `NamedSharding`s so that XLA
  partitions it (no hand-written collective):
  - `seeds`: the seed axis is split, S / D seeds per device; seeds never communicate.
  - `data`: the envs' state and the replay shards are split, parameters, optimiser states and the key replicated.
    Each update draws batch / D rows from every shard, and since the loss is a mean over the whole batch, XLA sums
    the shards' gradient contributions: every device applies the same step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.core import replay
from common.core.contract import Algorithm

Mode = Literal["single", "seeds", "data"]


@dataclasses.dataclass(frozen=True)
class Layout:
    num_seeds: int
    mode: Mode = "single"
    mesh: Mesh | None = None  # None: one device, no sharding at all

    @staticmethod
    def of(num_seeds: int, device_count: int = 1, data_parallel: bool = False, devices: list | None = None) -> Layout:
        """The layout of a run; `devices` (default: the first `device_count` of jax.devices()) lets a test put a
        multi-device program's layout on one device."""
        if device_count <= 1:
            return Layout(num_seeds)
        mode = "data" if data_parallel else "seeds"
        devices = jax.devices()[:device_count] if devices is None else devices
        return Layout(num_seeds, mode, Mesh(np.asarray(devices), (mode,)))

    @property
    def device_count(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    @property
    def replay_shards(self) -> int:
        """Replay rings of the run's one seed: D in `data` mode, else 1."""
        return self.device_count if self.mode == "data" else 1

    @property
    def row_axis(self) -> int:
        """The replay's row axis in a leaf of the train state: 1 behind a seed or shard axis, else 0."""
        return 1 if self.num_seeds > 1 or self.replay_shards > 1 else 0

    def seed_keys(self, first_seed: int) -> tuple[jax.Array, jax.Array]:
        """(init keys, eval keys), one per seed: seed k's keys are those of a single run with `--seed k`."""
        keys = [jax.random.split(jax.random.key(seed)) for seed in range(first_seed, first_seed + self.num_seeds)]
        return jnp.stack([k[0] for k in keys]), jnp.stack([k[1] for k in keys])

    def first_seed(self, leaf):
        """The first seed's part of a leaf that has a seed axis (the leaf itself where there is one seed)."""
        return leaf[0] if self.num_seeds > 1 else leaf

    def seed_axes(self, state, agent: Algorithm):
        """vmap axes of a (single-seed) train state over seeds: 0, or None for the lockstep counters."""
        axes = jax.tree.map(lambda _: 0, state)
        return axes.replace(env_steps=None, learner=axes.learner.replace(**{name: None for name in
                                                                           agent.lockstep_fields}))

    def over_seeds(self, trainer):
        """The trainer (common.core.trainer.Trainer) for all seeds in one program: init and evaluate take one key per
        seed, and evaluate returns Episodes of [seeds, episodes]. Several seeds: chunk and evaluate vmap over the
        leading seed axis (seed_axes), and the chunk's metrics carry that axis."""
        recorded = trainer.evaluate_recorded
        if self.num_seeds == 1:
            def with_seed_axis(evaluate):
                return None if evaluate is None else lambda state, keys, deterministic: jax.tree.map(
                    lambda x: x[None], evaluate(state, keys[0], deterministic))

            return trainer._replace(init=lambda keys: trainer.init(keys[0]), evaluate=with_seed_axis(trainer.evaluate),
                                    evaluate_recorded=with_seed_axis(recorded))
        axes = self.seed_axes(jax.eval_shape(trainer.init, jax.random.key(0)), trainer.agent)
        return trainer._replace(
            init=jax.jit(jax.vmap(trainer.init, out_axes=axes)),
            chunk=jax.jit(jax.vmap(trainer.chunk, in_axes=(axes,), out_axes=(axes, 0)), donate_argnums=0),
            evaluate=jax.jit(jax.vmap(trainer.evaluate, in_axes=(axes, 0, None))),
            evaluate_recorded=None if recorded is None else jax.jit(jax.vmap(recorded, in_axes=(axes, 0, None))),
        )

    def split_leaves(self, template, agent: Algorithm):
        """Which leaves of the (all-seed) train state are split along their leading axis over the devices."""
        if self.mode == "seeds":
            return jax.tree.map(lambda axis: axis == 0, self.seed_axes(template, agent),
                                is_leaf=lambda axis: axis is None)
        split, whole = (jax.tree.map(lambda _: value, template) for value in (True, False))
        return whole.replace(env=split.env, buffer=split.buffer)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def state_shardings(self, template, agent: Algorithm):
        """A sharding per leaf of the train state: split along the leading axis, or replicated."""
        split = NamedSharding(self.mesh, PartitionSpec(self.mode))
        return jax.tree.map(lambda leaf_split: split if leaf_split else self.replicated,
                            self.split_leaves(template, agent))

    def placed(self, trainer, template, compiled: Callable = lambda jitted: jitted):
        """The trainer (over_seeds') with the train state laid out over the devices: init, chunk and evaluate are
        compiled with that layout in and out (metrics and returns replicated, so that every process reads them).
        `compiled` wraps each jitted function (with several processes: a barrier before its first run). One device:
        the trainer unchanged."""
        if self.mesh is None:
            return trainer
        shardings = self.state_shardings(template, trainer.agent)

        def returning_replicated(evaluate):
            return None if evaluate is None else compiled(jax.jit(evaluate, out_shardings=self.replicated))

        return trainer._replace(
            init=compiled(jax.jit(trainer.init, out_shardings=shardings)),
            chunk=compiled(jax.jit(trainer.chunk, in_shardings=(shardings,), out_shardings=(shardings,
                                                                                          self.replicated),
                                   donate_argnums=0)),
            evaluate=returning_replicated(trainer.evaluate),
            evaluate_recorded=returning_replicated(trainer.evaluate_recorded), state_shardings=shardings)

    def stored(self, state, rows: int):
        """The state as a checkpoint holds it: the replay's first `rows` rows (works on shapes too)."""
        return state.replace(buffer=replay.trimmed(state.buffer, rows, self.row_axis))

    def stored_template(self, template, rows: int | None):
        """The shapes of a stored state (`rows` None: a checkpoint that recorded no row count holds every row)."""
        return template if rows is None else jax.eval_shape(lambda state: self.stored(state, rows), template)

    def fitted(self, state, rows: int | None, capacity: int):
        """A stored state as the chunk takes it: the replay padded back to `capacity` (all shards together)."""
        if rows is None:
            return state
        return state.replace(buffer=replay.padded(state.buffer, capacity // self.replay_shards, self.row_axis))

    def describe(self) -> dict:
        """What config.json records of the placement."""
        devices = jax.devices() if self.mesh is None else list(self.mesh.devices.flat)
        return dict(placement=self.mode, device_kind=devices[0].device_kind, device_count=self.device_count,
                    mesh_shape={} if self.mesh is None else dict(self.mesh.shape), process_count=jax.process_count())
