"""Checkpoints of the whole train state: one flax-msgpack file per save (no pickle), written atomically and checksummed.

Layout of checkpoint_<step:012d>.msgpack, one msgpack map in flax.serialization's encoding (arrays are msgpack
extension type 1 holding (shape, dtype name, raw bytes); arrays above flax's MAX_CHUNK_SIZE are split into chunks).
Reading it back with flax.serialization.msgpack_restore yields only dicts, strings and plain numpy arrays, so opening
one can never run code:
  format  "flowrl-jax-checkpoint/2", the first entry, so a file is recognised from its first bytes
  header  JSON text: format tag, str(treedef), per-leaf path/shape/dtype (+ key impl), and the caller's metadata
  sha256  hex digest of the header and every leaf's name, dtype, shape and bytes
  leaves  {"leaf_<i>": the i-th leaf of the flattened state as a numpy array}; typed PRNG keys as their key data
          (uint32), dtypes numpy cannot describe (bfloat16, ...) as unsigned ints of the same width
"""

import hashlib
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import jax
import msgpack
import numpy as np
from flax import serialization

FORMAT = "flowrl-jax-checkpoint/2"
_NAME = re.compile(r"checkpoint_(\d+)\.msgpack")
_MAGIC = msgpack.Packer().pack_map_header(4) + msgpack.packb("format") + msgpack.packb(FORMAT)  # how every file starts
_LEAF_OVERHEAD = 192  # bytes per leaf on disk besides its data: msgpack name and array header, header JSON entry
_SHOWN_DIFFS = 4


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, not a checkpoint, or does not fit the expected train state."""


# ----------------------------------------------------------------------------------------------------------------------
# Leaves
# ----------------------------------------------------------------------------------------------------------------------
def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _spec(leaf) -> dict:
    """What the structure check compares: shape and dtype ("key<fry>" for typed keys). Works on ShapeDtypeStruct."""
    return {"shape": list(leaf.shape), "dtype": str(leaf.dtype)}


def _describe(spec: dict | None) -> str:
    return "absent" if spec is None else f"{spec['dtype']}[{','.join(map(str, spec['shape']))}]"


def _stored_spec(leaf) -> jax.ShapeDtypeStruct:
    """Shape and dtype of the array a leaf is stored as (see the module docstring)."""
    if _is_key(leaf):
        return jax.eval_shape(jax.random.key_data, leaf)
    dtype = np.dtype(leaf.dtype)
    return jax.ShapeDtypeStruct(leaf.shape, np.dtype(f"u{dtype.itemsize}") if dtype.kind == "V" else dtype)


def _to_host(leaves: list) -> list[np.ndarray]:
    arrays = jax.device_get([jax.random.key_data(leaf) if _is_key(leaf) else leaf for leaf in leaves])
    return [np.asarray(a).view(_stored_spec(leaf).dtype) for a, leaf in zip(arrays, leaves)]


def _digest(header: bytes, arrays: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256(header)
    for name, a in arrays.items():
        sha.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        sha.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return sha.hexdigest()


def _treedef_text(treedef) -> str:
    # Static fields may print as objects with their memory address (mjx Data does); those change every process.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(treedef))


# ----------------------------------------------------------------------------------------------------------------------
# Save
# ----------------------------------------------------------------------------------------------------------------------
def save(directory: Path, step: int, state, metadata: dict, keep: int) -> Path:
    """Write directory/checkpoint_<step>.msgpack atomically, with `metadata` (JSON-serialisable; "step" is set to
    `step`), then delete all but the newest `keep` checkpoints by step, always counting the one just written among them
    (a run that fell back to an older checkpoint must not delete its own new saves in favour of the higher steps it
    left)."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    directory = Path(directory)
    path = directory / f"checkpoint_{step:012d}.msgpack"
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = [leaf for _, leaf in paths_leaves]
    entries = [{"path": jax.tree_util.keystr(p), **_spec(leaf)} for p, leaf in paths_leaves]
    for entry, leaf in zip(entries, leaves):
        if _is_key(leaf):  # the impl wrap_key_data needs to rebuild the keys
            entry["key_impl"] = str(jax.random.key_impl(leaf))
    header = json.dumps({
        "format": FORMAT, "treedef": _treedef_text(treedef), "leaves": entries, "metadata": {**metadata, "step": step},
    })
    arrays = {f"leaf_{i}": a for i, a in enumerate(_to_host(leaves))}
    digest = _digest(header.encode(), arrays)

    tmp = directory / f".{path.name}.{os.getpid()}.tmp"  # hidden, so list_checkpoints never sees a partial file
    try:
        with open(tmp, "wb") as f:
            _write(f, header, digest, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)  # make the rename durable before deleting the older checkpoints

    older = [p for p in list_checkpoints(directory) if p != path]
    for stale in older[: max(0, len(older) - (keep - 1))]:
        stale.unlink()
    for leftover in directory.glob(".checkpoint_*.tmp"):  # partial writes of a save that crashed
        leftover.unlink(missing_ok=True)
    return path


def _write(f, header: str, digest: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the bytes of flax.serialization.msgpack_serialize({"format": FORMAT, "header": header, "sha256": digest,
    "leaves": arrays}, in_place=True) one entry at a time: a map's encoding is its header followed by its keys and
    values, so only one leaf's encoding is in memory at once rather than the whole file's."""
    packer = msgpack.Packer()
    f.write(packer.pack_map_header(4))
    for key, value in [("format", FORMAT), ("header", header), ("sha256", digest)]:
        f.write(packer.pack(key) + packer.pack(value))
    f.write(packer.pack("leaves") + packer.pack_map_header(len(arrays)))
    for name, array in arrays.items():
        f.write(packer.pack(name))
        f.write(serialization.msgpack_serialize(array))  # flax's encoding of the array, chunked if it is huge


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------------------------------
def _read(path: Path) -> tuple[dict, list[np.ndarray]]:
    """Header and stored leaves of a checkpoint whose format and checksum are verified."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    if not data.startswith(_MAGIC):
        if not data:
            raise CheckpointError(f"{path}: not a checkpoint (empty file)")
        if _MAGIC.startswith(data):
            raise CheckpointError(f"{path}: truncated ({len(data)} bytes)")
        if data.startswith(b"PK\x03\x04"):
            raise CheckpointError(f"{path}: not a checkpoint (a zip/.npz archive, not a {FORMAT} msgpack file)")
        raise CheckpointError(f"{path}: not a checkpoint (does not start with the {FORMAT} msgpack tag)")
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as e:  # any failure to decode the bytes means a bad file; name what msgpack said
        if "incomplete input" in str(e):
            what = "truncated"
        elif "exceeds max_" in str(e):  # msgpack bounds every length by the file's size: one runs past its end
            what = "truncated or damaged"
        else:
            what = "damaged"
        raise CheckpointError(f"{path}: {what} (msgpack: {type(e).__name__}: {e})") from e
    del data
    try:
        if not isinstance(payload, dict) or set(payload) != {"format", "header", "sha256", "leaves"}:
            raise CheckpointError(f"{path}: not a checkpoint (not a map of format/header/sha256/leaves)")
        if payload["format"] != FORMAT:
            raise CheckpointError(f"{path}: not a checkpoint (format is not {FORMAT})")
        header_text, digest, stored = payload["header"], payload["sha256"], payload["leaves"]
        if not (isinstance(header_text, str) and isinstance(digest, str) and isinstance(stored, dict)):
            raise CheckpointError(f"{path}: damaged (header, sha256 or leaves has the wrong type)")
        header = json.loads(header_text)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a checkpoint (format is not {FORMAT})")
        leaf_names = [f"leaf_{i}" for i in range(len(header["leaves"]))]
        if set(stored) != set(leaf_names):
            raise CheckpointError(f"{path}: damaged (entries differ from the {len(leaf_names)} leaves it lists)")
        for name in leaf_names:
            value = stored[name]
            if isinstance(value, msgpack.ExtType):  # left as raw bytes by msgpack_restore; never decoded
                raise CheckpointError(f"{path}: damaged ({name} is msgpack extension type {value.code}, not an array)")
            if not isinstance(value, np.ndarray):
                raise CheckpointError(f"{path}: damaged ({name} is a {type(value).__name__}, not an array)")
        arrays = {name: stored[name] for name in leaf_names}
    except CheckpointError:
        raise
    except Exception as e:  # a header that is not the JSON this module writes
        raise CheckpointError(f"{path}: damaged ({type(e).__name__}: {e})") from e
    if _digest(header_text.encode(), arrays) != digest:
        raise CheckpointError(f"{path}: checksum mismatch (SHA-256 of the contents differs from the one stored)")
    return header, list(arrays.values())


def read_by_path(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """({leaf path as jax.tree_util.keystr writes it, e.g. ".learner.q['params']['Dense_0']['kernel']": the array as
    stored}, the metadata saved with it) of a verified checkpoint: parts of a run's state, without its template."""
    header, stored = _read(Path(path))
    return {leaf["path"]: array for leaf, array in zip(header["leaves"], stored)}, header["metadata"]


def _check_structure(path: Path, header: dict, template) -> None:
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {jax.tree_util.keystr(p): _spec(leaf) for p, leaf in paths_leaves}
    found = {e["path"]: {"shape": e["shape"], "dtype": e["dtype"]} for e in header["leaves"]}
    diffs = [
        f"{p} expected {_describe(expected.get(p))} found {_describe(found.get(p))}"
        for p in [*expected, *(p for p in found if p not in expected)]
        if expected.get(p) != found.get(p)
    ]
    if diffs:
        more = f" (and {len(diffs) - _SHOWN_DIFFS} more)" if len(diffs) > _SHOWN_DIFFS else ""
        raise CheckpointError(
            f"{path}: structure differs from this config in {len(diffs)} of {len(expected)} leaves: "
            f"{'; '.join(diffs[:_SHOWN_DIFFS])}{more}"
        )
    if list(expected) != list(found) or _treedef_text(treedef) != header["treedef"]:
        raise CheckpointError(f"{path}: structure differs from this config (leaf order, node types or static fields)")


def _check_fit(path: Path, header: dict, stored: list[np.ndarray], template) -> None:
    """Raise CheckpointError unless the stored leaves are exactly the arrays `template`'s leaves are stored as."""
    _check_structure(path, header, template)
    for entry, array, like in zip(header["leaves"], stored, jax.tree.leaves(template)):
        spec = _stored_spec(like)
        if array.shape != spec.shape or array.dtype != spec.dtype:  # only a file written by something else
            raise CheckpointError(f"{path}: damaged ({entry['path']} is stored as {array.dtype}{list(array.shape)})")


class Contents(NamedTuple):
    """A checkpoint read and checksum-verified, not yet fitted to a train state."""

    path: Path
    header: dict
    stored: list[np.ndarray]

    @property
    def metadata(self) -> dict:
        return self.header["metadata"]


def read(path: Path) -> Contents:
    """A checkpoint's header and arrays after its format and checksum are verified (no template needed, so this can
    run before any env is built); `to_state` then fits them to the train state."""
    return Contents(Path(path), *_read(Path(path)))


def to_state(contents: Contents, template) -> object:
    """The state from `read`'s contents, whose leaves must match `template` (a state or its jax.eval_shape)."""
    _check_fit(contents.path, contents.header, contents.stored, template)
    likes = jax.tree.leaves(template)
    leaves = [
        jax.random.wrap_key_data(array, impl=entry["key_impl"]) if "key_impl" in entry
        else jax.device_put(array.view(like.dtype))  # view: undoes the unsigned-int storage of ml_dtypes
        for entry, array, like in zip(contents.header["leaves"], contents.stored, likes)
    ]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def step_of(path: Path) -> int | None:
    """The env step a checkpoint file's name says it holds (None for a file not named checkpoint_<step>.msgpack)."""
    match = _NAME.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest → newest by step."""
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid(directory: Path, template=None) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest checkpoint that is intact (and, given a template, loads against it), and (path, reason) for each
    newer one that is not."""
    skipped = []
    for path in reversed(list_checkpoints(directory)):
        try:
            header, stored = _read(path)
            if template is not None:  # everything load checks, without moving the state onto the device
                _check_fit(path, header, stored, template)
            return path, skipped
        except CheckpointError as e:
            skipped.append((path, str(e)))
    reasons = "; ".join(reason for _, reason in skipped[:2]) or "there are none"
    raise CheckpointError(f"{directory}: no valid checkpoint ({len(skipped)} tried: {reasons})")


def checkpoint_bytes(state) -> int:
    """Approximate size on disk of a checkpoint of `state` (arrays or jax.eval_shape's ShapeDtypeStructs)."""
    stored = [_stored_spec(leaf) for leaf in jax.tree.leaves(state)]
    return sum(int(np.prod(s.shape)) * s.dtype.itemsize + _LEAF_OVERHEAD for s in stored)
