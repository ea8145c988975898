"""Held-out calibration check against toys whose calibration is known by construction.

The toy (independent of the code under test): truth p over K cells, a posterior of R runs ×
S = 20 draws whose centre scatters about p with the covariance of a multinomial histogram of
N_train events, Σ_train = (diag p − p pᵀ)/N_train, and whose draws scatter about the centre with
spread² · Σ_train: spread 1 is calibrated (the truth is distributed like one more draw), spread
0.5 over-confident (true recalibration s = 2), spread 2 under-confident (s = 0.5). The held-out
is a multinomial sample of N_ho events from p. Generation noise (multinomial-shaped, n points)
is added once per repetition to every draw and run (same noise) or per draw about the draw's
own fractions (fresh).
"""

import jax
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax.evaluation import holdout as ho
from bayesiamp_jax.evaluation.binning import product_binning
from bayesiamp_jax.evaluation.calibration import mad_floor
from bayesiamp_jax.regression.calibration import pull_scale

S, N_TRAIN, N_HO, REPS, ALPHA = 20, 10_000, 10_000, 200, 0.05
# 3 binomial standard errors of a rate α over REPS repetitions
RATE_TOL = 3 * np.sqrt(ALPHA * (1 - ALPHA) / REPS)


def _truth(k):
    x = np.linspace(0.5, 1.5, k)
    return x / x.sum()


def _multinomial_gauss(rng, p, n, shape):
    x = np.sqrt(p / n) * rng.standard_normal(shape + p.shape)
    return x - p * x.sum(-1, keepdims=True)       # covariance (diag p − p pᵀ)/n


def toy(seed, k, reps=REPS, runs=1, spread=1.0, n_ho=N_HO, generated=None, fresh=False):
    """fractions (reps, runs, S, k), held-out counts (reps, k)."""
    rng = np.random.default_rng(seed)
    p = _truth(k)
    centre = p + _multinomial_gauss(rng, p, N_TRAIN, (reps, runs, 1))
    f = centre + spread * _multinomial_gauss(rng, p, N_TRAIN, (reps, runs, S))
    if fresh:  # binomial noise about each draw's own fractions
        x = np.sqrt(np.clip(f, 0, 1) / generated) * rng.standard_normal(f.shape)
        f = f + x - np.clip(f, 0, 1) * x.sum(-1, keepdims=True)
    elif generated is not None:  # one noise for every draw and run
        f = f + _multinomial_gauss(rng, p, generated, (reps, 1, 1))
    return f, rng.multinomial(n_ho, p, size=reps)


def rates(test):
    return {v: float(np.mean(test.verdict == v)) for v in ho.VERDICTS}


def stats(f, c, n_ho=N_HO, generated=None, fresh=False):
    return ho.holdout_statistics(f, c, n_ho, generated, fresh)


def take(st, n):
    """The first n repetitions of batched statistics."""
    return ho.HoldoutStatistics(*(a[:n] if isinstance(a, np.ndarray) and a.ndim >= 1
                                  and a.shape[0] == REPS else a for a in st))


@pytest.fixture(scope="module")
def calibrated():
    return {(k, r): stats(*toy(k + r, k, runs=r)) for k, r in
            ((25, 1), (25, 3), (100, 1), (2500, 1))}


@pytest.fixture(scope="module")
def over_2500():
    return stats(*toy(2507, 2500, spread=0.5))


# ------------------------------------------------------------------------- (a) calibrated


@pytest.mark.parametrize("cells,runs", [(25, 1), (25, 3), (100, 1), (2500, 1)])
def test_false_alarm_rate_is_alpha(calibrated, cells, runs):
    st = calibrated[(cells, runs)]
    r = rates(ho.width_test(st, ALPHA))
    assert abs(1 - r["consistent"] - ALPHA) < RATE_TOL, r
    for tail in ("over-confident", "under-confident"):     # both tails ≈ α/2
        assert r[tail] < ALPHA / 2 + RATE_TOL, r


def test_naive_chi2_would_flag_calibrated_fine_grids(calibrated):
    # χ²(ndf) ignores the finite-S inflation of pull², up to (S − 1)/(S − 3) = 1.118 when the
    # held-out noise is small (N_ho = 10⁶ ≫ N_train): at 2,500 cells it calls the calibrated
    # toy "over-confident" almost always; the finite-S null keeps the rate at α
    test = ho.width_test(stats(*toy(3, 2500, n_ho=10**6), n_ho=10**6), ALPHA)
    naive = scipy.stats.chi2.sf(test.chi2, test.ndf)
    assert np.mean(naive < ALPHA / 2) > 0.9
    assert abs(np.mean(test.verdict != "consistent") - ALPHA) < RATE_TOL
    np.testing.assert_allclose(np.mean(test.width), 1.0, atol=0.01)
    np.testing.assert_allclose(np.mean(ho.width_test(calibrated[(2500, 1)]).width), 1.0,
                               atol=0.01)


def test_bootstrap_null_agrees_with_the_closed_form(calibrated):
    st = calibrated[(25, 3)]
    sub = take(st, 40)
    gamma = ho.width_test(sub, ALPHA)
    boot = ho.width_test(sub, ALPHA, key=jax.random.key(3), null_repeats=2000)
    # Monte Carlo error of a p-value from 2,000 repeats <= 0.011; the gamma shape is approximate
    np.testing.assert_allclose(boot.p_upper, gamma.p_upper, atol=0.04)


# -------------------------------------------------------------- (b), (c) mis-calibrated


@pytest.mark.parametrize("cells,runs,n_ho", [(25, 3, 100_000), (100, 3, N_HO),
                                             (2500, 1, N_HO)])
def test_over_confident_is_flagged(over_2500, cells, runs, n_ho):
    st = over_2500 if cells == 2500 else stats(
        *toy(7 + cells, cells, runs=runs, spread=0.5, n_ho=n_ho), n_ho=n_ho)
    r = rates(ho.width_test(st, ALPHA))
    assert r["over-confident"] >= 0.95, r


def test_few_cells_have_little_power_at_equal_sizes():
    # 5 × 5 with N_ho = N_train: 75 pulls of which half the variance is held-out noise, so a
    # 2× over-confidence is found only about half the time (documented; the power test above
    # uses N_ho = 10⁵ for 5 × 5)
    r = rates(ho.width_test(stats(*toy(11, 25, runs=3, spread=0.5)), ALPHA))
    assert 0.3 < r["over-confident"] < 0.9, r


@pytest.mark.parametrize("cells,runs", [(100, 3), (2500, 1)])
def test_under_confident_is_flagged(cells, runs):
    r = rates(ho.width_test(stats(*toy(13 + cells, cells, runs=runs, spread=2.0)), ALPHA))
    assert r["under-confident"] >= 0.95, r


@pytest.mark.parametrize("cells,runs,spread,reps", [(100, 3, 0.5, REPS), (100, 3, 2.0, REPS),
                                                    (2500, 1, 0.5, 100)])
def test_scale_and_its_error(over_2500, cells, runs, spread, reps):
    st = take(over_2500, reps) if cells == 2500 else stats(
        *toy(17 + cells, cells, reps=reps, runs=runs, spread=spread))
    fit = ho.fit_scale(st)
    truth = 1.0 / spread
    z = (fit.scale - truth) / fit.scale_err
    # unbiased within the error of the mean over repetitions, error calibrated
    assert abs(np.mean(fit.scale) - truth) < 3 * np.std(fit.scale) / np.sqrt(reps)
    assert abs(np.mean(z)) < 0.3
    assert 0.8 < np.std(z) < 1.3, np.std(z)


# --------------------------------------------------------------------------- (d) modes


@pytest.mark.parametrize("fresh,n", [(False, 100_000), (True, 20_000)])
def test_generation_noise_modes(fresh, n):
    # same noise: one shared noise of 1,000 points per cell (10 % of the model variance);
    # fresh: 200 points per cell and draw, so the model is 2/3 of a draw's spread
    st = stats(*toy(19, 100, runs=2, generated=n, fresh=fresh), generated=n, fresh=fresh)
    test = ho.width_test(st, ALPHA)
    r = rates(test)
    assert abs(1 - r["consistent"] - ALPHA) < RATE_TOL, r
    np.testing.assert_allclose(np.mean(test.width), 1.0, atol=0.02)
    if fresh:  # pooled model share of the draws' spread: m/(m + p/n) = 2/3
        np.testing.assert_allclose(np.mean(st.share), 2 / 3, atol=0.02)
    over = stats(*toy(23, 100, runs=2, spread=0.5, generated=n, fresh=fresh), generated=n,
                 fresh=fresh)
    assert rates(ho.width_test(over, ALPHA))["over-confident"] >= 0.95
    fit = ho.fit_scale(over)
    assert abs(np.mean(fit.scale) - 2.0) < 3 * np.std(fit.scale) / np.sqrt(REPS)


def test_ignoring_the_shared_generation_noise_is_flagged():
    # same-noise histograms analysed without num_generated: the common noise is missing from
    # σ², so the pulls are too wide (over-confident) — the test can see it
    n = 5_000
    f, c = toy(29, 100, runs=2, generated=n)
    assert rates(ho.width_test(stats(f, c), ALPHA))["over-confident"] > 0.5


# ------------------------------------------------------------------ closed-form pieces


def test_finite_s_moments_match_the_inverse_chi2():
    # λ = 1 (no noise): c = 1/u, u ~ χ²_{S−1}/(S − 1): E 1/u = (S − 1)/(S − 3),
    # E 1/u² = (S − 1)²/((S − 3)(S − 5))
    ec, ec2 = ho._expect(S, np.ones(1), np.ones((1, 1)))
    np.testing.assert_allclose(ec, (S - 1) / (S - 3), rtol=1e-3)
    np.testing.assert_allclose(ec2, (S - 1) ** 2 / ((S - 3) * (S - 5)), rtol=5e-3)
    ec0, ec20 = ho._expect(S, np.ones(1), np.zeros((1, 1)))
    np.testing.assert_allclose([ec0, ec20], 1.0)


def test_scale_without_noise_is_the_corrected_pull_scale():
    # e → 0 (N_ho huge) and no sum-to-one constraint: Σ d²/((t + 1/S) m) = K (S − 1)/(S − 3),
    # i.e. t = mean(d²/m) (S − 3)/(S − 1) − 1/S with mean(d²/m) = pull_scale(d, √m)²
    rng = np.random.default_rng(5)
    k, n_ho = 400, 10**15
    f = 0.5 / k + 1e-4 / k * rng.standard_normal((1, S, k))
    counts = np.round(n_ho * (0.5 / k + 3e-5 / k * rng.standard_normal(k)))
    st = ho.holdout_statistics(f, counts, n_ho)
    assert not st.constrained.any()
    fit = ho.fit_scale(st)
    d, m = st.difference[0], st.model_var[0]
    expected = pull_scale(d, np.sqrt(m)) ** 2 * (S - 3) / (S - 1) - 1 / S
    np.testing.assert_allclose(fit.scale**2, expected, rtol=2e-3)


# ---------------------------------------------------------------------- holdout_check


@pytest.fixture(scope="module")
def checks():
    out = {}
    for spread in (1.0, 0.5):
        f, c = toy(31, 100, reps=1, runs=3, spread=spread)
        out[spread] = ho.holdout_check(f[0].reshape(3, S, 10, 10), c[0].reshape(10, 10))
    return out


def test_check_fields_and_recalibrated_coverage(checks):
    floor = mad_floor(S, 3, 100, num_repeats=5)
    ok, over = checks[1.0], checks[0.5]
    assert ok.pulls.shape == (3, 10, 10) and ok.ndf == 3 * 99 and ok.num_holdout == N_HO
    np.testing.assert_allclose(ok.chi2, np.sum(ok.pulls**2))
    assert ok.verdict == "consistent" and over.verdict == "over-confident"
    assert ok.coverage.mad < floor.mean + 5 * floor.std + 0.02
    # over-confident draws under-cover the held-out; widened by s they are calibrated
    assert over.coverage.mad > 0.05
    assert over.recalibrated.mad < floor.mean + 5 * floor.std + 0.02
    assert abs(over.scale - 2.0) < 3 * over.scale_err
    assert over.null == "gamma"


def test_visible_and_reach():
    # cells 0..49: model variance 100× the held-out's binomial variance; 50..99: 1/100 of it
    rng = np.random.default_rng(8)
    k, n_ho = 100, 10_000
    p = np.full(k, 1.0 / k)
    sd = np.sqrt(p * (1 - p) / n_ho) * np.where(np.arange(k) < 50, 10.0, 0.1)
    z = rng.standard_normal((1, S, k))
    z = (z - z.mean(1, keepdims=True)) / z.std(1, ddof=1, keepdims=True)
    f = p + sd * z
    counts = np.round(p * n_ho)
    chk = ho.holdout_check(f.reshape(1, S, 10, 10), counts.reshape(10, 10))
    assert chk.visible == 0.5
    assert chk.reach == n_ho
    same = ho.holdout_check(f.reshape(1, S, 10, 10), counts.reshape(10, 10),
                            num_generated=40_000)
    assert same.reach == pytest.approx(1 / (1 / n_ho + 1 / 40_000))
    fresh = ho.holdout_check(f.reshape(1, S, 10, 10), counts.reshape(10, 10),
                             num_generated=40_000, fresh=True)
    assert fresh.reach == pytest.approx(1 / (1 / n_ho + 1 / (40_000 * S)))


def test_bootstrap_check_and_higher_dimensional_cells():
    f, c = toy(37, 60, reps=1, runs=2)
    chk = ho.holdout_check(f[0].reshape(2, S, 3, 4, 5), c[0].reshape(3, 4, 5),
                           key=jax.random.key(0), null_repeats=200)
    assert chk.pulls.shape == (2, 3, 4, 5) and chk.null == "bootstrap"
    assert chk.coverage.coverage.shape[1:] == (3, 20)
    assert 0 < chk.p_value <= 1


def test_a_certain_zero_contradicted_by_events():
    # a cell every draw leaves empty (zero mean, zero spread, no generation noise) where the
    # held-out has events: an infinite pull, "over-confident", no finite s can repair it
    f, c = toy(41, 16, reps=1, runs=2)
    f = f[0].copy()
    f[:, :, 0] = 0.0
    f /= f.sum(-1, keepdims=True)
    assert c[0, 0] > 0
    chk = ho.holdout_check(f.reshape(2, S, 4, 4), c[0].reshape(4, 4))
    assert np.isinf(chk.pulls[:, 0, 0]).all() and np.isinf(chk.chi2)
    assert chk.verdict == "over-confident" and chk.p_value == 0.0
    assert chk.scale == np.inf and np.isnan(chk.scale_err)


def test_select_knob(checks):
    ok, over = checks[1.0], checks[0.5]
    chosen = {"k=1": over, "k=10": ok._replace(scale=1.3), "k=50": ok._replace(scale=0.9)}
    assert ho.select_knob(chosen) == "k=50"
    none_consistent = {"a": over._replace(scale=3.0), "b": over._replace(scale=0.6)}
    assert ho.select_knob(none_consistent) == "b"
    with pytest.raises(ValueError, match="checks"):
        ho.select_knob({})
    with pytest.raises(ValueError, match=r"checks\['a'\]"):
        ho.select_knob({"a": 1.0})


def test_holdout_counts_match_numpy():
    rng = np.random.default_rng(2)
    edges = (np.linspace(0, 1, 5), np.linspace(-1, 1, 4))
    binning = product_binning(edges, np.full((4, 3), 1 / 12), "toy")
    values = np.stack([rng.uniform(0, 1, 1000), rng.uniform(-1.2, 1.2, 1000)], axis=1)
    expected, _, _ = np.histogram2d(values[:, 0], values[:, 1], bins=edges)
    np.testing.assert_array_equal(ho.holdout_counts(values, binning), expected)
    with pytest.raises(ValueError, match="values"):
        ho.holdout_counts(values[:, :1], binning)


# ----------------------------------------------------------------------- (e) bad inputs


@pytest.mark.parametrize("kwargs,match", [
    ({"fractions": np.zeros((1, S, 3, 3))}, "fractions"),
    ({"fractions": np.full((1, 4, 4, 4), 1 / 16)}, "draws"),
    ({"fractions": np.full((1, S, 4, 4), np.nan)}, "fractions"),
    ({"holdout_counts": -np.ones((4, 4))}, "holdout_counts"),
    ({"holdout_counts": np.full((4, 4), 0.5)}, "holdout_counts"),
    ({"holdout_counts": np.zeros((4, 4))}, "holdout_counts"),
    ({"num_holdout": 3}, "num_holdout"),
    ({"num_generated": 1}, "num_generated"),
    ({"fresh": True}, "num_generated"),
    ({"fresh": "yes"}, "fresh"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.5}, "alpha"),
    ({"levels": [2.0]}, "levels"),
    ({"key": jax.random.key(0), "null_repeats": 0}, "null_repeats"),
])
def test_bad_inputs(kwargs, match):
    rng = np.random.default_rng(0)
    args = {"fractions": 1 / 16 + 1e-3 * rng.standard_normal((1, S, 4, 4)),
            "holdout_counts": np.full((4, 4), 10)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as err:
        ho.holdout_check(args.pop("fractions"), args.pop("holdout_counts"), **args)
    assert "\n" not in str(err.value)
