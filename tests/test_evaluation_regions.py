"""Averaging and differential (KS) amplification against truth samples of known size."""

import jax
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax.evaluation.regions import (
    averaging_amplification,
    ks_amplification,
    ks_null_median,
    ks_statistics,
    region_fractions,
)

SHAPE, N_MODEL, N_GEN = (10, 10), 5_000, 40_000


def _masks():
    m = np.zeros((4,) + SHAPE, bool)
    m[0, 0] = True            # the first radial row (10 %)
    m[1, :3] = True           # three rows (30 %)
    m[2, 2, 5] = True         # one cell (1 %)
    m[3, :, :5] = True        # half the angles (50 %)
    return m


def _draws(rng, centre, runs, draws):
    """Draw s: cell probabilities = a histogram of N_MODEL truth events around ``centre`` (so a
    region's integral has binomial variance I(1 − I)/N_MODEL), then N_GEN generated points."""
    p = rng.multinomial(N_MODEL, centre.reshape(-1), size=(runs, draws)) / N_MODEL
    counts = np.stack([[rng.multinomial(N_GEN, q) for q in run] for run in p])
    return counts.reshape((runs, draws) + SHAPE) / N_GEN


def test_averaging_amplification_of_truth_samples_is_their_size():
    rng = np.random.default_rng(0)
    truth = np.full(SHAPE, 0.01)
    masks = _masks()
    frac = region_fractions(_draws(rng, truth, 20, 30), masks)
    integrals = region_fractions(truth[None, None], masks)[0, 0]
    np.testing.assert_allclose(integrals, [0.1, 0.3, 0.01, 0.5])
    res = averaging_amplification(frac, integrals, 10_000, N_GEN)
    # pooled over 4 regions: relative sd ≈ sqrt(2/(S − 1)/4) per run, 20 runs averaged
    assert res.pooled_model.mean() == pytest.approx(N_MODEL, rel=0.08)
    assert res.pooled_true.mean() == pytest.approx(N_MODEL, rel=0.08)
    assert np.median(res.n_equiv_model) == pytest.approx(N_MODEL, rel=0.15)
    assert res.amplification_model.mean() == pytest.approx(0.5, rel=0.08)
    # centred on the truth: no misspecification beyond noise (sd of σ²_mis ≈ σ²/√S per run)
    assert abs(res.misspecification_var.mean(axis=0)).max() < 3 * 0.25 / N_MODEL / np.sqrt(20 * 30)


def test_misspecified_model_has_bias_squared_and_lower_true_amplification():
    rng = np.random.default_rng(1)
    truth = np.full(SHAPE, 0.01)
    shifted = truth.copy()
    shifted[0] *= 1.2  # the model puts 12 % instead of 10 % into the first row
    shifted /= shifted.sum()
    masks = _masks()[:1]
    frac = region_fractions(_draws(rng, shifted, 10, 30), masks)
    res = averaging_amplification(frac, np.array([0.1]), 10_000, N_GEN)
    bias2 = (shifted[0].sum() - 0.1) ** 2
    assert res.misspecification_var.mean() == pytest.approx(bias2, rel=0.1)
    assert np.all(res.pooled_true < 0.5 * res.pooled_model)
    assert res.pooled_model.mean() == pytest.approx(N_MODEL, rel=0.15)


def _ring_radius(key, size):
    """The ring's radial law r = 4 + Gamma(2, rate 2) (numpy, seeded by the key: fast)."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
    return 4.0 + rng.gamma(2.0, 0.5, size)


def test_ks_null_median_is_the_kolmogorov_median():
    c, null = ks_null_median(jax.random.key(0), _ring_radius, 3000, 2000, num_pseudo=300)
    assert c == pytest.approx(scipy.stats.kstwobign.ppf(0.5), rel=0.06)
    assert null.shape == (300,)


def test_differential_amplification_of_a_truth_sample_is_its_size():
    """Model = the empirical law of N truth events; generated = n points resampled from it."""
    rng = np.random.default_rng(2)
    n_model, n_gen, n_ref, reps = 2000, 6000, 100_000, 60  # one large reference for all
    keys = jax.random.split(jax.random.key(1), 2 * reps)
    gen = np.stack([rng.choice(_ring_radius(keys[i], n_model), n_gen) for i in range(reps)])
    ref = _ring_radius(keys[reps], n_ref)
    res = ks_amplification(jax.random.key(2), gen, ref, _ring_radius, num_train=1000,
                           num_pseudo=100)
    assert res.n_equiv.shape == (reps,) and res.num_generated == n_gen
    # median-unbiased: the median over repeats is N (its sd here ≈ 15 %)
    assert np.median(res.n_equiv) == pytest.approx(n_model, rel=0.35)
    assert np.median(res.amplification) == pytest.approx(2.0, rel=0.35)
    # generated = fresh truth samples: indistinguishable (inf) about half of the time
    truth_gen = np.stack([_ring_radius(k, n_gen) for k in keys[reps + 1: reps + 41]])
    res_truth = ks_amplification(jax.random.key(2), truth_gen, ref, _ring_radius, num_pseudo=100)
    assert 0.25 < np.mean(np.isinf(res_truth.n_equiv)) < 0.75
    assert np.all(res.p_value < res_truth.p_value.max() + 1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="masks"):
        region_fractions(np.zeros((1, 2) + SHAPE), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="truth integrals"):
        averaging_amplification(np.zeros((1, 3, 1)), np.array([1.0]), 10, 100)


def test_vectorised_ks_statistics_equal_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 300)), rng.normal(0.2, 1.1, size=(5, 170))
    b[0, :10] = a[0, :10]  # ties between the samples
    a[1, :20] = np.round(a[1, :20], 1)  # ties within a sample
    want = [scipy.stats.ks_2samp(x, y).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(ks_statistics(a, b), want, rtol=0, atol=1e-12)
