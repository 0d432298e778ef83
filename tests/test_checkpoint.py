"""Checkpoints: bit-exact round trips, atomic writes and pruning, and a loud CheckpointError for every bad file."""

import ast
import inspect
import json
import os
import pickle
import re
import resource
import threading
import time

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax
import pytest
from flax import serialization, struct

from common.run import checkpoint
from common.run.checkpoint import CheckpointError
from tests.checkpoints import checkpoint_leaves, load_checkpoint, numbers


class Buffer(struct.PyTreeNode):  # like common.core.replay.ReplayBuffer
    data: dict
    position: jax.Array
    size: jax.Array


class Env(struct.PyTreeNode):  # like common.envs.playground.EnvState, with a static field as mjx Data has
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
            "env_steps": jnp.int32(1234), "temperature": jnp.float32(0.25), "half": jnp.array([1.5, -3], jnp.bfloat16),
            "empty": jnp.zeros((0, 3), jnp.float32)}


def template(**kwargs):
    return jax.eval_shape(lambda: make_state(**kwargs))


def good_checkpoint(tmp_path, step=10):
    return checkpoint.save(tmp_path, step, make_state(), {"step": step}, keep=5)


def flip_byte(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def rewrite_leaf(path, leaf) -> None:
    """Replace leaf_0 of a checkpoint by `leaf` (an array or a raw msgpack.ExtType), keeping a valid msgpack file."""
    payload = serialization.msgpack_restore(path.read_bytes())
    payload["leaves"]["leaf_0"] = leaf
    path.write_bytes(serialization.msgpack_serialize(payload, in_place=True))


# ----------------------------------------------------------------------------------------------------------------------
# Round trip
# ----------------------------------------------------------------------------------------------------------------------
def test_round_trip_is_bit_exact_with_typed_keys_and_metadata(tmp_path):
    state = make_state()
    metadata = {"config": {"env_id": "cheetah-run", "learning_rate": 3e-4, "hidden": [256, 256]}, "wall_time": 12.5}
    path = checkpoint.save(tmp_path, 42, state, metadata, keep=3)
    assert path == tmp_path / "checkpoint_000000000042.msgpack"

    loaded, loaded_metadata = load_checkpoint(path, template())
    assert loaded_metadata == {**metadata, "step": 42}
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    for (key_path, want), got in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(loaded)):
        where = jax.tree_util.keystr(key_path)
        assert isinstance(got, jax.Array) and got.dtype == want.dtype and got.shape == want.shape, where
        want, got = numbers(want), numbers(got)
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), where  # bit-exact: NaN and -0.0 included
    # The restored keys are usable keys, continuing the same streams.
    assert jnp.array_equal(jax.random.normal(loaded["key"], (3,)), jax.random.normal(state["key"], (3,)))


def test_load_accepts_a_concrete_state_as_template(tmp_path):
    loaded, _ = load_checkpoint(good_checkpoint(tmp_path), make_state())
    assert int(loaded["env_steps"]) == 1234


def test_the_file_is_exactly_flax_msgpack_of_plain_arrays_and_strings(tmp_path):
    path = good_checkpoint(tmp_path)
    raw = path.read_bytes()
    payload = serialization.msgpack_restore(raw)
    assert list(payload) == ["format", "header", "sha256", "leaves"] and payload["format"] == checkpoint.FORMAT
    assert isinstance(payload["header"], str) and isinstance(payload["sha256"], str)
    assert all(type(a) is np.ndarray and not a.dtype.hasobject for a in payload["leaves"].values())
    assert serialization.msgpack_serialize(payload, in_place=True) == raw  # written entry by entry, same bytes
    assert checkpoint_leaves(path).keys() == payload["leaves"].keys()
    for name, array in checkpoint_leaves(path).items():
        assert array.dtype == payload["leaves"][name].dtype and array.tobytes() == payload["leaves"][name].tobytes()


def test_arrays_above_flax_chunk_size_round_trip(tmp_path, monkeypatch):
    # flax splits arrays above MAX_CHUNK_SIZE (1 GiB) into chunks; a small limit takes the same path here.
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 4096)
    state = {**make_state(), "big": jnp.arange(7 * 3001, dtype=jnp.float32).reshape(7, 3001)}
    path = checkpoint.save(tmp_path, 1, state, {}, keep=1)
    assert b"__msgpack_chunked_array__" in path.read_bytes()
    loaded, _ = load_checkpoint(path, jax.eval_shape(lambda: state))
    assert np.asarray(loaded["big"]).tobytes() == np.asarray(state["big"]).tobytes()


# ----------------------------------------------------------------------------------------------------------------------
# Files: atomic writes, pruning, order
# ----------------------------------------------------------------------------------------------------------------------
def test_save_leaves_no_temp_files_and_removes_those_of_a_crashed_save(tmp_path):
    stale = tmp_path / ".checkpoint_000000000005.msgpack.999.tmp"
    stale.write_bytes(b"partial")
    checkpoint.save(tmp_path, 7, make_state(), {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000000000007.msgpack"]


def test_a_save_that_fails_midway_leaves_the_previous_checkpoints_alone(tmp_path, monkeypatch):
    first = checkpoint.save(tmp_path, 1, make_state(), {}, keep=1)

    def crash_after_the_header(array, *args, **kwargs):  # at the first leaf, after format, header and sha256
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the partial file being written
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.serialization, "msgpack_serialize", crash_after_the_header)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 2, make_state(), {}, keep=1)
    assert list(tmp_path.iterdir()) == [first]
    load_checkpoint(first, template())


def test_list_is_ordered_by_step_and_pruning_keeps_the_newest(tmp_path):
    for step in [100, 9, 10]:  # "checkpoint_10" < "checkpoint_9" as unpadded strings
        checkpoint.save(tmp_path, step, make_state(), {}, keep=5)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "checkpoint_000000000300.npz").write_bytes(b"an old-format checkpoint is not listed")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "checkpoint_000000000009.msgpack", "checkpoint_000000000010.msgpack", "checkpoint_000000000100.msgpack"]

    checkpoint.save(tmp_path, 200, make_state(), {}, keep=2)
    assert [load_checkpoint(p, template())[1]["step"] for p in checkpoint.list_checkpoints(tmp_path)] == [100, 200]


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    # After falling back from a corrupt step 200 to step 100, the run saves step 150 while 200 still exists.
    checkpoint.save(tmp_path, 100, make_state(), {}, keep=1)
    (tmp_path / "checkpoint_000000000200.msgpack").write_bytes(b"corrupt")
    path = checkpoint.save(tmp_path, 150, make_state(), {}, keep=1)
    assert checkpoint.list_checkpoints(tmp_path) == [path]


# ----------------------------------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999])
def test_truncated_file_is_refused(tmp_path, fraction):
    path = good_checkpoint(tmp_path)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: int(size * fraction)])
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000010\.msgpack: truncated"):
        load_checkpoint(path, template())


def test_file_cut_inside_its_format_tag_is_truncated(tmp_path):
    path = good_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000010\.msgpack: truncated \(10 bytes\)"):
        load_checkpoint(path, template())


def test_flipped_byte_in_the_payload_is_refused(tmp_path):
    state = {"big": jnp.arange(100_000, dtype=jnp.float32), "step": jnp.int32(3)}
    path = checkpoint.save(tmp_path, 1, state, {}, keep=1)
    flip_byte(path, path.stat().st_size // 2)  # inside the big array's data
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000001\.msgpack: checksum mismatch"):
        load_checkpoint(path, jax.eval_shape(lambda: state))


@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_every_flipped_byte_is_refused_with_a_checkpoint_error(tmp_path, bit):
    path = good_checkpoint(tmp_path)
    raw, like = path.read_bytes(), template()
    for offset in range(0, len(raw), int(os.environ.get("FLOWRL_FLIP_STRIDE", 7))):  # 1: every byte (~3 s)
        flipped = bytearray(raw)
        flipped[offset] ^= bit
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError):
            load_checkpoint(path, like)


def test_altered_leaf_in_an_intact_file_fails_the_checksum(tmp_path):
    # Rewritten as valid msgpack, so only the stored SHA-256 can notice.
    path = good_checkpoint(tmp_path)
    rewrite_leaf(path, checkpoint_leaves(path)["leaf_0"] + 1)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path, template())


@pytest.mark.parametrize("content", ["random bytes", "empty", "npz", "npy", "other msgpack", "msgpack list"])
def test_file_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "checkpoint_000000000010.msgpack"
    if content == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "npz":
        with open(path, "wb") as f:
            np.savez(f, weights=np.ones(3))
    elif content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.ones(3))
    elif content == "other msgpack":
        path.write_bytes(serialization.msgpack_serialize({"params": {"weights": np.ones(3)}}))
    else:
        path.write_bytes(serialization.msgpack_serialize([checkpoint.FORMAT, np.ones(3)]))
    with pytest.raises(CheckpointError, match=r"checkpoint_000000000010\.msgpack: not a checkpoint"):
        load_checkpoint(path, template())


def test_map_with_the_format_tag_but_other_entries_is_refused(tmp_path):
    path = tmp_path / "checkpoint_000000000010.msgpack"
    path.write_bytes(serialization.msgpack_serialize(
        {"format": checkpoint.FORMAT, "header": "{}", "sha256": "0", "weights": np.ones(3)}, in_place=True))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(path, template())


@pytest.mark.parametrize("leaf", [np.float32(2.0), 3, "text", {"a": np.ones(2)}])
def test_leaf_that_is_not_an_array_is_refused(tmp_path, leaf):
    path = good_checkpoint(tmp_path)
    rewrite_leaf(path, leaf)
    with pytest.raises(CheckpointError, match=r"damaged \(leaf_0 is a \w+, not an array\)"):
        load_checkpoint(path, template())


def test_structure_mismatch_names_the_differing_leaves(tmp_path):
    path = good_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, template(obs_size=5))
    message = str(error.value)
    assert "\n" not in message and path.name in message and "structure differs" in message
    assert "['buffer'].data['obs'] expected float32[8,5] found float32[8,3]" in message
    assert "['policy']['params']['dense']['kernel'] expected float32[5,4] found float32[3,4]" in message

    other = template()
    other["env_steps"] = jax.ShapeDtypeStruct((), jnp.float32)
    other["extra"] = jax.ShapeDtypeStruct((2,), jnp.int32)
    del other["key"]
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, other)
    message = str(error.value)
    assert "['env_steps'] expected float32[] found int32[]" in message
    assert "['extra'] expected int32[2] found absent" in message
    assert "['key'] expected absent found key<fry>[]" in message


def test_static_field_change_is_a_structure_mismatch(tmp_path):
    path = good_checkpoint(tmp_path)
    other = make_state()
    other["env"] = other["env"].replace(num_envs=8)
    with pytest.raises(CheckpointError, match="structure differs"):
        load_checkpoint(path, jax.eval_shape(lambda: other))


class Payload:
    """Unpickling this creates the directory `marker`: the file-system effect of running code while loading."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def live_pickle(marker) -> bytes:
    data = pickle.dumps(Payload(marker))
    assert pickle.loads(data) is None and marker.is_dir()  # the payload is live
    os.rmdir(marker)
    return data


@pytest.mark.parametrize("how", ["object array", "unknown extension type", "object scalar"])
def test_a_payload_that_needs_code_to_restore_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "pwned"
    path = good_checkpoint(tmp_path)
    pickled = live_pickle(marker)
    if how == "object array":  # flax's array extension (type 1), claiming dtype object with the pickle as its bytes
        leaf = msgpack.ExtType(1, msgpack.packb(((1,), "object", pickled)))
    elif how == "object scalar":  # flax's numpy-scalar extension (type 3), likewise
        leaf = msgpack.ExtType(3, msgpack.packb(((), "object", pickled)))
    else:  # an extension type flax does not know: msgpack_restore hands back its raw bytes
        leaf = msgpack.ExtType(42, pickled)
    rewrite_leaf(path, leaf)
    assert pickled in path.read_bytes()

    with pytest.raises(CheckpointError, match=r"checkpoint_000000000010\.msgpack: damaged"):
        load_checkpoint(path, template())
    assert not marker.exists()


def test_loading_never_unpickles(tmp_path, monkeypatch):
    # The module imports nothing that unpickles, and decodes bytes only with json and flax's msgpack_restore ...
    tree = ast.parse(inspect.getsource(checkpoint))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"pickle", "_pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve", "torch"}
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    decoders = {call for call in calls
                if re.fullmatch(r"\w*(load|restore|unpack|unpickl|from_bytes)\w*|eval|exec", call.split(".")[-1])}
    assert decoders == {"json.loads", "serialization.msgpack_restore"}

    # ... and a save and load succeed with every unpickler in the process disabled.
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ["load", "loads", "Unpickler"]:
        monkeypatch.setattr(pickle, name, refuse)
    path = good_checkpoint(tmp_path)
    load_checkpoint(path, template())
    checkpoint.latest_valid(tmp_path, template())


# ----------------------------------------------------------------------------------------------------------------------
# latest_valid, checkpoint_bytes
# ----------------------------------------------------------------------------------------------------------------------
def test_latest_valid_skips_a_corrupt_newest_checkpoint(tmp_path):
    for step in [1, 2, 3]:
        checkpoint.save(tmp_path, step, make_state(), {}, keep=5)
    newest = checkpoint.list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])

    path, skipped = checkpoint.latest_valid(tmp_path, template())
    assert path == tmp_path / "checkpoint_000000000002.msgpack"
    assert [p for p, _ in skipped] == [newest] and "truncated" in skipped[0][1]

    assert checkpoint.latest_valid(tmp_path, template()) == (path, skipped)  # it only reads
    for p in checkpoint.list_checkpoints(tmp_path)[:-1]:
        flip_byte(p, p.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        checkpoint.latest_valid(tmp_path, template())


def test_latest_valid_with_no_checkpoints_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        checkpoint.latest_valid(tmp_path, template())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_during(function):
    """(result, seconds, peak RSS above the RSS at the start) of function(), RSS sampled every millisecond."""
    start_rss, peak, done = rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        result = function()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return result, seconds, max(peak[0], rss_bytes()) - start_rss


@pytest.mark.skipif(not os.environ.get("FLOWRL_BIG_CHECKPOINT"), reason="~300 MB; set FLOWRL_BIG_CHECKPOINT=1 (-s)")
def test_a_300_mb_state_round_trips(tmp_path):
    rows = 480_000  # replay rows of humanoid (obs 67, action 21): (2·67 + 21 + 2) × 4 bytes each
    state = {**make_state(), "replay": {
        "obs": jnp.arange(rows * 67, dtype=jnp.float32).reshape(rows, 67),
        "next_obs": -jnp.arange(rows * 67, dtype=jnp.float32).reshape(rows, 67),
        "action": jnp.ones((rows, 21), jnp.float32), "reward": jnp.full((rows,), 0.5), "done": jnp.zeros((rows,)),
    }}
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state) if hasattr(leaf, "nbytes"))
    largest = max(leaf.nbytes for leaf in jax.tree.leaves(state) if hasattr(leaf, "nbytes"))
    path, save_s, save_rss = peak_rss_during(lambda: checkpoint.save(tmp_path, 1, state, {}, keep=1))
    size = path.stat().st_size
    (loaded, _), load_s, load_rss = peak_rss_during(
        lambda: jax.block_until_ready(load_checkpoint(path, jax.eval_shape(lambda: state))))
    print(f"\nstate {state_bytes / 2**20:.1f} MiB (largest leaf {largest / 2**20:.1f} MiB), "
          f"file {size / 2**20:.1f} MiB (+{size - state_bytes} B), estimate {checkpoint.checkpoint_bytes(state)} B; "
          f"save {save_s:.2f} s, peak RSS +{save_rss / 2**20:.0f} MiB; "
          f"load {load_s:.2f} s, peak RSS +{load_rss / 2**20:.0f} MiB (incl. the loaded state); "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    for name in ["obs", "next_obs", "done"]:
        assert np.array_equal(np.asarray(loaded["replay"][name]), np.asarray(state["replay"][name])), name
    assert abs(checkpoint.checkpoint_bytes(state) - size) < 0.001 * size
    # Saving holds one leaf's encoding at a time (on CPU the host copy of the state is a view of it) ...
    host_copy = 0 if jax.default_backend() == "cpu" else state_bytes
    assert save_rss < 3 * largest + host_copy + 32 * 2**20
    # ... loading, the file's bytes and the arrays decoded from them (then the state itself), plus one leaf.
    assert load_rss < 2 * state_bytes + 1.5 * largest + 32 * 2**20


def test_checkpoint_bytes_matches_the_file_size(tmp_path):
    state = {**make_state(), "buffer_obs": jnp.zeros((50_000, 17), jnp.float32)}
    path = checkpoint.save(tmp_path, 1, state, {"config": {"a": 1}}, keep=1)
    estimate = checkpoint.checkpoint_bytes(state)
    assert estimate == checkpoint.checkpoint_bytes(jax.eval_shape(lambda: state))
    assert abs(estimate - path.stat().st_size) < 0.02 * path.stat().st_size
    # The header is plain JSON text, readable with msgpack alone (arrays stay raw extension bytes without flax).
    payload = msgpack.unpackb(path.read_bytes())
    assert json.loads(payload["header"])["metadata"] == {"config": {"a": 1}, "step": 1}
    assert isinstance(payload["leaves"]["leaf_0"], msgpack.ExtType)


def test_read_by_path_names_every_leaf_by_its_tree_path(tmp_path):
    state = make_state()
    path = checkpoint.save(tmp_path, 10, state, {"algo": "flowrl"}, keep=5)
    arrays, metadata = checkpoint.read_by_path(path)
    assert metadata == {"algo": "flowrl", "step": 10}
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    assert list(arrays) == [jax.tree_util.keystr(p) for p, _ in flat]
    assert "['buffer'].data['obs']" in arrays
    for (p, leaf), stored in zip(flat, arrays.values()):
        if not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # keys are stored as their key data
            assert stored.tobytes() == np.asarray(leaf).tobytes(), jax.tree_util.keystr(p)  # bfloat16 as uint16 bits
