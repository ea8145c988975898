"""Observables of the Z → ee events x = (pT₁, η₁, pT₂, η₂, Δφ) (``make_zee``).

Massless electrons: m_ee² = 2 pT₁ pT₂ (cosh Δη − cos Δφ) (PDG, "Kinematics", invariant mass of
two massless particles), pair pT² = pT₁² + pT₂² + 2 pT₁ pT₂ cos Δφ. Use it in a study with
``--set data.observable=benchmarks.open_data.zee:MASS_PT``. Events in the pair frame
(``make_zee --frame pair``: x = (m_ee, pT_ee, y_ee, cos θ*, φ*), ``pair_frame``) carry both as
columns: ``benchmarks.open_data.zee:PAIR_MASS_PT``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


def mass(x):
    """m_ee [GeV] of one event x (5,)."""
    pt1, eta1, pt2, eta2, dphi = x[0], x[1], x[2], x[3], x[4]
    m2 = 2.0 * pt1 * pt2 * (jnp.cosh(eta1 - eta2) - jnp.cos(dphi))
    return jnp.sqrt(jnp.maximum(m2, 0.0))


def pair_pt(x):
    """pT of the pair [GeV] of one event x (5,)."""
    pt1, pt2, dphi = x[0], x[2], x[4]
    return jnp.sqrt(jnp.maximum(pt1**2 + pt2**2 + 2.0 * pt1 * pt2 * jnp.cos(dphi), 0.0))


@dataclasses.dataclass(frozen=True)
class MassPt:
    """(m_ee, pair pT) of one event x (5,) -> (2,)."""

    names: tuple[str, ...] = ("m_ee", "pt_ee")

    def __call__(self, x):
        return jnp.stack([mass(x), pair_pt(x)], axis=-1)


MASS_PT = MassPt()  # --set data.observable=benchmarks.open_data.zee:MASS_PT


@dataclasses.dataclass(frozen=True)
class PairMassPt:
    """(m_ee, pair pT) of one pair-frame event x = (m, pT, y, cos θ*, φ*) (5,) -> (2,)."""

    names: tuple[str, ...] = ("m_ee", "pt_ee")

    def __call__(self, x):
        return jnp.stack([x[0], x[1]], axis=-1)


PAIR_MASS_PT = PairMassPt()  # --set data.observable=benchmarks.open_data.zee:PAIR_MASS_PT
