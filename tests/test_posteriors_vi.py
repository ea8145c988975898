"""Mean-field VI: KL normalisations by hand, the analytic mean-field optimum of a conjugate
Gaussian posterior, sampling, resume/determinism, vmap over runs, bad input, CNF smoke test."""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from posterior_fixtures import conjugate_problem, mean_loss_key

from bayesiamp_jax.posteriors import vi
from bayesiamp_jax.posteriors.draws import split_units
from bayesiamp_jax.posteriors.vi import fit_vi, fit_vi_cnf, sample_vi


def _kl_normal(mu, s, prior):
    """Elementwise KL(N(μ, s²) || N(0, prior²)) in float64."""
    mu, s = np.asarray(mu, np.float64), np.asarray(s, np.float64)
    return np.log(prior / s) + (s**2 + mu**2) / (2 * prior**2) - 0.5


@pytest.fixture(scope="module")
def kl_setup():
    """Two tensors of different sizes, a θ-independent data loss 0.7 and fixed guide params."""
    template = {"a": np.zeros(3, np.float32), "b": np.zeros((2, 4), np.float32)}
    loss_fn = lambda key, params, batch: 0.7 + 0.0 * jnp.sum(batch)
    svi = vi.build_svi(template, loss_fn, prior_scale=2.0)
    rng = np.random.default_rng(0)
    guide = {vi.LOC: jnp.asarray(rng.normal(size=11), jnp.float32),
             vi.RHO: jnp.asarray(rng.normal(-1.0, 0.5, size=11), jnp.float32)}
    batch = jnp.zeros((5,))
    state = jax.jit(partial(vi.init_vi_state, svi=svi))(
        jax.random.key(0), first_batch=batch, guide_params=guide)
    return svi, template, guide, batch, state


@pytest.mark.parametrize("normalisation", ["reference", "total"])
def test_step_loss_is_data_loss_plus_normalised_kl(kl_setup, normalisation):
    svi, template, guide, batch, state = kl_setup
    k, b = 10.0, 5
    mu = np.asarray(guide[vi.LOC], np.float64)
    s = np.log1p(np.exp(np.asarray(guide[vi.RHO], np.float64)))
    kl = _kl_normal(mu, s, prior=2.0)
    # flat order is [a (3), b (8)]
    if normalisation == "reference":
        kl_norm = kl[:3].mean() + kl[3:].mean()
    else:
        kl_norm = kl.sum()
    expected = 0.7 + k * kl_norm / b
    site_scale = vi.kl_site_scale(template, k, b, normalisation)
    _, loss = jax.jit(svi.update)(state.svi_state, batch, site_scale)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_kl_site_scale_values():
    template = {"a": np.zeros(3), "b": np.zeros((2, 4))}
    ref = np.asarray(vi.kl_site_scale(template, 5.0, 10, "reference"))
    np.testing.assert_allclose(ref, np.r_[np.full(3, 5 / 30), np.full(8, 5 / 80)], rtol=1e-6)
    tot = np.asarray(vi.kl_site_scale(template, 5.0, 10, "total"))
    np.testing.assert_allclose(tot, np.full(11, 0.5), rtol=1e-6)


@pytest.fixture(scope="module")
def conj():
    return conjugate_problem()


@pytest.fixture(scope="module")
def conj_vi(conj):
    """Full-batch VI with total KL and k = B/N = 1: the exact Bayesian ELBO (scaled by 1/N)."""
    n = conj.x.shape[0]
    sched = optax.exponential_decay(2e-2, transition_steps=3000, decay_rate=0.01)
    return fit_vi(
        jax.random.key(3), conj.template, mean_loss_key, (conj.x, conj.y), num_epochs=6000,
        batch_size=n, kl_weight=1.0, kl_normalisation="total", prior_scale=1.0,
        optimizer=optax.adam(sched), chunk_epochs=3000, progress=False,
    )


def test_vi_optimum_is_analytic_mean_field_solution(conj, conj_vi):
    # For a Gaussian target the mean-field optimum has the exact means and 1/diag(precision)
    # variances.
    loc = np.r_[conj_vi.loc["b"], conj_vi.loc["w"]]
    scale = np.r_[conj_vi.scale["b"], conj_vi.scale["w"]]
    post_sd = np.sqrt(np.diag(conj.cov))
    np.testing.assert_allclose(loc, conj.mean, atol=0.05 * post_sd.min())
    np.testing.assert_allclose(scale, 1 / np.sqrt(np.diag(conj.precision)), rtol=0.05)
    assert conj_vi.losses[-100:].mean() < conj_vi.losses[:100].mean()


def test_sample_vi_moments(conj_vi):
    draws = sample_vi(jax.random.key(0), conj_vi, 4000)
    assert draws.method == "vi" and draws.num_draws == 4000
    for name in ("b", "w"):
        d = np.asarray(draws.params[name])
        m, s = np.asarray(conj_vi.loc[name]), np.asarray(conj_vi.scale[name])
        np.testing.assert_allclose(d.mean(0), m, atol=5 * s.max() / np.sqrt(4000))
        np.testing.assert_allclose(d.std(0), s, rtol=0.06)
    again = sample_vi(jax.random.key(0), conj_vi, 4000)
    np.testing.assert_array_equal(draws.params["w"], again.params["w"])
    bad = conj_vi._replace(scale={"b": conj_vi.scale["b"], "w": conj_vi.scale["w"][:1]})
    with pytest.raises(ValueError, match="result.loc and result.scale"):
        sample_vi(jax.random.key(0), bad, 2)


def test_resume_and_chunking_give_identical_numbers(conj, tmp_path):
    kw = dict(batch_size=8, kl_weight=3.0, chunk_epochs=5, progress=False)
    data = (conj.x, conj.y)
    full = fit_vi(jax.random.key(1), conj.template, mean_loss_key, data, num_epochs=10, **kw)
    path = tmp_path / "vi.msgpack"
    fit_vi(jax.random.key(1), conj.template, mean_loss_key, data, num_epochs=5,
           checkpoint_path=path, **kw)
    resumed = fit_vi(jax.random.key(1), conj.template, mean_loss_key, data, num_epochs=10,
                     checkpoint_path=path, **kw)
    np.testing.assert_array_equal(full.losses, resumed.losses)
    np.testing.assert_array_equal(full.loc["w"], resumed.loc["w"])
    np.testing.assert_array_equal(full.scale["b"], resumed.scale["b"])
    with pytest.raises(ValueError, match=r"kl_weight: checkpoint 3\.0, now 4\.0"):
        fit_vi(jax.random.key(1), conj.template, mean_loss_key, data, num_epochs=10,
               checkpoint_path=path, **{**kw, "kl_weight": 4.0})


def test_unit_axis_equals_one_call_per_unit(conj):
    """Keys (U,), stacked data and (U,) k train U units at once; unit u is the one-unit call."""
    data = (jnp.asarray(conj.x), jnp.asarray(conj.y))
    keys = jax.random.split(jax.random.key(0), 2)
    ks = np.array([1.0, 50.0])
    stack = lambda t: jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), t)
    kw = dict(num_epochs=4, batch_size=8, chunk_epochs=3, progress=False)
    both = fit_vi(keys, stack(conj.template), mean_loss_key, stack(data), kl_weight=ks, **kw)
    draws = sample_vi(keys, both, 5)
    assert both.losses.shape == (2, 4) and not np.allclose(both.losses[0], both.losses[1])
    for u in range(2):
        one = fit_vi(keys[u], conj.template, mean_loss_key, data, kl_weight=ks[u], **kw)
        np.testing.assert_allclose(both.losses[u], one.losses, rtol=1e-5)
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a, u=u: a[u], both.loc),
                                    one.loc, rtol=1e-5, atol=1e-7)
        alone = sample_vi(keys[u], one, 5)
        chex.assert_trees_all_close(split_units(draws)[u].params, alone.params, rtol=1e-5,
                                    atol=1e-6)
        assert set(split_units(draws)[u].info) == set(alone.info)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(batch_size=100), "batch_size"),
        (dict(kl_normalisation="mean"), "kl_normalisation"),
        (dict(prior_scale=0.0), "prior_scale"),
        (dict(num_epochs=0), "num_epochs"),
    ],
)
def test_bad_settings_raise(conj, kwargs, match):
    base = dict(num_epochs=2, batch_size=8, progress=False)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_vi(jax.random.key(0), conj.template, mean_loss_key, (conj.x, conj.y), **base)


def test_bad_data_raise(conj):
    kw = dict(num_epochs=1, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit_vi(jax.random.key(0), conj.template, mean_loss_key, (conj.x[:0], conj.y[:0]), **kw)
    with pytest.raises(ValueError, match="leading axis"):
        fit_vi(jax.random.key(0), conj.template, mean_loss_key, (conj.x, conj.y[:-1]), **kw)
    bad_y = conj.y.copy()
    bad_y[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_vi(jax.random.key(0), conj.template, mean_loss_key, (conj.x, bad_y), **kw)


def test_nan_loss_names_the_epoch(conj):
    nan_loss = lambda key, params, batch: jnp.sum(params["w"]) * jnp.nan
    with pytest.raises(FloatingPointError, match="epoch 0"):
        fit_vi(jax.random.key(0), conj.template, nan_loss, (conj.x, conj.y), num_epochs=1,
               batch_size=8, progress=False)


def test_fit_vi_cnf_learns_the_ring(tiny_field, ring_train):
    field, _ = tiny_field
    x, c = ring_train.x[:1000], ring_train.c[:1000]
    res = fit_vi_cnf(jax.random.key(0), field, x, c, kl_weight=10.0, num_epochs=40,
                     batch_size=250, chunk_epochs=40, optimizer=optax.adam(1e-2),
                     progress=False)
    # untrained (μ ≈ 0) the field outputs ≈ 0 and the loss is E|z − x|²/2 ≈ (1 + E r²/2)
    r2 = float(np.mean(np.sum(np.asarray(x) ** 2, -1)))
    assert abs(res.losses[0] - (1 + r2 / 2)) < 0.15 * (1 + r2 / 2)
    assert res.losses[-1] < 0.5 * res.losses[0]
    leaves = jax.tree_util.tree_leaves(res.scale)
    assert all(bool(jnp.all(leaf > 0)) for leaf in leaves)
