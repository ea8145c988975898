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
from bayesiamp_jax.evaluation.amplification import jackknife_equivalent_events, jackknife_error

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


# ----------------------------------------------------- generation-noise-corrected estimator

MODEL_N, GEN_SHAPE, GEN_DRAWS = 20_000, (10, 10), 40


@pytest.fixture(scope="module")
def model_spread():
    """Known model spread: draw s has cell probabilities p_s ~ Dirichlet(MODEL_N · t) around
    the truth t, so Σ_j μ_j²/σ²_j = (MODEL_N + 1) · n_Q/(n_Q − 1) exactly (σ² = t(1−t)/(N+1))."""
    rng = np.random.default_rng(1)
    n_q = GEN_SHAPE[0] * GEN_SHAPE[1]
    truth = np.full(GEN_SHAPE, 1.0 / n_q)
    probs = rng.dirichlet(MODEL_N * truth.reshape(-1), size=(RUNS, GEN_DRAWS))
    return rng, truth, probs, (MODEL_N + 1) * n_q / (n_q - 1)


def _generated(rng, probs, n_gen):
    """Multinomial generation noise of n_gen points on top of each draw's p_s."""
    counts = np.stack([[rng.multinomial(n_gen, p) for p in run] for run in probs])
    return counts.reshape(probs.shape[:2] + GEN_SHAPE) / n_gen


@pytest.mark.parametrize("per_cell", [100, 400, 3000])
def test_corrected_n_eq_recovers_model_spread_for_every_num_generated(model_spread, per_cell):
    rng, truth, probs, expected = model_spread
    n_gen = per_cell * truth.size  # model N per cell = 200: down to 0.5 × generation noise
    frac = _generated(rng, probs, n_gen)
    corrected = equivalent_events(frac, truth, num_generated=n_gen)
    # per-run std of N_eq ≈ N_eq · sqrt(2/(S·n_Q)) · (1 + N_cell/per_cell); 5 runs averaged
    tol = 4 * expected * np.sqrt(2.0 / (GEN_DRAWS * truth.size)) * (1 + 200 / per_cell) / 2.2
    assert abs(corrected.mean() - expected) < tol
    # the paper's estimator counts generation noise: μ²/(σ² + μ(1−μ)/n) per cell, inflated
    # by its own finite-S bias S/(S − 3)
    paper = equivalent_events(frac, truth)
    cell = 1.0 / truth.size
    capped = truth.size * cell**2 / (cell * (1 - cell) / (MODEL_N + 1) + cell * (1 - cell) / n_gen)
    assert paper.mean() == pytest.approx(capped * GEN_DRAWS / (GEN_DRAWS - 3), rel=0.06)


def test_uncorrected_n_eq_falls_as_num_generated_shrinks(model_spread):
    rng, truth, probs, expected = model_spread
    paper, corrected = [], []
    for per_cell in (3000, 400, 100):
        frac = _generated(rng, probs, per_cell * truth.size)
        paper.append(equivalent_events(frac, truth).mean())
        corrected.append(equivalent_events(frac, truth, per_cell * truth.size).mean())
    assert paper[0] > paper[1] > paper[2] and paper[2] < 0.5 * expected
    assert np.ptp(corrected) < 0.1 * expected


def test_corrected_without_generation_noise_is_gaussian_unbiased():
    """Gaussian draws with known μ, σ (no generation noise, n → ∞): the corrected estimator is
    the exactly unbiased (S−3)/(S−1) f̄²/v − 1/S; the paper's is S/(S−3) μ²/σ² + 1/(S−3)."""
    rng = np.random.default_rng(2)
    s, mu, sigma = 10, 0.01, 0.002
    truth = np.full((30, 30), mu)
    frac = mu + sigma * rng.standard_normal((100, s, 30, 30))
    per_cell = (mu / sigma) ** 2
    corrected = equivalent_events(frac, truth, num_generated=10**12) / truth.size
    paper = equivalent_events(frac, truth) / truth.size
    assert corrected.mean() == pytest.approx(per_cell, rel=0.01)
    assert paper.mean() == pytest.approx(s / (s - 3) * per_cell + 1 / (s - 3), rel=0.01)


def test_amplification_corrected_reports_unresolved_and_jackknife_error(model_spread):
    rng, truth, probs, expected = model_spread
    n_gen = 50 * truth.size  # generation noise 4× the model spread: some cells unresolved
    frac = _generated(rng, probs, n_gen)
    amp = amplification(frac, truth, N_TRAIN, num_generated=n_gen)
    assert amp.num_generated == n_gen
    assert np.all(amp.num_unresolved > 0) and np.all(amp.num_unresolved < truth.size)
    assert np.all((amp.model_share > 0.1) & (amp.model_share < 0.35))  # σ²/(σ² + 4σ²) = 0.2
    assert amp.n_eq.mean() == pytest.approx(expected, rel=0.1)
    # the jackknife error matches the spread of N_eq over the 5 independent runs (the std of
    # a 5-sample std is ~35 %)
    assert 0.4 < amp.n_eq_err.mean() / amp.n_eq.std(ddof=1) < 2.5
    plain = amplification(frac, truth, N_TRAIN)
    assert plain.num_generated is None and plain.n_eq_err is None
    np.testing.assert_array_equal(plain.n_eq, equivalent_events(frac, truth))


def test_jackknife_leave_one_out_matches_direct_deletion(model_spread):
    rng, truth, probs, _ = model_spread
    frac = _generated(rng, probs[:2, :8], 400 * truth.size)
    loo = jackknife_equivalent_events(frac, truth, 400 * truth.size)
    direct = [equivalent_events(np.delete(frac, i, axis=1), truth, 400 * truth.size)
              for i in range(8)]
    np.testing.assert_allclose(loo, direct, rtol=1e-9)
    y = np.array([1.0, 2.0, 4.0])  # jackknife of the mean = standard error of the mean
    loo_means = (y.sum() - y) / 2
    assert jackknife_error(loo_means) == pytest.approx(y.std(ddof=1) / np.sqrt(3))


def test_corrected_bad_input(model_spread):
    _, truth, probs, _ = model_spread
    frac = probs.reshape(probs.shape[:2] + GEN_SHAPE)
    with pytest.raises(ValueError, match="num_generated"):
        equivalent_events(frac, truth, num_generated=1)
    with pytest.raises(ValueError, match="5 draws"):
        equivalent_events(frac[:, :4], truth, num_generated=100)
