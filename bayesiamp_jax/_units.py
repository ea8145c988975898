"""The unit axis of the drivers: U independent runs / grid points trained in one vmapped program.

A driver gets one unit when its key is a single key and U units when the key has shape (U,);
per-unit arguments (data, initial params) then carry a leading axis U, and hyper-parameters
(k, σ) are a scalar shared by all units or a (U,) array.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks


def key_batch_shape(key) -> tuple[int, ...]:
    """Batch shape of a typed key array or of a raw uint32 key array (..., 2)."""
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return tuple(key.shape)
    if key.dtype == jnp.uint32 and key.ndim >= 1 and key.shape[-1] == 2:
        return tuple(key.shape[:-1])
    raise ValueError(f"key must be a PRNG key or an array of keys, got dtype {key.dtype} "
                     f"and shape {tuple(key.shape)}")


def num_units(key) -> int | None:
    """None for a single key, U for keys of shape (U,)."""
    shape = key_batch_shape(key)
    if shape == ():
        return None
    if len(shape) == 1 and shape[0] >= 1:
        return int(shape[0])
    raise ValueError(f"key must be one key or a (U,) array of keys (one per unit), "
                     f"got key batch shape {shape}")


def per_unit(name: str, value, units: int | None, dtype=jnp.float32) -> jax.Array:
    """A hyper-parameter as a scalar (one unit) or a (U,) array (scalar broadcast to all)."""
    arr = np.asarray(value, dtype=np.float64)
    if units is None:
        if arr.ndim != 0:
            raise ValueError(f"{name} must be a scalar for one unit, got shape {arr.shape}")
        return jnp.asarray(arr, dtype)
    if arr.ndim == 0:
        arr = np.full(units, arr)
    if arr.shape != (units,):
        raise ValueError(f"{name} must be a scalar or have shape ({units},) (one per unit), "
                         f"got shape {arr.shape}")
    return jnp.asarray(arr, dtype)


def check_leading(name: str, tree, units: int | None) -> None:
    """With units, every leaf of ``tree`` must have leading axis U."""
    if units is None:
        return
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != units:
            raise ValueError(f"{name} leaf {i} has shape {tuple(np.shape(leaf))}; with {units} "
                             f"unit keys it needs leading axis {units} (one slice per unit)")


def check_data(data, units: int | None, batch_size: int) -> int:
    """N of a data pytree whose leaves share the axis N after the unit axis (leading U with
    units), every leaf finite, ``batch_size`` <= N. One-line ValueErrors (the trainers'
    wording; ``data_points`` checks the samplers' data with ``_checks.data_points``')."""
    check_leading("data", data, units)
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data must be a pytree holding at least one array")
    axis = 0 if units is None else 1
    n = int(np.shape(leaves[0])[axis])
    for i, leaf in enumerate(leaves):
        if np.shape(leaf)[axis:axis + 1] != (n,):
            raise ValueError(f"data leaf {i} has shape {np.shape(leaf)}, expected leading axis {n}")
        _checks.finite(f"data leaf {i}", leaf)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the number of data points {n}")
    return n


def data_points(data, units: int | None, batch_size=None) -> int:
    """``_checks.data_points`` of one unit's data (its N, every leaf sharing it, ``batch_size``
    <= N) and, with units, every unit's leaves finite (after ``check_leading``)."""
    n = _checks.data_points(first_unit(data, units), batch_size)
    if units is not None:
        for i, leaf in enumerate(jax.tree_util.tree_leaves(data)):
            _checks.finite(f"data leaf {i}", leaf)
    return n


def first_unit(tree, units: int | None):
    """The tree of one unit (the unit axis removed) — for shapes and checks."""
    return tree if units is None else jax.tree_util.tree_map(lambda a: a[0], tree)


def vmap_if(fn, units: int | None, in_axes=0):
    return fn if units is None else jax.vmap(fn, in_axes=in_axes)


def split(key, num: int, units: int | None):
    """``jax.random.split(key, num)`` per unit, as a tuple of ``num`` keys (each () or (U,))."""
    keys = vmap_if(lambda k: jax.random.split(k, num), units)(key)
    return tuple(keys[:, i] if units is not None else keys[i] for i in range(num))


def check_xc(field, x, c, units: int | None):
    """x (n, d), c (n, cond_dim) — with units (U, n, d), (U, n, cond_dim) — as arrays."""
    from bayesiamp_jax import _checks

    x = jnp.asarray(x)
    if c is None and getattr(field, "cond_dim", None) == 0:  # unconditional: c of width 0
        c = jnp.zeros(x.shape[:-1] + (0,), x.dtype)
    elif c is None:
        raise ValueError(f"c is required: the field has cond_dim={field.cond_dim}")
    c = jnp.asarray(c)
    lead = 2 if units is None else 3
    _checks.last_dim("x", x, field.data_dim, min_ndim=lead)
    _checks.last_dim("c", c, field.cond_dim, min_ndim=lead)
    check_leading("x", x, units)
    check_leading("c", c, units)
    _checks.same_leading("x", x, "c", c, ndim=lead - 1)
    return x, c
