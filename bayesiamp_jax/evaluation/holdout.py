"""Calibration of posterior histograms against a held-out sample, without a truth.

A user has no truth, only events. A held-out part of them (N_ho events, never trained on),
histogrammed with the same binning, gives counts c_j (h_j = c_j / N_ho). Fractions of R runs ×
S posterior draws, (R, S, *cells), are compared with it cell by cell (docs/holdout.md has the
derivations and measured numbers; every quantity below is per run and cell).

Variances. μ, v = mean and variance (ddof 1) over the S draws, n = ``num_generated``,
β_g = 1/n (same noise: one noise for every draw and run), 1/(n S) (fresh), 0 (n None).

- model variance m: same noise (``fresh=False``): m = v (the shared generation noise cancels
  in v). Fresh (``fresh=True``, each draw its own n points): the unbiased
  X = [v (n − 1/S) − μ(1 − μ)]/(n − 1) of ``amplification`` (v minus the per-draw binomial
  variance), floored at δ a v (δ = ``amplification.FLOOR``, a = (n − 1/S)/(n − 1)) so that
  no cell claims a zero spread; ρ = Σ X / Σ a v (pooled over the run's cells, ≥ 0.02) is the
  model share of a draw's spread.
- noise: σ²_gen = β_g p̃(1 − p̃), σ²_ho = p̃(1 − p̃)/N_ho with p̃ = w μ + (1 − w) h the
  inverse-variance mean of μ and h (w = σ²_ho/(σ²_μ + σ²_ho) at p₀ = (μ + h)/2), which is
  uncorrelated with d = μ − h to first order; empty held-out cells need no special case.
- the mean of S draws differs from the posterior mean by m/S, so a calibrated posterior
  (truth exchangeable with the draws) has Var(μ − truth) = m (1 + 1/S):

      d = μ − h,   σ² = (1 + 1/S) m + σ²_ho + σ²_gen,   pull = d / σ.

Width test. T = Σ pull² over runs and cells (``chi2``). Under calibration pull² = x² c (1 + κ)
with x ~ N(0, 1 − π) (cells of a run sum to one when every draw's fractions and the held-out
do: π_j = σ²_j / Σ_k σ²_k, ndf = R (K − 1); else π = 0, ndf = R K) and c = σ²/σ̂² the finite-S
noise of the estimated variance: with u ~ χ²_{S−1}/(S − 1), λ = (1 + 1/S) m/σ² the model
share and r(u) = m̂/m (u for same noise; max(u − 1 + ρ, δ u)/ρ for fresh draws),

      c(u) = 1 / (λ r(u) + 1 − λ),   E T = Σ (1 − π) E c,
      Var T = Σ (1 − π)² (3 E c² − (E c)²) + 2 [(Σ_j π E c)² − Σ_j π² (E c)²]
              + 2 Σ_j [(Σ_r ξ E c)² − Σ_r (ξ E c)²],

E over u by quadrature (tabulated in λ and ρ); ξ = (σ²_ho [+ σ²_gen for same noise])/σ² is
the share of the noise that all runs share (one held-out, one noise key), which correlates
their pulls. κ (``_kappa``) is the second-order excess of pull² from the noise of p̃ in the
noise terms, ≈ 1/(8 N_ho p) (3 % at 4 held-out events per cell). With m ≫ noise,
E c = (S − 1)/(S − 3) (1.118 at S = 20): a naive χ²(ndf) flags calibrated 50 × 50 grids.
The null of T is the gamma distribution with that mean and variance (``key=None``) or a
parametric bootstrap (``key``): x ~ N(0, σ²) with its shared part common to the runs,
conditioned on Σ_j x = 0 per run, u ~ χ²_{S−1}/(S − 1), with the estimated variances.
Verdict (two-sided level α): "over-confident" if T is in the upper α/2 tail of its null,
"under-confident" in the lower α/2 tail, else "consistent". The width is sqrt(T / E T), the
RMS pull relative to its calibrated value (1 for a calibrated posterior).

Recalibration σ_model → s σ_model, i.e. the draws widened by s about their mean (their mean's
own m/S is unchanged): t = s² is the maximum-likelihood scale of d ~ N(0, (t + 1/S) m + e)
with e = σ²_ho + σ²_gen fixed, with the finite-S expectation in place of 1 in the score:

      F(t) = Σ_j pull_j(t)² − E_t T = 0,    pull_j(t)² = d_j² / ((t + 1/S) m̂_j + e_j),

(E_t T as above with λ_j(t) = (t + 1/S) m_j/σ_j²(t)). This is the ML score equation
Σ_j λ_j (pull_j² − 1) = 0 when all cells share one model share λ, with E c (1 − π)(1 + κ)
in place of 1 so that s is unbiased at S = 20; the ML weights λ̂_j are left out because
they are functions of m̂_j and correlate with its finite-S noise. It is the width test's
statistic set to its null mean, so s = 1 ⇔ width = 1. Error: sandwich,
t_err = sqrt(V)/|F'(t)| with V the larger of Var_t T and its empirical value,
s_err ≈ t_err/(2s). With e ≪ m and S → ∞ it is s² = mean pull²
(``regression.calibration.pull_scale`` of d and sqrt(m)); at finite S
s² = mean(d²/m) (S − 3)/(S − 1) − 1/S (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

import jax
import numpy as np
import scipy.stats

from bayesiamp_jax import _checks
from bayesiamp_jax.evaluation.amplification import FLOOR, MIN_SHARE
from bayesiamp_jax.evaluation.binning import Binning, histogram
from bayesiamp_jax.evaluation.calibration import (
    NOMINAL_LEVELS,
    Calibration,
    calibrate,
    check_levels,
    widen_for_truth,
)

VERDICTS = ("consistent", "over-confident", "under-confident")
MIN_DRAWS = 6  # Var(pull²) needs E[1/u²] finite: χ²_{S−1} with S − 1 > 4
NULL_REPEATS = 1000


class HoldoutStatistics(NamedTuple):
    """Per-cell pieces of the held-out comparison, (..., R, K) (K flattened cells):
    difference d = μ − h, model variance m (floored for fresh draws), generation and held-out
    noise variances, pull, the pooled fraction p̃; per run (..., R): model share ρ of the
    draw spread (1 for same noise) and whether its cells sum to one (``constrained``);
    plugin_model_var ρ a v (the null's model variance; v for same noise), resolved_var
    max(X, 0) (v for same noise; visibility); num_draws S; noise_rate β = 1/N_ho + 1/n_g
    and pool_weight w (..., R, K) of p̃ = w μ + (1 − w) h, num_holdout N_ho (..., 1, 1);
    shared_var (..., R, K): the noise all runs share (σ²_ho, + σ²_gen for same noise: one
    noise key for every run)."""

    difference: np.ndarray
    model_var: np.ndarray
    generation_var: np.ndarray
    holdout_var: np.ndarray
    pulls: np.ndarray
    pooled: np.ndarray
    share: np.ndarray
    constrained: np.ndarray
    plugin_model_var: np.ndarray
    resolved_var: np.ndarray
    num_draws: int
    noise_rate: np.ndarray
    pool_weight: np.ndarray
    num_holdout: np.ndarray
    shared_var: np.ndarray


class WidthTest(NamedTuple):
    """Width test of the pulls, leading batch axes (...): chi2 = Σ pull², its null mean and
    variance, ndf, p_value (two-sided), p_upper / p_lower (one-sided tails), verdict (str
    array), width = sqrt(chi2 / null_mean) and its error."""

    chi2: np.ndarray
    null_mean: np.ndarray
    null_var: np.ndarray
    ndf: np.ndarray
    p_value: np.ndarray
    p_upper: np.ndarray
    p_lower: np.ndarray
    verdict: np.ndarray
    width: np.ndarray
    width_err: np.ndarray


class ScaleFit(NamedTuple):
    """Recalibration scale s (σ_model → s σ_model) and its error, leading batch axes (...)."""

    scale: np.ndarray
    scale_err: np.ndarray


class HoldoutCheck(NamedTuple):
    """The held-out check of one binning (see the module docstring for every formula).

    pulls: (R, *cells) (μ − h)/σ, σ² = (1 + 1/S) σ²_model + σ²_ho + σ²_gen; NaN in cells
        without events or spread anywhere.
    width, width_err: sqrt(chi2 / E₀ chi2), the RMS pull relative to its calibrated value
        (ML width of a normal, finite-S corrected), and its error from the null variance.
    chi2, ndf, p_value: Σ pull², R (K − 1) (or R K without the sum-to-one constraint), the
        two-sided p-value of chi2 under its finite-S null.
    coverage: ``Calibration`` of the draws (model spread only) against the held-out, the
        held-out and generation noise as truth_std.
    verdict: "consistent" | "over-confident" | "under-confident" at level ``alpha``.
    scale, scale_err: recalibration s with its sandwich error.
    recalibrated: ``Calibration`` after σ_model → s σ_model.
    visible: fraction of cells (runs × cells with events or spread) where the check's own
        noise σ²_ho + σ²_gen is below the model variance, i.e. N_eq,cell < reach.
    reach: 1 / (1/N_ho + 1/n_g) events, the largest N_eq,cell = p(1 − p)/σ²_model the
        held-out can check cell by cell (= N_ho for an infinite generated sample); the
        largest checkable amplification is reach / N_train.
    num_holdout: N_ho. null: "gamma" (closed form) or "bootstrap" (``key`` given).
    model_share: fresh histograms: the model's share ρ of a draw's spread (mean over runs; 1
        for same noise); below ~0.5 the finite-S null is approximate (docs/holdout.md).
    """

    pulls: np.ndarray
    width: float
    width_err: float
    chi2: float
    ndf: int
    p_value: float
    coverage: Calibration
    verdict: str
    alpha: float
    scale: float
    scale_err: float
    recalibrated: Calibration
    visible: float
    reach: float
    num_holdout: int
    null: str = "gamma"
    model_share: float = 1.0


# ------------------------------------------------------------------------------- inputs


def holdout_counts(values, binning: Binning) -> np.ndarray:
    """Held-out counts (n_1, …, n_k) of observable values (N_ho, k) in ``binning``
    (``binning.histogram``; values outside the grid are dropped, so pass
    ``num_holdout=len(values)`` to ``holdout_check`` when the grid does not cover them all)."""
    v = np.asarray(values)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"values must have shape (N_ho, {len(binning.edges)}) with N_ho >= 1, "
                         f"got shape {v.shape}")
    _checks.finite("values", v)
    return np.asarray(histogram(v, binning), np.int64)


def _check_inputs(fractions, holdout_counts, num_holdout, num_generated, fresh):
    f = np.asarray(fractions, np.float64)
    c = np.asarray(holdout_counts, np.float64)
    if f.ndim < 3 or f.shape[2:] != c.shape:
        raise ValueError(f"fractions must have shape (runs, draws, *cells) with cells = "
                         f"holdout_counts.shape {c.shape}, got shape {f.shape}")
    if f.shape[0] < 1 or c.size < 2:
        raise ValueError(f"fractions needs >= 1 run and >= 2 cells, got shape {f.shape}")
    if f.shape[1] < MIN_DRAWS:
        raise ValueError(f"fractions needs >= {MIN_DRAWS} draws per run (finite-S null), got "
                         f"{f.shape[1]} (shape {f.shape})")
    _checks.finite("fractions", f)
    _checks.finite("holdout_counts", c)
    if np.any(c < 0) or np.any(c != np.round(c)):
        raise ValueError("holdout_counts must be non-negative integers, got values like "
                         f"{c[(c < 0) | (c != np.round(c))][:3].tolist()}")
    total = int(c.sum())
    if total == 0:
        raise ValueError("holdout_counts holds no events (sum 0)")
    n_ho = total if num_holdout is None else _checks.positive_int("num_holdout", num_holdout)
    if n_ho < total:
        raise ValueError(f"num_holdout must be >= the sum of holdout_counts ({total}), "
                         f"got {num_holdout!r}")
    if num_generated is not None:
        num_generated = _checks.positive_int("num_generated", num_generated)
        if num_generated < 2:
            raise ValueError(f"num_generated must be >= 2, got {num_generated!r}")
    if not isinstance(fresh, (bool, np.bool_)):
        raise ValueError(f"fresh must be True or False, got {fresh!r}")
    if fresh and num_generated is None:
        raise ValueError("fresh=True needs num_generated (points per draw), got None")
    return f, c, n_ho, num_generated


# --------------------------------------------------------------------------- per cell


def holdout_statistics(fractions, holdout_counts, num_holdout, num_generated=None,
                       fresh: bool = False) -> HoldoutStatistics:
    """Per-cell difference, variances and pulls (module docstring), vectorised:
    fractions (..., R, S, K), holdout_counts (..., K), num_holdout scalar or (...).
    No input checks (``holdout_check`` validates); for batches of toys and studies."""
    f = np.asarray(fractions, np.float64)
    c = np.asarray(holdout_counts, np.float64)
    n_ho = np.asarray(num_holdout, np.float64)[..., None, None]
    s = f.shape[-2]
    k = 1.0 + 1.0 / s
    mu = f.mean(axis=-2)
    v = np.square(f - mu[..., None, :]).sum(axis=-2) / (s - 1)
    v = np.where(v <= 1e-30 * np.square(mu), 0.0, v)     # equal draws: rounding only
    h = c[..., None, :] / n_ho
    beta_ho = 1.0 / n_ho
    beta_g = 0.0 if num_generated is None else 1.0 / (float(num_generated) * (s if fresh
                                                                               else 1))
    if fresh:
        n = float(num_generated)
        a = (n - 1.0 / s) / (n - 1.0)
        x = (v * (n - 1.0 / s) - mu * (1.0 - mu)) / (n - 1.0)
        total = (a * v).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(total > 0, x.sum(axis=-1) / total, 1.0)
        share = np.clip(share, MIN_SHARE, 1.0)
        model = np.maximum(x, FLOOR * a * v)
        plugin = share[..., None] * a * v
        resolved = np.maximum(x, 0.0)
    else:
        share = np.ones(mu.shape[:-1])
        model = plugin = resolved = v
    # p̃: inverse-variance mean of μ and h (uncorrelated with d = μ − h to first order)
    p0 = np.clip(0.5 * (mu + h), 0.0, 1.0)
    q0 = p0 * (1.0 - p0)
    var_mu, var_h = k * model + beta_g * q0, beta_ho * q0
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(var_mu + var_h > 0, var_h / (var_mu + var_h), 0.5)
    pooled = weight * mu + (1.0 - weight) * h
    pc = np.clip(pooled, 0.0, 1.0)
    q = pc * (1.0 - pc)
    gen, ho = beta_g * q, beta_ho * q
    d = mu - h
    sig2 = k * model + ho + gen
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.where(sig2 > 0, d / np.sqrt(sig2), np.where(d == 0, np.nan, np.sign(d) * np.inf))
    sums = f.sum(axis=-1)
    constrained = (np.all(np.abs(sums - 1.0) < 1e-6, axis=-1)
                   & (np.abs(c.sum(axis=-1)[..., None] - n_ho[..., 0]) < 0.5))
    return HoldoutStatistics(d, model, gen, ho, pull, pooled, share, constrained, plugin,
                             resolved, s, beta_ho + beta_g, weight, n_ho,
                             ho if fresh else ho + gen)


# ------------------------------------------------------------------ finite-S expectations

_LAMBDA = np.linspace(0.0, 1.0, 257)
_SHARE = np.geomspace(MIN_SHARE, 1.0, 48)
_QUADRATURE = 4096


@lru_cache(maxsize=16)
def _tables(num_draws: int) -> np.ndarray:
    """E[c], E[c²] on the (ρ, λ) grid, (2, len(_SHARE), len(_LAMBDA)):
    u ~ χ²_{S−1}/(S − 1) by the midpoint rule on quantiles, r = max(u − 1 + ρ, δ u)/ρ
    (= u at ρ = 1), c = 1/(λ r + 1 − λ)."""
    u = scipy.stats.chi2.ppf((np.arange(_QUADRATURE) + 0.5) / _QUADRATURE, num_draws - 1)
    u = u / (num_draws - 1)
    rho = _SHARE[:, None, None]
    r = np.maximum(u - 1.0 + rho, FLOOR * u) / rho
    r = np.where(rho >= 1.0, u, r)                       # (P, 1, Q)
    lam = _LAMBDA[None, :, None]
    out = np.empty((2, _SHARE.size, _LAMBDA.size))
    for i in range(_SHARE.size):                          # bounded memory: (L, Q) at a time
        ci = 1.0 / (lam[0] * r[i] + 1.0 - lam[0])
        out[0, i] = ci.mean(-1)
        out[1, i] = (ci**2).mean(-1)
    return out


def _expect(num_draws, share, lam):
    """Table values at per-run ρ (..., R) and per-cell λ (..., R, K): (2, ..., R, K),
    linear in log ρ and in λ."""
    tab = _tables(int(num_draws))
    pos = np.interp(np.log(share), np.log(_SHARE), np.arange(_SHARE.size))
    i0 = np.clip(np.floor(pos).astype(int), 0, _SHARE.size - 2)
    w = (pos - i0)[None, ..., None]
    rows = tab[:, i0] * (1 - w) + tab[:, i0 + 1] * w          # (2, ..., R, L)
    x = np.clip(lam, 0.0, 1.0) * (_LAMBDA.size - 1)
    j0 = np.clip(np.floor(x).astype(int), 0, _LAMBDA.size - 2)
    wl = x - j0
    lo = np.take_along_axis(rows, np.broadcast_to(j0, (2,) + j0.shape), axis=-1)
    hi = np.take_along_axis(rows, np.broadcast_to(j0 + 1, (2,) + j0.shape), axis=-1)
    return lo * (1 - wl) + hi * wl


def _shares(st: HoldoutStatistics, t=1.0):
    """Observed λ̂ (from m̂), plug-in λ (from the true-share model), σ̂², σ² (plug-in), π."""
    k = t + 1.0 / st.num_draws          # σ_model → s σ_model leaves the mean's m/S alone
    noise = st.holdout_var + st.generation_var
    sig_hat = k * st.model_var + noise
    sig = k * st.plugin_model_var + noise
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_hat = np.where(sig_hat > 0, k * st.model_var / sig_hat, 0.0)
        lam = np.where(sig > 0, k * st.plugin_model_var / sig, 0.0)
        tot = sig.sum(axis=-1, keepdims=True)
        pi = np.where(st.constrained[..., None] & (tot > 0), sig / tot, 0.0)
    return lam_hat, lam, sig_hat, sig, pi


def _kappa(st, t=1.0):
    """Relative excess of E pull² from the noise of p̃ in σ²_ho + σ²_gen = β p̃(1 − p̃), to
    second order in p̃ − p (docs/holdout.md): with d = δ − ε (δ model + generation, variance
    a; ε held-out, variance b, third and fourth moments binomial), p̃ − p = w δ + (1 − w) ε,
    Σ = a + b, M = E[d² (p̃ − p)²] = 3w²a² + (1 − w)² E ε⁴ + ab (1 − 6w + 6w²):
    κ = [β² (1 − 2p)² M − β (1 − 2p)(1 − w) E ε³ Σ + β M Σ] / Σ³. For equal model and
    held-out noise (w = 1/2) κ ≈ 1/(8 N_ho p): 3 % at 4 held-out events per cell (with
    p̃ = μ, w = 1, it would be 1/(2 N_ho p), 12 %)."""
    p = np.clip(st.pooled, 0.0, 1.0)
    q = p * (1.0 - p)
    n = st.num_holdout
    a = (t + 1.0 / st.num_draws) * st.plugin_model_var + st.generation_var
    b = st.holdout_var
    e3 = q * (1.0 - 2.0 * p) / n**2
    e4 = 3.0 * b**2 + q * (1.0 - 6.0 * q) / n**3
    w, beta = st.pool_weight, st.noise_rate
    m4 = 3 * w**2 * a**2 + (1 - w) ** 2 * e4 + a * b * (1 - 6 * w + 6 * w**2)
    tot = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (beta**2 * (1 - 2 * p) ** 2 * m4 - beta * (1 - 2 * p) * (1 - w) * e3 * tot
             + beta * m4 * tot) / tot**3
    return np.where(tot > 0, k, 0.0)


def _valid(st):
    return ~np.isnan(st.pulls)


# ------------------------------------------------------------------------- width test


def width_test(st: HoldoutStatistics, alpha: float = 0.05, key=None,
               null_repeats: int = NULL_REPEATS) -> WidthTest:
    """χ² = Σ pull² against its finite-S null (gamma with the exact mean and variance, or a
    parametric bootstrap of ``null_repeats`` with ``key``); batch axes (...) before (R, K)."""
    alpha = _checks.probability("alpha", alpha, open_interval=True)
    ok = _valid(st)
    _, lam, _, sig, _ = _shares(st)
    _, mean, var, _, _ = _moments(st, 1.0, ok)
    chi2 = np.where(ok, st.pulls**2, 0.0).sum(axis=(-2, -1))
    ndf = ok.sum(axis=(-2, -1)) - np.where(st.constrained, 1, 0).sum(-1)
    if key is None:
        shape, scale = mean**2 / var, var / mean
        p_up = scipy.stats.gamma.sf(chi2, shape, scale=scale)
        p_lo = scipy.stats.gamma.cdf(chi2, shape, scale=scale)
    else:
        b = _checks.positive_int("null_repeats", null_repeats)
        sims = _simulate_null(key, st, lam, sig, ok, b)               # (B, ...)
        p_up = (1 + (sims >= chi2).sum(0)) / (b + 1)
        p_lo = (1 + (sims <= chi2).sum(0)) / (b + 1)
    verdict = np.where(p_up < alpha / 2, VERDICTS[1],
                       np.where(p_lo < alpha / 2, VERDICTS[2], VERDICTS[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(chi2 / mean)
        width_err = width * np.sqrt(var) / (2 * mean)
    return WidthTest(chi2, mean, var, ndf, np.minimum(1.0, 2 * np.minimum(p_up, p_lo)), p_up,
                     p_lo, verdict, width, width_err)


def _simulate_null(key, st, lam, sig, ok, repeats, chunk=64):
    """T* of ``repeats`` calibrated copies: x ~ N(0, σ²) per cell, its ``shared_var`` part
    common to all runs, given Σ x = 0 per run (constrained runs), σ̂² = σ² (λ r(u) + 1 − λ),
    u ~ χ²_{S−1}/(S − 1), pull² × (1 + κ); host numpy generator seeded by the key's data."""
    seed = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(
        getattr(key, "dtype", None), jax.dtypes.prng_key) else key).ravel()
    rng = np.random.default_rng([int(x) for x in seed])
    s = st.num_draws
    rho = st.share[..., None]
    kap = 1.0 + _kappa(st)
    sig = np.where(ok, sig, 0.0)
    tot = sig.sum(axis=-1, keepdims=True)
    out = []
    for start in range(0, repeats, chunk):
        m = min(chunk, repeats - start)
        shared = np.minimum(np.where(ok, st.shared_var, 0.0), sig)
        x = (np.sqrt(sig - shared) * rng.standard_normal((m,) + sig.shape)
             + np.sqrt(shared) * rng.standard_normal((m,) + sig.shape[:-2] + (1,) + sig.shape[-1:]))
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = np.where(tot > 0, x.sum(-1, keepdims=True) / tot, 0.0)
        x = np.where(st.constrained[..., None], x - sig * proj, x)
        u = rng.chisquare(s - 1, (m,) + sig.shape) / (s - 1)
        r = np.where(rho >= 1.0, u, np.maximum(u - 1.0 + rho, FLOOR * u) / rho)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(ok, x**2 * kap / (sig * (lam * r + 1.0 - lam)), 0.0)
        out.append(np.nan_to_num(t, nan=0.0).sum(axis=(-2, -1)))
    return np.concatenate(out)


# ---------------------------------------------------------------------- recalibration


def _moments(st, t, ok):
    """T(t) = Σ pull²(t) with σ²_model → t σ²_model, its null mean and variance under
    Var d = (t + 1/S) m + e (module docstring), Σ λ̂ and the empirical variance of T;
    batch axes (...)."""
    lam_hat, lam, sig_hat, sig, pi = _shares(st, t)
    pi = np.where(ok, pi, 0.0)
    ec, ec2 = _expect(st.num_draws, st.share, lam)
    kap = 1.0 + _kappa(st, t)
    ec, ec2 = np.where(ok, ec * kap, 0.0), np.where(ok, ec2 * kap**2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p2 = np.where(ok, np.where(sig_hat > 0, st.difference**2 / sig_hat, st.pulls**2), 0.0)
        xi = np.where(ok & (sig > 0), st.shared_var / sig, 0.0)   # runs' shared share
    expected = (1 - pi) * ec
    mean = expected.sum(axis=(-2, -1))
    var = ((1 - pi) ** 2 * (3 * ec2 - ec**2)).sum(axis=(-2, -1)) + 2 * (
        ((pi * ec).sum(-1)) ** 2 - (pi**2 * ec**2).sum(-1)).sum(-1) + 2 * (
        ((ec * xi).sum(-2)) ** 2 - ((ec * xi) ** 2).sum(-2)).sum(-1)
    # empirical variance of T: squared residuals per cell, summed over runs first (the runs
    # share the held-out); finite only where every pull is
    with np.errstate(invalid="ignore"):
        meat = np.square(np.where(ok, p2 - expected, 0.0).sum(-2)).sum(-1)
    return p2.sum(axis=(-2, -1)), mean, var, lam_hat.sum(axis=(-2, -1)), meat


def fit_scale(st: HoldoutStatistics, iterations: int = 12) -> ScaleFit:
    """Recalibration s and its sandwich error (module docstring), batch axes (...).

    t = s² is the root of F(t) = T(t) − E_t T in log t ∈ [−30, 30] (F falls with t; s = 0
    or ∞ when F keeps its sign), by regula falsi (Illinois) from a bracket.
    Error: sandwich t_err = sqrt(V)/|F'(t)|, V the larger of Var_t T (model) and the
    empirical Σ_cells (Σ_runs pull² − E pull²)² (extra variance the model misses: sparse
    cells, non-Gaussian draws), both at max(t, t_err) so that s ≈ 0 keeps a finite error
    (NaN for s = ∞), s_err = (sqrt(t + t_err) − sqrt(max(t − t_err,
    0)))/2 (= t_err/(2s) when t ≫ t_err; finite at s = 0). NaN without model spread.
    """
    ok = _valid(st)
    batch = st.pulls.shape[:-2]

    def f(log_t):
        t2, mean, _, _, _ = _moments(st, np.exp(log_t)[..., None, None], ok)
        return t2 - mean

    # bracket around the naive Σ(d² − e − m̂/S)/Σ m̂, widened by 4 in log t until F changes
    # sign (F falls with t; log t in [−30, 30]), then the Illinois variant of regula falsi
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = (np.where(ok, st.difference**2 - st.holdout_var - st.generation_var
                          - st.model_var / st.num_draws, 0.0).sum((-2, -1))
                 / np.where(ok, st.model_var, 0.0).sum((-2, -1)))
    start = np.clip(np.log(np.where(naive > 0, naive, 1e-6)), -29.0, 29.0)
    lo, hi = np.maximum(start - 1.0, -30.0), np.minimum(start + 1.0, 30.0)
    f_lo, f_hi = f(lo), f(hi)
    for _ in range(16):
        move_lo, move_hi = (f_lo <= 0) & (lo > -30), (f_hi >= 0) & (hi < 30)
        if not (move_lo.any() or move_hi.any()):
            break
        lo, hi = np.where(move_lo, np.maximum(lo - 4, -30.0), lo), np.where(
            move_hi, np.minimum(hi + 4, 30.0), hi)
        f_lo, f_hi = np.where(move_lo, f(lo), f_lo), np.where(move_hi, f(hi), f_hi)
    side = np.zeros(batch, int)
    for _ in range(iterations):
        with np.errstate(divide="ignore", invalid="ignore"):
            mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        mid = np.where((mid > lo) & (mid < hi), mid, 0.5 * (lo + hi))
        fm = f(mid)
        up = fm > 0
        f_hi = np.where(up & (side == 1), 0.5 * f_hi, f_hi)
        f_lo = np.where(~up & (side == -1), 0.5 * f_lo, f_lo)
        lo, f_lo = np.where(up, mid, lo), np.where(up, fm, f_lo)
        hi, f_hi = np.where(up, hi, mid), np.where(up, f_hi, fm)
        side = np.where(up, 1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = (lo * f_hi - hi * f_lo) / np.where(f_hi != f_lo, f_hi - f_lo, 1.0)
    log_t = np.where(f_lo <= 0, lo, np.where(f_hi >= 0, hi, inner))
    t = np.exp(log_t)
    eps = 1e-4
    # at t ≈ 0, F is flat and Var F vanishes: take both at max(t, 10⁻³), then once more at
    # max(t, t_err) (no further: with little model share t_err grows with t)
    t_eval = np.maximum(t, 1e-3)
    for i in range(2):
        le = np.log(t_eval)
        _, _, var, norm, meat = _moments(st, t_eval[..., None, None], ok)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (f(le + eps) - f(le - eps)) / (2 * eps * t_eval)
            t_err = np.sqrt(np.fmax(var, meat)) / np.abs(slope)
        if i == 0:
            t_eval = np.maximum(t, np.where(np.isfinite(t_err), t_err, t))
    # log t at ±30: no root (a cell without model spread that the data contradict: s = ∞;
    # pulls narrower than the noise alone allows: s = 0)
    top, bottom = (log_t >= 30.0) & (f_hi >= 0), (log_t <= -30.0) & (f_lo <= 0)
    t = np.where(bottom, 0.0, t)
    scale = np.where(top, np.inf, np.sqrt(t))
    with np.errstate(invalid="ignore"):
        err = np.where(top, np.nan,
                       0.5 * (np.sqrt(t + t_err) - np.sqrt(np.maximum(t - t_err, 0.0))))
    none = ~(norm > 0)
    return ScaleFit(np.where(none, np.nan, scale), np.where(none, np.nan, err))


# -------------------------------------------------------------------------- the check


def holdout_check(fractions, holdout_counts, *, num_generated: int | None = None,
                  fresh: bool = False, alpha: float = 0.05, levels=NOMINAL_LEVELS,
                  key=None, null_repeats: int = NULL_REPEATS,
                  num_holdout: int | None = None) -> HoldoutCheck:
    """Compare posterior histograms with a held-out histogram of the same binning.

    fractions (R, S, *cells) (R runs × S ≥ 6 draws, e.g. ``PosteriorHistograms.fractions``),
    holdout_counts (*cells) integer counts of the held-out events; ``num_holdout`` N_ho (the
    sum of the counts by default; larger when events fell outside the grid);
    ``num_generated`` points per draw (None: infinite, no generation noise); ``fresh``: each
    draw its own points (scaled histograms) rather than one shared noise; ``alpha`` two-sided
    level of the verdict; ``key``: a parametric-bootstrap null of ``null_repeats`` instead
    of the closed-form gamma. Formulas: module docstring and docs/holdout.md.
    """
    f, c, n_ho, n_gen = _check_inputs(fractions, holdout_counts, num_holdout, num_generated,
                                      fresh)
    alpha = _checks.probability("alpha", alpha, open_interval=True)
    lv = check_levels(levels)
    cells = c.shape
    runs, draws = f.shape[:2]
    flat = f.reshape(runs, draws, -1)
    st = holdout_statistics(flat, c.ravel(), n_ho, n_gen, bool(fresh))
    test = width_test(st, alpha, key, null_repeats)
    fit = fit_scale(st)
    # coverage: the draws' spread set to the model variance (× s when recalibrated), widened
    # by the held-out and generation noise (the held-out's deviation from the truth)
    grid = (cells[0], int(np.prod(cells[1:], dtype=int)))
    h = (c / n_ho).reshape(grid)
    mu = flat.mean(axis=1, keepdims=True)
    v = np.where(np.ptp(flat, axis=1) == 0, 0.0, flat.var(axis=1, ddof=1))
    model = np.minimum(st.model_var, v)
    noise_sd = np.sqrt(st.holdout_var + st.generation_var)

    def coverage(scale):
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(v > 0, scale * np.sqrt(model / np.where(v > 0, v, 1.0)), 1.0)
        g = mu + (flat - mu) * k[:, None]
        g = widen_for_truth(g, noise_sd[:, None])
        return calibrate(g.reshape((runs, draws) + grid), h, lv)

    scale = float(fit.scale)
    noise = st.holdout_var + st.generation_var
    ok = _valid(st)
    seen = ok & (noise < st.resolved_var)
    reach = 1.0 / (1.0 / n_ho + (0.0 if n_gen is None else 1.0 / (n_gen * (draws if fresh
                                                                             else 1))))
    return HoldoutCheck(
        pulls=st.pulls.reshape((runs,) + cells),
        width=float(test.width), width_err=float(test.width_err),
        chi2=float(test.chi2), ndf=int(test.ndf), p_value=float(test.p_value),
        coverage=coverage(1.0), verdict=str(test.verdict), alpha=alpha,
        scale=scale, scale_err=float(fit.scale_err),
        # s = 0 would collapse the draws, which widen_for_truth cannot widen again
        recalibrated=coverage(max(scale, 1e-3) if np.isfinite(scale) else 1.0),
        visible=float(seen.sum() / max(ok.sum(), 1)), reach=float(reach),
        num_holdout=int(n_ho), null="gamma" if key is None else "bootstrap",
        model_share=float(np.mean(st.share)),
    )


def select_knob(checks: Mapping[str, HoldoutCheck]) -> str:
    """The truth-free choice among settings of one method (e.g. VI k, AdamMCMC σ): the label
    whose check is "consistent" with s closest to 1 (smallest |log s|); if none is
    consistent, the smallest |log s| of all (NaN s last; ties: first in order)."""
    if not isinstance(checks, Mapping) or len(checks) == 0:
        raise ValueError(f"checks must be a non-empty mapping label -> HoldoutCheck, got "
                         f"{checks!r}")
    for label, chk in checks.items():
        if not isinstance(chk, HoldoutCheck):
            raise ValueError(f"checks[{label!r}] must be a HoldoutCheck, got "
                             f"{type(chk).__name__}")

    def rank(item):
        _, chk = item
        dist = abs(np.log(chk.scale)) if np.isfinite(chk.scale) and chk.scale > 0 else np.inf
        return (chk.verdict != "consistent", dist)

    return min(checks.items(), key=rank)[0]
