"""The one host loop of every long computation: compiled chunks, progress bar, atomic checkpoint,
resume.

``run_chunks(step, state, total, chunk=...)`` calls ``step(state, start, n) -> (state, record)``
until ``total`` items (epochs, samples, draws) are done, ``n <= chunk`` items per call. ``record``
is a flat dict of arrays whose axis ``axis`` has length n (per-epoch losses, per-sample
positions); the records of all chunks are concatenated along it. With ``checkpoint_path``, the
state, the records so far, the number of items done and a *signature* are saved atomically after
every chunk; a later call with the same path resumes from there and gives, bit for bit, the
result of an uninterrupted call with the same ``chunk``. The signature (``signature(...)``)
holds everything that determines the result (settings, a digest of the data and of the key):
resuming with a different one raises an error naming the settings that differ.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from bayesiamp_jax.checkpoint import (
    DamagedFileError,
    keys_from_data,
    keys_to_data,
    load_pytree,
    restore,
    save_pytree,
)

__all__ = ["Chunked", "check_finite", "digest", "run_chunks", "signature"]


def digest(tree) -> str:
    """Short SHA-256 of a pytree's structure, shapes, dtypes and bytes (typed keys included)."""
    tree = keys_to_data(tree)
    h = hashlib.sha256(str(jax.tree_util.tree_structure(tree)).encode())
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _describe(value) -> str:
    if value is None or isinstance(value, (str, bool, int, float, np.generic)):
        return repr(value.item() if isinstance(value, np.generic) else value)
    leaves = jax.tree_util.tree_leaves(keys_to_data(value))
    if len(leaves) == 1 and np.ndim(leaves[0]) == 0 and hasattr(value, "dtype"):
        return repr(np.asarray(leaves[0]).item())
    if len(leaves) == 1 and np.size(leaves[0]) <= 16 and not isinstance(value, (dict, tuple, list)):
        return np.array2string(np.asarray(leaves[0]), precision=8, separator=",")
    return "sha256:" + digest(value)


def signature(**settings) -> dict[str, str]:
    """Everything that determines a result, as {name: text}: numbers and strings verbatim, small
    arrays by value, data, keys and other pytrees by a digest of their bytes."""
    return {name: _describe(v) for name, v in settings.items()}


def check_finite(stage: str, values, axes: Sequence[str], *, offsets: Mapping | None = None,
                 order: Sequence[str] | None = None, what: str = "the loss") -> None:
    """Raise FloatingPointError naming the first NaN / inf of a chunk's host-side record.

    ``values`` has one axis per name in ``axes`` (e.g. ("unit", "epoch")); ``offsets`` adds to
    an axis' index (the chunk's first epoch), ``order`` is the order the indices are named in
    (default ``axes``). One-line message: "<stage>: <what> is non-finite (NaN or inf) at
    epoch 12, unit 3". Records are already on the host, so this costs no device sync.
    """
    arr = np.asarray(values)
    if arr.ndim != len(axes):
        raise ValueError(f"values has shape {arr.shape}, but axes names {len(axes)} axes")
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    first = dict(zip(axes, (int(i) for i in np.argwhere(bad)[0]), strict=True))
    for name, off in (offsets or {}).items():
        first[name] += int(off)
    where = ", ".join(f"{name} {first[name]}" for name in (order or axes))
    count = int(bad.sum())
    raise FloatingPointError(f"{stage}: {what} is non-finite (NaN or inf) at {where}"
                             + (f" ({count} non-finite values in this chunk)" if count > 1 else ""))


class Chunked(NamedTuple):
    """Final state, records concatenated over all chunks, and whether it resumed from disk."""

    state: object
    records: dict
    resumed: bool


def _check_signature(path: Path, saved: Mapping, wanted: Mapping) -> None:
    diff = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diff:
        parts = "; ".join(
            f"{k}: checkpoint {saved.get(k, '<absent>')}, now {wanted.get(k, '<absent>')}"
            for k in diff)
        raise ValueError(
            f"checkpoint_path {str(path)!r} was written by a different computation ({parts}); "
            "resuming it would mix the two: delete it or pass another checkpoint_path")


def _load_checkpoint(path: Path):
    """The saved checkpoint dict, or None (with a warning) if the file is damaged: it is only a
    resume point, so the computation starts over and overwrites it."""
    try:
        saved = load_pytree(path)
        if isinstance(saved, dict) and "done" in saved and "state" in saved:
            int(saved["done"])
            dict(saved.get("signature", {}))
            return saved
        problem = "it is not a checkpoint of run_chunks"
    except (DamagedFileError, TypeError, ValueError) as e:
        problem = str(e)
    warnings.warn(f"checkpoint_path {str(path)!r} cannot be resumed ({problem}); starting over",
                  stacklevel=3)
    return None


def _restore_state(path: Path, state, saved):
    """``state`` filled from a matching checkpoint; None (with a warning) if its arrays do not
    fit the state (a damaged file whose signature survived)."""
    try:
        return keys_from_data(restore(keys_to_data(state), saved["state"]), state)
    except (ValueError, KeyError, TypeError) as e:
        warnings.warn(f"checkpoint_path {str(path)!r} cannot be resumed ({e}); starting over",
                      stacklevel=3)
        return None


def run_chunks(
    step: Callable,
    state,
    total: int,
    *,
    chunk: int,
    axis: int = 0,
    checkpoint_path: str | Path | None = None,
    signature: Mapping[str, str] | None = None,
    progress: bool = True,
    desc: str = "",
    unit: str = "it",
    postfix: Callable | None = None,
    prepare: Callable | None = None,
    on_mismatch: str = "error",
    until: Callable | None = None,
) -> Chunked:
    """Run ``step(state, start, n) -> (state, record)`` over ``total`` items in chunks of ``chunk``.

    Args:
        step: host function; ``record`` is a dict {name: array} with length n along ``axis``.
        state: the initial state (a pytree; typed PRNG keys are allowed).
        total, chunk: items in all and at most per call (``chunk`` fixes the checkpoint points).
        checkpoint_path: saved atomically after every chunk, resumed from if it exists.
        signature: {name: text} (see ``signature``); must match the checkpoint's to resume.
        postfix: ``postfix(records) -> dict`` shown on the progress bar after every chunk.
        prepare: ``prepare(state) -> state`` run once before the first chunk of a computation
            that does not resume (e.g. a warm-up); a resumed state has had it already.
        on_mismatch: "error" (trainers: a checkpoint of another computation is a mistake) or
            "restart" (a cache keyed by its signature, e.g. partial histograms: start over).
        until: ``until(records) -> bool`` checked before every chunk after the first one (a
            resumed computation included): True ends it early (e.g. an early stop on a plateau).
    Returns:
        ``Chunked(state, records, resumed)``. A checkpoint past ``total`` is discarded with a
        warning (its state cannot be wound back), and the computation starts over.
    """
    if not isinstance(total, (int, np.integer)) or total < 0:
        raise ValueError(f"total must be an integer >= 0, got {total!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if on_mismatch not in ("error", "restart"):
        raise ValueError(f"on_mismatch must be 'error' or 'restart', got {on_mismatch!r}")
    sig = dict(signature or {})
    path = None if checkpoint_path is None else Path(checkpoint_path)
    parts: dict[str, list] = {}
    done, resumed = 0, False
    saved = _load_checkpoint(path) if path is not None and path.is_file() else None
    if saved is not None:
        old = {k: str(v) for k, v in dict(saved.get("signature", {})).items()}
        if old != sig and on_mismatch == "error":
            _check_signature(path, old, sig)
        if old != sig:  # on_mismatch="restart": computed afresh, the file is overwritten
            pass
        elif int(saved["done"]) > total:
            warnings.warn(f"checkpoint_path {str(path)!r} holds {int(saved['done'])} items, more "
                          f"than total={total}; starting over", stacklevel=2)
        else:
            resumed_state = _restore_state(path, state, saved)
            if resumed_state is not None:
                state = resumed_state
                parts = {k: [np.asarray(v)] for k, v in dict(saved.get("records", {})).items()}
                done, resumed = int(saved["done"]), True

    if not resumed and prepare is not None:
        state = prepare(state)

    def joined():
        return {k: np.concatenate(v, axis=axis) if len(v) > 1 else v[0] for k, v in parts.items()}

    with tqdm(total=total, initial=done, disable=not progress, desc=desc, unit=unit,
              dynamic_ncols=True) as bar:
        while done < total and not (until is not None and parts and until(joined())):
            n = min(chunk, total - done)
            state, record = step(state, done, n)
            for k, v in (record or {}).items():
                parts.setdefault(k, []).append(np.asarray(v))
            parts = {k: [np.concatenate(v, axis=axis)] if len(v) > 1 else v
                     for k, v in parts.items()}
            done += n
            bar.update(n)
            if postfix is not None:
                bar.set_postfix(postfix(joined()))
            if path is not None:
                save_pytree(path, {"state": keys_to_data(state), "records": joined(),
                                   "done": np.int64(done), "signature": sig})
    return Chunked(state, joined(), resumed)
