"""Deep and bootstrap ensembles (``posteriors.ensemble``) against answers computed apart.

Linear model y = X w + ε, ε ~ N(0, σ²), loss = mean (x·w − y)²: every bootstrap member is the
weighted least-squares fit of its resample (numpy, float64, from the member's counts or
Poisson weights); the members' spread is the sampling covariance σ²(XᵀX)⁻¹ of the
least-squares estimator (and the bootstrap's own large-M limit, the sandwich
(XᵀX)⁻¹ Σ x_i x_iᵀ r_i² (XᵀX)⁻¹) within Monte-Carlo error; a deep ensemble on this convex
loss collapses onto the unique minimiser. On a small CNF every member is the one-unit
``training.fit`` run with its key (on its resample for the multinomial bootstrap).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesiamp_jax import training
from bayesiamp_jax.flow import cfm_loss, cfm_loss_from_noise, draw_cfm_noise
from bayesiamp_jax.network import VectorField
from bayesiamp_jax.posteriors import driver, load_draws, save_draws
from bayesiamp_jax.posteriors.ensemble import (
    bootstrap_samples,
    fit_ensemble,
    fit_ensemble_cnf,
    member_keys,
)

N, P, NOISE, M = 1000, 2, 0.5, 300
OPT = optax.sgd(0.45)  # full batch: |1 − 0.9 λ| ≈ 0.1 contraction per epoch (λ ≈ 1)
EPOCHS = 12
FIELD = VectorField(hidden=(8, 8))


def _mse(key, w, batch):
    x, y = batch
    return jnp.mean((x @ w - y) ** 2)


def _init(key):
    return 3.0 * jax.random.normal(key, (P,))


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, P)).astype(np.float32)
    y = (x @ np.array([1.0, -0.5]) + NOISE * rng.normal(size=N)).astype(np.float32)
    return x, y


def _fit(data, bootstrap, num_members=M, num_epochs=EPOCHS, key=None):
    key = jax.random.key(3) if key is None else key
    return fit_ensemble(key, _init, _mse, data, num_members=num_members,
                        num_epochs=num_epochs, batch_size=np.shape(data[1])[-1],
                        bootstrap=bootstrap, optimizer=OPT, chunk_epochs=num_epochs,
                        progress=False)


@pytest.fixture(scope="module", params=["multinomial", "poisson"])
def bootstrap(request, linear):
    return request.param, _fit(linear, request.param)


def test_every_bootstrap_member_is_the_weighted_least_squares_fit_of_its_resample(
        bootstrap, linear):
    kind, draws = bootstrap
    assert draws.method == "bootstrap" and draws.params.shape == (M, P)
    samples = np.asarray(bootstrap_samples(jax.random.key(3), M, N, kind))
    weights = (np.stack([np.bincount(s, minlength=N) for s in samples]) if kind == "multinomial"
               else samples).astype(np.float64)
    if kind == "poisson":  # Poisson(1): mean 1, variance 1
        assert abs(weights.mean() - 1) < 0.01 and abs(weights.var() - 1) < 0.02
    x, y = np.float64(linear[0]), np.float64(linear[1])
    wls = np.stack([np.linalg.solve(x.T @ (x * w[:, None]), x.T @ (w * y)) for w in weights])
    np.testing.assert_allclose(draws.params, wls, atol=2e-5)
    assert draws.info["member_loss"].shape == (EPOCHS, M) and draws.info["loss"].shape == (M,)


def _whitened_trace(cov, ref):
    """tr(L⁻¹ cov L⁻ᵀ) / P with L Lᵀ = ref: 1 when cov = ref."""
    chol = np.linalg.cholesky(ref)
    inv = np.linalg.inv(chol)
    return np.trace(inv @ cov @ inv.T) / cov.shape[0]


def test_bootstrap_spread_is_the_sampling_covariance_of_least_squares(bootstrap, linear):
    _check_spread(bootstrap[1], linear, M)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multinomial", "poisson"])
def test_bootstrap_spread_large(kind):
    """The same check with 8,000 events and 1,500 members (4 s.e. ≈ 0.1 instead of 0.3)."""
    n, m = 8000, 1500
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, P)).astype(np.float32)
    y = (x @ np.array([1.0, -0.5]) + NOISE * rng.normal(size=n)).astype(np.float32)
    _check_spread(_fit((x, y), kind, num_members=m), (x, y), m)


def _check_spread(draws, linear, num_members):
    x, y = np.float64(linear[0]), np.float64(linear[1])
    n = x.shape[0]
    xtx_inv = np.linalg.inv(x.T @ x)
    w_hat = xtx_inv @ x.T @ y
    sampling = NOISE**2 * xtx_inv  # the estimator's covariance over data sets (fixed design)
    resid = y - x @ w_hat
    sandwich = xtx_inv @ (x.T * resid**2) @ x @ xtx_inv  # the bootstrap's limit M → ∞
    members = np.float64(draws.params)
    cov = np.cov(members.T)
    mc = np.sqrt(2.0 / (num_members * P))  # s.e. of a whitened trace from M draws
    data = np.sqrt(8.0 / (n * P))  # s.e. of the sandwich about σ²(XᵀX)⁻¹ (Gaussian x, ε)
    assert abs(_whitened_trace(cov, sandwich) - 1) < 4 * mc
    assert abs(_whitened_trace(cov, sampling) - 1) < 4 * np.hypot(mc, data)
    # and every direction, not only the trace: eigenvalues of the whitened covariance
    inv = np.linalg.inv(np.linalg.cholesky(sampling))
    eig = np.linalg.eigvalsh(inv @ cov @ inv.T)
    assert np.all(np.abs(eig - 1) < 4 * np.hypot(np.sqrt(2.0 / num_members), np.sqrt(8.0 / n)))
    se = np.sqrt(np.diag(sandwich) / num_members)
    assert np.all(np.abs(members.mean(0) - w_hat) < 4 * se)


def test_deep_ensemble_on_a_convex_loss_collapses_to_the_minimiser(linear):
    # two units (the two halves of the data), six members each
    halves = [(linear[0][i::2], linear[1][i::2]) for i in range(2)]
    keys = jax.random.split(jax.random.key(3), 2)
    stacked = tuple(np.stack([h[j] for h in halves]) for j in range(2))
    draws = _fit(stacked, None, num_members=6, num_epochs=24, key=keys)
    assert draws.method == "ensemble" and draws.params.shape == (2, 6, P)
    assert draws.info["member_loss"].shape == (2, 24, 6)
    for u, (x, y) in enumerate(halves):
        w_star = np.linalg.lstsq(np.float64(x), np.float64(y), rcond=None)[0]
        starts = np.stack([_init(jax.random.split(k)[0]) for k in member_keys(keys, 6)[u]])
        assert np.std(starts, axis=0).min() > 1.0  # the members started far apart
        np.testing.assert_allclose(draws.params[u], np.broadcast_to(w_star, (6, P)), atol=2e-5)
        assert np.std(np.float64(draws.params[u]), axis=0).max() < 1e-5


@pytest.fixture(scope="module")
def ring(ring_train):
    x, c = np.asarray(ring_train.x), np.asarray(ring_train.c)
    return x[:256], c[:256], x[256:512], c[256:512]


CNF = dict(num_epochs=4, batch_size=64, chunk_epochs=2, progress=False)


def _flat(params):
    return np.stack([np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], params))]) for i in range(
        jax.tree_util.tree_leaves(params)[0].shape[0])])


def _fit_members(keys, x, c, **kw):
    """``training.fit`` of every member with its key as units (unit u = the one-unit fit with
    ``keys[u]``, tests/test_training.py): the trainer's own run, on a shared program."""
    m = keys.shape[0]
    tile = lambda a: np.broadcast_to(a, (m,) + a.shape[-2:]) if a.ndim == 2 else a
    return training.fit(keys, FIELD, tile(x), tile(c), CNF["num_epochs"], batch_size=64,
                        chunk_epochs=2, progress=False, **kw)


def test_cnf_deep_ensemble_members_are_one_unit_fits_and_differ(ring):
    x, c, _, _ = ring
    key = jax.random.key(11)
    draws = fit_ensemble_cnf(key, FIELD, x, c, num_members=2, **CNF)
    assert draws.method == "ensemble" and draws.info["loss"].shape == (2,)
    fits = _fit_members(member_keys(key, 2), x, c)
    jax.tree_util.tree_map(np.testing.assert_array_equal, draws.params, fits.state.params)
    np.testing.assert_array_equal(draws.info["member_loss"], fits.losses.T)
    flat = _flat(draws.params)
    assert np.linalg.norm(flat[0] - flat[1]) > 0.1  # the members differ


def test_cnf_multinomial_members_are_the_fits_on_their_resamples(ring):
    x, c, xh, ch = ring
    key = jax.random.key(5)
    draws = fit_ensemble_cnf(key, FIELD, x, c, num_members=2, bootstrap="multinomial",
                             holdout=(xh, ch), **CNF)
    assert draws.method == "bootstrap"
    idx = np.asarray(bootstrap_samples(key, 2, x.shape[0], "multinomial"))
    assert len(np.unique(idx[1])) < 0.7 * x.shape[0]  # ~63 % distinct events
    fits = _fit_members(member_keys(key, 2), x[idx], c[idx], holdout=(xh, ch))
    jax.tree_util.tree_map(np.testing.assert_array_equal, draws.params, fits.state.params)
    np.testing.assert_array_equal(draws.info["holdout_epochs"], [0, 2, 4])
    np.testing.assert_allclose(draws.info["holdout_curve"], fits.holdout_losses.mean(0),
                               rtol=1e-6)


def test_weighted_flow_matching_loss_equals_the_loss_of_duplicated_events(ring):
    x, c = ring[0][:40], ring[1][:40]
    params = FIELD.init(jax.random.key(0))
    w = np.random.default_rng(1).poisson(1.0, size=40)
    key = jax.random.key(2)
    t, z = draw_cfm_noise(key, jnp.asarray(x))
    rep = np.repeat(np.arange(40), w)  # event i w_i times, with its own (t, z)
    dup = cfm_loss_from_noise(FIELD, params, x[rep], c[rep], t[rep], z[rep])
    got = training.weighted_cfm_loss(key, FIELD, params, x, c, jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(got, dup * w.sum() / 40, rtol=1e-5)
    ones = training.weighted_cfm_loss(key, FIELD, params, x, c, jnp.ones(40))
    np.testing.assert_allclose(ones, cfm_loss(key, FIELD, params, x, c), rtol=1e-5)


@pytest.mark.slow  # ~13 s: CI keeps the weighted loss (= duplicated events) and the
# linear Poisson bootstrap's spread against the sampling covariance
def test_cnf_poisson_bootstrap_trains_every_member(ring):
    x, c, _, _ = ring
    draws = fit_ensemble_cnf(jax.random.key(8), FIELD, x, c, num_members=2, bootstrap="poisson",
                             **CNF)
    loss = draws.info["member_loss"]
    assert draws.method == "bootstrap" and loss.shape == (4, 2) and np.all(np.isfinite(loss))
    assert np.all(loss[-1] < loss[0])
    flat = _flat(draws.params)
    assert np.linalg.norm(flat[0] - flat[1]) > 0.1


def test_resume_equals_uninterrupted_and_draws_round_trip(bootstrap, linear, tmp_path):
    kind, first = bootstrap  # 12 epochs; the same compiled chunk program serves all runs below
    kw = dict(num_members=M, bootstrap=kind, batch_size=N, optimizer=OPT, chunk_epochs=EPOCHS,
              progress=False)
    path = tmp_path / "ens.msgpack"
    part = fit_ensemble(jax.random.key(3), _init, _mse, linear, num_epochs=EPOCHS,
                        checkpoint_path=path, **kw)
    np.testing.assert_array_equal(part.params, first.params)
    resumed = fit_ensemble(jax.random.key(3), _init, _mse, linear, num_epochs=2 * EPOCHS,
                           checkpoint_path=path, **kw)
    full = fit_ensemble(jax.random.key(3), _init, _mse, linear, num_epochs=2 * EPOCHS, **kw)
    np.testing.assert_array_equal(resumed.params, full.params)
    np.testing.assert_array_equal(resumed.info["member_loss"], full.info["member_loss"])
    assert full.info["member_loss"].shape == (2 * EPOCHS, M)
    saved = save_draws(tmp_path / "draws.msgpack", full)
    back = load_draws(saved, template=np.zeros(P, np.float32))
    assert back.method == "bootstrap"
    np.testing.assert_array_equal(back.params, full.params)
    for k, v in full.info.items():
        np.testing.assert_array_equal(back.info[k], v)
    assert {"ensemble", "bootstrap"} <= set(driver.ALGORITHMS)


@pytest.mark.parametrize(("kw", "message"), [
    (dict(num_members=1), "^num_members must be >= 2 for an ensemble, got 1$"),
    (dict(bootstrap="bad"), r"^bootstrap must be one of \[None, 'multinomial', 'poisson'\], "
                            r"got 'bad'$"),
    (dict(batch_size=5000), "^batch_size=5000 exceeds the number of data points 1000$"),
    (dict(num_epochs=0), "^num_epochs must be a positive integer, got 0$"),
])
def test_bad_arguments_are_one_line_errors(linear, kw, message):
    kw = dict(num_members=2, num_epochs=1, batch_size=N) | kw
    with pytest.raises(ValueError, match=message):
        fit_ensemble(jax.random.key(0), _init, _mse, linear, progress=False, **kw)
    if "batch_size" not in kw or kw["batch_size"] == N:
        with pytest.raises(ValueError, match=message):
            fit_ensemble_cnf(jax.random.key(0), FIELD, np.zeros((10, 2)), np.zeros((10, 1)),
                             progress=False, **(kw | dict(batch_size=5)))
