"""N_eq, amplification, power-law fit and JSD closure against multinomial closed forms."""

import jax
import numpy as np
import pytest

from bayesiamp_jax.evaluation import (
    NOMINAL_LEVELS,
    amplification,
    calibrate,
    closure,
    equivalent_events,
    fit_power_law,
    jensen_shannon,
)

RUNS, DRAWS, N, SHAPE = 5, 50, 80_000, (20, 20)
N_TRAIN = 10_000


def _multinomial_fractions(rng, n, p, size):
    return rng.multinomial(n, p.reshape(-1), size=size).reshape(size + p.shape) / n


@pytest.fixture(scope="module")
def bootstrap():
    """Per run a 'trained model' h0 = histogram of N truth events; its S draws are histograms of
    N independent events from h0 (parametric bootstrap): the truth is distributed like a draw
    around h0, so the ensemble is calibrated and worth about N truth events."""
    rng = np.random.default_rng(0)
    truth = np.full(SHAPE, 1.0 / (SHAPE[0] * SHAPE[1]))
    h0 = _multinomial_fractions(rng, N, truth, (RUNS,))
    draws = np.stack([_multinomial_fractions(rng, N, h, (DRAWS,)) for h in h0])
    return draws, truth, h0


def _expected_n_eq(h, n, s):
    # E[μ²/σ̂²] with σ̂² the ddof-0 variance of S normal draws: E[1/σ̂²] = S/((S−3) σ²),
    # E[μ²] = h² + σ²/S, σ² = h(1−h)/n (binomial)
    var = h * (1 - h) / n
    return s / (s - 3) * np.sum((h**2 + var / s) / var, axis=(-2, -1))


def test_bootstrap_ensemble_is_worth_n_events(bootstrap):
    draws, truth, h0 = bootstrap
    amp = amplification(draws, truth, N_TRAIN)
    expected = _expected_n_eq(h0, N, DRAWS)
    # relative sd per run ≈ sqrt(2/(S−5)/n_Q) = 1.05 %: 5 % is ~5 sd
    np.testing.assert_allclose(amp.n_eq, expected, rtol=0.05)
    np.testing.assert_allclose(amp.n_eq.mean(), expected.mean(), rtol=0.025)
    np.testing.assert_allclose(amp.amplification, amp.n_eq / N_TRAIN)
    # expected ≈ N · n_Q/(n_Q − 1) · S/(S − 3): the estimator's known upward bias
    np.testing.assert_allclose(expected, N * 400 / 399 * DRAWS / (DRAWS - 3), rtol=0.01)
    np.testing.assert_allclose(amp.cell_amplification.mean(axis=(1, 2)), amp.amplification)


def test_bootstrap_ensemble_is_calibrated(bootstrap):
    draws, truth, _ = bootstrap
    cal = calibrate(draws, truth)
    # 2000 (run, cell) indicators per level; finite S lowers coverage by O(1/S)
    assert cal.mad < 0.03
    assert abs(cal.deviation_r.mean()) < 0.03


def test_draws_centred_on_truth_over_cover_but_count_n(bootstrap):
    # the literal ensemble "draws = histograms of N truth events" puts the truth at the centre
    # of every interval: coverage far above nominal, while N_eq still ≈ N
    _, truth, _ = bootstrap
    rng = np.random.default_rng(1)
    draws = _multinomial_fractions(rng, N, truth, (2, DRAWS))
    cal = calibrate(draws, truth)
    mid = (NOMINAL_LEVELS > 0.1) & (NOMINAL_LEVELS < 0.9)
    assert np.all(cal.curve[mid] > NOMINAL_LEVELS[mid] + 0.08)
    expected = N * 400 / 399 * DRAWS / (DRAWS - 3)
    np.testing.assert_allclose(equivalent_events(draws, truth), expected, rtol=0.06)


def test_zero_spread_cells():
    x = np.zeros((1, 3, 1, 2))
    x[0, :, 0, 1] = [0.2, 0.4, 0.6]
    n_eq = equivalent_events(x, np.full((1, 2), 0.5))  # empty cell contributes 0
    np.testing.assert_allclose(n_eq, [0.4**2 / np.var([0.2, 0.4, 0.6])])
    x[0, :, 0, 0] = 0.5
    assert np.isinf(equivalent_events(x, np.full((1, 2), 0.5))[0])


def test_identical_draws_have_zero_spread_despite_rounding():
    # 20 equal draws of 0.3: their float mean is not exactly 0.3, so a plain variance is
    # ~1e-33 and N_eq ~1e32; identical draws must count as zero spread (N_eq = inf).
    x = np.full((1, 20, 1, 2), 0.3)
    x[0, :, 0, 1] = np.linspace(0.65, 0.75, 20)
    n_eq = equivalent_events(x, np.full((1, 2), 0.5))
    assert np.isinf(n_eq[0])
    result = closure(jax.random.key(0), x, np.full((1, 2), 0.5), n_eq, repeats=3)
    assert result.sample_size[0] == 0 and np.all(np.isnan(result.jsd_truth))


def test_power_law_fit_recovers_parameters_and_errors():
    rng = np.random.default_rng(3)
    n_cells = np.array([2, 3, 5, 15, 20, 30, 40, 50, 70, 100, 200]) ** 2.0
    a, b = 0.01, 0.98
    pulls_a, pulls_b = [], []
    for _ in range(200):
        y = a * n_cells**b * (1 + 0.05 * rng.standard_normal((10, n_cells.size)))
        fit = fit_power_law(n_cells, y, select=8)
        pulls_a.append((fit.a - a) / fit.a_err)
        pulls_b.append((fit.b - b) / fit.b_err)
    np.testing.assert_array_equal(fit.n_cells, n_cells[-8:])
    for p in (np.array(pulls_a), np.array(pulls_b)):
        assert abs(p.mean()) < 0.3 and 0.8 < p.std() < 1.35  # errors are honest
    exact = fit_power_law(n_cells, a * n_cells**b, select=None)
    np.testing.assert_allclose([exact.a, exact.b], [a, b], rtol=1e-6)
    chosen = fit_power_law(n_cells, a * n_cells**b, select=[400.0, 900.0, 1600.0])
    np.testing.assert_array_equal(chosen.n_cells, [400.0, 900.0, 1600.0])
    with pytest.raises(ValueError, match="not in n_cells"):
        fit_power_law(n_cells, a * n_cells**b, select=[7.0, 400.0])
    with pytest.raises(ValueError, match="at least 2"):
        fit_power_law(n_cells, a * n_cells**b, select=1)


def test_jensen_shannon_known_values():
    np.testing.assert_allclose(jensen_shannon([1.0, 0.0], [0.0, 1.0]), np.log(2.0))
    np.testing.assert_allclose(jensen_shannon([0.3, 0.7], [0.3, 0.7]), 0.0, atol=1e-15)
    p = np.full(50, 0.02)
    q = p * (1 + 0.01 * np.sin(np.arange(50)))
    q /= q.sum()
    chi2 = np.sum((p - q) ** 2 / p)
    np.testing.assert_allclose(jensen_shannon(p, q), chi2 / 8, rtol=0.02)


def test_closure_truth_samples_match_chi2_expectation(bootstrap):
    draws, truth, _ = bootstrap
    amp = amplification(draws, truth, N_TRAIN)
    clo = closure(jax.random.key(0), draws, truth, amp.n_eq, repeats=200)
    # JSD ≈ χ²/8 and E[χ²] = (n_Q − 1)/n for a multinomial sample of size n
    expected = (truth.size - 1) / (8 * clo.sample_size)
    np.testing.assert_allclose(clo.jsd_truth.mean(axis=1), expected, rtol=0.03)
    # the posterior mean ≈ h0, itself a truth sample of size N ≈ N_eq: closure holds (χ² with
    # 399 dof has 7 % relative sd per run)
    np.testing.assert_allclose(clo.jsd_model.mean(), expected.mean(), rtol=0.15)
    again = closure(jax.random.key(0), draws, truth, amp.n_eq, repeats=200)
    np.testing.assert_array_equal(again.jsd_truth, clo.jsd_truth)


def test_bad_input_raises(bootstrap):
    draws, truth, _ = bootstrap
    with pytest.raises(ValueError, match="num_train"):
        amplification(draws, truth, 0)
    with pytest.raises(ValueError, match="at least 2 draws"):
        amplification(draws[:, :1], truth, N_TRAIN)
    with pytest.raises(ValueError, match="must have shape"):
        amplification(draws, truth[:-1], N_TRAIN)
    with pytest.raises(ValueError, match="n_eq must have shape"):
        closure(jax.random.key(0), draws, truth, [1.0, 2.0])
