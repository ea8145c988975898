"""Polar (r, φ) binnings and their histogramming, shared by generation and analysis.

A ``Binning`` is an n_r × n_φ product grid of edges in (r, φ) with the truth probability of every
cell. The paper's binnings are the truth-quantile grids (``quantile_binning(n)``): n × n cells,
each of probability exactly 1/n². Cells follow ``numpy.histogram2d``: bin i holds
edges[i] <= v < edges[i+1], the last bin also holds v == edges[-1]; values outside are dropped.
Flattened cell index = i_r · n_φ + i_φ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks, data


class Binning(NamedTuple):
    """Edges ``r`` (n_r+1,), ``phi`` (n_φ+1,), truth cell probabilities (n_r, n_φ), a label."""

    r: np.ndarray
    phi: np.ndarray
    truth: np.ndarray
    label: str

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.r) - 1, len(self.phi) - 1)

    @property
    def num_cells(self) -> int:
        return (len(self.r) - 1) * (len(self.phi) - 1)


def quantile_binning(num_bins: int, r_mean: float = data.DEFAULT_R_MEAN) -> Binning:
    """The paper's n × n truth-quantile grid of the ring; truth = 1/n² in every cell."""
    n = _checks.positive_int("num_bins", num_bins)
    if n < 2:
        raise ValueError(f"num_bins must be >= 2 (a binning needs at least 2 cells), got {n}")
    edges = data.quantile_edges(n, r_mean)
    return Binning(edges.r, edges.phi, np.full((n, n), 1.0 / n**2), f"{n}x{n}")


def ring_cell_probabilities(r_edges, phi_edges, r_mean: float = data.DEFAULT_R_MEAN) -> np.ndarray:
    """Exact ring truth probability of every cell of a product grid, shape (n_r, n_φ)."""
    pr = np.diff(data.radial_cdf(np.asarray(r_edges, np.float64), r_mean))
    phi = np.clip(np.asarray(phi_edges, np.float64), 0.0, data.TWO_PI)
    return np.outer(pr, np.diff(phi) / data.TWO_PI)


def make_binning(r_edges, phi_edges, truth=None, label: str | None = None,
                 r_mean: float = data.DEFAULT_R_MEAN) -> Binning:
    """A binning from explicit edges; ``truth`` defaults to the exact ring cell probabilities."""
    r = _edges("r_edges", r_edges)
    phi = _edges("phi_edges", phi_edges)
    shape = (len(r) - 1, len(phi) - 1)
    if shape[0] * shape[1] < 2:
        raise ValueError(
            f"a binning needs at least 2 cells, got {shape[0]} x {shape[1]} from edges "
            f"r_edges={r.tolist()} and phi_edges={phi.tolist()}"
        )
    truth = ring_cell_probabilities(r, phi, r_mean) if truth is None else np.asarray(truth, float)
    if truth.shape != shape:
        raise ValueError(f"truth must have shape {shape} (n_r, n_phi), got {truth.shape}")
    _checks.finite("truth", truth)
    if np.any(truth < 0):
        raise ValueError(f"truth must be >= 0 everywhere, got minimum {truth.min()!r}")
    return Binning(r, phi, truth, label or f"{shape[0]}x{shape[1]}")


def as_binning(spec, r_mean: float = data.DEFAULT_R_MEAN) -> Binning:
    """An int n (the n × n quantile grid) or a ``Binning`` -> ``Binning``."""
    if isinstance(spec, Binning):
        return make_binning(spec.r, spec.phi, spec.truth, spec.label)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return quantile_binning(int(spec), r_mean)
    raise TypeError(f"a binning must be an int n (n x n quantile grid) or a Binning, got {spec!r}")


def as_binnings(specs, r_mean: float = data.DEFAULT_R_MEAN) -> tuple[Binning, ...]:
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
    return binnings


def _edges(name, edges) -> np.ndarray:
    e = np.asarray(edges, np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 edges, got shape {e.shape}")
    if np.any(np.isnan(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"{name} must be strictly increasing and not NaN, got {e.tolist()}")
    return e


def cell_index(r: jax.Array, phi: jax.Array, r_edges: jax.Array, phi_edges: jax.Array) -> jax.Array:
    """Flattened cell of each point (same shape as r); -1 outside the grid or non-finite."""
    n_r, n_phi = r_edges.shape[0] - 1, phi_edges.shape[0] - 1
    ir = _bin(r, r_edges, n_r)
    ip = _bin(phi, phi_edges, n_phi)
    inside = (ir >= 0) & (ip >= 0)
    return jnp.where(inside, ir * n_phi + ip, -1)


def _bin(v, edges, n):
    # "scan_unrolled": the same binary search, unrolled (13 % less CPU time at 50 edges)
    i = jnp.searchsorted(edges, v, side="right", method="scan_unrolled") - 1
    i = jnp.where(v == edges[-1], n - 1, i)  # last bin is closed, as in numpy
    return jnp.where((i >= 0) & (i < n) & ~jnp.isnan(v), i, -1)


def device_edges(binnings: Sequence[Binning], dtype=jnp.float32) -> tuple:
    """Edges of every binning as device arrays of the samples' dtype (values rounded to it)."""
    return tuple((jnp.asarray(b.r, dtype), jnp.asarray(b.phi, dtype)) for b in binnings)


def accumulate(counts: jax.Array, r, phi, weight_mask, edges: tuple) -> jax.Array:
    """Add points (r, φ) to fused flat counts of several binnings (concatenated cells).

    ``counts`` (total_cells,) int; ``weight_mask`` (n,) bool marks the points to count.
    """
    total = counts.shape[0]
    offset = 0
    for r_edges, phi_edges in edges:
        cell = cell_index(r, phi, r_edges, phi_edges)
        cell = jnp.where(weight_mask & (cell >= 0), offset + cell, total)
        counts = counts.at[cell].add(1, mode="drop")
        offset += (r_edges.shape[0] - 1) * (phi_edges.shape[0] - 1)
    return counts


def split_counts(flat: np.ndarray, binnings: Sequence[Binning]) -> list[np.ndarray]:
    """Split fused counts (..., total_cells) into per-binning arrays (..., n_r, n_φ)."""
    out, offset = [], 0
    for b in binnings:
        out.append(flat[..., offset:offset + b.num_cells].reshape(flat.shape[:-1] + b.shape))
        offset += b.num_cells
    return out


def histogram_polar(x, binning: Binning) -> np.ndarray:
    """Counts (n_r, n_φ) of Cartesian points x (n, 2) in a binning (host convenience)."""
    _checks.last_dim("x", x, 2, min_ndim=2)
    r, phi = data.to_polar(jnp.asarray(x))
    (edges,) = device_edges([binning], r.dtype)
    counts = accumulate(jnp.zeros(binning.num_cells, jnp.int32), r, phi,
                        jnp.ones(r.shape, bool), (edges,))
    return np.asarray(counts).reshape(binning.shape)
