"""Coverage, MAD and pulls against hand computations and ensembles with known calibration."""

import numpy as np
import pytest

from bayesiamp_jax.evaluation import (
    NOMINAL_LEVELS,
    calibrate,
    central_interval,
    interval_coverage,
    pulls,
)


def test_nominal_levels_are_the_papers():
    assert NOMINAL_LEVELS.shape == (50,)
    np.testing.assert_allclose(NOMINAL_LEVELS[[0, 1, 49]], [1 / 99, 3 / 99, 1.0])


def test_tiny_example_matches_hand_computation():
    # S = 5 draws 0.1..0.5: linear quantile Q(q) = 0.1 + 0.4 q, so the central interval at level
    # c is [0.3 - 0.2 c, 0.3 + 0.2 c] (by hand). Truth 0.15 is inside iff c >= 0.75, i.e.
    # (2i+1)/99 >= 0.75 <=> i >= 37: 13 of 50 levels. Truth 0.5 is inside only at c = 1
    # (inclusive upper bound = max). Truth 0.3 (the median) is inside at every level.
    draws = np.array([0.3, 0.1, 0.5, 0.2, 0.4])[:, None] * np.ones((1, 3))
    truth = np.array([0.15, 0.5, 0.3])
    inside = interval_coverage(truth, *central_interval(draws))
    np.testing.assert_array_equal(inside[:, 0], np.arange(50) >= 37)
    np.testing.assert_array_equal(inside[:, 1], np.arange(50) == 49)
    assert inside[:, 2].all()
    # the same numbers through calibrate: one run, cells (1, 3)
    cal = calibrate(draws[None, :, None, :], truth[None, :])
    expected = (inside.sum(axis=1) / 3.0)
    np.testing.assert_allclose(cal.curve, expected)
    np.testing.assert_allclose(cal.mad, np.mean(np.abs(expected - NOMINAL_LEVELS)))


def _gaussian_ensemble(rng, runs, draws, shape, spread):
    """Truth-exchangeable ensemble: centre m = p + σ ε₀, draws m + spread · σ ε_s.

    With spread = 1 the truth is distributed like one more draw (calibrated); spread > 1 is
    over-dispersed (over-covers), spread < 1 under-dispersed (under-covers).
    """
    truth = rng.uniform(0.5, 1.5, shape)
    truth /= truth.sum()
    sigma = 0.1 * truth
    centre = truth + sigma * rng.standard_normal((runs, 1) + shape)
    x = centre + spread * sigma * rng.standard_normal((runs, draws) + shape)
    return x, truth


@pytest.fixture(scope="module")
def ensembles():
    rng = np.random.default_rng(0)
    return {s: calibrate(*_gaussian_ensemble(rng, 3, 50, (20, 20), s)) for s in (0.5, 1.0, 2.0)}


def test_calibrated_ensemble_follows_diagonal(ensembles):
    cal = ensembles[1.0]
    # 1200 independent (run, cell) indicators per level: binomial sd <= 0.015; finite-S
    # interpolation shifts the curve by O(1/S) = 0.02 at most
    assert cal.mad < 0.03
    assert np.max(np.abs(cal.curve - NOMINAL_LEVELS)) < 0.07


def test_dispersion_moves_curve_to_the_correct_side(ensembles):
    lv = NOMINAL_LEVELS
    mid = (lv > 0.2) & (lv < 0.9)
    # spread 2 and 0.5: expected coverage 2Φ(k Φ⁻¹((1+c)/2)) − 1 is far from c in the middle
    assert np.all(ensembles[2.0].curve[mid] > lv[mid] + 0.05)
    assert np.all(ensembles[0.5].curve[mid] < lv[mid] - 0.05)
    assert np.all(ensembles[2.0].deviation_r > 0) and np.all(ensembles[0.5].deviation_r < 0)


def test_dispersion_matches_gaussian_closed_form(ensembles):
    # truth − centre ~ N(0, σ²), draws − centre ~ N(0, (kσ)²): with known quantiles the central
    # interval at level c is centre ± k σ z, z = Φ⁻¹((1+c)/2), covering the truth with
    # probability 2Φ(k z) − 1. Empirical quantiles of S = 50 draws lower this by O(1/S) (0.02–0.03
    # measured), far less than the 0.1–0.3 gaps between k = 0.5, 1, 2.
    from scipy.stats import norm

    lv = NOMINAL_LEVELS[:-1]
    for k in (0.5, 2.0):
        expected = 2 * norm.cdf(k * norm.ppf((1 + lv) / 2)) - 1
        assert np.mean(np.abs(ensembles[k].curve[:-1] - expected)) < 0.045


def test_mad_is_at_most_row_and_column_mad(ensembles):
    # |mean_rows(c̄_r) − c| <= mean_rows |c̄_r − c| (triangle inequality) for every level
    rng = np.random.default_rng(1)
    cals = list(ensembles.values())
    cals.append(calibrate(rng.uniform(size=(2, 7, 4, 6)), np.full((4, 6), 0.5)))
    for cal in cals:
        assert cal.mad <= min(cal.mad_r, cal.mad_phi) + 1e-15
        np.testing.assert_allclose(cal.curve, cal.curve_r.mean(axis=1))
        np.testing.assert_allclose(cal.curve, cal.curve_phi.mean(axis=1))


def test_mad_equals_row_mad_when_rows_agree():
    x = np.tile(np.random.default_rng(2).uniform(size=(1, 9, 1, 3)), (1, 1, 5, 1))
    cal = calibrate(x, np.full((5, 3), 0.5))
    np.testing.assert_allclose(cal.mad, cal.mad_r)


def test_pulls_match_definition():
    x = np.array([[[[1.0]], [[3.0]]]])  # one run, two draws, cells (1, 1)
    x = np.concatenate([x, x + 1.0], axis=-1)  # cells (1, 2): means 2 and 3, std 1
    p = pulls(x.mean(axis=1), np.array([[1.0, 4.0]]), x.std(axis=1))
    np.testing.assert_allclose(p, [[[1.0, -1.0]]])


@pytest.mark.parametrize(
    "fractions, truth, match",
    [
        (np.ones((1, 1, 2, 2)), np.ones((2, 2)), "at least 2 draws"),
        (np.ones((1, 3, 2, 2)), np.ones((2, 3)), "must have shape"),
        (np.ones((1, 3, 1, 1)), np.ones((1, 1)), "at least 2 cells"),
        (np.full((1, 3, 2, 2), np.nan), np.ones((2, 2)), "non-finite"),
        (np.ones((3, 2, 2)), np.ones((2, 2)), "must have shape"),
    ],
)
def test_bad_input_raises(fractions, truth, match):
    with pytest.raises(ValueError, match=match):
        calibrate(fractions, truth)
