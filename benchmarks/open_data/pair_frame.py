"""The dilepton (pair) frame of the Z → ee events: lab columns ↔ (m_ee, pT_ee, y_ee, cos θ*, φ*).

Lab columns (``make_zee``): x = (pT₁, η₁, pT₂, η₂, Δφ = (φ₂ − φ₁) mod 2π), massless electrons
in the CSV's order (electron 1 is the CSV's first). Pair columns:

    p = (m_ee [GeV], pT_ee [GeV], y_ee, cos θ*, φ* ∈ [0, 2π))

with P = p₁ + p₂ (m² = P², pT,ee = |P_T|, y = ½ log((E + P_z)/(E − P_z))) and (θ*, φ*) the
direction of electron 1 in the Collins–Soper frame (J. C. Collins, D. E. Soper, Phys. Rev. D 16
(1977) 2219): the pair's rest frame whose z axis bisects the beam directions p̂_A and −p̂_B
(beam A along +z of the lab) and whose x axis lies in the beams' plane along the pair's Q_T.
Reached from the lab by (1) the rotation about z that puts P_T along +x, (2) the longitudinal
boost by −y (P_z → 0), (3) the boost along x with velocity pT/m_T (m_T² = m² + pT²): after (2)
the beams are ±ẑ; (3) tilts both by the same angle towards −x, so their bisector stays ẑ and
−(p̂_A + p̂_B) is +x. In that frame electron 1 is (m/2)(1, sin θ* cos φ*, sin θ* sin φ*,
cos θ*) and electron 2 is its mirror image; ``to_lab`` undoes (3), (2) (the rotation (1) drops
out of Δφ).

Bijective: the lab columns fix the event up to a rotation about the beam, and so do the pair's
(m, pT, y) and electron 1's rest-frame direction. No two-fold ambiguity: the electrons keep the
CSV's order and θ*, φ* are those of electron 1 (electron 2 is at (π − θ*, φ* + π)). φ* is
undefined at pT,ee = 0 exactly (any φ* maps back to the same lab event; measure zero).
Closed form used by the tests (Collins–Soper 1977, eq. 5): cos θ* = 2 (p₁⁺p₂⁻ − p₁⁻p₂⁺) / (m m_T),
p± = (E ± p_z)/√2.

Array maths on the last axis (one event (5,) or a batch (N, 5)), NumPy float64 (the conversion
runs once; the study trains on float32 files).
"""

from __future__ import annotations

import numpy as np

COLUMNS = ("m_ee", "pt_ee", "y_ee", "cos_theta_cs", "phi_cs")
# the pair study's per-column preprocessing: the 60-120 GeV window, pT > 0, |cos θ*| < 1
PREPROCESS = "logit:60:120,log,standardise,logit:-1:1,periodic:0:2pi"


def four_vectors(x):
    """Lab four-vectors (E, p_x, p_y, p_z) of electrons 1 and 2, φ₁ = 0: two (..., 4) arrays."""
    x = np.asarray(x, np.float64)
    pt1, eta1, pt2, eta2, dphi = (x[..., j] for j in range(5))

    def fv(pt, eta, phi):
        return np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi),
                         pt * np.sinh(eta)], axis=-1)

    return fv(pt1, eta1, np.zeros_like(pt1)), fv(pt2, eta2, dphi)


def to_pair(x):
    """Lab columns (..., 5) -> pair columns (..., 5) (module docstring)."""
    p1, p2 = four_vectors(x)
    big = p1 + p2
    e, px, py, pz = (big[..., j] for j in range(4))
    pt = np.hypot(px, py)
    m = np.sqrt(np.maximum(e**2 - pt**2 - pz**2, 0.0))
    y = 0.5 * np.log((e + pz) / (e - pz))
    mt = np.sqrt(m**2 + pt**2)
    # (1) rotate electron 1 so that P_T lies along +x
    c, s = px / np.where(pt > 0, pt, 1.0), py / np.where(pt > 0, pt, 1.0)
    c = np.where(pt > 0, c, 1.0)
    e1, x1, y1, z1 = p1[..., 0], p1[..., 1], p1[..., 2], p1[..., 3]
    x1, y1 = c * x1 + s * y1, -s * x1 + c * y1
    # (2) longitudinal boost by −y
    e1, z1 = np.cosh(y) * e1 - np.sinh(y) * z1, -np.sinh(y) * e1 + np.cosh(y) * z1
    # (3) boost along x by −pT/m_T: γ = m_T/m, γβ = pT/m
    x1 = (-pt * e1 + mt * x1) / m
    r = np.sqrt(x1**2 + y1**2 + z1**2)
    cos_t = z1 / r
    phi = np.mod(np.arctan2(y1, x1), 2.0 * np.pi)
    return np.stack([m, pt, y, cos_t, phi], axis=-1)


def to_lab(p):
    """Pair columns (..., 5) -> lab columns (..., 5): the inverse of ``to_pair``."""
    p = np.asarray(p, np.float64)
    m, pt, y, cos_t, phi = (p[..., j] for j in range(5))
    mt = np.sqrt(m**2 + pt**2)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0))
    out = []
    for sign in (1.0, -1.0):  # electron 1, then electron 2 (back to back in the CS frame)
        e = 0.5 * m
        x1 = sign * e * sin_t * np.cos(phi)
        y1 = sign * e * sin_t * np.sin(phi)
        z1 = sign * e * cos_t
        e, x1 = (mt * e + pt * x1) / m, (pt * e + mt * x1) / m  # undo (3)
        e, z1 = np.cosh(y) * e + np.sinh(y) * z1, np.sinh(y) * e + np.cosh(y) * z1  # undo (2)
        out.append((np.hypot(x1, y1), np.arcsinh(z1 / np.hypot(x1, y1)), np.arctan2(y1, x1)))
    (pt1, eta1, phi1), (pt2, eta2, phi2) = out
    return np.stack([pt1, eta1, pt2, eta2, np.mod(phi2 - phi1, 2.0 * np.pi)], axis=-1)
