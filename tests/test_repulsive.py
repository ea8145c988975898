"""Repulsive ensembles: the KDE score, the median bandwidth and the stationary ensemble of a
Gaussian target, whose mean-field limit is known in closed form.

For a Gaussian target N(μ, σ²) and a fixed RBF bandwidth h (k = exp(−Δ²/h), a Gaussian kernel of
variance h/2), the KDE of ρ = N(μ, s²) is N(μ, s² + h/2); the flow is stationary where
∇ log π = ∇ log ρ̂, i.e. s² = σ² − h/2 (M → ∞). Without repulsion every member collapses to μ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.spatial.distance

from bayesiamp_jax.network import VectorField
from bayesiamp_jax.posteriors.repulsive import (
    fit_repulsive,
    fit_repulsive_cnf,
    kde_score,
    median_bandwidth,
)

SIGMA2, MU, H, M = 1.0, 0.7, 0.5, 100
DUMMY = jnp.zeros((1, 1))


def _quadratic(k, params, batch):
    return 0.5 * jnp.sum((params["w"] - MU) ** 2) / SIGMA2


def _init(key):
    return {"w": 0.1 * jax.random.normal(key, (1,))}


def _fit(key=0, **kw):
    kw = {"num_members": M, "num_epochs": 2000, "batch_size": 1, "num_data": 1.0,
          "prior_scale": None, "optimizer": optax.sgd(0.05), "chunk_epochs": 2000,
          "progress": False, **kw}
    return fit_repulsive(jax.random.key(key), kw.pop("init_fn", _init),
                         kw.pop("loss_fn", _quadratic), DUMMY, **kw)


def test_kde_score_is_gradient_of_log_kde():
    rng = np.random.default_rng(0)
    members = rng.normal(size=(6, 3)).astype(np.float32)
    point, h = members[2], 1.7

    def log_kde(p):  # independent: log Σ_j exp(−|p − θ_j|²/h) via logsumexp + autodiff
        return jax.scipy.special.logsumexp(-jnp.sum((p - members) ** 2, axis=-1) / h)

    np.testing.assert_allclose(kde_score(point, members, h), jax.grad(log_kde)(point), atol=1e-5)


def test_median_bandwidth_matches_scipy():
    x = np.random.default_rng(1).normal(size=(7, 4)).astype(np.float32)
    expected = np.median(scipy.spatial.distance.pdist(x, "sqeuclidean")) / np.log(7)
    np.testing.assert_allclose(median_bandwidth(jnp.asarray(x)), expected, rtol=1e-5)


def test_fixed_bandwidth_ensemble_reaches_kde_stationary_variance():
    w = np.asarray(_fit(bandwidth=H).params["w"])[:, 0]
    assert abs(w.mean() - MU) < 0.02
    np.testing.assert_allclose(np.mean((w - MU) ** 2), SIGMA2 - H / 2, rtol=0.05)


def test_function_space_repulsion_pulls_back_through_jacobian():
    # f = a·w: the f-space KDE with bandwidth h acts like a w-space KDE with h / a², so the
    # stationary variance of w is σ² − h / (2 a²).
    a, h = 2.0, 2.0
    w = np.asarray(_fit(bandwidth=h, function_fn=lambda p, b: a * p["w"]).params["w"])[:, 0]
    np.testing.assert_allclose(np.mean((w - MU) ** 2), SIGMA2 - h / (2 * a**2), rtol=0.05)


def test_median_heuristic_spreads_close_to_target_and_plain_ensemble_collapses():
    draws = _fit(num_members=50)
    w = np.asarray(draws.params["w"])[:, 0]
    assert draws.method == "repulsive" and draws.num_draws == 50
    # M = 50 in 1-D: KDE smoothing leaves the ensemble ~10-15 % under-dispersed
    assert 0.75 < np.var(w) / SIGMA2 < 1.0
    plain = np.asarray(_fit(num_members=50, repulsion=0.0).params["w"])[:, 0]
    assert np.var(plain) < 1e-6


def test_chunked_and_resumed_run_equals_one_run(tmp_path):
    kw = {"num_members": 4, "num_epochs": 6, "optimizer": optax.adam(0.01)}
    whole = _fit(chunk_epochs=6, **kw)
    path = tmp_path / "re.msgpack"
    _fit(checkpoint_path=path, chunk_epochs=3, **{**kw, "num_epochs": 3})
    resumed = _fit(checkpoint_path=path, chunk_epochs=3, **kw)
    np.testing.assert_array_equal(whole.params["w"], resumed.params["w"])
    np.testing.assert_array_equal(whole.info["member_loss"], resumed.info["member_loss"])
    # per draw: each member's last-epoch loss; per epoch: the mean over members
    np.testing.assert_array_equal(whole.info["loss"], whole.info["member_loss"][-1])
    np.testing.assert_allclose(whole.info["losses"], whole.info["member_loss"].mean(1))
    with pytest.raises(ValueError, match=r"repulsion: checkpoint 1\.0, now 0\.0"):
        _fit(checkpoint_path=path, chunk_epochs=3, repulsion=0.0, **kw)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_members"):
        _fit(num_members=1)
    with pytest.raises(ValueError, match="batch_size"):
        _fit(batch_size=2)
    with pytest.raises(ValueError, match="prior_scale"):
        _fit(prior_scale=-1.0)


def test_cnf_ensemble_learns_and_stays_diverse(ring_train):
    field = VectorField(hidden=(16, 16))
    draws = fit_repulsive_cnf(
        jax.random.key(3), field, ring_train.x, ring_train.c, num_members=3, num_epochs=20,
        batch_size=500, chunk_epochs=20, progress=False,
    )
    assert draws.method == "repulsive" and draws.num_draws == 3
    template = field.init(jax.random.key(0))
    jax.tree_util.tree_map(lambda a, t: (a.shape[1:] == t.shape) or pytest.fail("shape"),
                           draws.params, template)
    loss = draws.info["member_loss"]
    assert loss.shape == (20, 3)
    # flow matching on the ring starts at E|v − u|² ≈ E|u|² = 2 + E r² ≈ 27 (epoch-1 mean ~15)
    # and must fall clearly within 80 Adam steps
    assert np.all(loss[-1] < 0.7 * loss[0])
    flat = np.stack([np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(draws.draw(i))])
                     for i in range(3)])
    assert np.min(scipy.spatial.distance.pdist(flat)) > 1e-2
