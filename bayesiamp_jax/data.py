"""The Gamma ring toy: samples with their condition, polar map, truth density and edges.

x = r · u/|u| with u ~ N(0, I₂) and r = r_mean + g, g ~ Gamma(shape 2, rate 2). The
condition is c = r_mean, shape (..., 1).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from bayesiamp_jax import _checks

GAMMA_SHAPE = 2.0
GAMMA_RATE = 2.0
DEFAULT_R_MEAN = 4.0
TWO_PI = 2.0 * math.pi


class RingSample(NamedTuple):
    """Points ``x`` of shape (n, 2) and conditions ``c`` of shape (n, 1)."""

    x: jax.Array
    c: jax.Array


@partial(jax.jit, static_argnums=2)
def radial_points(key: jax.Array, r_mean: jax.Array, dim: int = 2) -> jax.Array:
    """Cartesian points (n, dim) at radius r_mean + Gamma(2, rate 2), uniform direction, for
    per-point radii offsets ``r_mean`` (n,): the ring (dim = 2) and the shell of
    ``datasets`` (any dim)."""
    key_dir, key_r = jax.random.split(key)
    u = jax.random.normal(key_dir, r_mean.shape + (dim,))
    direction = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    # Gamma(shape 2, rate λ) is exactly the sum of two Exp(rate λ) variables; this is far
    # cheaper to compile and run than jax.random.gamma's rejection sampler.
    g = jnp.sum(jax.random.exponential(key_r, (2,) + r_mean.shape), axis=0) / GAMMA_RATE
    return (r_mean + g)[:, None] * direction


def sample_ring(key: jax.Array, num_samples: int, r_mean: float = DEFAULT_R_MEAN) -> RingSample:
    """Sample the ring at fixed ``r_mean``: x (n, 2), c (n, 1) filled with ``r_mean``."""
    n = _checks.positive_int("num_samples", num_samples)
    if _checks.is_concrete(r_mean):
        _checks.non_negative("r_mean", r_mean)
    c = jnp.full((n,), r_mean, dtype=jnp.float32)
    return RingSample(radial_points(key, c), c[:, None])


def sample_triangular(
    key: jax.Array, shape: tuple[int, ...], low: float, mode: float, high: float
) -> jax.Array:
    """Triangular distribution on [low, high] with the given mode, by inverse CDF."""
    if not low <= mode <= high or not low < high:
        raise ValueError(
            "need low <= mode <= high and low < high, "
            f"got low={low!r}, mode={mode!r}, high={high!r}"
        )
    return _triangular(key, tuple(shape), float(low), float(mode), float(high))


@partial(jax.jit, static_argnums=(1,))
def _triangular(key, shape, low, mode, high):
    u = jax.random.uniform(key, shape)
    split = (mode - low) / (high - low)
    left = low + jnp.sqrt(u * (high - low) * (mode - low))
    right = high - jnp.sqrt((1.0 - u) * (high - low) * (high - mode))
    return jnp.where(u < split, left, right)


def sample_ring_varying(
    key: jax.Array,
    num_samples: int,
    low: float = 1.0,
    mode: float = 6.0,
    high: float = 6.0,
) -> RingSample:
    """Sample with r_mean ~ Triangular(low, mode, high) per point; c holds each r_mean."""
    n = _checks.positive_int("num_samples", num_samples)
    key_c, key_x = jax.random.split(key)
    r_mean = sample_triangular(key_c, (n,), low, mode, high)
    return RingSample(radial_points(key_x, r_mean), r_mean[:, None])


def to_polar(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Map (..., 2) points to (r, φ) with φ in [0, 2π)."""
    _checks.last_dim("x", x, 2)
    r = jnp.linalg.norm(x, axis=-1)
    phi = jnp.mod(jnp.arctan2(x[..., 1], x[..., 0]), TWO_PI)
    # mod can round up to exactly 2π for tiny negative angles
    phi = jnp.where(phi >= TWO_PI, 0.0, phi)
    return r, phi


def radial_log_density(r: jax.Array, r_mean: float | jax.Array = DEFAULT_R_MEAN) -> jax.Array:
    """log p(r) of r = r_mean + Gamma(2, rate 2); -inf below r_mean."""
    g = r - r_mean
    safe = jnp.where(g > 0, g, 1.0)
    logp = (
        GAMMA_SHAPE * jnp.log(GAMMA_RATE)
        + (GAMMA_SHAPE - 1.0) * jnp.log(safe)
        - GAMMA_RATE * safe
        - jax.scipy.special.gammaln(GAMMA_SHAPE)
    )
    return jnp.where(g > 0, logp, -jnp.inf)


def truth_log_prob(x: jax.Array, r_mean: float | jax.Array = DEFAULT_R_MEAN) -> jax.Array:
    """Truth log-density of the ring in Cartesian coordinates, shape x.shape[:-1]."""
    r, _ = to_polar(x)
    return radial_log_density(r, r_mean) - jnp.log(TWO_PI * jnp.maximum(r, 1e-30))


def radial_quantile(q, r_mean: float = DEFAULT_R_MEAN) -> np.ndarray:
    """Exact truth quantile of r at level(s) q (numpy, float64)."""
    return r_mean + scipy.stats.gamma.ppf(q, GAMMA_SHAPE, scale=1.0 / GAMMA_RATE)


def radial_cdf(r, r_mean: float = DEFAULT_R_MEAN) -> np.ndarray:
    """Exact truth CDF of r (numpy, float64)."""
    return scipy.stats.gamma.cdf(np.asarray(r) - r_mean, GAMMA_SHAPE, scale=1.0 / GAMMA_RATE)


class QuantileEdges(NamedTuple):
    """Bin edges of the n × n truth-quantile grid, each of length n + 1.

    ``r[0] = -inf`` and ``r[-1] = +inf`` (outer edges open); ``phi`` runs from 0 to 2π.
    Every one of the n² cells has truth probability 1/n².
    """

    r: np.ndarray
    phi: np.ndarray


def quantile_edges(num_bins: int, r_mean: float = DEFAULT_R_MEAN) -> QuantileEdges:
    """Exact truth-quantile edges at levels i/n from the Gamma inverse CDF."""
    n = _checks.positive_int("num_bins", num_bins)
    levels = np.arange(n + 1) / n
    r = radial_quantile(levels, r_mean)
    r[0], r[-1] = -np.inf, np.inf
    phi = TWO_PI * levels
    return QuantileEdges(r, phi)
