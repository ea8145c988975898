"""Calibration of histogram uncertainties: central-interval coverage, MAD, pulls.

Inputs are bin fractions of R runs × S weight draws, shape (R, S, n_r, n_φ), and the truth cell
probabilities (n_r, n_φ) (1/n_Q for the quantile grids; any truth works). Analysis runs on the
host in float64 numpy (small arrays, no compile time).

For nominal level c the central interval of the S draws of one cell is
[Q((1 − c)/2), Q((1 + c)/2)] with Q the empirical quantile with linear interpolation
(``numpy.quantile``'s default); the truth is covered if it lies in it, bounds inclusive. The
paper's levels are c_i = (2i + 1)/99, i = 0..49 (the symmetric pairs of the 100 quantile levels
j/99). Coverage is averaged over runs, then over cells: c̄(c). MAD = mean_c |c̄(c) − c|;
MAD_r averages coverage over φ first and then takes mean_{c, rows} |c̄_r(c) − c|; MAD_φ likewise
over angular columns. Since c̄ is the mean of the row curves, |c̄ − c| <= mean_rows |c̄_r − c|,
so MAD <= min(MAD_r, MAD_φ) always holds (no order between MAD_r and MAD_φ).

A truth known only through a finite reference sample has its own standard error σ_t per cell
(``truth_std``). It is carried into the coverage by widening each run's draws about their mean
so that their variance becomes σ² + σ_t² (f ↦ μ + (f − μ)·sqrt(1 + σ_t²/σ²), σ the std over
draws): the interval then asks whether the *estimated* truth is compatible with the model,
given both uncertainties (a Gaussian-convolution approximation that keeps the draws' shape);
the pulls become (μ − t)/sqrt(σ² + σ_t²). With an exact truth (σ_t = 0) nothing changes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.stats

NOMINAL_LEVELS = (2.0 * np.arange(50) + 1.0) / 99.0


class Calibration(NamedTuple):
    """Coverage results of one binning (L nominal levels, n_r × n_φ cells, R runs).

    levels: (L,) nominal levels c.
    coverage: (L, n_r, n_φ) fraction of runs whose central interval covers the truth.
    curve: (L,) mean empirical coverage c̄(c) over cells.
    curve_r: (L, n_r) coverage averaged over φ; curve_phi: (L, n_φ) averaged over r.
    mad, mad_r, mad_phi: scalars (see module docstring).
    deviation_r: (n_r,) signed coverage deviation per radial bin, mean_c (c̄_r(c) − c);
        > 0 over-covers (too wide), < 0 under-covers.
    pulls: (R, n_r, n_φ) (μ − truth)/σ per run and cell, σ the std over draws (ddof 0);
        NaN where σ = 0.
    """

    levels: np.ndarray
    coverage: np.ndarray
    curve: np.ndarray
    curve_r: np.ndarray
    curve_phi: np.ndarray
    mad: np.ndarray
    mad_r: np.ndarray
    mad_phi: np.ndarray
    deviation_r: np.ndarray
    pulls: np.ndarray


def check_fractions(fractions, truth, name: str = "fractions"):
    """Validate fractions (R, S, n_r, n_φ) against truth (n_r, n_φ); return float64 arrays."""
    f = np.asarray(fractions, np.float64)
    t = np.asarray(truth, np.float64)
    if t.ndim != 2:
        raise ValueError(f"truth must have shape (n_r, n_phi), got shape {t.shape}")
    if t.size < 2:
        raise ValueError(f"a binning needs at least 2 cells, got truth of shape {t.shape}")
    if f.ndim != 4 or f.shape[2:] != t.shape:
        raise ValueError(
            f"{name} must have shape (runs, draws, n_r, n_phi) = (R, S) + {t.shape}, "
            f"got shape {f.shape}"
        )
    if f.shape[0] < 1:
        raise ValueError(f"{name} needs at least 1 run, got 0 (shape {f.shape})")
    if f.shape[1] < 2:
        raise ValueError(
            f"{name} needs at least 2 draws per run, got {f.shape[1]} (shape {f.shape})"
        )
    if not np.all(np.isfinite(f)):
        bad = int(f.size - np.count_nonzero(np.isfinite(f)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    if not np.all(np.isfinite(t)):
        raise ValueError("truth contains non-finite value(s) (NaN or inf)")
    return f, t


def check_levels(levels) -> np.ndarray:
    lv = np.asarray(levels, np.float64)
    if lv.ndim != 1 or lv.size == 0 or np.any(~np.isfinite(lv)) or np.any((lv < 0) | (lv > 1)):
        raise ValueError(f"levels must be a non-empty 1-D array in [0, 1], got {levels!r}")
    return lv


def central_interval(draws, levels=NOMINAL_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Central intervals [Q((1 − c)/2), Q((1 + c)/2)] of draws (S, *cells) at levels c (L,):
    (lower, upper), each (L, *cells). Empirical quantiles with linear interpolation."""
    lv = check_levels(levels)
    q = np.quantile(np.asarray(draws, np.float64),
                    np.concatenate([(1.0 - lv) / 2.0, (1.0 + lv) / 2.0]), axis=0)
    return q[: lv.size], q[lv.size:]


def gaussian_interval(mean, sigma, levels=NOMINAL_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Central intervals mean ∓ z σ of N(mean, σ²), z = Φ⁻¹((1 + c)/2), at levels c (L,):
    (lower, upper), each (L, *shape) with shape that of mean and σ broadcast."""
    lv = check_levels(levels)
    mean, sigma = np.broadcast_arrays(np.asarray(mean, np.float64),
                                      np.asarray(sigma, np.float64))
    z = scipy.stats.norm.ppf(0.5 + lv / 2).reshape((-1,) + (1,) * mean.ndim)
    return mean - z * sigma, mean + z * sigma


def interval_coverage(truth, lower, upper) -> np.ndarray:
    """Whether intervals cover the truth, bounds inclusive: lower <= truth <= upper, broadcast
    (e.g. truth (*cells) against the (L, *cells) bounds of ``central_interval`` or
    ``gaussian_interval``) -> bool. A NaN anywhere counts as not covered."""
    t = np.asarray(truth, np.float64)
    return (np.asarray(lower, np.float64) <= t) & (t <= np.asarray(upper, np.float64))


def pulls(value, reference, sigma) -> np.ndarray:
    """(value − reference)/σ elementwise in float64, broadcast; NaN where σ = 0.

    Histograms: pulls(μ, truth, σ) with μ, σ the mean and std over draws; regression:
    pulls(y, prediction, σ). A negative or NaN σ is a ValueError."""
    v, r, s = (np.asarray(a, np.float64) for a in (value, reference, sigma))
    if np.any(~(s >= 0)):
        raise ValueError("sigma must be >= 0 everywhere (NaN or negative values found)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, (v - r) / s, np.nan)


def widen_for_truth(fractions, truth_std) -> np.ndarray:
    """Draws (R, S, *cells) spread about their run mean to variance σ² + σ_t² (module doc);
    cells with σ = 0 are left as they are."""
    f = np.asarray(fractions, np.float64)
    st = np.asarray(truth_std, np.float64)
    mu, sd = f.mean(axis=1, keepdims=True), f.std(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sd > 0, np.sqrt(1.0 + st**2 / np.where(sd > 0, sd, 1.0) ** 2), 1.0)
    return mu + (f - mu) * scale


def calibrate(fractions, truth, levels=NOMINAL_LEVELS, truth_std=None) -> Calibration:
    """Coverage, mean coverage curves, MAD, MAD_r, MAD_φ, deviation per radial bin, pulls.

    ``truth_std`` (n_r, n_φ): standard error of an estimated truth (module doc); None: exact.
    """
    f, t = check_fractions(fractions, truth)
    lv = check_levels(levels)
    if truth_std is not None and np.any(np.asarray(truth_std) > 0):
        st = np.asarray(truth_std, np.float64)
        if st.shape != t.shape or not np.all(np.isfinite(st)) or np.any(st < 0):
            raise ValueError(f"truth_std must be finite, >= 0 and of shape {t.shape}, got "
                             f"shape {st.shape}")
        f = widen_for_truth(f, st)
    inside = np.stack([interval_coverage(t, *central_interval(run, lv))
                       for run in f])  # (R, L, n_r, n_φ)
    coverage = inside.mean(axis=0)
    curve = coverage.mean(axis=(1, 2))
    curve_r = coverage.mean(axis=2)
    curve_phi = coverage.mean(axis=1)
    return Calibration(
        levels=lv,
        coverage=coverage,
        curve=curve,
        curve_r=curve_r,
        curve_phi=curve_phi,
        mad=np.mean(np.abs(curve - lv)),
        mad_r=np.mean(np.abs(curve_r - lv[:, None])),
        mad_phi=np.mean(np.abs(curve_phi - lv[:, None])),
        deviation_r=np.mean(curve_r - lv[:, None], axis=0),
        pulls=pulls(f.mean(axis=1), t, f.std(axis=1)),
    )


class MADFloor(NamedTuple):
    """MAD of a perfectly calibrated ensemble: mean and standard deviation over repeats."""

    mean: float
    std: float


def mad_floor(num_draws: int, num_runs: int, num_cells: int, levels=NOMINAL_LEVELS, *,
              num_repeats: int = 10, seed: int = 0, distribution: str = "normal") -> MADFloor:
    """The finite-S floor of the MAD: its value for a perfectly calibrated ensemble.

    Monte Carlo (numpy generator with the fixed ``seed``): in each of ``num_repeats`` repeats,
    every one of ``num_cells`` independent cells of ``num_runs`` runs gets S = ``num_draws``
    draws and a truth, all i.i.d. N(0, 1) (or U(0, 1); truth and draws exchangeable:
    calibrated), and the MAD is computed exactly as ``calibrate`` does.

    Two parts make it > 0: noise from finitely many runs × cells, and a bias of the
    interpolated empirical quantiles — for uniform draws E[coverage(c)] = c (S − 1)/(S + 1)
    exactly, so with many cells the MAD tends to mean_c c · 2/(S + 1) = 1/(S + 1) for the
    paper's levels. It is the expected MAD of a calibrated ensemble, not a strict lower bound
    (a slightly over-dispersed ensemble can offset the bias). Cells of a real histogram are
    weakly correlated, which this floor ignores.
    """
    for name, v, lo in (("num_draws", num_draws, 2), ("num_runs", num_runs, 1),
                        ("num_cells", num_cells, 1), ("num_repeats", num_repeats, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if distribution not in ("normal", "uniform"):
        raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
    lv = check_levels(levels)
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal if distribution == "normal" else rng.uniform
    mads = []
    for _ in range(num_repeats):
        draws = sample(size=(num_runs, num_draws, num_cells))
        truth = sample(size=(num_runs, num_cells))
        inside = np.stack([interval_coverage(t, *central_interval(d, lv))
                           for d, t in zip(draws, truth, strict=True)])
        curve = inside.mean(axis=(0, 2))
        mads.append(np.mean(np.abs(curve - lv)))
    return MADFloor(float(np.mean(mads)), float(np.std(mads)))
