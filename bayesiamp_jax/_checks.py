"""Argument validation that names the argument and the bad value.

Checks run on the host, on concrete inputs; under ``jit`` traced arrays are skipped
(shape checks still apply, since shapes are static).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
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
