"""A calibration-regression toy with known truth: a detector response with an energy-dependent
resolution and a steeply falling spectrum (few training points at high energy).

Input E (a "true energy") follows a truncated exponential on [e_min, e_max] with decay length
``spectrum_decay``; the target is the measured response y = μ(E) + σ(E) ε, ε ~ N(0, 1), with

    μ(E) = plateau · (1 − drop · exp(−E / turn_on))          (response rising to a plateau)
    σ(E) = sqrt(stochastic² / E + constant²)                  (calorimeter-like resolution)

so the noise falls with E and the data thin out where it is smallest. Optionally the training
spectrum has a "crack" [gap_lo, gap_hi] where only a fraction ``gap_efficiency`` of the inputs is
kept (like the barrel–endcap transition of a calorimeter): a poorly informed region inside the
range, where σ_stat should show up as a secondary maximum of the uncertainty spectrum.
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
    gap_lo: float = 0.0
    gap_hi: float = 0.0
    gap_efficiency: float = 1.0

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
        _checks.probability("gap_efficiency", self.gap_efficiency)
        if self.gap_efficiency < 1 and not self.e_min <= self.gap_lo < self.gap_hi <= self.e_max:
            raise ValueError(f"the gap [{self.gap_lo}, {self.gap_hi}] must be a non-empty "
                             f"interval inside [{self.e_min}, {self.e_max}]")

    @property
    def has_gap(self) -> bool:
        return self.gap_efficiency < 1

    def without_gap(self) -> ResponseToy:
        """The same truth with the full input spectrum (e.g. for test data)."""
        return dataclasses.replace(self, gap_efficiency=1.0)

    def in_gap(self, e) -> jax.Array:
        """True where E lies in the gap (all False without one), elementwise."""
        e = jnp.asarray(e)
        return (e >= self.gap_lo) & (e <= self.gap_hi) & self.has_gap

    def _cum(self, e):
        """∫_{e_min}^{e} exp(−(t − e_min)/λ) dt (no gap)."""
        return self.spectrum_decay * -jnp.expm1(-(e - self.e_min) / self.spectrum_decay)

    def _cum_inv(self, s):
        return self.e_min - self.spectrum_decay * jnp.log1p(-s / self.spectrum_decay)

    def _gap_mass(self):
        """(∫ below the gap, ∫ over the gap) of the unweighted exponential."""
        below = self._cum(jnp.asarray(self.gap_lo))
        return below, self._cum(jnp.asarray(self.gap_hi)) - below

    def mean(self, e) -> jax.Array:
        """Truth response μ(E), elementwise."""
        return self.plateau * (1.0 - self.drop * jnp.exp(-jnp.asarray(e) / self.turn_on))

    def std(self, e) -> jax.Array:
        """Truth resolution σ(E), elementwise."""
        return jnp.sqrt(self.stochastic**2 / jnp.asarray(e) + self.constant**2)

    def input_density(self, e) -> jax.Array:
        """Density of the inputs on [e_min, e_max] (0 outside), elementwise."""
        e = jnp.asarray(e)
        _, gap = self._gap_mass()
        norm = self._cum(jnp.asarray(self.e_max)) - (1.0 - self.gap_efficiency) * gap
        inside = (e >= self.e_min) & (e <= self.e_max)
        weight = jnp.where(self.in_gap(e), self.gap_efficiency, 1.0)
        return jnp.where(inside, weight * jnp.exp(-(e - self.e_min) / self.spectrum_decay) / norm,
                         0.0)

    def sample_inputs(self, key: jax.Array, n: int) -> jax.Array:
        """n inputs from the (gapped) truncated exponential spectrum (inverse CDF) -> (n, 1)."""
        n = _checks.positive_int("n", n)
        u = jax.random.uniform(key, (n, 1))
        below, gap = self._gap_mass()
        eff = self.gap_efficiency
        t = u * (self._cum(jnp.asarray(self.e_max)) - (1.0 - eff) * gap)
        # weighted cumulative t -> unweighted cumulative s: stretch inside the gap, shift above
        s = jnp.where(t < below, t, jnp.where(t < below + eff * gap,
                                              below + (t - below) / jnp.maximum(eff, 1e-30),
                                              t + (1.0 - eff) * gap))
        return jnp.clip(self._cum_inv(s), self.e_min, self.e_max)

    def sample_targets(self, key: jax.Array, x) -> jax.Array:
        """y = μ(E) + σ(E) ε for inputs x (n, 1) -> (n,)."""
        e = jnp.asarray(x)[..., 0]
        return self.mean(e) + self.std(e) * jax.random.normal(key, e.shape)

    def sample(self, key: jax.Array, n: int) -> RegressionSample:
        """n (x, y) pairs from the truth."""
        key_x, key_y = jax.random.split(key)
        x = self.sample_inputs(key_x, n)
        return RegressionSample(x, self.sample_targets(key_y, x))
