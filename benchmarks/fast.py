"""Fast paths measured by the benchmarks, each next to the simple version it is tested against.

- Generation: ``decode_chunked`` solves the ODE chunk by chunk (``lax.map``) so that a chunk's
  activations stay in cache for all steps; reference: ``bayesiamp_jax.flow.decode``.
- Binning into the n × n truth-quantile grid: ``cell_index_cdf`` maps r through the exact
  truth CDF and φ linearly (two multiplies and a floor per point) instead of
  ``cell_index_searchsorted``'s binary searches; reference for both: ``np.histogram2d``.
- Generation + histogramming over S weight draws: ``draw_histograms_chunked`` streams sample
  chunks per draw and accumulates counts; reference: ``draw_histograms_simple`` (decode all
  samples of every draw with ``vmap``, then bin).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks
from bayesiamp_jax.data import DEFAULT_R_MEAN, GAMMA_RATE, to_polar
from bayesiamp_jax.flow import decode
from bayesiamp_jax.integrate import Solver, integrate


def _chunks(a: jax.Array, chunk: int) -> jax.Array:
    """(n, ...) -> (ceil(n / chunk), chunk, ...), the last chunk padded with zeros."""
    _checks.positive_int("chunk", chunk)
    n = a.shape[0]
    pad = -n % chunk
    a = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return a.reshape((-1, chunk) + a.shape[1:])


def _decode_points(field, params, z, c, solver):
    return integrate(lambda t, y, _: field(params, t, y, c), z, 1.0, 0.0, solver).y1


@partial(jax.jit, static_argnames=("field", "solver", "chunk"))
def decode_chunked(field, params, z, c, solver: Solver, chunk: int) -> jax.Array:
    """``flow.decode`` of z (n, d), c (n, cond_dim) solved ``chunk`` points at a time."""
    c = jnp.broadcast_to(c, z.shape[:-1] + c.shape[-1:])
    out = jax.lax.map(lambda zc: _decode_points(field, params, zc[0], zc[1], solver),
                      (_chunks(z, chunk), _chunks(c, chunk)))
    return out.reshape((-1,) + z.shape[1:])[: z.shape[0]]


def cell_index_searchsorted(x, r_inner, phi_inner) -> jax.Array:
    """Cell index i_r · n + i_φ (n,) of points x (n, 2); edges without the open outer ones."""
    r, phi = to_polar(x)
    n_phi = phi_inner.shape[0] + 1
    i_r = jnp.searchsorted(r_inner.astype(r.dtype), r, side="right")
    i_phi = jnp.searchsorted(phi_inner.astype(phi.dtype), phi, side="right")
    return i_r * n_phi + i_phi


def cell_index_cdf(x, num_bins: int, r_mean: float = DEFAULT_R_MEAN) -> jax.Array:
    """Same cells as ``cell_index_searchsorted`` on ``quantile_edges(num_bins)``, by the CDF.

    F(r) = 1 − (1 + 2g) e^{−2g}, g = r − r_mean ≥ 0 (Gamma(2, rate 2)); i_r = ⌊n F(r)⌋.
    Points within float32 rounding of an edge may fall into the neighbouring cell.
    """
    r, phi = to_polar(x)
    g = GAMMA_RATE * jnp.maximum(r - r_mean, 0.0)
    cdf = -jnp.expm1(-g) - g * jnp.exp(-g)
    i_r = jnp.clip(jnp.floor(cdf * num_bins).astype(jnp.int32), 0, num_bins - 1)
    i_phi = jnp.clip(jnp.floor(phi * (num_bins / (2 * math.pi))).astype(jnp.int32), 0,
                     num_bins - 1)
    return i_r * num_bins + i_phi


def counts(cell: jax.Array, num_cells: int) -> jax.Array:
    """Number of points per cell, shape (num_cells,)."""
    return jnp.bincount(cell, length=num_cells)


@partial(jax.jit, static_argnames=("num_bins",))
def histogram_searchsorted(x, r_inner, phi_inner, num_bins: int) -> jax.Array:
    return counts(cell_index_searchsorted(x, r_inner, phi_inner), num_bins**2)


@partial(jax.jit, static_argnames=("num_bins",))
def histogram_cdf(x, num_bins: int) -> jax.Array:
    return counts(cell_index_cdf(x, num_bins), num_bins**2)


@partial(jax.jit, static_argnames=("field", "solver", "num_bins"))
def draw_histograms_simple(field, params, z, c, r_inner, phi_inner, solver: Solver,
                           num_bins: int) -> jax.Array:
    """Counts (S, n²) of decoding the same z (m, d) with each of S draws (params axis 0)."""
    def one(p):
        x = decode(field, p, z, c, solver)
        return counts(cell_index_searchsorted(x, r_inner, phi_inner), num_bins**2)

    return jax.vmap(one)(params)


@partial(jax.jit, static_argnames=("field", "solver", "num_bins", "chunk"))
def draw_histograms_chunked(field, params, z, c, solver: Solver, num_bins: int,
                            chunk: int) -> jax.Array:
    """``draw_histograms_simple`` streaming: draws by ``lax.map``, chunks of z accumulated."""
    c = jnp.broadcast_to(c, z.shape[:-1] + c.shape[-1:])
    zs, cs = _chunks(z, chunk), _chunks(c, chunk)
    real = _chunks(jnp.ones(z.shape[0], bool), chunk)  # False on the padding
    cells = num_bins**2

    def one(p):
        def add(total, zcm):
            zc, cc, mask = zcm
            cell = jnp.where(mask, cell_index_cdf(_decode_points(field, p, zc, cc, solver),
                                                  num_bins), cells)
            return total + jnp.bincount(cell, length=cells + 1)[:cells], None

        total, _ = jax.lax.scan(add, jnp.zeros(cells, jnp.int32), (zs, cs, real))
        return total

    return jax.lax.map(one, params)
