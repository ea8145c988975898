"""Amplification N_eq / N_train, its power-law fit, and the Jensen–Shannon closure test.

Fractions are (R, S, n_r, n_φ) as in ``calibration``. Per run, μ_j and σ_j are the mean and std
(ddof 0) over draws of cell j, N_eq = Σ_j μ_j²/σ_j² and amplification = N_eq / N_train. A cell with
σ_j = 0 contributes 0 if μ_j = 0 (never populated) and +inf otherwise.

Reading N_eq: for draws that are histograms of independent samples of size N (multinomial cell
fractions), E[N_eq] ≈ N · Σ_j p_j/(1 − p_j) · S/(S − 3) (the ddof-0 variance over S draws), i.e.
N · n_Q/(n_Q − 1) · S/(S − 3) for a uniform truth: the estimator overstates N by 6 % at S = 50 and
by a further n_Q/(n_Q − 1) at few cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
import scipy.optimize

from bayesiamp_jax import _checks
from bayesiamp_jax.evaluation.calibration import check_fractions


class Amplification(NamedTuple):
    """n_eq (R,); amplification (R,) = n_eq / num_train; cell_amplification (R, n_r, n_φ) =
    n_Q · μ_j²/σ_j² / num_train (its mean over cells is the amplification)."""

    n_eq: np.ndarray
    amplification: np.ndarray
    cell_amplification: np.ndarray


class PowerLawFit(NamedTuple):
    """amplification ≈ a · n_Q^b; errors from the fit covariance ``cov`` (2 × 2 of (a, b));
    ``n_cells`` the n_Q values used."""

    a: np.ndarray
    b: np.ndarray
    a_err: np.ndarray
    b_err: np.ndarray
    cov: np.ndarray
    n_cells: np.ndarray


class Closure(NamedTuple):
    """JSD of the posterior-mean histogram to the truth, jsd_model (R,), and of ``repeats``
    fresh truth samples of size round(N_eq) to the truth, jsd_truth (R, repeats)."""

    jsd_model: np.ndarray
    jsd_truth: np.ndarray
    sample_size: np.ndarray


def cell_equivalent_events(fractions, truth) -> np.ndarray:
    """μ_j²/σ_j² per run and cell, (R, n_r, n_φ); 0 where μ = σ = 0, inf where only σ = 0."""
    f, _ = check_fractions(fractions, truth)
    mu = f.mean(axis=1)
    # identical draws have zero spread; the float variance of equal values can round to ~1e-20
    var = np.where(np.ptp(f, axis=1) == 0, 0.0, f.var(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mu**2 / var
    return np.where(var > 0, ratio, np.where(mu == 0, 0.0, np.inf))


def equivalent_events(fractions, truth) -> np.ndarray:
    """N_eq = Σ_j μ_j²/σ_j² per run: fractions (R, S, n_r, n_φ) -> (R,)."""
    return cell_equivalent_events(fractions, truth).sum(axis=(1, 2))


def amplification(fractions, truth, num_train: int) -> Amplification:
    """N_eq, N_eq / num_train and the per-cell amplification of every run."""
    n_train = _checks.positive_int("num_train", num_train)
    cells = cell_equivalent_events(fractions, truth)
    n_eq = cells.sum(axis=(1, 2))
    n_q = cells.shape[1] * cells.shape[2]
    return Amplification(n_eq, n_eq / n_train, cells * n_q / n_train)


def fit_power_law(n_cells, amplifications, select: int | Sequence | None = 8) -> PowerLawFit:
    """Fit amplification ≈ a · n_Q^b over binnings.

    Args:
        n_cells: (B,) n_Q of each binning.
        amplifications: (R, B) amplification per run and binning (or (B,) for one run).
        select: None (all), an int k (the k largest n_Q), or a sequence of n_Q values to use.
    The mean over runs is fitted by weighted least squares (scipy ``curve_fit``) with the
    standard error of the mean (std ddof 1 / √R) as absolute σ; with one run, or zero spread,
    unweighted with errors scaled by the residuals. Start values come from a log-log line.
    """
    n = np.asarray(n_cells, np.float64)
    amp = np.asarray(amplifications, np.float64)
    amp = amp[None] if amp.ndim == 1 else amp
    if n.ndim != 1 or amp.ndim != 2 or amp.shape[1] != n.size:
        raise ValueError(f"amplifications must have shape (runs, {n.size}) matching n_cells "
                         f"{n.shape}, got shape {np.shape(amplifications)}")
    if select is None:
        mask = np.ones(n.size, bool)
    elif isinstance(select, (int, np.integer)):
        k = _checks.positive_int("select", select)
        mask = np.zeros(n.size, bool)
        mask[np.argsort(n)[::-1][:k]] = True
    else:
        wanted = np.asarray(select, np.float64)
        missing = [v for v in wanted.tolist() if v not in n.tolist()]
        if missing:
            raise ValueError(f"select holds n_Q values {missing} not in n_cells {n.tolist()}")
        mask = np.isin(n, wanted)
    if mask.sum() < 2:
        raise ValueError(f"a power-law fit needs at least 2 binnings, select={select!r} keeps "
                         f"{int(mask.sum())} of n_cells {n.tolist()}")
    x, y = n[mask], amp[:, mask]
    if not np.all(np.isfinite(y)) or np.any(y <= 0) or np.any(x <= 0):
        raise ValueError("power-law fit needs finite, positive amplifications and n_cells, got "
                         f"{y.tolist()} at n_cells {x.tolist()}")
    mean = y.mean(axis=0)
    sem = y.std(axis=0, ddof=1) / np.sqrt(y.shape[0]) if y.shape[0] > 1 else None
    weighted = sem is not None and np.all(sem > 0)
    b0, log_a0 = np.polyfit(np.log(x), np.log(mean), 1)
    popt, pcov = scipy.optimize.curve_fit(
        lambda v, a, b: a * v**b, x, mean, p0=(np.exp(log_a0), b0),
        sigma=sem if weighted else None, absolute_sigma=weighted, maxfev=10_000,
    )
    err = np.sqrt(np.diag(pcov))
    return PowerLawFit(np.float64(popt[0]), np.float64(popt[1]), np.float64(err[0]),
                       np.float64(err[1]), pcov, x)


def jensen_shannon(p, q, axis=None) -> np.ndarray:
    """JSD(p, q) = ½ Σ p log(2p/(p+q)) + ½ Σ q log(2q/(p+q)) (natural log, 0 log 0 = 0)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = p + q
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log(2.0 * p / m), 0.0)
        tq = np.where(q > 0, q * np.log(2.0 * q / m), 0.0)
    return 0.5 * np.sum(tp + tq, axis=axis)


def closure(key: jax.Array, fractions, truth, n_eq, repeats: int = 100) -> Closure:
    """JSD of each run's posterior-mean histogram to the truth vs. that of ``repeats`` truth
    samples of size round(N_eq) (multinomial on the truth cells, i.e. exact truth sampling)."""
    f, t = check_fractions(fractions, truth)
    reps = _checks.positive_int("repeats", repeats)
    n_eq = np.asarray(n_eq, np.float64).reshape(-1)
    if n_eq.shape != (f.shape[0],):
        raise ValueError(f"n_eq must have shape ({f.shape[0]},) (one per run), got {n_eq.shape}")
    size = np.where(np.isfinite(n_eq), np.maximum(np.round(n_eq), 1.0), 0.0)
    p = t.reshape(-1) / t.sum()
    jsd_model = jensen_shannon(f.mean(axis=1).reshape(f.shape[0], -1), p[None], axis=-1)
    jsd_truth = np.full((f.shape[0], reps), np.nan)
    for r, k in enumerate(jax.random.split(key, f.shape[0])):
        if size[r] > 0:
            counts = _multinomial(k, int(size[r]), p, reps).astype(np.float64)
            jsd_truth[r] = jensen_shannon(counts / counts.sum(-1, keepdims=True), p[None], -1)
    return Closure(jsd_model, jsd_truth, size)


def _multinomial(key, n, p, reps):
    """numpy's multinomial (fast at 10⁵ cells, unlike jax.random.multinomial's scan), seeded
    from the JAX key so the same key gives the same numbers."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).tolist())
    return rng.multinomial(n, p / p.sum(), size=reps)
