"""Checkpoints: bit-exact round trips, atomic writes and pruning, and a loud CheckpointError for every bad file."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from common import checkpoint
from common.checkpoint import CheckpointError


class Buffer(struct.PyTreeNode):  # like common.buffer.ReplayBuffer
    data: dict
    position: jax.Array
    size: jax.Array


class Env(struct.PyTreeNode):  # like common.envs.EnvState, with a static field as mjx Data has
    physics: dict
    rng: jax.Array
    num_envs: int = struct.field(pytree_node=False, default=4)


def make_state(obs_size: int = 3, rows: int = 8):
    """A small pytree shaped like the real train state, with values that are not all zeros."""
    key = jax.random.key(0)
    params = {"params": {"dense": {"kernel": jnp.arange(obs_size * 4, dtype=jnp.float32).reshape(obs_size, 4),
                                   "bias": jnp.array([np.nan, -0.0, 1e-38, -2.5], jnp.float32)}}}
    optimiser = optax.adam(1e-3)
    _, opt_state = optimiser.update(params, optimiser.init(params), params)  # count = 1, non-zero moments
    buffer = Buffer(
        data={"obs": jax.random.normal(jax.random.key(1), (rows, obs_size)), "done": jnp.arange(rows) % 3 == 0,
              "index": jnp.arange(rows, dtype=jnp.int32)},
        position=jnp.int32(5), size=jnp.int32(rows),
    )
    env = Env(physics={"qpos": jnp.linspace(-1, 1, 8).reshape(4, 2), "ncon": jnp.array([0, 1, 2, 3], jnp.int32),
                       "flag": jnp.array([True, False, True, True])},
              rng=jax.random.split(jax.random.key(2), 4))
    return {"policy": params, "policy_opt": opt_state, "buffer": buffer, "env": env, "key": key,
            "env_steps": jnp.int32(1234), "temperature": jnp.float32(0.25), "half": jnp.array([1.5, -3], jnp.bfloat16)}


def template(**kwargs):
    return jax.eval_shape(lambda: make_state(**kwargs))


def good_checkpoint(tmp_path, step=10):
    return checkpoint.save(tmp_path, step, make_state(), {"step": step}, keep=5)


def flip_byte(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------------------------------------------------
# Round trip
# ----------------------------------------------------------------------------------------------------------------------
def test_round_trip_is_bit_exact_with_typed_keys_and_metadata(tmp_path):
    state = make_state()
    metadata = {"config": {"env_id": "cheetah-run", "learning_rate": 3e-4, "hidden": [256, 256]}, "wall_time": 12.5}
    path = checkpoint.save(tmp_path, 42, state, metadata, keep=3)
    assert path == tmp_path / "checkpoint_000000000042.npz"

    loaded, loaded_metadata = checkpoint.load(path, template())
    assert loaded_metadata == {**metadata, "step": 42}
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    for (key_path, want), got in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(loaded)):
        where = jax.tree_util.keystr(key_path)
        assert isinstance(got, jax.Array) and got.dtype == want.dtype and got.shape == want.shape, where
        if jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            want, got = jax.random.key_data(want), jax.random.key_data(got)
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), where  # bit-exact: NaN and -0.0 included
    # The restored keys are usable keys, continuing the same streams.
    assert jnp.array_equal(jax.random.normal(loaded["key"], (3,)), jax.random.normal(state["key"], (3,)))


def test_load_accepts_a_concrete_state_as_template(tmp_path):
    loaded, _ = checkpoint.load(good_checkpoint(tmp_path), make_state())
    assert int(loaded["env_steps"]) == 1234


# ----------------------------------------------------------------------------------------------------------------------
# Files: atomic writes, pruning, order
# ----------------------------------------------------------------------------------------------------------------------
def test_save_leaves_no_temp_files_and_removes_those_of_a_crashed_save(tmp_path):
    stale = tmp_path / ".checkpoint_000000000005.npz.999.tmp"
    stale.write_bytes(b"partial")
    checkpoint.save(tmp_path, 7, make_state(), {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000000000007.npz"]


def test_a_save_that_fails_midway_leaves_the_previous_checkpoints_alone(tmp_path, monkeypatch):
    first = checkpoint.save(tmp_path, 1, make_state(), {}, keep=1)

    def write_half_then_crash(file, **arrays):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", write_half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 2, make_state(), {}, keep=1)
    assert list(tmp_path.iterdir()) == [first]
    checkpoint.load(first, template())


def test_list_is_ordered_by_step_and_pruning_keeps_the_newest(tmp_path):
    for step in [100, 9, 10]:  # "checkpoint_10" < "checkpoint_9" as unpadded strings
        checkpoint.save(tmp_path, step, make_state(), {}, keep=5)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "checkpoint_000000000009.npz", "checkpoint_000000000010.npz", "checkpoint_000000000100.npz"]

    checkpoint.save(tmp_path, 200, make_state(), {}, keep=2)
    assert [checkpoint.load(p, template())[1]["step"] for p in checkpoint.list_checkpoints(tmp_path)] == [100, 200]


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    # After falling back from a corrupt step 200 to step 100, the run saves step 150 while 200 still exists.
    checkpoint.save(tmp_path, 100, make_state(), {}, keep=1)
    (tmp_path / "checkpoint_000000000200.npz").write_bytes(b"corrupt")
    path = checkpoint.save(tmp_path, 150, make_state(), {}, keep=1)
    assert checkpoint.list_checkpoints(tmp_path) == [path]


# ----------------------------------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------------------------------
def test_truncated_file_is_refused(tmp_path):
    path = good_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000010\.npz: truncated or damaged"):
        checkpoint.load(path, template())


def test_flipped_byte_in_the_payload_is_refused(tmp_path):
    state = {"big": jnp.arange(100_000, dtype=jnp.float32), "step": jnp.int32(3)}
    path = checkpoint.save(tmp_path, 1, state, {}, keep=1)
    flip_byte(path, path.stat().st_size // 2)  # inside the big array's data
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000001\.npz: .*(CRC|checksum)"):
        checkpoint.load(path, jax.eval_shape(lambda: state))


def test_altered_leaf_in_an_intact_archive_fails_the_checksum(tmp_path):
    # Rewritten with valid zip CRCs, so only the stored SHA-256 can notice.
    path = good_checkpoint(tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["leaf_0"] = entries["leaf_0"] + 1
    np.savez(path, **entries)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(path, template())


@pytest.mark.parametrize("content", ["random bytes", "empty", "other npz", "npy"])
def test_file_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "checkpoint_000000000010.npz"
    if content == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "other npz":
        np.savez(path, weights=np.ones(3))
    else:
        with open(path, "wb") as f:
            np.save(f, np.ones(3))
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000010\.npz: (not a checkpoint|truncated)"):
        checkpoint.load(path, template())


def test_structure_mismatch_names_the_differing_leaves(tmp_path):
    path = good_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path, template(obs_size=5))
    message = str(error.value)
    assert "\n" not in message and path.name in message and "structure differs" in message
    assert "['buffer'].data['obs'] expected float32[8,5] found float32[8,3]" in message
    assert "['policy']['params']['dense']['kernel'] expected float32[5,4] found float32[3,4]" in message

    other = template()
    other["env_steps"] = jax.ShapeDtypeStruct((), jnp.float32)
    other["extra"] = jax.ShapeDtypeStruct((2,), jnp.int32)
    del other["key"]
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path, other)
    message = str(error.value)
    assert "['env_steps'] expected float32[] found int32[]" in message
    assert "['extra'] expected int32[2] found absent" in message
    assert "['key'] expected absent found key<fry>[]" in message


def test_static_field_change_is_a_structure_mismatch(tmp_path):
    path = good_checkpoint(tmp_path)
    other = make_state()
    other["env"] = other["env"].replace(num_envs=8)
    with pytest.raises(CheckpointError, match="structure differs"):
        checkpoint.load(path, jax.eval_shape(lambda: other))


def test_loading_never_unpickles(tmp_path):
    # A checkpoint whose leaf is an object array holding a pickle that would create `marker` when unpickled.
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    path = good_checkpoint(tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["leaf_0"] = np.array([Payload()], dtype=object)
    np.savez(path, **entries)
    assert b"pwned" in path.read_bytes() and pickle.loads(pickle.dumps(Payload())) is None  # the payload is live
    os.rmdir(marker)

    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.load(path, template())
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------------
# latest_valid, checkpoint_bytes
# ----------------------------------------------------------------------------------------------------------------------
def test_latest_valid_skips_a_corrupt_newest_checkpoint(tmp_path):
    for step in [1, 2, 3]:
        checkpoint.save(tmp_path, step, make_state(), {}, keep=5)
    newest = checkpoint.list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])

    path, skipped = checkpoint.latest_valid(tmp_path, template())
    assert path == tmp_path / "checkpoint_000000000002.npz"
    assert [p for p, _ in skipped] == [newest] and "truncated" in skipped[0][1]

    assert checkpoint.latest_valid(tmp_path, template()) == (path, skipped)  # it only reads
    for p in checkpoint.list_checkpoints(tmp_path)[:-1]:
        flip_byte(p, p.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        checkpoint.latest_valid(tmp_path, template())


def test_latest_valid_with_no_checkpoints_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        checkpoint.latest_valid(tmp_path, template())


def test_checkpoint_bytes_matches_the_file_size(tmp_path):
    state = {**make_state(), "buffer_obs": jnp.zeros((50_000, 17), jnp.float32)}
    path = checkpoint.save(tmp_path, 1, state, {"config": {"a": 1}}, keep=1)
    estimate = checkpoint.checkpoint_bytes(state)
    assert estimate == checkpoint.checkpoint_bytes(jax.eval_shape(lambda: state))
    assert abs(estimate - path.stat().st_size) < 0.02 * path.stat().st_size
    with np.load(path, allow_pickle=False) as npz:  # the header is plain JSON, readable without this module
        assert json.loads(npz["header"].tobytes())["metadata"] == {"config": {"a": 1}, "step": 1}
