"""Amplification N_eq / N_train, its power-law fit, and the Jensen–Shannon closure test.

Fractions are (R, S, n_r, n_φ) as in ``calibration``. Per run, μ_j and σ_j are the mean and std
(ddof 0) over draws of cell j, N_eq = Σ_j μ_j²/σ_j² and amplification = N_eq / N_train. A cell with
σ_j = 0 contributes 0 if μ_j = 0 (never populated) and +inf otherwise.

Reading N_eq: for draws that are histograms of independent samples of size N (multinomial cell
fractions), E[N_eq] ≈ N · Σ_j p_j/(1 − p_j) · S/(S − 3) (the ddof-0 variance over S draws), i.e.
N · n_Q/(n_Q − 1) · S/(S − 3) for a uniform truth: the estimator overstates N by 6 % at S = 50 and
by a further n_Q/(n_Q − 1) at few cells.

Generation-noise-corrected N_eq (``num_generated`` = n points per draw, fresh noise per draw).
A draw's cell fraction f_s = c_s/n with c_s | p_s ~ Binomial(n, p_s) and p_s the draw's model
probability. Over draws, E f = μ and V = Var f = σ²_m + E[p(1 − p)]/n, where σ²_m = Var_θ p is
the model spread the paper's N_eq means to count; its 1/n part (generation noise) caps μ²/V
near the samples per cell. With f̄, v (ddof 1) and q = f̄(1 − f̄) over S draws,
E[q] = μ(1 − μ) − V/S and E[p(1 − p)] = μ(1 − μ) − σ²_m, so the unbiased model variance is

    X = [v (n − 1/S) − q] / (n − 1)            (E X = σ²_m exactly, any S ≥ 2, n ≥ 2)

(equal to v − mean_s f_s(1 − f_s)/(n − 1), the per-draw unbiased binomial variance subtracted;
the successor paper's Var − Ī(1 − Ī)/n drops the −σ²_m/n and the −V/S terms).

The ratio μ²/σ² has its own finite-S bias: for Gaussian f and no generation noise,
E[f̄²/v] = (μ² + V/S)(S − 1)/((S − 3) σ²), which is the measured E[N_eq]/N =
S/(S − 3)·n_Q/(n_Q − 1) + n_Q/(N(S − 3)) of the ddof-0 paper estimator. With generation noise,
X is a shifted χ²: X/σ² = [u − (1 − ρ)]/ρ with u = v/V ~ χ²_{S−1}/(S − 1) (Gaussian f, q taken
at its mean), a = (n − 1/S)/(n − 1) and ρ = σ²_m/(aV) the model share of the spread. X ≤ 0 has
positive probability and E[1/X] diverges, so no per-cell estimator of 1/σ² is unbiased as is;
the denominator is floored at δ·a·v (δ = ``floor``, 0.3) and its mean is computed exactly:

    h(ρ, S) = ρ · E_u[1 / max(u − (1 − ρ), δ u)]   (1-D quadrature over χ²_{S−1} quantiles),
    N_eq,j = f̄_j² / (max(X_j, δ a v_j) · h(ρ̂, S)) − 1/(S a ρ̂),     N_eq = Σ_j N_eq,j,

unbiased when ρ is right (E f̄² = μ² + V/S, f̄ and v independent). For n → ∞ (ρ = 1) it is the
exactly unbiased (S − 3)/(S − 1)·f̄²/v − 1/S. ρ̂ = Σ X / Σ a v is pooled over a window of whole
radial rows holding ≥ ``pool_cells`` cells (the ring's cells in one row share the truth
probability and, φ being uniform, the model's relative spread), clipped to [0.02, 1]. Cells
with X_j ≤ 0 (spread indistinguishable from generation noise) enter with the floored
denominator and are counted in ``num_unresolved``; cells with f̄ = 0 contribute 0. Checked by
simulation (tests; benchmarks/RESULTS.md): within a few % down to ρ ≈ 0.2 (generation noise
4× the model spread) for Gaussian draws; below, ``model_share`` says the samples per cell are
too few. Like the paper's estimator it assumes Gaussian draws: heavy-tailed draws (e.g. a few
outlying chain states) make every 1/v-type estimator overstate N_eq, the more so the smaller
the generation noise. The error of N_eq is a delete-one jackknife over draws
(``jackknife_equivalent_events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
import scipy.optimize
import scipy.stats

from bayesiamp_jax import _checks
from bayesiamp_jax.evaluation.calibration import check_fractions


class Amplification(NamedTuple):
    """n_eq (R,); amplification (R,) = n_eq / num_train; cell_amplification (R, n_r, n_φ) =
    n_Q · μ_j²/σ_j² / num_train (its mean over cells is the amplification).

    Generation-noise-corrected only (else None): num_generated (points per draw), num_unresolved
    (R,) cells with model-variance estimate ≤ 0, model_share (R,) the model's share ρ̂ of the
    spread over draws (1: no generation noise), n_eq_err (R,) jackknife error of n_eq over draws."""

    n_eq: np.ndarray
    amplification: np.ndarray
    cell_amplification: np.ndarray
    num_generated: int | None = None
    num_unresolved: np.ndarray | None = None
    model_share: np.ndarray | None = None
    n_eq_err: np.ndarray | None = None


class CorrectedCells(NamedTuple):
    """Per run and cell (R, n_r, n_φ): n_eq (bias-corrected μ²/σ²_m), model_var (X), model_share
    (pooled ρ̂); per run (R,): num_unresolved (cells with X ≤ 0 and f̄ > 0)."""

    n_eq: np.ndarray
    model_var: np.ndarray
    model_share: np.ndarray
    num_unresolved: np.ndarray


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


def cell_equivalent_events(fractions, truth, num_generated: int | None = None) -> np.ndarray:
    """μ_j²/σ_j² per run and cell, (R, n_r, n_φ); 0 where μ = σ = 0, inf where only σ = 0.

    With ``num_generated``: the generation-noise- and finite-S-corrected estimate (module
    docstring), ``corrected_cells(...).n_eq``.
    """
    if num_generated is not None:
        return corrected_cells(fractions, truth, num_generated).n_eq
    f, _ = check_fractions(fractions, truth)
    mu = f.mean(axis=1)
    # identical draws have zero spread; the float variance of equal values can round to ~1e-20
    var = np.where(np.ptp(f, axis=1) == 0, 0.0, f.var(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mu**2 / var
    return np.where(var > 0, ratio, np.where(mu == 0, 0.0, np.inf))


FLOOR, POOL_CELLS, MIN_SHARE = 0.3, 64, 0.02
_QUADRATURE = 2048


def corrected_cells(fractions, truth, num_generated: int, floor: float = FLOOR,
                    pool_cells: int = POOL_CELLS) -> CorrectedCells:
    """Generation-noise-corrected per-cell N_eq of draws with ``num_generated`` fresh points
    each: fractions (R, S, n_r, n_φ) -> ``CorrectedCells`` (formulas in the module docstring)."""
    f, _ = check_fractions(fractions, truth)
    n, s = _check_corrected(num_generated, f.shape[1], floor)
    var = np.where(np.ptp(f, axis=1) == 0, 0.0, f.var(axis=1, ddof=1))
    return _corrected(f.mean(axis=1), var, s, n, floor, pool_cells)


def _check_corrected(num_generated, num_draws, floor):
    n = _checks.positive_int("num_generated", num_generated)
    if n < 2:
        raise ValueError(f"num_generated must be >= 2 (a binomial variance), got {n!r}")
    if num_draws < 5:  # >= 4 draws in every leave-one-out set of the jackknife
        raise ValueError(f"the corrected N_eq needs >= 5 draws per run (finite-S correction "
                         f"and its jackknife), got {num_draws}")
    if not 0 < floor < 1:
        raise ValueError(f"floor must lie in (0, 1), got {floor!r}")
    return n, num_draws


def _corrected(mean, var, s, n, floor, pool_cells) -> CorrectedCells:
    """The corrected estimator from the per-cell mean and ddof-1 variance over s draws."""
    a = (n - 1.0 / s) / (n - 1.0)
    model_var = (var * (n - 1.0 / s) - mean * (1.0 - mean)) / (n - 1.0)
    rho = np.broadcast_to(_pooled_share(model_var, a * var, pool_cells)[..., None], mean.shape)
    h = _floor_mean(rho, s, floor)
    denom = np.maximum(model_var, floor * a * var)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mean**2 / (denom * h) - 1.0 / (s * a * rho)
    n_eq = np.where((mean > 0) & (denom > 0), ratio, np.where(mean > 0, np.inf, 0.0))
    unresolved = np.sum((model_var <= 0) & (mean > 0), axis=(1, 2))
    return CorrectedCells(n_eq, model_var, rho, unresolved)


def _pooled_share(model_var, total_var, pool_cells):
    """ρ̂ = Σ X / Σ aV over a window of 2w + 1 radial rows (≥ pool_cells cells): (R, n_r)."""
    n_r, n_phi = model_var.shape[1:]
    w = min((-(-pool_cells // n_phi)) // 2, n_r)  # rows needed // 2 on either side
    num, den = model_var.sum(axis=2), total_var.sum(axis=2)

    def window(x):
        c = np.concatenate([np.zeros_like(x[:, :1]), np.cumsum(x, axis=1)], axis=1)
        i = np.arange(n_r)
        return c[:, np.minimum(i + w + 1, n_r)] - c[:, np.maximum(i - w, 0)]

    num, den = window(num), window(den)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(den > 0, num / den, 1.0)
    return np.clip(rho, MIN_SHARE, 1.0)


def _floor_mean(rho, s, floor):
    """h(ρ, S) = ρ · E[1/max(u − (1 − ρ), δ u)], u ~ χ²_{S−1}/(S − 1), by the midpoint rule on
    ``_QUADRATURE`` quantiles; for every distinct ρ in the array (same shape out)."""
    u = scipy.stats.chi2.ppf((np.arange(_QUADRATURE) + 0.5) / _QUADRATURE, s - 1) / (s - 1)
    values, inverse = np.unique(rho, return_inverse=True)
    v = values[:, None]
    h = v[:, 0] * np.mean(1.0 / np.maximum(u[None] - (1.0 - v), floor * u[None]), axis=1)
    return h[inverse].reshape(rho.shape)


def equivalent_events(fractions, truth, num_generated: int | None = None) -> np.ndarray:
    """N_eq = Σ_j μ_j²/σ_j² per run: fractions (R, S, n_r, n_φ) -> (R,).

    ``num_generated=None``: the paper's estimator (ddof-0 spread over draws, generation noise
    included). Otherwise the generation-noise-corrected, finite-S-unbiased estimate for draws of
    ``num_generated`` fresh points each (module docstring).
    """
    return cell_equivalent_events(fractions, truth, num_generated).sum(axis=(1, 2))


def jackknife_equivalent_events(fractions, truth, num_generated: int, floor: float = FLOOR,
                                pool_cells: int = POOL_CELLS) -> np.ndarray:
    """Delete-one jackknife over draws of the corrected N_eq: (S, R) leave-one-out values.

    The error of N_eq is sqrt((S − 1)/S · Σ_i (N_(i) − N̄)²) (``jackknife_error``). Measured
    on draws with a known model spread it matches the run-to-run spread (1.05–1.2×), where a
    bootstrap over draws (duplicated draws) overstated it 1.3–1.6×. Leave-one-out moments in
    closed form: f̄_(i) = (S f̄ − f_i)/(S − 1), v_(i) = (Σ f² − f_i² − (S − 1) f̄_(i)²)/(S − 2).
    """
    f, _ = check_fractions(fractions, truth)
    n, s = _check_corrected(num_generated, f.shape[1], floor)
    total, total_sq = f.sum(axis=1), np.square(f).sum(axis=1)
    out = np.empty((s, f.shape[0]))
    for i in range(s):
        fi = f[:, i]
        mean = (total - fi) / (s - 1)
        var = np.maximum(total_sq - fi**2 - (s - 1) * mean**2, 0.0) / (s - 2)
        out[i] = _corrected(mean, var, s - 1, n, floor, pool_cells).n_eq.sum(axis=(1, 2))
    return out


def jackknife_error(leave_one_out) -> np.ndarray:
    """sqrt((S − 1)/S · Σ_i (θ_(i) − θ̄)²) over the leading axis of leave-one-out values."""
    x = np.asarray(leave_one_out, np.float64)
    s = x.shape[0]
    return np.sqrt((s - 1) / s * np.sum((x - x.mean(axis=0)) ** 2, axis=0))


def amplification(fractions, truth, num_train: int,
                  num_generated: int | None = None) -> Amplification:
    """N_eq, N_eq / num_train and the per-cell amplification of every run.

    ``num_generated=None``: the paper's estimator. Otherwise the generation-noise-corrected
    one, with ``num_unresolved``, ``model_share`` (ρ̂ averaged with the cells' N_eq as weights)
    and the jackknife error ``n_eq_err``.
    """
    n_train = _checks.positive_int("num_train", num_train)
    if num_generated is None:
        cells = cell_equivalent_events(fractions, truth)
        extra = {}
    else:
        cc = corrected_cells(fractions, truth, num_generated)
        cells = cc.n_eq
        err = jackknife_error(jackknife_equivalent_events(fractions, truth, num_generated))
        weights = np.where(np.isfinite(cells), np.maximum(cells, 0.0), 0.0) + 1e-300
        share = np.sum(cc.model_share * weights, axis=(1, 2)) / np.sum(weights, axis=(1, 2))
        extra = dict(num_generated=int(num_generated), num_unresolved=cc.num_unresolved,
                     model_share=share, n_eq_err=err)
    n_eq = cells.sum(axis=(1, 2))
    n_q = cells.shape[1] * cells.shape[2]
    return Amplification(n_eq, n_eq / n_train, cells * n_q / n_train, **extra)


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
