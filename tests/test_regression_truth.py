"""The replica truth of σ_stat, the bootstrap, the recalibration and the gapped toy, each against
an answer known in closed form.

Linear-Gaussian model y = w₀ + w₁ x + ε, ε ~ N(0, σ²), prior w ~ N(0, s² I), on a fixed design
whose x are symmetric about 0, so ΦᵀΦ is diagonal and the exact posterior N(m, S),
S = (I/s² + ΦᵀΦ/σ²)⁻¹, is itself mean-field: σ_stat(x)² = φᵀSφ exactly, for VI too. Replicas
redraw the noise on the same design; the MAP estimator then has covariance S (ΦᵀΦ/σ²) S, equal to
S up to a factor 1 − O(1/(N s²)).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.stats

from bayesiamp_jax.regression import (
    RegressionSample,
    ResponseToy,
    fit_vi_regression,
    nll_loss_fn,
    predict_draws,
    predictive_uncertainty,
)
from bayesiamp_jax.regression.calibration import matched_setting, pull_scale, recalibrate
from bayesiamp_jax.regression.diagnostics import gaussian_fit
from bayesiamp_jax.regression.replicas import bootstrap_sample_fn, fit_replicas, replica_truth

NOISE, PRIOR, N = 0.5, 1.0, 200
W_TRUE = np.array([0.3, -0.8])
X_EVAL = np.array([[-2.0], [0.0], [1.0], [3.0]], np.float32)


@dataclasses.dataclass(frozen=True)
class LinearNet:
    """mean = w₀ + w₁ x, fixed variance NOISE², with the ``RegressionNet`` interface."""

    in_dim: int = 1

    def init(self, key):
        return {"w": 0.1 * jax.random.normal(key, (2,))}

    def __call__(self, params, x):
        x = jnp.asarray(x)[..., 0]
        w = params["w"]
        return w[0] + w[1] * x, jnp.full_like(x, NOISE**2)


def _phi(x):
    return np.stack([np.ones(len(x)), np.asarray(x)[:, 0]], axis=1)


@pytest.fixture(scope="module")
def design():
    half = np.random.default_rng(0).normal(size=(N // 2, 1))
    x = np.concatenate([half, -half]).astype(np.float32)  # Σx = 0: ΦᵀΦ diagonal
    a = _phi(x).T @ _phi(x) / NOISE**2
    cov = np.linalg.inv(np.eye(2) / PRIOR**2 + a)
    phi = _phi(X_EVAL)
    return {
        "x": x,
        "post_sd": np.sqrt(np.einsum("ni,ij,nj->n", phi, cov, phi)),
        "map_sd": np.sqrt(np.einsum("ni,ij,nj->n", phi, cov @ a @ cov, phi)),
    }


def _targets(key, x):
    return jnp.asarray(_phi(x) @ W_TRUE, jnp.float32) + NOISE * jax.random.normal(key, (len(x),))


def _linear_replicas(key, sample_fn, num):
    net = LinearNet()
    return fit_replicas(key, net.init, nll_loss_fn(net), sample_fn, num_replicas=num,
                        num_epochs=300, batch_size=N, optimizer=optax.sgd(0.2),
                        prior_scale=PRIOR)


def test_replica_spread_matches_the_closed_form_sigma_stat(design):
    x = jnp.asarray(design["x"])
    draws = _linear_replicas(jax.random.key(0), lambda k: (x, _targets(k, x)), 400)
    means, _ = predict_draws(LinearNet(), draws, X_EVAL)
    truth = replica_truth(means)
    np.testing.assert_allclose(design["map_sd"], design["post_sd"], rtol=5e-3)  # weak prior
    # K = 400: relative error of a standard deviation 1/sqrt(2·399) = 3.5 %
    np.testing.assert_allclose(truth.spread, design["post_sd"], rtol=0.12)
    np.testing.assert_allclose(truth.spread_err, truth.spread / np.sqrt(798), rtol=1e-6)
    assert np.all(np.abs(truth.spread - design["map_sd"]) < 4 * truth.spread_err)
    # the average fit is unbiased up to the prior's shrinkage
    assert np.all(np.abs(truth.centre - _phi(X_EVAL) @ W_TRUE) < 4 * truth.spread / 20)


def test_replicas_on_identical_data_have_zero_spread(design):
    x = jnp.asarray(design["x"])
    y = _targets(jax.random.key(5), design["x"])
    # different initialisations, one data set: the convex fit lands on the same optimum
    draws = _linear_replicas(jax.random.key(1), lambda k: (x, y), 8)
    means, _ = predict_draws(LinearNet(), draws, X_EVAL)
    assert np.all(replica_truth(means).spread < 1e-3 * design["post_sd"])


def test_vi_sigma_stat_matches_the_closed_form_posterior(design):
    net = LinearNet()
    x = jnp.asarray(design["x"])
    sample = RegressionSample(x, _targets(jax.random.key(2), design["x"]))
    draws = fit_vi_regression(
        jax.random.key(3), net, sample, num_epochs=2500, batch_size=N, num_draws=4000,
        prior_scale=PRIOR,
        optimizer=optax.adam(optax.cosine_decay_schedule(2e-2, 2500, alpha=0.01)),
        chunk_epochs=2500,
    )  # kl_weight = B/N = 1: the textbook ELBO
    dec = predictive_uncertainty(net, draws, X_EVAL)
    # 4000 draws: MC relative error of a standard deviation ≈ 1.1 %
    np.testing.assert_allclose(dec.stat, design["post_sd"], rtol=0.08)


def test_bootstrap_resamples_rows_of_the_one_data_set():
    x = jnp.arange(10.0)[:, None]
    y = 2 * x[:, 0]
    bx, by = bootstrap_sample_fn((x, y))(jax.random.key(0))
    assert bx.shape == (10, 1) and by.shape == (10,)
    np.testing.assert_array_equal(by, 2 * bx[:, 0])  # whole rows
    assert set(np.asarray(bx[:, 0]).tolist()) <= set(range(10))


def test_recalibration_of_a_twice_overconfident_sigma_restores_unit_pulls():
    rng = np.random.default_rng(0)
    sd_true = rng.uniform(0.1, 2.0, size=20_000)
    claimed = sd_true / 2  # 2× overconfident
    held_out = sd_true * rng.normal(size=sd_true.size)
    scale = pull_scale(held_out, claimed)
    assert abs(scale - 2.0) < 0.05
    fresh = sd_true * rng.normal(size=sd_true.size)
    assert abs(np.std(fresh / claimed) - 2.0) < 0.05
    assert abs(np.std(fresh / recalibrate(claimed, scale)) - 1.0) < 0.03
    with pytest.raises(ValueError, match="sigma"):
        pull_scale([1.0], [0.0])


def test_matched_setting_recovers_the_setting_of_a_proportional_variance():
    base = np.linspace(0.5, 2.0, 7)
    sigma_of = lambda t: np.sqrt(t) * base  # σ² ∝ t
    target = sigma_of(9.0)
    np.testing.assert_allclose(matched_setting(1.0, sigma_of(1.0), target), 9.0, rtol=1e-12)
    np.testing.assert_allclose(matched_setting(4.0, sigma_of(4.0), target), 9.0, rtol=1e-12)


def test_gaussian_fit_recovers_mean_and_width():
    v = np.random.default_rng(1).normal(0.3, 1.2, size=50_000)
    fit = gaussian_fit(v)
    assert abs(fit.mean - 0.3) < 4 * fit.mean_err + 0.01
    assert abs(fit.width - 1.2) < 4 * fit.width_err + 0.01
    assert fit.width_err < 0.02


def test_gapped_toy_inputs_follow_their_density():
    toy = ResponseToy(gap_lo=1.6, gap_hi=2.0, gap_efficiency=0.05)
    e = np.asarray(toy.sample_inputs(jax.random.key(0), 50_000)[:, 0])

    def density(t):  # the truncated exponential with the gap weighted by 0.05, written out
        w = 0.05 if 1.6 <= t <= 2.0 else 1.0
        return w * np.exp(-(t - 0.2) / 0.8)

    norm = scipy.integrate.quad(density, 0.2, 4.0, points=[1.6, 2.0])[0]

    def cdf(t):
        return np.array([scipy.integrate.quad(density, 0.2, min(max(u, 0.2), 4.0),
                                              points=[1.6, 2.0] if u > 2.0 else None)[0]
                         for u in np.atleast_1d(t)]) / norm

    grid = np.linspace(0.2, 4.0, 400)
    table = cdf(grid)
    assert scipy.stats.kstest(e, lambda t: np.interp(t, grid, table)).pvalue > 1e-3
    np.testing.assert_allclose(toy.input_density(np.array([1.0, 1.8, 3.0])),
                               [density(1.0) / norm, density(1.8) / norm, density(3.0) / norm],
                               rtol=1e-4)
    assert np.mean(np.asarray(toy.in_gap(e))) == pytest.approx(cdf(2.0)[0] - cdf(1.6)[0],
                                                               abs=4e-3)
    assert not toy.without_gap().has_gap
    with pytest.raises(ValueError, match="gap"):
        ResponseToy(gap_lo=3.0, gap_hi=2.0, gap_efficiency=0.5)
