"""NUTS on the conjugate Gaussian (exact moments), diagnostics, the weight model's potential
against hand-written values (flow-matching Gibbs and exact CNF likelihood), CNF smoke test."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GaussianMorphField
from numpyro.infer.util import potential_energy
from posterior_fixtures import PRIOR, conjugate_problem, mean_loss

from bayesiamp_jax.flow import cfm_loss_from_noise
from bayesiamp_jax.posteriors.model import cnf_weight_model, weight_space, with_cfm_noise
from bayesiamp_jax.posteriors.nuts import sample_nuts, sample_nuts_cnf


@pytest.fixture(scope="module")
def conj():
    return conjugate_problem()


@pytest.fixture(scope="module")
def conj_nuts(conj):
    return sample_nuts(
        jax.random.key(0), conj.template, mean_loss, (conj.x, conj.y),
        likelihood_scale=conj.x.shape[0], prior_scale=PRIOR, num_warmup=300, num_samples=1500,
        progress=False,
    )


def test_nuts_matches_conjugate_posterior(conj, conj_nuts):
    flat = np.concatenate([conj_nuts.params["b"], conj_nuts.params["w"]], 1).astype(np.float64)
    sd = np.sqrt(np.diag(conj.cov))
    # NUTS on a Gaussian is nearly independent; 5 standard errors at ESS >= 600
    np.testing.assert_array_less(np.abs(flat.mean(0) - conj.mean), 5 * sd / np.sqrt(600))
    np.testing.assert_allclose(np.cov(flat.T), conj.cov, atol=0.15 * sd.max() ** 2)


def test_nuts_diagnostics(conj_nuts):
    info = conj_nuts.info
    assert conj_nuts.method == "nuts" and conj_nuts.num_draws == 1500
    assert np.all((info["accept_prob"] >= 0) & (info["accept_prob"] <= 1))
    assert 0.6 < info["accept_prob"].mean() < 0.99  # adapted towards the 0.8 target
    assert not info["diverging"].any()
    assert np.all(info["step_size"] > 0)
    assert np.all((info["tree_depth"] >= 1) & (info["tree_depth"] <= 10))
    depth, steps = info["tree_depth"], info["num_steps"]
    assert np.all((2.0**depth - 1 >= steps) & (steps > 2.0 ** (depth - 1) - 1))


def test_fm_gibbs_potential_by_hand(tiny_field, ring_train):
    field, params = tiny_field
    x, c = ring_train.x[:64], ring_train.c[:64]
    data = with_cfm_noise(jax.random.key(0), x, c)
    model = cnf_weight_model(field, params, likelihood="fm", num_data=1000, temperature=2.0,
                             prior_scale=0.5)
    theta = weight_space(params).ravel(params)
    got = potential_energy(model, (data,), {}, {"theta": theta})
    t, z = data[2], data[3]
    # the FM loss written out (t = 0 data, t = 1 noise), independent of flow.py
    y = (1 - t[:, None]) * x + (1e-4 + (1 - 1e-4) * t[:, None]) * z
    fm = np.mean((np.asarray(field(params, t, y, c)) - ((1 - 1e-4) * z - x)) ** 2)
    p = theta.shape[0]
    th = np.asarray(theta, np.float64)
    prior = 0.5 * np.sum(th**2) / 0.25 + 0.5 * p * math.log(2 * math.pi * 0.25)
    np.testing.assert_allclose(float(got), 1000 / 2.0 * fm + prior, rtol=1e-4)
    # and the model uses the library's loss with the same fixed noise
    lib = float(cfm_loss_from_noise(field, params, x, c, t, z))
    np.testing.assert_allclose(lib, fm, rtol=1e-5)


def test_exact_likelihood_potential_by_hand(gaussian_morph):
    field, params, mu, s = gaussian_morph
    rng = np.random.default_rng(0)
    x = jnp.asarray(mu + s * rng.normal(size=(16, 2)), jnp.float32)
    c = jnp.ones((16, 1))
    model = cnf_weight_model(field, params, likelihood="exact", num_data=16, prior_scale=1.0)
    theta = weight_space(params).ravel(params)
    got = potential_energy(model, ((x, c),), {}, {"theta": theta})
    nll = -GaussianMorphField.log_prob(np.asarray(x), mu, s).sum()
    th = np.asarray(theta, np.float64)
    prior = 0.5 * np.sum(th**2) + 0.5 * th.size * math.log(2 * math.pi)
    np.testing.assert_allclose(float(got), nll + prior, rtol=2e-4)


@pytest.mark.slow
def test_nuts_cnf_small_subset(tiny_field, ring_train):
    field, params = tiny_field
    draws = sample_nuts_cnf(jax.random.key(1), field, ring_train.x[:40], ring_train.c[:40], params,
                     num_warmup=30, num_samples=10, max_tree_depth=4, progress=False)
    assert draws.num_draws == 10
    chex.assert_tree_all_finite(draws.params)
    assert np.all(draws.info["tree_depth"] <= 4)
    # the chain moves away from the start
    w0 = np.asarray(params["Dense_0"]["kernel"])
    assert not np.allclose(draws.params["Dense_0"]["kernel"][-1], w0)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(likelihood_scale=-1.0), "likelihood_scale"), (dict(num_samples=0), "num_samples"),
     (dict(target_accept_prob=1.0), "target_accept_prob")],
)
def test_bad_settings_raise(conj, kwargs, match):
    base = dict(likelihood_scale=1.0, num_warmup=2, num_samples=2, progress=False)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_nuts(jax.random.key(0), conj.template, mean_loss, (conj.x, conj.y), **base)
