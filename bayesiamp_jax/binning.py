"""Product binnings of observables and their histogramming, shared by generation and analysis.

A ``Binning`` is a product grid of per-observable edges, one 1-D edge array per observable value
(the ring: r and φ), with the truth probability of every cell (and, when that truth comes from
a finite reference sample, its standard error). The paper's binnings are the ring's
truth-quantile grids (``quantile_binning(n)``): n × n cells, each of probability exactly 1/n².
Cells follow ``numpy.histogramdd``: bin i of an axis holds edges[i] <= v < edges[i+1], the last
bin also holds v == edges[-1]; values outside are dropped. Flattened cell index is row-major
(ring: i_r · n_φ + i_φ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks, data


class Binning(NamedTuple):
    """Edges (one (n_j + 1,) array per observable value), truth cell probabilities
    (n_1, …, n_k), a label, the truth's standard error (same shape; None when exact) and the
    value names (None: unnamed; the ring's are ("r", "phi"))."""

    edges: tuple
    truth: np.ndarray
    label: str
    truth_std: np.ndarray | None = None
    names: tuple | None = None

    @property
    def r(self) -> np.ndarray:
        """Edges of the first observable value (the ring's r)."""
        return self.edges[0]

    @property
    def phi(self) -> np.ndarray:
        """Edges of the second observable value (the ring's φ)."""
        return self.edges[1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(e) - 1 for e in self.edges)

    @property
    def num_cells(self) -> int:
        return math.prod(self.shape)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(n_1, n_2 · … · n_k): the first value against all others flattened, the 2-D layout
        the calibration and amplification analyses use (the ring: (n_r, n_φ))."""
        return (self.shape[0], self.num_cells // self.shape[0])


def quantile_binning(num_bins: int, r_mean: float = data.DEFAULT_R_MEAN) -> Binning:
    """The paper's n × n truth-quantile grid of the ring; truth = 1/n² in every cell."""
    n = _num_bins(num_bins)
    edges = data.quantile_edges(n, r_mean)
    return Binning((edges.r, edges.phi), np.full((n, n), 1.0 / n**2), f"{n}x{n}",
                   names=RING_NAMES)


RING_NAMES = ("r", "phi")


def _num_bins(num_bins) -> int:
    n = _checks.positive_int("num_bins", num_bins)
    if n < 2:
        raise ValueError(f"num_bins must be >= 2 (a binning needs at least 2 cells), got {n}")
    return n


def exact_quantile_binning(num_bins: int, marginals: Sequence, names=None,
                           label: str | None = None) -> Binning:
    """n edges per value at the exact truth quantiles i/n of independent ``marginals``.

    ``marginals``: one object per observable value with ``ppf(q)`` (numpy, float64) and
    ``lower``/``upper`` outer edges (``datasets.Marginal``). With independent values every one
    of the n^k cells has truth probability exactly 1/n^k.
    """
    n = _num_bins(num_bins)
    levels = np.arange(n + 1) / n
    edges = []
    for m in marginals:
        e = np.asarray(m.ppf(levels), np.float64)
        e[0], e[-1] = m.lower, m.upper
        edges.append(e)
    k = len(edges)
    return product_binning(edges, np.full((n,) * k, 1.0 / n**k), label, names=names)


def reference_quantile_binning(num_bins: int, reference_values, names=None,
                               label: str | None = None) -> Binning:
    """Edges at the reference sample's marginal quantiles i/n, truth from the same sample.

    ``reference_values`` (N, k): the observable of N reference events (the truth stand-in when
    no closed form is known). Interior edges are ``numpy.quantile`` (linear interpolation) of
    each value, outer edges ±inf; the truth of a cell is the reference fraction p̂ in it with
    binomial standard error sqrt(p̂(1 − p̂)/N) (``truth_std``).
    """
    n = _num_bins(num_bins)
    v = np.asarray(reference_values, np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"reference_values must have shape (N >= 2, k), got {v.shape}")
    _checks.finite("reference_values", v)
    levels = np.arange(1, n) / n
    edges = [np.concatenate([[-np.inf], np.quantile(v[:, j], levels), [np.inf]])
             for j in range(v.shape[1])]
    for j, e in enumerate(edges):
        if np.any(np.diff(e) <= 0):
            raise ValueError(
                f"reference value {j} has too few distinct values for {n} quantile bins "
                f"(edges {e.tolist()})")
    counts, _ = np.histogramdd(v, bins=edges)
    p = counts / v.shape[0]
    return product_binning(edges, p, label, truth_std=np.sqrt(p * (1.0 - p) / v.shape[0]),
                           names=names)


def ring_cell_probabilities(r_edges, phi_edges, r_mean: float = data.DEFAULT_R_MEAN) -> np.ndarray:
    """Exact ring truth probability of every cell of a product grid, shape (n_r, n_φ)."""
    pr = np.diff(data.radial_cdf(np.asarray(r_edges, np.float64), r_mean))
    phi = np.clip(np.asarray(phi_edges, np.float64), 0.0, data.TWO_PI)
    return np.outer(pr, np.diff(phi) / data.TWO_PI)


def make_binning(r_edges, phi_edges, truth=None, label: str | None = None,
                 r_mean: float = data.DEFAULT_R_MEAN) -> Binning:
    """A ring (r, φ) binning from explicit edges; ``truth`` defaults to the exact ring cell
    probabilities. Any other observables: ``product_binning``."""
    r = _edges("r_edges", r_edges)
    phi = _edges("phi_edges", phi_edges)
    if truth is None:
        truth = ring_cell_probabilities(r, phi, r_mean)
    return product_binning((r, phi), truth, label, names=RING_NAMES,
                           edge_names=("r_edges", "phi_edges"))


def product_binning(edges: Sequence, truth, label: str | None = None, *, truth_std=None,
                    names=None, edge_names=None) -> Binning:
    """A binning from one edge array per observable value and the truth (n_1, …, n_k)."""
    if isinstance(edges, np.ndarray) or not isinstance(edges, Sequence) or not edges:
        raise ValueError(f"edges must be a non-empty sequence of 1-D edge arrays, got {edges!r}")
    edge_names = edge_names or [f"edges[{j}]" for j in range(len(edges))]
    e = tuple(_edges(nm, x) for nm, x in zip(edge_names, edges, strict=True))
    shape = tuple(len(x) - 1 for x in e)
    if math.prod(shape) < 2:
        raise ValueError(
            f"a binning needs at least 2 cells, got {' x '.join(map(str, shape))} from edges "
            + " and ".join(f"{nm}={x.tolist()}" for nm, x in zip(edge_names, e, strict=True))
        )
    truth = _cell_array("truth", truth, shape)
    if truth_std is not None:
        truth_std = _cell_array("truth_std", truth_std, shape)
    if names is not None:
        names = tuple(names)
        if len(names) != len(e):
            raise ValueError(f"names must name the {len(e)} observable values, got {names!r}")
    label = label or "x".join(map(str, shape if len(shape) > 1 else shape + (1,)))
    return Binning(e, truth, label, truth_std, names)


def _cell_array(name, a, shape):
    a = np.asarray(a, float)
    if a.shape != shape:
        dims = "(n_r, n_phi)" if len(shape) == 2 else "(one axis per observable value)"
        raise ValueError(f"{name} must have shape {shape} {dims}, got {a.shape}")
    _checks.finite(name, a)
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 everywhere, got minimum {a.min()!r}")
    return a


def as_binning(spec, r_mean: float = data.DEFAULT_R_MEAN) -> Binning:
    """An int n (the ring's n × n quantile grid) or a ``Binning`` -> ``Binning``."""
    if isinstance(spec, Binning):
        return product_binning(spec.edges, spec.truth, spec.label, truth_std=spec.truth_std,
                               names=spec.names)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return quantile_binning(int(spec), r_mean)
    raise TypeError(f"a binning must be an int n (n x n quantile grid) or a Binning, got {spec!r}")


def as_binnings(specs, r_mean: float = data.DEFAULT_R_MEAN) -> tuple[Binning, ...]:
    """Binnings from ints (the ring's n × n quantile grids) and/or ``Binning``s."""
    if isinstance(specs, (int, np.integer, Binning)):
        specs = [specs]
    if not isinstance(specs, Sequence) or len(specs) == 0:
        raise ValueError(
            f"binnings must be a non-empty sequence of ints or Binnings, got {specs!r}"
        )
    binnings = tuple(as_binning(s, r_mean) for s in specs)
    labels = [b.label for b in binnings]
    if len(set(labels)) != len(labels):
        raise ValueError(f"binning labels must be unique, got {labels}")
    num_values = {len(b.edges) for b in binnings}
    if len(num_values) != 1:
        raise ValueError(f"all binnings must bin the same number of observable values, got "
                         f"{ {b.label: len(b.edges) for b in binnings} }")
    return binnings


def _edges(name, edges) -> np.ndarray:
    e = np.asarray(edges, np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 edges, got shape {e.shape}")
    if np.any(np.isnan(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"{name} must be strictly increasing and not NaN, got {e.tolist()}")
    return e


def cell_index(values: jax.Array, edges: Sequence[jax.Array]) -> jax.Array:
    """Flattened row-major cell of each point: values (..., k) -> (...); -1 outside the grid
    or non-finite."""
    cell = jnp.zeros(values.shape[:-1], jnp.int32)
    inside = jnp.ones(values.shape[:-1], bool)
    for j, e in enumerate(edges):
        n = e.shape[0] - 1
        i = _bin(values[..., j], e, n)
        inside = inside & (i >= 0)
        cell = cell * n + i
    return jnp.where(inside, cell, -1)


def _bin(v, edges, n):
    i = _position(v, edges) - 1
    i = jnp.where(v == edges[-1], n - 1, i)  # last bin is closed, as in numpy
    return jnp.where((i >= 0) & (i < n) & ~jnp.isnan(v), i, -1)


BUCKETS_PER_BIN = 16


def _position(v, edges):
    """The number of edges <= v, ``searchsorted(edges, v, side="right")``, exactly.

    A table over M ≈ 16 n equal buckets of the finite edges' range gives each value's count at
    its bucket's start; one comparison moves it past an edge inside the bucket, one more
    checks e[p − 1] <= v < e[p]. Three gathers instead of a binary search's log₂ n (2.3× less
    time on 50 edges); if any value fails the check (a bucket holding two edges, rounding at a
    bucket boundary), the whole array takes the binary search. Under ``vmap`` the
    ``lax.cond`` runs both branches: still exact, only slower.
    """
    num_edges = edges.shape[0]
    last = num_edges - 1
    m = 1 << max(BUCKETS_PER_BIN * last - 1, 1).bit_length()
    finite = jnp.isfinite(edges)
    lo = jnp.min(jnp.where(finite, edges, jnp.inf))
    hi = jnp.max(jnp.where(finite, edges, -jnp.inf))
    lo = jnp.where(jnp.isfinite(lo), lo, 0.0)
    width = jnp.where(hi > lo, hi - lo, 1.0)
    starts = lo + width * (jnp.arange(m, dtype=edges.dtype) / m)
    table = jnp.concatenate([jnp.searchsorted(edges, lo, side="left")[None],  # below lo
                             jnp.searchsorted(edges, starts, side="right"),
                             jnp.searchsorted(edges, lo + width, side="right")[None]])
    u = (v - lo) * (m / width)
    bucket = jnp.where(u < 0, 0, jnp.where(u >= m, m + 1, jnp.clip(u, 0, m - 1).astype(jnp.int32)
                                           + 1))
    p = table[jnp.clip(bucket, 0, m + 1)].astype(jnp.int32)
    step = (p <= last) & (v >= edges[jnp.minimum(p, last)])
    q = jnp.where(step, p + 1, p - 1)
    e_q = edges[jnp.clip(q, 0, last)]
    ok = jnp.where(step, (q > last) | (v < e_q), (q < 0) | (e_q <= v)) | jnp.isnan(v)
    return jax.lax.cond(jnp.all(ok), lambda: p + step,
                        lambda: jnp.searchsorted(edges, v, side="right",
                                                 method="scan_unrolled").astype(jnp.int32))


def device_edges(binnings: Sequence[Binning], dtype=jnp.float32) -> tuple:
    """Edges of every binning as device arrays of the samples' dtype (values rounded to it)."""
    return tuple(tuple(jnp.asarray(e, dtype) for e in b.edges) for b in binnings)


def accumulate(counts: jax.Array, values: jax.Array, weight_mask, edges: tuple) -> jax.Array:
    """Add points to fused flat counts of several binnings (concatenated cells).

    ``counts`` (total_cells,) int; ``values`` (n, k) the observable of each point;
    ``weight_mask`` (n,) bool marks the points to count; ``edges`` as ``device_edges``.
    """
    total = counts.shape[0]
    offset = 0
    for binning_edges in edges:
        cell = cell_index(values, binning_edges)
        cell = jnp.where(weight_mask & (cell >= 0), offset + cell, total)
        counts = counts.at[cell].add(1, mode="drop")
        offset += math.prod(e.shape[0] - 1 for e in binning_edges)
    return counts


def split_counts(flat: np.ndarray, binnings: Sequence[Binning]) -> list[np.ndarray]:
    """Split fused counts (..., total_cells) into per-binning arrays (..., n_1, …, n_k)."""
    out, offset = [], 0
    for b in binnings:
        out.append(flat[..., offset:offset + b.num_cells].reshape(flat.shape[:-1] + b.shape))
        offset += b.num_cells
    return out


def histogram(values, binning: Binning) -> np.ndarray:
    """Counts (n_1, …, n_k) of observable values (n, k) in a binning (host convenience).

    Compiled once per shape and dtype of ``values`` and shape of the edges (``_counts``); the
    edges are traced arrays, so another binning of the same shape does not recompile.
    """
    v = jnp.asarray(values)
    if v.ndim != 2 or v.shape[1] != len(binning.edges):
        raise ValueError(f"values must have shape (n, {len(binning.edges)}) for binning "
                         f"{binning.label!r}, got {tuple(v.shape)}")
    return np.asarray(_counts(v, _host_edges(binning, v.dtype))).reshape(binning.shape)


def histogram_polar(x, binning: Binning) -> np.ndarray:
    """Counts (n_r, n_φ) of Cartesian points x (n, 2) in a ring binning (host convenience;
    ``data.to_polar`` and the counting compiled together once per shape, as ``histogram``)."""
    _checks.last_dim("x", x, 2, min_ndim=2)
    x = jnp.asarray(x)
    if x.ndim != 2 or len(binning.edges) != 2:
        raise ValueError(f"x must have shape (n, 2) and binning {binning.label!r} bin 2 values "
                         f"(r, phi), got x of shape {tuple(x.shape)} and "
                         f"{len(binning.edges)} edge arrays")
    return np.asarray(_polar_counts(x, _host_edges(binning, x.dtype))).reshape(binning.shape)


def _host_edges(binning: Binning, dtype) -> tuple:
    """The edges rounded to the values' dtype, as numpy arrays (``device_edges``' values)."""
    return tuple(np.asarray(e, dtype) for e in binning.edges)


@jax.jit
def _counts(values, edges):
    """Flat counts (n_1 · … · n_k,) of values (n, k) on edges (one (n_j + 1,) array each)."""
    num_cells = math.prod(e.shape[0] - 1 for e in edges)
    return accumulate(jnp.zeros(num_cells, jnp.int32), values,
                      jnp.ones(values.shape[0], bool), (edges,))


@jax.jit
def _polar_counts(x, edges):
    r, phi = data.to_polar(x)
    return _counts(jnp.stack([r, phi], axis=-1), edges)
