"""Atomic save/load of pytrees (parameters, optimizer states, posterior draws).

Format: flax's msgpack serialisation of the pytree's state dict (portable, no pickle). Files are
written to a temporary sibling, flushed and fsynced, then renamed over the target, so a reader
never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from bayesiamp_jax import _checks


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> the mode open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default))


def json_default(o):
    """``json.dumps`` default: arrays and numpy scalars as lists and numbers."""
    if isinstance(o, (np.ndarray, jax.Array)):
        return np.asarray(o).tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def save_pytree(path: str | os.PathLike, tree) -> Path:
    """Save a pytree of arrays and strings (dicts, lists, NamedTuples, optax states) atomically."""
    host = jax.tree_util.tree_map(_to_host, jax.device_get(tree))
    data = serialization.msgpack_serialize(serialization.to_state_dict(host))
    return atomic_write_bytes(path, data)


def _to_host(leaf):
    return leaf if isinstance(leaf, str) else np.asarray(leaf)


class DamagedFileError(ValueError):
    """A saved file that cannot be read back (truncated, garbage, another format); the message
    names the file. Caches catch it to recompute; elsewhere it is a one-line error."""


def load_pytree(path: str | os.PathLike, target=None):
    """Load a pytree saved by ``save_pytree``.

    With ``target`` (a pytree of the same structure, e.g. freshly initialised params or an
    optimizer state), the result has ``target``'s structure and types and shapes are checked;
    without it, nested dicts of numpy arrays are returned. A file that is not a complete
    msgpack pytree (truncated by a crash, overwritten) raises ``DamagedFileError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist")
    try:
        state = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - msgpack raises many types on damaged bytes
        raise DamagedFileError(
            f"file {str(path)!r} is damaged or not a saved pytree (msgpack: "
            f"{type(e).__name__}: {_first_line(e)}); delete it to recompute it") from None
    if target is None:
        return state
    if not isinstance(state, dict):
        raise DamagedFileError(f"file {str(path)!r} holds a {type(state).__name__}, not a saved "
                               "pytree; delete it to recompute it")
    try:
        return restore(target, state)
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedFileError(f"file {str(path)!r} does not hold the expected pytree: "
                               f"{_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no message"


def restore(target, state_dict):
    """Rebuild ``target``'s pytree type from a loaded state dict, checking leaf shapes."""
    restored = serialization.from_state_dict(target, state_dict)
    _checks.same_structure("loaded tree", restored, "target", target)
    return restored


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def keys_to_data(tree):
    """Replace typed PRNG-key leaves by their raw uint32 data (for saving a sampler state)."""
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def keys_from_data(tree, template):
    """Inverse of ``keys_to_data``: re-wrap the leaves that are typed keys in ``template``."""
    return jax.tree_util.tree_map(
        lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        tree, template,
    )
