"""AdamMCMC: proposal density and sampler, one step against a hand computation (numpy/scipy,
float64), RW-MH limit, conjugate Gaussian moments, numpyro adapter = functional core, vmap over
chains and σ, bad input."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from numpyro.infer import MCMC
from posterior_fixtures import PRIOR, conjugate_problem, mean_loss

from bayesiamp_jax.posteriors import adammcmc
from bayesiamp_jax.posteriors.adammcmc import (
    AdamMCMCState,
    adam_step,
    build_chain_step,
    build_kernel,
    chain_init,
    proposal_log_density,
    sample_proposal,
)
from bayesiamp_jax.posteriors.adammcmc_run import sample_adammcmc
from bayesiamp_jax.posteriors.draws import split_units
from bayesiamp_jax.posteriors.numpyro_kernel import AdamMCMC


def test_proposal_log_density_matches_scipy():
    rng = np.random.default_rng(0)
    mean, u, y = (rng.normal(size=4) for _ in range(3))
    sigma, sigma_dir = 0.7, 2.5
    cov = sigma**2 * np.eye(4) + sigma_dir**2 * np.outer(u, u)
    expected = scipy.stats.multivariate_normal(mean, cov).logpdf(y)
    got = proposal_log_density(*(jnp.asarray(a, jnp.float32) for a in (y, mean, u)),
                               sigma, sigma_dir)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_proposal_sampler_moments():
    mean = jnp.array([1.0, -2.0, 0.5])
    u = jnp.array([0.6, 0.3, -0.9])
    sigma, sigma_dir, n = 0.4, 1.5, 40_000
    draws = np.asarray(jax.vmap(lambda k: sample_proposal(k, mean, u, sigma, sigma_dir))(
        jax.random.split(jax.random.key(0), n)), np.float64)
    cov = sigma**2 * np.eye(3) + sigma_dir**2 * np.outer(u, u)
    se = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(draws.mean(0) - np.asarray(mean)), 5 * se)
    # sample covariance: relative error ~ sqrt(2/n) on the diagonal
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.03 * np.max(np.diag(cov)))


# --- one step by hand -----------------------------------------------------------------------

A_DIAG = np.array([2.0, 0.5, 1.0])
LR, B1, B2, EPS = 0.05, 0.9, 0.99, 1e-8


def _quad_loss(params, batch):
    return 0.5 * jnp.sum(jnp.asarray(A_DIAG, jnp.float32) * (params - batch) ** 2)


def _numpy_adam(theta, g, m, v, count):
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g**2
    count = count + 1
    step = LR * (m / (1 - B1**count)) / (np.sqrt(v / (1 - B2**count)) + EPS)
    return theta - step, step, m, v, count


def test_one_step_matches_hand_computation():
    opt = optax.adam(LR, b1=B1, b2=B2, eps=EPS)
    target = np.array([0.3, -0.2, 0.1])
    theta0 = np.array([1.0, 1.5, -0.5])
    state = adammcmc.init(jnp.asarray(theta0, jnp.float32), opt)
    batch = jnp.asarray(target, jnp.float32)
    # three plain Adam steps, by hand and by the code
    th, m, v, cnt = theta0.copy(), np.zeros(3), np.zeros(3), 0
    for _ in range(3):
        th, _, m, v, cnt = _numpy_adam(th, A_DIAG * (th - target), m, v, cnt)
        state, _ = adam_step(state, _quad_loss, batch, opt)
    np.testing.assert_allclose(np.asarray(state.position), th, rtol=1e-5)

    sigma, sigma_dir = 0.4, 3.0  # per-chain values; used as σ/√P, σ_dir/√P
    s, sd = sigma / np.sqrt(3), sigma_dir / np.sqrt(3)
    kernel = jax.jit(build_kernel(opt), static_argnums=2)
    accepted_seen = rejected_seen = False
    for seed in range(12):
        key = jax.random.key(seed)
        new, info = kernel(key, state, _quad_loss, batch, sigma, sigma_dir)
        loss = lambda x: 0.5 * np.sum(A_DIAG * (x - target) ** 2)
        mean_fwd, u, m_f, v_f, c_f = _numpy_adam(th, A_DIAG * (th - target), m, v, cnt)
        k_prop, _ = jax.random.split(key)
        tau = np.asarray(sample_proposal(k_prop, jnp.asarray(mean_fwd, jnp.float32),
                                         jnp.asarray(u, jnp.float32), s, sd), np.float64)
        mean_rev, u_rev, *_ = _numpy_adam(tau, A_DIAG * (tau - target), m, v, cnt)  # OLD state
        q = lambda y, mu, d: scipy.stats.multivariate_normal(
            mu, s**2 * np.eye(3) + sd**2 * np.outer(d, d)).logpdf(y)
        log_alpha = loss(th) - loss(tau) + q(th, mean_rev, u_rev) - q(tau, mean_fwd, u)
        np.testing.assert_allclose(float(info.acceptance_probability),
                                   min(1.0, np.exp(log_alpha)), rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(float(info.loss), loss(th), rtol=1e-5)
        np.testing.assert_allclose(float(info.proposal_loss), loss(tau), rtol=1e-4)
        mu_new, nu_new = new.opt_state[0].mu, new.opt_state[0].nu
        if bool(info.is_accepted):
            accepted_seen = True
            np.testing.assert_allclose(np.asarray(new.position), tau, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(mu_new), m_f, rtol=1e-4)
            np.testing.assert_allclose(np.asarray(nu_new), v_f, rtol=1e-4)
            assert int(new.opt_state[0].count) == c_f
        else:  # rejected: position AND optimizer state roll back
            rejected_seen = True
            np.testing.assert_array_equal(np.asarray(new.position), np.asarray(state.position))
            np.testing.assert_array_equal(np.asarray(mu_new), np.asarray(state.opt_state[0].mu))
            assert int(new.opt_state[0].count) == cnt
    assert accepted_seen and rejected_seen


def test_random_walk_limit_and_probability_range():
    # σ_dir = 0 and a vanishing learning rate: plain random-walk Metropolis, α = min(1, e^{−ΔL})
    opt = optax.adam(1e-10)
    step = build_chain_step(_quad_loss, optimizer=opt)
    target = jnp.zeros(3)
    state = chain_init(jax.random.key(1), jnp.array([0.5, -0.5, 1.0]), opt)

    def body(s, _):
        new, info = step(s, target, 1.5, 0.0)
        kern_info = info
        return new, (kern_info, _quad_loss(s.position, target), _quad_loss(new.position, target),
                     s.position, new.position)

    _, (info, loss_old, loss_new, old, new) = jax.lax.scan(body, state, None, length=400)
    p = np.asarray(info.acceptance_probability)
    assert np.all((p >= 0) & (p <= 1)) and 0.05 < p.mean() < 0.95
    acc = np.asarray(info.is_accepted)
    moved = np.any(np.asarray(old) != np.asarray(new), axis=1)
    np.testing.assert_array_equal(acc, moved)
    # for accepted steps the proposal is the new position: α = min(1, exp(L(θ) − L(τ)))
    expected = np.minimum(1, np.exp(np.asarray(loss_old, np.float64) - np.asarray(loss_new)))
    np.testing.assert_allclose(p[acc], expected[acc], rtol=1e-3, atol=1e-6)


# --- statistics on the conjugate Gaussian ----------------------------------------------------


@pytest.fixture(scope="module")
def conj():
    return conjugate_problem()


def _potential_of(n):
    def loss(params, batch):
        prior = sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(params))
        return n * mean_loss(params, batch) + 0.5 * prior / PRIOR**2

    return loss


_POTENTIAL = _potential_of(conjugate_problem().x.shape[0])  # one function: compiled code is reused


def _potential(conj):
    assert conj.x.shape[0] == conjugate_problem().x.shape[0]
    return _POTENTIAL


def test_conjugate_gaussian_moments(conj):
    draws = sample_adammcmc(
        jax.random.key(0), conj.template, _potential(conj), (conj.x, conj.y), sigma=0.35,
        sigma_dir=2.0, num_samples=600, thinning=5, num_burnin=100, num_chains=4,
        progress=False,
    )
    assert draws.method == "adammcmc" and draws.num_draws == 2400
    flat = np.concatenate([draws.params["b"], draws.params["w"]], 1).astype(np.float64)
    sd = np.sqrt(np.diag(conj.cov))
    acc = draws.info["acceptance_rate"]
    assert np.all((acc >= 0) & (acc <= 1)) and acc.mean() > 0.1
    # effective sample size is below 2400; allow 5 standard errors at ESS ~ 400
    np.testing.assert_array_less(np.abs(flat.mean(0) - conj.mean), 5 * sd / np.sqrt(400))
    np.testing.assert_allclose(np.sqrt(np.diag(np.cov(flat.T))), sd, rtol=0.15)
    corr = np.corrcoef(flat.T)
    exact_corr = conj.cov / np.outer(sd, sd)
    np.testing.assert_allclose(corr, exact_corr, atol=0.12)


# --- numpyro adapter -------------------------------------------------------------------------


def test_numpyro_kernel_gives_the_functional_draws(conj):
    loss = _potential(conj)
    data = (jnp.asarray(conj.x), jnp.asarray(conj.y))
    inits = {"b": jnp.array([[0.0], [0.5]]), "w": jnp.array([[1.0, 1.0], [2.0, 0.0]])}
    kernel = AdamMCMC(potential_fn=loss, data=data, batch_size=8, sigma=0.3, sigma_dir=2.0)
    mcmc = MCMC(kernel, num_warmup=3, num_samples=12, thinning=3, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    key = jax.random.key(7)
    mcmc.run(key, init_params=inits, extra_fields=("acceptance_probability",))
    got = mcmc.get_samples(group_by_chain=True)
    acc = mcmc.get_extra_fields(group_by_chain=True)["acceptance_probability"]
    assert got["w"].shape == (2, 4, 2)

    step = jax.jit(build_chain_step(loss, batch_size=8))
    for chain, k in enumerate(jax.random.split(key, 2)):
        state = chain_init(k, jax.tree_util.tree_map(lambda a, c=chain: a[c], inits))
        traj, probs = [], []
        for _ in range(15):
            state, info = step(state, data, 0.3, 2.0)
            traj.append(np.asarray(state.position["w"]))
            probs.append(float(info.acceptance_probability))
        np.testing.assert_allclose(np.asarray(got["w"][chain]), np.stack(traj)[5::3], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(acc[chain]), np.asarray(probs)[5::3], rtol=1e-5)


def test_numpyro_kernel_with_model_equals_potential(conj):
    from bayesiamp_jax.posteriors.model import build_weight_model

    n = conj.x.shape[0]
    model = build_weight_model(conj.template, mean_loss, prior_scale=PRIOR, likelihood_scale=n)
    data = (jnp.asarray(conj.x), jnp.asarray(conj.y))
    theta0 = jnp.array([0.1, 1.0, 0.8])  # flat order [b, w]
    run = dict(num_warmup=0, num_samples=20, progress_bar=False)
    by_model = MCMC(AdamMCMC(model, data=data, sigma=0.35, sigma_dir=2.0), **run)
    by_model.run(jax.random.key(0), init_params={"theta": theta0})
    by_potential = MCMC(AdamMCMC(potential_fn=_potential(conj), data=data, sigma=0.35,
                                 sigma_dir=2.0), **run)
    by_potential.run(jax.random.key(0), init_params={"b": theta0[:1], "w": theta0[1:]})
    theta = np.asarray(by_model.get_samples()["theta"])
    ref = by_potential.get_samples()
    # model potential = hand-written potential + constant: the same chain
    np.testing.assert_allclose(theta, np.concatenate([ref["b"], ref["w"]], 1), rtol=1e-4,
                               atol=1e-5)
    assert len(np.unique(theta[:, 0])) > 2  # the chain moved


def test_unit_axis_over_sigma_equals_one_call_per_unit(conj):
    loss = _potential(conj)
    data = (jnp.asarray(conj.x), jnp.asarray(conj.y))
    keys = jax.random.split(jax.random.key(0), 2)
    sigmas = np.array([0.05, 1.0])
    stack = lambda t: jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), t)
    kw = dict(sigma_dir=1.0, num_samples=6, thinning=4, num_chains=2, progress=False)
    both = sample_adammcmc(keys, stack(conj.template), loss, stack(data), sigma=sigmas, **kw)
    assert both.params["w"].shape == (2, 12, 2)
    for u, unit in enumerate(split_units(both)):
        one = sample_adammcmc(keys[u], conj.template, loss, data, sigma=sigmas[u], **kw)
        chex.assert_trees_all_close(unit.params, one.params, rtol=1e-5, atol=1e-6)
        assert set(unit.info) == set(one.info)
        np.testing.assert_allclose(unit.info["acceptance_rate"], one.info["acceptance_rate"],
                                   rtol=1e-5, atol=1e-6)
    # smaller steps are accepted more often
    acc = both.info["acceptance_rate"]
    assert acc[0].mean() > acc[1].mean()


def test_bad_settings_raise(conj):
    loss = _potential(conj)
    data = (conj.x, conj.y)
    kw = dict(num_samples=2, thinning=1, progress=False)
    with pytest.raises(ValueError, match="sigma"):
        sample_adammcmc(jax.random.key(0), conj.template, loss, data, sigma=-0.1, **kw)
    with pytest.raises(ValueError, match="sigma_dir"):
        sample_adammcmc(jax.random.key(0), conj.template, loss, data, sigma=0.1,
                        sigma_dir=-1.0, **kw)
    with pytest.raises(ValueError, match="empty"):
        sample_adammcmc(jax.random.key(0), conj.template, loss, (conj.x[:0], conj.y[:0]),
                        sigma=0.1, **kw)
    with pytest.raises(ValueError, match="num_chains"):
        sample_adammcmc(jax.random.key(0), conj.template, loss, data, sigma=0.1,
                        num_chains=3, stacked_init=True, **kw)
    with pytest.raises(ValueError, match="thinning"):
        MCMC(AdamMCMC(potential_fn=loss, data=data, sigma=0.1), num_warmup=0, num_samples=5,
             thinning=10).run(jax.random.key(0), init_params=conj.template)
    with pytest.raises(ValueError, match="sigma"):
        AdamMCMC(potential_fn=loss, sigma=0.0)


def test_nan_loss_names_step_and_chain(conj):
    def loss(params, batch):
        bad = jnp.where(params["b"][0] > 5.0, jnp.nan, 0.0)  # chain 1 starts in the NaN region
        return _potential(conj)(params, batch) + bad

    inits = {"b": jnp.array([[0.0], [9.0]]), "w": jnp.zeros((2, 2))}
    with pytest.raises(FloatingPointError, match="step 0 of chain 1"):
        sample_adammcmc(jax.random.key(0), inits, loss, (conj.x, conj.y), sigma=0.1,
                        num_samples=1, thinning=2, num_chains=2, stacked_init=True,
                        progress=False)


def test_checkpoint_resume_gives_identical_draws(conj, tmp_path):
    loss = _potential(conj)
    kw = dict(sigma=0.3, sigma_dir=1.0, thinning=3, batch_size=8, num_chains=2, progress=False)
    data = (conj.x, conj.y)
    full = sample_adammcmc(jax.random.key(2), conj.template, loss, data, num_samples=4, **kw)
    path = tmp_path / "amc.msgpack"
    sample_adammcmc(jax.random.key(2), conj.template, loss, data, num_samples=2,
                    checkpoint_path=path, **kw)
    resumed = sample_adammcmc(jax.random.key(2), conj.template, loss, data, num_samples=4,
                              checkpoint_path=path, **kw)
    chex.assert_trees_all_equal(full.params, resumed.params)
    chex.assert_trees_all_equal(full.info, resumed.info)
    # a changed sigma must not continue the old chains silently
    with pytest.raises(ValueError, match=r"sigma: checkpoint 0\.3.*, now 0\.5"):
        sample_adammcmc(jax.random.key(2), conj.template, loss, data, num_samples=4,
                        checkpoint_path=path, **{**kw, "sigma": 0.5})


def test_state_type_is_namedtuple():
    s = adammcmc.init({"a": jnp.zeros(2)})
    assert isinstance(s, AdamMCMCState) and s._fields == ("position", "opt_state")
