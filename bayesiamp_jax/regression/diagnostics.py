"""Calibration diagnostics of a predictive mean and uncertainty against truth.

- pulls (y − prediction) / σ (``evaluation.calibration.pulls``, the project's one definition):
  for test targets y with σ_total they should be N(0, 1); for the truth mean μ(x) with σ_stat
  they test the statistical part alone.
- coverage of central Gaussian predictive intervals mean ± z_{(1+c)/2} σ at nominal levels c
  (``gaussian_coverage``, through ``evaluation.calibration.interval_coverage``).
- a Gaussian fitted to the histogram of pulls (mean and width of its core, as in ATLAS pull plots).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.stats

from bayesiamp_jax import _checks
from bayesiamp_jax.evaluation.calibration import gaussian_interval, interval_coverage, pulls

DEFAULT_LEVELS = np.linspace(0.05, 0.95, 19)


class PullSummary(NamedTuple):
    """Mean, width (std, ddof 0), fractions with |pull| < 1 and < 2 (68.3 %, 95.4 % if N(0, 1))."""

    mean: float
    width: float
    within_1: float
    within_2: float
    num: int


class GaussianFit(NamedTuple):
    """Mean and width of a Gaussian fitted to a histogram, with their fit errors."""

    mean: float
    width: float
    mean_err: float
    width_err: float


PULL_EDGES = np.linspace(-4, 4, 41)


def gaussian_fit(values, edges=PULL_EDGES) -> GaussianFit:
    """Least-squares fit of A·N(μ, w²) to the histogram of ``values`` on ``edges`` (Poisson
    errors, empty bins weighted as 1 count); values outside the edges are ignored."""
    v = np.asarray(values, np.float64).ravel()
    edges = np.asarray(edges, np.float64)
    counts, _ = np.histogram(v, edges)
    if counts.sum() < 10:
        raise ValueError(f"need >= 10 values inside the histogram range, got {counts.sum()}")
    centres, width = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)

    def model(x, amp, mu, w):
        return amp * width * scipy.stats.norm.pdf(x, mu, abs(w))

    inside = v[(v >= edges[0]) & (v <= edges[-1])]
    p0 = (counts.sum(), inside.mean(), max(inside.std(), 1e-3))
    popt, pcov = scipy.optimize.curve_fit(model, centres, counts, p0=p0,
                                          sigma=np.sqrt(np.maximum(counts, 1.0)),
                                          absolute_sigma=True)
    err = np.sqrt(np.diag(pcov))
    return GaussianFit(float(popt[1]), float(abs(popt[2])), float(err[1]), float(err[2]))


def pull_summary(values) -> PullSummary:
    """Summary statistics of a 1-D array of pulls."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("values must hold at least one pull, got an empty array")
    _checks.finite("values", v)
    a = np.abs(v)
    return PullSummary(float(v.mean()), float(v.std()), float(np.mean(a < 1)),
                       float(np.mean(a < 2)), int(v.size))


def gaussian_coverage(value, mean, sigma, levels=DEFAULT_LEVELS) -> np.ndarray:
    """Fraction (L,) of ``value`` inside the central Gaussian intervals mean ± z σ at nominal
    ``levels`` (L,): the pulls (value − mean)/σ against N(0, 1)'s central intervals (the
    general ``evaluation.calibration.interval_coverage``). σ must be > 0."""
    if np.any(~(np.asarray(sigma) > 0)):
        raise ValueError("sigma must be > 0 everywhere")
    p = pulls(value, mean, sigma).ravel()
    lower, upper = gaussian_interval(0.0, np.ones_like(p), levels)
    return interval_coverage(p, lower, upper).mean(axis=1)


def coverage_mad(levels, coverage) -> float:
    """Mean absolute deviation of empirical from nominal coverage."""
    return float(np.mean(np.abs(np.asarray(coverage) - np.asarray(levels))))


def binned_mean(x, values, edges) -> np.ndarray:
    """Mean of ``values`` in bins of ``x`` given by ``edges`` (B+1,) -> (B,), NaN for empty bins."""
    x, values = np.asarray(x).ravel(), np.asarray(values, np.float64).ravel()
    idx = np.digitize(x, edges) - 1
    out = np.full(len(edges) - 1, np.nan)
    for b in range(len(edges) - 1):
        sel = idx == b
        if sel.any():
            out[b] = values[sel].mean()
    return out
