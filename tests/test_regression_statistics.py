"""The statistics the regression shares with the histogram evaluation: one ``pulls`` and one
``interval_coverage`` (``bayesiamp_jax.evaluation.calibration``), with the interval builders of
draws and of Gaussians, against values known by hand and Gaussian closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax.evaluation.calibration import (
    central_interval,
    gaussian_interval,
    interval_coverage,
    pulls,
)
from bayesiamp_jax.regression import gaussian_coverage

# central probabilities of ±1, ±2, ±3 standard deviations (erf(k/√2))
ONE_TWO_THREE = np.array([0.6826894921370859, 0.9544997361036416, 0.9973002039367398])


def test_pulls_of_known_values():
    p = pulls([3.0, 1.0, 2.0, -1.0], [1.0, 1.0, 0.0, 0.5], [2.0, 0.5, 0.0, 0.75])
    np.testing.assert_array_equal(p[[0, 1, 3]], [1.0, 0.0, -2.0])
    assert np.isnan(p[2])  # σ = 0: undefined, not an error (a histogram cell without spread)
    # broadcasting: one reference and σ per column
    np.testing.assert_array_equal(pulls([[1.0, 4.0], [3.0, 0.0]], [1.0, 2.0], [2.0, 4.0]),
                                  [[0.0, 0.5], [1.0, -0.5]])
    for bad in ([-1.0], [np.nan]):
        with pytest.raises(ValueError, match="sigma"):
            pulls([1.0], [0.0], bad)


def test_gaussian_interval_is_mean_plus_minus_k_sigma_at_the_k_sigma_levels():
    lower, upper = gaussian_interval([2.0, -1.0], [0.5, 2.0], ONE_TWO_THREE)
    assert lower.shape == upper.shape == (3, 2)
    k = np.array([1.0, 2.0, 3.0])[:, None]
    np.testing.assert_allclose(lower, [2.0, -1.0] - k * [0.5, 2.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(upper, [2.0, -1.0] + k * [0.5, 2.0], rtol=0, atol=1e-12)


def test_central_interval_of_draws_by_hand_and_inclusive_coverage():
    # draws 0..4: linear-interpolation quantile Q(q) = 4 q, so level c gives [2 − 2c, 2 + 2c]
    draws = np.arange(5.0)[:, None] * np.ones((1, 2))
    lower, upper = central_interval(draws, [0.5, 1.0])
    np.testing.assert_allclose(lower, [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(upper, [[3.0, 3.0], [4.0, 4.0]])
    # bounds count as covered; just outside and NaN do not
    inside = interval_coverage([1.0, 3.0 + 1e-9], lower, upper)
    np.testing.assert_array_equal(inside, [[True, False], [True, True]])
    assert not interval_coverage(np.nan, 0.0, 1.0)


def test_coverage_of_a_gaussian_is_its_level():
    rng = np.random.default_rng(7)
    n = 100_000
    mean, sigma = rng.uniform(-1, 1, n), rng.uniform(0.5, 2.0, n)
    y = mean + sigma * rng.standard_normal(n)
    levels = np.array([0.1, 0.5, *ONE_TWO_THREE])
    tol = 4 * np.sqrt(levels * (1 - levels) / n)
    covered = interval_coverage(y, *gaussian_interval(mean, sigma, levels)).mean(axis=1)
    np.testing.assert_array_less(np.abs(covered - levels), tol)
    # the regression's form (pulls against N(0, 1)'s intervals) is the same count exactly
    np.testing.assert_array_equal(gaussian_coverage(y, mean, sigma, levels), covered)
    # a twice too small σ covers as a Gaussian of width 1/2 does: 2Φ(z/2) − 1
    z = scipy.stats.norm.ppf(0.5 + levels / 2)
    narrow = gaussian_coverage(y, mean, sigma / 2, levels)
    np.testing.assert_array_less(np.abs(narrow - (2 * scipy.stats.norm.cdf(z / 2) - 1)), tol)


def test_central_interval_of_many_gaussian_draws_is_the_gaussian_interval():
    draws = np.random.default_rng(3).standard_normal((200_000, 1))
    lo_d, hi_d = central_interval(draws, ONE_TWO_THREE)
    lo_g, hi_g = gaussian_interval(0.0, np.ones(1), ONE_TWO_THREE)
    # standard error of a sample quantile: sqrt(p (1 − p) / S) / φ(z), p the tail probability
    p = (1 - ONE_TWO_THREE) / 2
    z = scipy.stats.norm.ppf(1 - p)
    tol = 4 * np.sqrt(p * (1 - p) / draws.shape[0]) / scipy.stats.norm.pdf(z)
    np.testing.assert_array_less(np.abs(lo_d - lo_g)[:, 0], tol)
    np.testing.assert_array_less(np.abs(hi_d - hi_g)[:, 0], tol)
