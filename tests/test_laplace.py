"""Laplace posterior: the linear-Gaussian closed form (mean, covariance, evidence), the GGN of a
small network against an explicit jacfwd JᵀJ, temperature, draws, save/load, resume, units,
bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import resumable
from bayesiamp_jax.checkpoint import load_pytree
from bayesiamp_jax.flow import cfm_loss_from_noise
from bayesiamp_jax.network import VectorField
from bayesiamp_jax.posteriors import driver, laplace
from bayesiamp_jax.posteriors.draws import load_draws, save_draws, split_units
from bayesiamp_jax.posteriors.model import with_cfm_noise

NOISE = 0.5
T_EXACT = 2 * NOISE**2  # (N/T)·mean r² = Σ r² / (2σ²): the Gaussian likelihood
KW = dict(progress=False, batch_size=16)


def linear_residual(params, point):
    """y = x·w + ε: the residual of one point."""
    x, y = point
    return x @ params["w"] - y


def two_layer_residual(params, point):
    """y = tanh(x W0 + b0) W1 + b1 + ε (flax layer names)."""
    x, y = point
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return h @ params["Dense_1"]["kernel"][:, 0] + params["Dense_1"]["bias"][0] - y


def _design(n, p, seed, orthogonal=False):
    rng = np.random.default_rng(seed)
    if orthogonal:  # XᵀX diagonal: the diagonal GGN is the exact Hessian
        x = np.linalg.qr(rng.normal(size=(n, p)))[0] * np.arange(2.0, 2.0 + p)
    else:
        x = rng.normal(size=(n, p)) @ np.triu(np.full((p, p), 0.7)) + 0.3
    y = x @ rng.normal(size=p) + NOISE * rng.normal(size=n)
    return x.astype(np.float32), y.astype(np.float32)


def _posterior(phi, y, lam):
    """Conjugate posterior (float64): precision ΦᵀΦ/σ² + λI, mean, covariance."""
    phi, y = np.asarray(phi, np.float64), np.asarray(y, np.float64)
    precision = phi.T @ phi / NOISE**2 + lam * np.eye(phi.shape[1])
    cov = np.linalg.inv(precision)
    return cov @ phi.T @ y / NOISE**2, cov


def _exact_log_evidence(x, y, lam):
    """log N(y | 0, σ²I + XXᵀ/λ) (float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = NOISE**2 * np.eye(len(y)) + x @ x.T / lam
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (y @ np.linalg.solve(cov, y) + logdet + len(y) * np.log(2 * np.pi))


def _best_lambda(x, y):
    res = scipy.optimize.minimize_scalar(lambda s: -_exact_log_evidence(x, y, np.exp(s)),
                                         bounds=(-10, 10), method="bounded",
                                         options={"xatol": 1e-10})
    return float(np.exp(res.x))


def _approx(params, residual_fn, data, **kw):
    return laplace.laplace_approximation(jax.random.key(0), params, residual_fn, data,
                                         temperature=kw.pop("temperature", T_EXACT), **KW, **kw)


@pytest.fixture(scope="module")
def correlated():
    x, y = _design(40, 3, seed=0)
    mean, cov = _posterior(x, y, 2.0)
    return x, y, mean, cov


def test_full_covariance_is_the_conjugate_posterior(correlated):
    x, y, mean, cov = correlated
    res = _approx({"w": jnp.asarray(mean, jnp.float32)}, linear_residual, (x, y),
                  structure="full", prior_precision=2.0)
    np.testing.assert_allclose(laplace.laplace_covariance(res), cov, rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(res.mean["w"], mean, rtol=1e-6)
    # the diagonal structure is not exact on a correlated design (the test can fail)
    diag = _approx({"w": jnp.asarray(mean, jnp.float32)}, linear_residual, (x, y),
                   structure="diag", prior_precision=2.0)
    assert np.max(np.abs(np.diag(laplace.laplace_covariance(diag)) - np.diag(cov))) > 1e-3


def test_diag_is_exact_on_an_orthogonal_design_and_lambda_maximises_the_evidence():
    x, y = _design(40, 3, seed=1, orthogonal=True)  # shapes of ``correlated``
    lam = _best_lambda(x, y)
    mean, cov = _posterior(x, y, lam)
    res = _approx({"w": jnp.asarray(mean, jnp.float32)}, linear_residual, (x, y),
                  structure="diag")
    np.testing.assert_allclose(float(res.prior_precision), lam, rtol=1e-4)
    np.testing.assert_allclose(laplace.laplace_covariance(res), cov, rtol=1e-4, atol=1e-9)
    # log Z + the Gaussian's normaliser −(n/2) log(2πσ²) is the exact log evidence
    const = -0.5 * len(y) * np.log(2 * np.pi * NOISE**2)
    np.testing.assert_allclose(float(res.log_evidence) + const, _exact_log_evidence(x, y, lam),
                               rtol=1e-5)


def test_evidence_lambda_on_a_correlated_design(correlated):
    x, y, _, _ = correlated
    lam = _best_lambda(x, y)
    grid = np.exp(np.linspace(np.log(lam) - 1, np.log(lam) + 1, 2001))
    assert abs(grid[np.argmax([_exact_log_evidence(x, y, g) for g in grid])] / lam - 1) < 2e-3
    mean, cov = _posterior(x, y, lam)
    res = _approx({"w": jnp.asarray(mean, jnp.float32)}, linear_residual, (x, y),
                  structure="full")
    np.testing.assert_allclose(float(res.prior_precision), lam, rtol=1e-4)
    const = -0.5 * len(y) * np.log(2 * np.pi * NOISE**2)
    np.testing.assert_allclose(float(res.log_evidence) + const, _exact_log_evidence(x, y, lam),
                               rtol=1e-5)
    np.testing.assert_allclose(laplace.laplace_covariance(res), cov, rtol=1e-4, atol=1e-8)


def test_lowrank_recovers_a_low_rank_ggn_its_evidence_and_its_draws():
    """P = 30 weights, 4 points: rank(G) = 4 < rank 6 < sketch 16 < P, so the Nyström
    eigenpairs are exact, the diagonal remainder vanishes and the evidence is exact."""
    x, y = _design(4, 30, seed=2)
    lam = _best_lambda(x, y)
    mean, cov = _posterior(x, y, lam)
    res = _approx({"w": jnp.asarray(mean, jnp.float32)}, linear_residual, (x, y),
                  structure="lowrank", rank=6)
    assert res.curvature.eigvecs.shape == (30, 6)
    # the float32 sketch is accurate to ~1e-4 relative, the evidence is flat at its maximum
    np.testing.assert_allclose(float(res.prior_precision), lam, rtol=1e-3)
    const = -0.5 * len(y) * np.log(2 * np.pi * NOISE**2)
    np.testing.assert_allclose(float(res.log_evidence) + const, _exact_log_evidence(x, y, lam),
                               rtol=1e-4)
    np.testing.assert_allclose(laplace.laplace_covariance(res), cov, rtol=3e-4,
                               atol=1e-5 / lam)
    draws = laplace.sample_laplace(jax.random.key(3), res, 20000)
    w = np.asarray(draws.params["w"], np.float64)
    np.testing.assert_allclose(np.cov(w.T), cov, atol=4 * np.sqrt(2.0 / 20000) / lam)


def test_last_layer_is_the_conjugate_posterior_of_the_last_layer():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    params = {"Dense_0": {"kernel": rng.normal(size=(2, 3)).astype(np.float32),
                          "bias": rng.normal(size=3).astype(np.float32)},
              "Dense_1": {"kernel": rng.normal(size=(3, 1)).astype(np.float32),
                          "bias": np.zeros(1, np.float32)}}
    feats = np.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    phi = np.concatenate([np.ones((50, 1)), feats], 1)  # flat order: bias, kernel
    y = (feats @ [1.0, -0.5, 0.3] + 0.2 + NOISE * rng.normal(size=50)).astype(np.float32)
    mean, cov = _posterior(phi, y, 1.5)
    params["Dense_1"] = {"bias": mean[:1].astype(np.float32),
                         "kernel": mean[1:, None].astype(np.float32)}
    res = _approx(params, two_layer_residual, (x, y), structure="last_layer",
                  prior_precision=1.5)
    assert res.last_layer == "Dense_1"
    np.testing.assert_allclose(laplace.laplace_covariance(res), cov, rtol=2e-5, atol=1e-8)
    draws = laplace.sample_laplace(jax.random.key(5), res, 3)
    np.testing.assert_array_equal(draws.params["Dense_0"]["kernel"],
                                  np.broadcast_to(params["Dense_0"]["kernel"], (3, 2, 3)))
    assert np.ptp(draws.params["Dense_1"]["kernel"], axis=0).min() > 0


def test_temperature_scales_the_likelihood_curvature(correlated):
    x, y, mean, _ = correlated
    params = {"w": jnp.asarray(mean, jnp.float32)}
    lam = 2.0
    for temp in (1.0, 3.0):  # cov = (XᵀX/(σ²·T/T_exact) + λI)⁻¹
        res = _approx(params, linear_residual, (x, y), structure="full", prior_precision=lam,
                      temperature=T_EXACT * temp)
        precision = (x.T.astype(np.float64) @ x) / (NOISE**2 * temp) + lam * np.eye(3)
        np.testing.assert_allclose(laplace.laplace_covariance(res), np.linalg.inv(precision),
                                   rtol=2e-5)
    # with λ / T as well, the covariance is exactly T times the T = 1 covariance
    one = _approx(params, linear_residual, (x, y), structure="full", prior_precision=lam)
    hot = _approx(params, linear_residual, (x, y), structure="full", prior_precision=lam / 3,
                  temperature=3 * T_EXACT)
    np.testing.assert_allclose(laplace.laplace_covariance(hot),
                               3 * laplace.laplace_covariance(one), rtol=2e-5)


def test_draws_match_mean_and_covariance_within_monte_carlo_error(correlated):
    x, y, mean, cov = correlated
    s = 20000
    draws = laplace.fit_laplace(jax.random.key(6), {"w": jnp.asarray(mean, jnp.float32)},
                                linear_residual, (x, y), num_draws=s, structure="full",
                                prior_precision=2.0, temperature=T_EXACT, **KW)
    assert draws.method == "laplace" and draws.num_draws == s
    w = np.asarray(draws.params["w"], np.float64)
    se = np.sqrt(np.diag(cov) / s)
    assert np.all(np.abs(w.mean(0) - mean) < 4 * se)
    sd = np.sqrt(np.diag(cov))
    cov_se = np.sqrt((np.outer(sd, sd) ** 2 + cov**2) / s)
    assert np.all(np.abs(np.cov(w.T) - cov) < 4.5 * cov_se)
    assert laplace.STRUCTURES[int(draws.info["structure"])] == "full"
    np.testing.assert_allclose(draws.info["prior_precision"], 2.0)


# --- the CNF: the GGN against jacfwd, units, save/load, resume -------------------------------

FIELD = VectorField(data_dim=2, cond_dim=1, hidden=(5,), num_frequencies=1)
CNF_KW = dict(progress=False, batch_size=4, chunk_batches=2)  # 9 points: 3 batches, 2 calls


@pytest.fixture(scope="module")
def cnf():
    key = jax.random.key(7)
    params = FIELD.init(key)
    x = jax.random.normal(jax.random.key(8), (2, 9, 2))
    c = jax.random.uniform(jax.random.key(9), (2, 9, 1))
    return params, x, c


def test_ggn_of_a_network_equals_explicit_jacobian_products(cnf):
    params, x, c = cnf
    points = with_cfm_noise(jax.random.key(10), x[0], c[0])
    residual = laplace.CFMResidual(FIELD, 1e-4)
    flat, unravel = ravel_pytree(params)
    stacked = lambda f: jnp.ravel(jax.vmap(residual, (None, 0))(unravel(f), points))
    jac = np.asarray(jax.jacfwd(stacked)(flat), np.float64)  # (n m, P)
    n, m, big_n, temp = 9, 2, 100, 0.5
    ggn = (big_n / temp) * 2 / (n * m) * jac.T @ jac
    kw = dict(num_data=big_n, temperature=temp, prior_precision=1.0, **CNF_KW)
    res = laplace.laplace_approximation(jax.random.key(0), params, residual, points,
                                        structure="diag", **kw)
    np.testing.assert_allclose(res.curvature.diag, np.diag(ggn), rtol=1e-4,
                               atol=1e-6 * np.abs(ggn).max())
    np.testing.assert_allclose(float(res.loss), float(cfm_loss_from_noise(FIELD, params,
                                                                           *points)), rtol=1e-5)
    last = laplace.laplace_approximation(jax.random.key(0), params, residual, points,
                                         structure="last_layer", **kw)
    idx = np.arange(flat.shape[0])[-(5 + 1) * 2:]  # Dense_1 is raveled last (bias, kernel)
    block = ggn[np.ix_(idx, idx)]
    v, e = np.asarray(last.curvature.eigvecs), np.asarray(last.curvature.eigvals)
    np.testing.assert_allclose(v @ np.diag(e) @ v.T, block, atol=1e-4 * np.abs(block).max())


def test_units_save_load_and_bad_arguments(cnf, tmp_path):
    params, x, c = cnf
    keys = jax.random.split(jax.random.key(11), 2)
    both = jax.tree_util.tree_map(lambda a: jnp.stack([a, 1.1 * a]), params)
    kw = dict(num_draws=3, structure="diag", **CNF_KW)
    draws = laplace.fit_laplace_cnf(keys, FIELD, both, x, c, temperature=[1.0, 2.0], **kw)
    assert draws.params["Dense_0"]["kernel"].shape == (2, 3, 5, 5)
    for u, unit in enumerate(split_units(draws)):
        mine = jax.tree_util.tree_map(lambda a, u=u: a[u], both)
        one = laplace.fit_laplace_cnf(keys[u], FIELD, mine, x[u], c[u],
                                      temperature=[1.0, 2.0][u], **kw)
        for a, b in zip(jax.tree_util.tree_leaves(unit.params),
                        jax.tree_util.tree_leaves(one.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for name in ("prior_precision", "log_evidence", "structure", "loss"):
            np.testing.assert_allclose(unit.info[name], one.info[name], rtol=1e-5)
    path = save_draws(tmp_path / "laplace.msgpack", draws)
    back = load_draws(path)
    assert back.method == "laplace"
    for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(
            draws.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for name, value in draws.info.items():
        np.testing.assert_array_equal(back.info[name], value)
    assert "laplace" in driver.ALGORITHMS
    one_kw = dict(kw, num_draws=1)
    for bad, message in ((dict(structure="bad"), "structure must be one of"),
                         (dict(num_draws=0), "num_draws must be a positive integer"),
                         (dict(temperature=-1.0), "temperature must be a finite number > 0"),
                         (dict(num_points=10), "num_points=10 exceeds"),
                         (dict(prior_precision=0.0), "prior_precision must be"),
                         (dict(structure="last_layer", last_layer="Dense_9"), "last_layer")):
        with pytest.raises(ValueError, match=message):
            laplace.fit_laplace_cnf(keys[0], FIELD, params, x[0], c[0], **(one_kw | bad))


def test_resumed_run_equals_an_uninterrupted_one(cnf, tmp_path, monkeypatch):
    params, x, c = cnf
    kw = dict(structure="diag", num_draws=3, **CNF_KW)
    full = laplace.fit_laplace_cnf(jax.random.key(12), FIELD, params, x[0], c[0], **kw)
    path = tmp_path / "ggn.msgpack"
    save = resumable.save_pytree

    class Stop(Exception):
        pass

    def save_then_stop(*args):
        save(*args)
        raise Stop

    with monkeypatch.context() as patch:  # interrupted after the first call (2 of 3 batches)
        patch.setattr(resumable, "save_pytree", save_then_stop)
        with pytest.raises(Stop):
            laplace.fit_laplace_cnf(jax.random.key(12), FIELD, params, x[0], c[0],
                                    checkpoint_path=path, **kw)
    assert int(load_pytree(path)["done"]) == 2
    resumed = laplace.fit_laplace_cnf(jax.random.key(12), FIELD, params, x[0], c[0],
                                      checkpoint_path=path, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(full),
                    strict=True):
        np.testing.assert_array_equal(a, b)
