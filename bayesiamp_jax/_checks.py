"""Argument validation that names the argument and the bad value.

Checks run on the host, on concrete inputs; under ``jit`` traced arrays are skipped
(shape checks still apply, since shapes are static).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(name: str, value) -> int:
    """Return ``value`` as int if it is an integer > 0, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def non_negative(name: str, value) -> float:
    """Return ``value`` as float if it is finite and >= 0."""
    v = _scalar(name, value)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def positive(name: str, value) -> float:
    """Return ``value`` as float if it is finite and > 0."""
    v = _scalar(name, value)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def probability(name: str, value, *, open_interval: bool = False) -> float:
    v = _scalar(name, value)
    ok = (0 < v < 1) if open_interval else (0 <= v <= 1)
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def one_of(name: str, value, choices: Sequence):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _scalar(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


_TRACER = getattr(jax.core, "Tracer", None)


def is_concrete(x) -> bool:
    """False for a traced value (inside jit / grad / vmap), True otherwise."""
    if _TRACER is not None:
        return not isinstance(x, _TRACER)
    try:  # jax without a public Tracer class: concretising a tracer raises
        np.asarray(x)
    except jax.errors.JAXTypeError:
        return False
    return True


def finite(name: str, x):
    """Raise if a concrete array holds NaN or inf; traced arrays pass through."""
    if is_concrete(x):
        arr = np.asarray(x)
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return x


def last_dim(name: str, x, size: int, *, min_ndim: int = 1):
    """Check ``x.shape[-1] == size`` and ``x.ndim >= min_ndim``."""
    shape = np.shape(x)
    if len(shape) < min_ndim or shape[-1] != size:
        raise ValueError(
            f"{name} must have shape (..., {size}) with at least {min_ndim} dim(s), "
            f"got shape {tuple(shape)}"
        )
    return x


def same_leading(name_a: str, a, name_b: str, b, ndim: int = 1):
    sa, sb = np.shape(a)[:ndim], np.shape(b)[:ndim]
    if sa != sb:
        raise ValueError(
            f"{name_a} and {name_b} must share their leading {ndim} dim(s), "
            f"got {tuple(np.shape(a))} and {tuple(np.shape(b))}"
        )


def same_structure(name_a: str, a, name_b: str, b):
    """Raise if two pytrees differ in structure or leaf shapes."""
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if ta != tb:
        raise ValueError(f"{name_a} and {name_b} have different tree structures: {ta} vs {tb}")
    for (path, la), lb in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        if np.shape(la) != np.shape(lb):
            raise ValueError(
                f"{name_a} and {name_b} differ at {jax.tree_util.keystr(path)}: "
                f"shape {np.shape(la)} vs {np.shape(lb)}"
            )


@functools.lru_cache(maxsize=128)
def _expected_params(field):
    """((path, shape, dtype), ...) of ``field.init``'s params, traced abstractly; None
    where ``init`` cannot be traced with a typed key (a custom field: not checked)."""
    try:
        spec = jax.eval_shape(field.init, jax.random.key(0))
    except Exception:  # noqa: BLE001 - any failure means "cannot check", never a new error
        return None
    leaves, _ = jax.tree_util.tree_flatten_with_path(spec)
    return tuple((jax.tree_util.keystr(p), tuple(s.shape), s.dtype) for p, s in leaves)


def _dtype_ok(actual, expected) -> bool:
    """Same dtype after canonicalisation (float64 is float32 without x64), or both floating."""
    a = jax.dtypes.canonicalize_dtype(actual)
    if a == expected:
        return True
    return bool(jnp.issubdtype(a, jnp.floating) and jnp.issubdtype(expected, jnp.floating))


def params_match(name: str, field, params, lead_axes: int = 0):
    """Raise a one-line ValueError unless ``params`` is a params pytree of ``field``.

    Compares the leaf paths (a dict and a FrozenDict of the same layers agree), every leaf's
    shape after ``lead_axes`` leading axes (draw / run / unit axes, the same for all leaves)
    and its dtype (any float for a float leaf) with ``jax.eval_shape(field.init, key)``; works
    on traced params (shapes are static), so it costs nothing at run time inside ``jit``.
    Fields without an ``init``, unhashable ones or ones whose ``init`` cannot be traced with
    a typed key are not checked. Returns ``params``.
    """
    init = getattr(field, "init", None)
    if init is None:
        return params
    try:
        spec = _expected_params(field)
    except TypeError:  # unhashable field
        return params
    if spec is None:
        return params
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    got = {jax.tree_util.keystr(p): leaf for p, leaf in leaves}
    want = {path: (shape, dtype) for path, shape, dtype in spec}
    of = f"of {field!r}"
    for path in want:
        if path not in got:
            raise ValueError(f"{name}{path} is missing: not a params tree {of} (it needs "
                             f"{_few(sorted(want))}, got {_few(sorted(got))})")
    for path in got:
        if path not in want:
            raise ValueError(f"{name}{path} (shape {tuple(np.shape(got[path]))}) is not a "
                             f"parameter {of}, whose parameters are {_few(sorted(want))}")
    lead = None
    for path, (shape, dtype) in want.items():
        leaf = got[path]
        s = tuple(np.shape(leaf))
        if len(s) != lead_axes + len(shape) or s[lead_axes:] != shape:
            parts = ["..."] * lead_axes + [str(n) for n in shape]
            axes = f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"
            extra = f" ({lead_axes} leading draw/run axes)" if lead_axes else ""
            raise ValueError(f"{name}{path} has shape {s}, expected {axes}{extra} {of}")
        if lead is None:
            lead = s[:lead_axes]
        elif s[:lead_axes] != lead:
            raise ValueError(f"{name}{path} has leading axes {s[:lead_axes]}, other leaves "
                             f"{lead}: every leaf needs the same {lead_axes} leading axes")
        leaf_dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if not _dtype_ok(leaf_dtype, dtype):
            raise ValueError(f"{name}{path} has dtype {leaf_dtype}, expected {dtype} {of}")
    return params


def _few(names, limit: int = 6) -> str:
    shown = " ".join(names[:limit])
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return f"{shown}{more}" if names else "no leaves"


def data_points(data, batch_size=None) -> int:
    """N of one unit's data pytree: every leaf an array with leading axis N > 0, finite;
    ``batch_size`` (None: full batch) a positive integer <= N. One-line ValueErrors."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or np.ndim(leaves[0]) == 0 or np.shape(leaves[0])[0] == 0:
        raise ValueError("data is empty: give a pytree of arrays with a leading axis N > 0")
    n = int(np.shape(leaves[0])[0])
    for i, leaf in enumerate(leaves):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ValueError(f"every data array must share the leading axis N={n}; "
                             f"leaf {i} has shape {tuple(np.shape(leaf))}")
        finite(f"data leaf {i}", leaf)
    if batch_size is not None and positive_int("batch_size", batch_size) > n:
        raise ValueError(f"batch_size={batch_size} exceeds the number of points N={n}")
    return n
