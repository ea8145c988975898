"""Averaging and differential amplification of the successor paper (Bahl, Diefenbacher, Elmer,
Plehn, Spinner, "Forecasting Generative Amplification", arXiv:2509.08048).

The paper's body was not available here; the definitions below follow its abstract and the
summary in the project notes (G = n_equiv / n_train; the error of a generated integral splits
into generation noise and a model part; the two-sample Kolmogorov–Smirnov statistic measures
shape differences), and the formulas are derived here.

**Averaging amplification** (integrals over phase-space volumes V_k). For draw θ_s with n fresh
points, the fraction Ī_s in V_k is binomial around the draw's integral p_s. With the truth
integral I_k known, over draws (unbiased at finite S, n; ``amplification`` module docstring):

    σ²_model = [v (n − 1/S) − Ī(1 − Ī)] / (n − 1)          (spread over θ, generation noise off)
    σ²_true  = mean_s (Ī_s − I)² − mean_s Ī_s(1 − Ī_s)/(n − 1)   (= E_θ[(p_θ − I)²])
    σ²_mis   = σ²_true − σ²_model                        (= (E_θ p − I)², the model's bias²)

with v the ddof-1 variance and Ī the mean over draws. A truth sample of size m has binomial
variance I(1 − I)/m, so the generated sample is worth

    n_equiv,model = I(1 − I)/σ²_model   (the Bayesian forecast: what the posterior claims),
    n_equiv,true  = I(1 − I)/σ²_true    (what it is worth against the truth: statistics plus
                                         misspecification),

G = n_equiv / n_train. Over a set of regions, ``pooled`` combines them as
Σ_k I_k(1 − I_k) / Σ_k σ²_k (a ratio of sums, free of the per-region 1/σ̂² noise).

**Differential amplification** (1-D observable y). D = sup_y |F(y; A) − F(y; B)| is the
two-sample KS statistic (``scipy.stats.ks_2samp``). If the model's CDF deviates from the truth
like the empirical CDF of N truth events (a Brownian bridge of variance F(1 − F)/N), then for a
generated sample of n points against a truth sample of m points, F_A − F_B is asymptotically a
bridge of variance (1/N + 1/n + 1/m)·F(1 − F), so D/√(1/N + 1/n + 1/m) follows the null law of
two truth samples scaled by √(1/n + 1/m). With c = median of √(nm/(n + m))·D over
truth-sized pseudo-experiments (two truth samples of sizes n and m; c → 0.828, the Kolmogorov
median, for large samples), the median-unbiased size (D is monotone in N) is

    n_equiv = 1 / [(D/c)² − 1/n − 1/m],      +inf when D/c ≤ √(1/n + 1/m)

(the generated sample is then indistinguishable from the truth at these sample sizes); the
p-value of D under the null comes with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import scipy.stats

from bayesiamp_jax import _checks


class RegionAmplification(NamedTuple):
    """Per run and region (R, K): mean (⟨Ī⟩ over draws), model_var (σ²_model), true_var
    (σ²_true), misspecification_var (σ²_mis), n_equiv_model, n_equiv_true; per run (R,):
    pooled_model, pooled_true (Σ I(1 − I) / Σ σ²); truth (K,); amplification_* = n / n_train."""

    truth: np.ndarray
    mean: np.ndarray
    model_var: np.ndarray
    true_var: np.ndarray
    misspecification_var: np.ndarray
    n_equiv_model: np.ndarray
    n_equiv_true: np.ndarray
    pooled_model: np.ndarray
    pooled_true: np.ndarray
    amplification_model: np.ndarray
    amplification_true: np.ndarray


class KSAmplification(NamedTuple):
    """statistic (…,) KS D per generated sample; n_equiv (…,) (inf: indistinguishable);
    p_value (…,); null_median c; num_generated n; num_reference m; amplification = n_equiv /
    num_train (None without num_train)."""

    statistic: np.ndarray
    n_equiv: np.ndarray
    p_value: np.ndarray
    null_median: float
    num_generated: int
    num_reference: int
    amplification: np.ndarray | None


def region_fractions(fractions, masks) -> np.ndarray:
    """Integrals over regions from cell fractions: (R, S, n_r, n_φ) × masks (K, n_r, n_φ) ->
    (R, S, K). Regions are unions of cells (e.g. radial slices: ``r_centre < 4.2``)."""
    f = np.asarray(fractions, np.float64)
    m = np.asarray(masks, np.float64)
    if f.ndim != 4 or m.ndim != 3 or m.shape[1:] != f.shape[2:]:
        raise ValueError(f"masks must have shape (K, {f.shape[2:]}) for fractions of shape "
                         f"(R, S, n_r, n_φ), got masks {np.shape(masks)}, fractions "
                         f"{np.shape(fractions)}")
    return np.einsum("rsij,kij->rsk", f, m)


def averaging_amplification(fractions, truth, num_train: int,
                            num_generated: int) -> RegionAmplification:
    """Averaging amplification of K regions: fractions Ī (R, S, K) of ``num_generated`` fresh
    points per draw in each region, truth integrals I (K,) (module docstring)."""
    f = np.asarray(fractions, np.float64)
    t = np.asarray(truth, np.float64)
    if f.ndim != 3 or t.shape != f.shape[2:]:
        raise ValueError(f"fractions must be (R, S, K) and truth (K,), got {f.shape} and "
                         f"{t.shape}")
    if np.any((t <= 0) | (t >= 1)):
        raise ValueError(f"truth integrals must lie in (0, 1), got {t.tolist()}")
    n_train = _checks.positive_int("num_train", num_train)
    n = _checks.positive_int("num_generated", num_generated)
    s = f.shape[1]
    if n < 2 or s < 2:
        raise ValueError(f"need num_generated >= 2 and >= 2 draws, got {n} and {s}")
    mean = f.mean(axis=1)
    var = f.var(axis=1, ddof=1)
    gen = np.mean(f * (1.0 - f), axis=1) / (n - 1.0)  # unbiased mean_s p_s(1 − p_s)/n
    model_var = var - gen
    true_var = np.mean((f - t) ** 2, axis=1) - gen
    binom = t * (1.0 - t)
    with np.errstate(divide="ignore"):
        n_model = np.where(model_var > 0, binom / np.where(model_var > 0, model_var, 1), np.inf)
        n_true = np.where(true_var > 0, binom / np.where(true_var > 0, true_var, 1), np.inf)
        pooled_model = binom.sum() / model_var.sum(axis=1)
        pooled_true = binom.sum() / true_var.sum(axis=1)
    pooled_model = np.where(pooled_model > 0, pooled_model, np.inf)
    pooled_true = np.where(pooled_true > 0, pooled_true, np.inf)
    return RegionAmplification(t, mean, model_var, true_var, true_var - model_var,
                               n_model, n_true, pooled_model, pooled_true,
                               pooled_model / n_train, pooled_true / n_train)


def ks_null_median(key: jax.Array, truth_sampler: Callable, num_generated: int,
                   num_reference: int, num_pseudo: int = 200) -> tuple[float, np.ndarray]:
    """c = median of √(nm/(n + m))·D over ``num_pseudo`` pairs of truth samples of sizes n, m
    (``truth_sampler(key, size) -> (size,)``, called once for all pairs); returns (c, the
    scaled null values)."""
    n = _checks.positive_int("num_generated", num_generated)
    m = _checks.positive_int("num_reference", num_reference)
    reps = _checks.positive_int("num_pseudo", num_pseudo)
    scale = np.sqrt(n * m / (n + m))
    # one truth sample for all pseudo-experiments (one sampler call), then every statistic at once
    pool = np.asarray(truth_sampler(key, reps * (n + m)), np.float64).reshape(reps, n + m)
    null = scale * ks_statistics(pool[:, :n], pool[:, n:])
    return float(np.median(null)), null


def ks_statistics(a, b) -> np.ndarray:
    """Two-sample KS statistics sup |F_a − F_b| of rows: a (B, n), b (B, m) -> (B,).

    Vectorised over rows (``scipy.stats.ks_2samp``'s statistic for distinct values): the pooled
    values of a row sorted, the ECDF difference stepping +1/n at a's values and −1/m at b's.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n, m = a.shape[1], b.shape[1]
    values = np.concatenate([a, b], axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    steps = np.where(order < n, 1.0 / n, -1.0 / m)
    diff = np.cumsum(steps, axis=1)
    # with ties, only the position after the last of equal values counts
    sorted_values = np.take_along_axis(values, order, axis=1)
    last = np.append(sorted_values[:, 1:] != sorted_values[:, :-1],
                     np.ones((values.shape[0], 1), bool), axis=1)
    return np.max(np.where(last, np.abs(diff), 0.0), axis=1)


def ks_amplification(key: jax.Array, generated, reference, truth_sampler: Callable | None,
                     num_train: int | None = None, num_pseudo: int = 200,
                     null: tuple | None = None) -> KSAmplification:
    """Differential amplification of generated 1-D samples against a truth sample.

    Args:
        key: key of the pseudo-experiments (null distribution).
        generated: (n,) or (S, n) generated values of the observable (one row per draw).
        reference: (m,) truth sample of the observable.
        truth_sampler: ``truth_sampler(key, size) -> (size,)`` exact truth sampling.
        num_train: N_train for ``amplification`` (optional).
        num_pseudo: pseudo-experiments for the null median.
        null: a ``ks_null_median(key, truth_sampler, n, m, num_pseudo)`` result computed
            before (then ``truth_sampler`` is not used).
    """
    g = np.asarray(generated, np.float64)
    ref = np.asarray(reference, np.float64).reshape(-1)
    if g.ndim not in (1, 2) or g.shape[-1] < 2 or ref.size < 2:
        raise ValueError(f"generated must be (n,) or (S, n) and reference (m,), with n, m >= 2, "
                         f"got {g.shape} and {np.shape(reference)}")
    rows = g.reshape(-1, g.shape[-1])
    n, m = rows.shape[1], ref.size
    c, null = ks_null_median(key, truth_sampler, n, m, num_pseudo) if null is None else null
    stat = np.array([scipy.stats.ks_2samp(x, ref, method="asymp").statistic for x in rows])
    excess = (stat / c) ** 2 - 1.0 / n - 1.0 / m
    with np.errstate(divide="ignore"):
        n_equiv = np.where(excess > 0, 1.0 / np.where(excess > 0, excess, 1.0), np.inf)
    scaled = np.sqrt(n * m / (n + m)) * stat
    p_value = (1 + np.sum(null[None] >= scaled[:, None], axis=1)) / (null.size + 1)
    shape = g.shape[:-1]
    amp = None
    if num_train is not None:
        amp = (n_equiv / _checks.positive_int("num_train", num_train)).reshape(shape)
    return KSAmplification(stat.reshape(shape), n_equiv.reshape(shape), p_value.reshape(shape),
                           c, n, m, amp)
