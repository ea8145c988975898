"""Post-hoc recalibration of a predictive uncertainty from held-out pulls, and the one-knob
rescaling that matches a method's σ_stat to a target spread.

Recalibration (σ → s σ) with the maximum-likelihood scale of held-out residuals r_i under
N(0, s² σ_i²):  s² = mean_i (r_i / σ_i)².  It is fitted on held-out data and applied to fresh
data; numbers after it are calibrated by construction on the held-out set and must be reported
apart from the uncalibrated ones.

Knob rescaling: if a method's σ_stat² is proportional to a setting t (VI: the KL weight of a
tempered ELBO; repulsive ensemble: the repulsion strength), the setting that moves its mean
σ_stat² over inputs onto a target's is t · mean(target²) / mean(σ_stat²).
"""

from __future__ import annotations

import numpy as np

from bayesiamp_jax import _checks


def pull_scale(residuals, sigma) -> float:
    """Maximum-likelihood s of residuals r ~ N(0, s² σ²): sqrt(mean((r / σ)²))."""
    r, sigma = np.asarray(residuals, np.float64), np.asarray(sigma, np.float64)
    if r.shape != sigma.shape or r.size == 0:
        raise ValueError(f"residuals and sigma must have the same non-empty shape, got "
                         f"{r.shape} and {sigma.shape}")
    if np.any(~(sigma > 0)):
        raise ValueError("sigma must be > 0 everywhere")
    _checks.finite("residuals", r)
    return float(np.sqrt(np.mean((r / sigma) ** 2)))


def recalibrate(sigma, scale: float) -> np.ndarray:
    """σ · scale (scale from ``pull_scale`` on held-out data)."""
    return np.asarray(sigma, np.float64) * _checks.positive("scale", scale)


def matched_setting(setting: float, sigma, target) -> float:
    """t · mean(target²) / mean(σ²): the setting whose σ² ∝ t matches ``target`` on average."""
    sigma, target = np.asarray(sigma, np.float64), np.asarray(target, np.float64)
    if sigma.shape != target.shape or sigma.size == 0:
        raise ValueError(f"sigma and target must have the same non-empty shape, got "
                         f"{sigma.shape} and {target.shape}")
    _checks.finite("sigma", sigma)
    _checks.finite("target", target)
    if not np.mean(sigma**2) > 0:
        raise ValueError("sigma must not vanish everywhere")
    return float(_checks.positive("setting", setting) * np.mean(target**2) / np.mean(sigma**2))
