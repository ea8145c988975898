"""A calibration-regression toy with known truth: a detector response with an energy-dependent
resolution and a steeply falling spectrum (few training points at high energy).

Input E (a "true energy") follows a truncated exponential on [e_min, e_max] with decay length
``spectrum_decay``; the target is the measured response y = μ(E) + σ(E) ε, ε ~ N(0, 1), with

    μ(E) = plateau · (1 − drop · exp(−E / turn_on))          (response rising to a plateau)
    σ(E) = sqrt(stochastic² / E + constant²)                  (calorimeter-like resolution)

so the noise falls with E and the data thin out where it is smallest.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks


class RegressionSample(NamedTuple):
    """Inputs x (n, 1) and targets y (n,)."""

    x: jax.Array
    y: jax.Array


@dataclasses.dataclass(frozen=True)
class ResponseToy:
    """Truth of the toy; all fields are floats (the dataclass is hashable)."""

    e_min: float = 0.2
    e_max: float = 4.0
    spectrum_decay: float = 0.8
    plateau: float = 1.0
    drop: float = 0.4
    turn_on: float = 0.8
    stochastic: float = 0.15
    constant: float = 0.03

    def __post_init__(self):
        _checks.positive("e_min", self.e_min)
        if not self.e_max > self.e_min:
            raise ValueError(f"e_max must exceed e_min={self.e_min}, got {self.e_max!r}")
        for name in ("spectrum_decay", "plateau", "turn_on"):
            _checks.positive(name, getattr(self, name))
        for name in ("drop", "stochastic", "constant"):
            _checks.non_negative(name, getattr(self, name))
        if self.stochastic == 0 and self.constant == 0:
            raise ValueError("stochastic and constant cannot both be 0 (zero noise)")

    def mean(self, e) -> jax.Array:
        """Truth response μ(E), elementwise."""
        return self.plateau * (1.0 - self.drop * jnp.exp(-jnp.asarray(e) / self.turn_on))

    def std(self, e) -> jax.Array:
        """Truth resolution σ(E), elementwise."""
        return jnp.sqrt(self.stochastic**2 / jnp.asarray(e) + self.constant**2)

    def input_density(self, e) -> jax.Array:
        """Density of the inputs on [e_min, e_max] (0 outside), elementwise."""
        e = jnp.asarray(e)
        width = self.e_max - self.e_min
        norm = self.spectrum_decay * (1.0 - jnp.exp(-width / self.spectrum_decay))
        inside = (e >= self.e_min) & (e <= self.e_max)
        return jnp.where(inside, jnp.exp(-(e - self.e_min) / self.spectrum_decay) / norm, 0.0)

    def sample_inputs(self, key: jax.Array, n: int) -> jax.Array:
        """n inputs from the truncated exponential spectrum (inverse CDF) -> (n, 1)."""
        n = _checks.positive_int("n", n)
        u = jax.random.uniform(key, (n, 1))
        tail = 1.0 - jnp.exp(-(self.e_max - self.e_min) / self.spectrum_decay)
        return self.e_min - self.spectrum_decay * jnp.log1p(-u * tail)

    def sample_targets(self, key: jax.Array, x) -> jax.Array:
        """y = μ(E) + σ(E) ε for inputs x (n, 1) -> (n,)."""
        e = jnp.asarray(x)[..., 0]
        return self.mean(e) + self.std(e) * jax.random.normal(key, e.shape)

    def sample(self, key: jax.Array, n: int) -> RegressionSample:
        """n (x, y) pairs from the truth."""
        key_x, key_y = jax.random.split(key)
        x = self.sample_inputs(key_x, n)
        return RegressionSample(x, self.sample_targets(key_y, x))
