"""SGLD and SGHMC (blackjax's kernels through the driver) against the conjugate posterior.

The answers are computed here with numpy, independently of the code: the exact (tempered)
posterior of the linear-Gaussian model of ``posterior_fixtures`` and the step-size bias of the
discretised chains. The loss there is mean (y − x·w − b)² / (2σ²), so −(N / T) L is the
log-likelihood of y ~ N(x·w + b, T σ²): the tempered posterior is conjugate with precision
A_T = ΦᵀΦ / (T σ²) + I / s² and mean A_T⁻¹ Φᵀy / (T σ²) (T = 2 halves the likelihood's
precision: about twice the covariance where the likelihood dominates, as here).

Tolerances: on the whitened draws z = L⁻¹(θ − m) (Σ_T = L Lᵀ), every mean within 4 / √ESS and
every covariance entry within 4 √((1 + δ_jk) / ESS) of the identity, ESS from numpyro over
the chains (units with equal T), plus the step-size bias of the chain, predicted here for
the full-batch chain exactly and for the mini-batch noise to leading order (see
``predicted_bias``): it is the bias we allow, because a fixed-step SG-MCMC chain has no other
stationary law.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from numpyro.diagnostics import effective_sample_size
from posterior_fixtures import NOISE, PRIOR, conjugate_problem, mean_loss

from bayesiamp_jax.convergence import holdout_set
from bayesiamp_jax.flow import cfm_loss_from_noise
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.draws import load_draws, save_draws, split_units
from bayesiamp_jax.posteriors.model import with_cfm_noise
from bayesiamp_jax.posteriors.sgmcmc import (
    sample_sghmc,
    sample_sghmc_cnf,
    sample_sgld,
    sample_sgld_cnf,
)

pytest.importorskip("blackjax")

TEMPS = np.array([1.0, 1.0, 2.0, 2.0])  # 4 units = 2 chains at T = 1 and 2 at T = 2


@pytest.fixture(scope="module")
def conj():
    return conjugate_problem()


# --- the answers, in numpy -------------------------------------------------------------------


def design(conj):
    """Φ in the flat weight order of the params {"b", "w"}: [1, x]."""
    return np.concatenate([np.ones((conj.x.shape[0], 1)), conj.x.astype(np.float64)], 1)


def tempered_posterior(conj, temperature):
    """Mean, covariance and precision of p(θ | D)^(likelihood tempered by 1/T)."""
    phi = design(conj)
    precision = phi.T @ phi / (temperature * NOISE**2) + np.eye(phi.shape[1]) / PRIOR**2
    cov = np.linalg.inv(precision)
    return cov @ phi.T @ conj.y.astype(np.float64) / (temperature * NOISE**2), cov, precision


def gradient_noise(conj, temperature, batch_size):
    """Covariance of the mini-batch gradient N · mean_B ∇log p_i (B of N without replacement),
    averaged over θ ~ the posterior: the finite-population variance N² S (N − B) / (B (N − 1))
    of the per-event gradients h_i(θ) = φ_i (φ_iᵀθ − y_i) / (T σ²)."""
    mean, cov, _ = tempered_posterior(conj, temperature)
    phi, y = design(conj), conj.y.astype(np.float64)
    n = phi.shape[0]
    s2 = temperature * NOISE**2
    h = phi * (phi @ mean - y)[:, None] / s2
    outer = np.einsum("ni,nj->nij", phi, phi) / s2
    spread = (np.einsum("nij,jk,nlk->il", outer, cov, outer) / n
              - outer.mean(0) @ cov @ outer.mean(0))
    return n**2 / batch_size * (n - batch_size) / (n - 1) * (np.cov(h.T, bias=True) + spread)


def whiten(matrix, cov):
    chol_inv = np.linalg.inv(np.linalg.cholesky(cov))
    return chol_inv @ matrix @ chol_inv.T


def sgld_stationary_cov(conj, temperature, step, batch_size=None):
    """Stationary covariance of θ' = θ + ε(b − Aθ + e) + √(2ε) ξ: the discrete Lyapunov
    equation Σ = (I − εA) Σ (I − εA) + 2ε I + ε² V (full batch: V = 0 and Σ = A⁻¹(I − εA/2)⁻¹
    exactly; mini-batch: e ~ (0, V) independent between steps, to leading order)."""
    _, _, precision = tempered_posterior(conj, temperature)
    p = len(precision)
    noise = 2 * step * np.eye(p)
    if batch_size is not None:
        noise = noise + step**2 * gradient_noise(conj, temperature, batch_size)
    return sl.solve_discrete_lyapunov(np.eye(p) - step * precision, noise)


def sghmc_stationary_cov(conj, temperature, step, friction, num_steps, batch_size=None):
    """Stationary covariance of blackjax's SGHMC call: p ~ N(0, I), then ``num_steps`` Euler
    steps x' = x + ε p, p' = (1 − αε) p + ε(b − Ax + e) + √(2αε) ξ with ONE batch error
    e ~ (0, V) for the whole call; the fixed point of the call's covariance map."""
    _, cov, precision = tempered_posterior(conj, temperature)
    p = len(precision)
    eye, zero = np.eye(p), np.zeros((p, p))
    step_map = np.block([[eye, step * eye, zero],
                         [-step * precision, (1 - friction * step) * eye, step * eye],
                         [zero, zero, eye]])
    noise = sl.block_diag(zero, 2 * friction * step * eye, zero)
    v = zero if batch_size is None else gradient_noise(conj, temperature, batch_size)
    sx = cov
    for _ in range(20_000):
        s = sl.block_diag(sx, eye, v)
        for _ in range(num_steps):
            s = step_map @ s @ step_map.T + noise
        if np.max(np.abs(s[:p, :p] - sx)) < 1e-14:
            break
        sx = s[:p, :p]
    return sx


def check_posterior(flat, temperature, conj, stationary_cov):
    """flat (chains, S, P) against the tempered posterior; returns (ESS, whitened cov, bias)."""
    mean, cov, _ = tempered_posterior(conj, temperature)
    chol_inv = np.linalg.inv(np.linalg.cholesky(cov))
    z = (flat.astype(np.float64) - mean) @ chol_inv.T
    ess = np.asarray(effective_sample_size(z))
    bias = np.max(np.abs(whiten(stationary_cov, cov) - np.eye(len(cov))))
    z_mean = z.mean((0, 1))
    np.testing.assert_array_less(np.abs(z_mean), 4 / np.sqrt(ess))
    zz = z.reshape(-1, z.shape[-1])
    c_hat = np.cov(zz.T)
    eye = np.eye(len(cov))
    tol = bias + 4 * np.sqrt((1 + eye) / ess.min())
    np.testing.assert_array_less(np.abs(c_hat - eye), tol)
    return ess, c_hat, bias


def stack(tree, n=4):
    return jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * n), tree)


def flat_draws(draws):
    return np.concatenate([draws.params["b"], draws.params["w"]], -1)


# --- the conjugate checks --------------------------------------------------------------------


def test_closed_forms_agree(conj):
    """The helpers' T = 1 posterior is the fixture's; the SGLD Lyapunov solution is the closed
    form A⁻¹ (I − εA/2)⁻¹; the SGHMC map's bias vanishes as ε → 0 at a fixed time ε L per call."""
    mean, cov, precision = tempered_posterior(conj, 1.0)
    np.testing.assert_allclose(mean, conj.mean, rtol=1e-6)
    np.testing.assert_allclose(cov, conj.cov, rtol=1e-6)
    eps = 3e-4
    np.testing.assert_allclose(sgld_stationary_cov(conj, 1.0, eps),
                               np.linalg.inv(precision - eps * precision @ precision / 2),
                               rtol=1e-8)
    bias = [np.max(np.abs(whiten(sghmc_stationary_cov(conj, 1.0, e, 1.0, n), cov)
                          - np.eye(3))) for e, n in ((2e-3, 50), (5e-4, 200))]
    assert bias[1] < bias[0] / 3


SGLD_STEP = 3.5e-4  # ε λ_max(A_1) = 0.04: the full-batch bias of the variances is 1.7 %
SGLD = dict(thinning=100, num_burnin=2000, chunk_samples=200, progress=False)
# (samples, least ESS): the fast CI size (variances within 4 √(2 / 250) = 0.36 + bias, which
# still tells T = 2 from T = 1) and the long check (-m slow: within 0.2 + bias)
FAST, LONG = (400, 250), pytest.param((1200, 800), marks=pytest.mark.slow)
_RUNS = {}  # compiled programs and runs shared by the tests of this module


def sgld_units(conj, batch_size, num_samples):
    """4 chains (T = 1, 1, 2, 2; ε doubled at T = 2 so that ε λ is the same) of draws every 100
    steps after 2,000 steps of burn-in (e^-21 of the start's distance)."""
    key = ("sgld", batch_size, num_samples)
    if key not in _RUNS:
        _RUNS[key] = sample_sgld(
            jax.random.split(jax.random.key(0), 4), stack(conj.template), mean_loss,
            stack((conj.x, conj.y)), step_size=SGLD_STEP * TEMPS, temperature=TEMPS,
            num_samples=num_samples, batch_size=batch_size, **SGLD)
    return _RUNS[key]


def sgld_one_unit(conj, u, num_samples=400, **kw):
    """Unit u of ``sgld_units(conj, 8, ...)`` run alone (key u of the split)."""
    return sample_sgld(jax.random.split(jax.random.key(0), 4)[u], conj.template, mean_loss,
                       (conj.x, conj.y), step_size=SGLD_STEP * TEMPS[u],
                       temperature=TEMPS[u], num_samples=num_samples, batch_size=8,
                       **SGLD | kw)


@pytest.mark.parametrize("size", [FAST, LONG])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_sgld_matches_conjugate_posterior(conj, batch_size, size):
    num_samples, least_ess = size
    steps = SGLD_STEP * TEMPS
    draws = sgld_units(conj, batch_size, num_samples)
    assert draws.method == "sgld" and draws.params["w"].shape == (4, num_samples, 2)
    flat = flat_draws(draws)
    for group, temp in ((slice(0, 2), 1.0), (slice(2, 4), 2.0)):
        stationary = sgld_stationary_cov(conj, temp, steps[group][0], batch_size)
        ess, c_hat, bias = check_posterior(flat[group], temp, conj, stationary)
        print(f"SGLD B={batch_size} T={temp}: ESS {ess.round()}, bias {bias:.3f}, "
              f"whitened cov - I {np.abs(c_hat - np.eye(3)).max():.3f}")
        assert ess.min() > least_ess
        assert bias < (0.02 if batch_size is None else 0.06)
    # the T = 2 chains are wider: twice the covariance, up to the prior's pull (exact ratio)
    var_ratio = flat[2:].reshape(-1, 3).var(0) / flat[:2].reshape(-1, 3).var(0)
    exact = np.diag(tempered_posterior(conj, 2.0)[1]) / np.diag(conj.cov)
    np.testing.assert_allclose(var_ratio, exact, rtol=0.35 if least_ess < 800 else 0.25)
    assert np.all(exact > 1.9)
    np.testing.assert_allclose(draws.info["temperature"], TEMPS)
    np.testing.assert_allclose(draws.info["step_size"], steps, rtol=1e-6)
    # the loss at each draw is the model's mean loss there (full batch: exactly)
    if batch_size is None:
        want = jax.vmap(jax.vmap(lambda p: mean_loss(p, (conj.x, conj.y))))(draws.params)
        np.testing.assert_allclose(draws.info["loss"], want, rtol=1e-4)


@pytest.mark.parametrize("size", [FAST, LONG])
@pytest.mark.parametrize("batch_size,step,num_steps,thinning", [
    pytest.param(None, 3e-3, 50, 1, marks=pytest.mark.slow),  # CI: the mini-batch case only
    (20, 3e-3, 30, 3)])
def test_sghmc_matches_conjugate_posterior(conj, batch_size, step, num_steps, thinning, size):
    """4 chains (T = 1, 1, 2, 2; ε √2 at T = 2: the same rotation ε L ω per call) of draws every
    ``thinning`` kernel calls. blackjax's SGHMC refreshes the momentum every call and its
    first Euler step moves x with the fresh momentum before any force: the variances come out
    ≈ 1 / (L − 1) too wide (2 % at L = 50); one mini-batch per call adds ≈ (ε L)² V."""
    num_samples, least_ess = size
    num_samples = int(num_samples * 5 / 3)
    steps = step * np.sqrt(TEMPS)
    draws = sample_sghmc(jax.random.split(jax.random.key(1), 4), stack(conj.template),
                         mean_loss, stack((conj.x, conj.y)), step_size=steps,
                         temperature=TEMPS, num_samples=num_samples, thinning=thinning,
                         num_burnin=100, batch_size=batch_size, friction=1.0,
                         num_integration_steps=num_steps, chunk_samples=num_samples,
                         progress=False)
    assert draws.method == "sghmc" and draws.params["w"].shape == (4, num_samples, 2)
    flat = flat_draws(draws)
    for group, temp in ((slice(0, 2), 1.0), (slice(2, 4), 2.0)):
        stationary = sghmc_stationary_cov(conj, temp, steps[group][0], 1.0, num_steps,
                                          batch_size)
        ess, c_hat, bias = check_posterior(flat[group], temp, conj, stationary)
        print(f"SGHMC B={batch_size} T={temp}: ESS {ess.round()}, bias {bias:.3f}, "
              f"whitened cov - I {np.abs(c_hat - np.eye(3)).max():.3f}")
        assert ess.min() > least_ess
        assert bias < (0.045 if batch_size is None else 0.1)
    np.testing.assert_allclose(draws.info["num_integration_steps"], num_steps)
    np.testing.assert_allclose(draws.info["friction"], 1.0)


# --- units, resume, save / load, the CNF, errors ---------------------------------------------


def test_units_equal_one_unit_calls(conj):
    """Units 0 (T = 1) and 2 (T = 2, another step size) of the 4-unit mini-batch run equal
    the one-unit calls with their keys, step sizes and temperatures."""
    both = split_units(sgld_units(conj, 8, 400))
    for u in (0, 2):
        one = _RUNS.setdefault(("one", u), sgld_one_unit(conj, u))
        chex.assert_trees_all_close(both[u].params, one.params, rtol=1e-5, atol=1e-6)
        assert set(both[u].info) == set(one.info)
        np.testing.assert_allclose(both[u].info["loss"], one.info["loss"], rtol=1e-5)


def flat_loss(params, batch):
    """A loss without data dependence: SGLD is then a random walk θ' = θ + √(2ε) ξ."""
    return 0.0 * jnp.sum(params["w"]) * jnp.sum(batch)


def test_cyclical_step_size_is_the_cosine_schedule():
    """Random walk (zero loss, prior s = 10⁶) over P = 2,000 weights, one call per draw, 3
    burn-in calls: the increment of draw s has variance 2 ε_s per weight, ε = ε0 in the
    burn-in and ε0 / 2 (cos(π mod(s, C) / C) + 1) after it (C = 8 calls), within 4 √(2 / P)."""
    eps0, cycle, burn = 1e-2, 8, 3
    draws = sample_sgld(jax.random.key(7), {"w": jnp.zeros(2000)}, flat_loss,
                        jnp.zeros((4, 1)), step_size=eps0, num_samples=16, thinning=1,
                        num_burnin=burn, prior_scale=1e6, cycle_length=cycle,
                        chunk_samples=16, progress=False)
    s = np.arange(16)
    eps = eps0 / 2 * (np.cos(np.pi * (s % cycle) / cycle) + 1)
    want = 2 * eps
    want[0] += 2 * eps0 * burn  # the burn-in calls before draw 0
    inc = np.diff(np.concatenate([np.zeros((1, 2000)), draws.params["w"]]), axis=0)
    np.testing.assert_allclose(inc.var(1), want, rtol=4 * np.sqrt(2 / 2000))
    assert want.max() / want[1:].min() > 20  # the schedule is far from constant
    np.testing.assert_allclose(draws.info["cycle_fraction"], (s % cycle) / cycle)
    assert int(draws.info["cycle_length"]) == cycle


def test_diverging_unit_is_named(conj):
    """A step size far past stability (ε λ_max ≈ 100) makes unit 1 overflow; the error names
    it (the same compiled program as the 4-unit mini-batch run: the step size is traced)."""
    steps = SGLD_STEP * TEMPS * np.array([1.0, 3000.0, 1.0, 1.0])
    with pytest.raises(FloatingPointError, match=r"SGLD x4 units: the loss at the kept "
                       r"sample \(sample 0: after the burn-in\) is non-finite .* unit 1"):
        sample_sgld(jax.random.split(jax.random.key(0), 4), stack(conj.template), mean_loss,
                    stack((conj.x, conj.y)), step_size=steps, temperature=TEMPS,
                    num_samples=400, batch_size=8, **SGLD)


def test_resume_equals_uninterrupted_and_draws_round_trip(conj, tmp_path):
    full = _RUNS.get(("one", 0)) or sgld_one_unit(conj, 0)
    path = tmp_path / "sgld.msgpack"
    sgld_one_unit(conj, 0, num_samples=200, checkpoint_path=path)  # interrupted at 200
    resumed = sgld_one_unit(conj, 0, checkpoint_path=path)
    chex.assert_trees_all_equal(full.params, resumed.params)
    chex.assert_trees_all_equal(full.info, resumed.info)
    with pytest.raises(ValueError, match="step_size"):  # other settings: not resumed
        sample_sgld(jax.random.split(jax.random.key(0), 4)[0], conj.template, mean_loss,
                    (conj.x, conj.y), step_size=1e-4, num_samples=400, batch_size=8,
                    checkpoint_path=path, **SGLD)
    saved = save_draws(tmp_path / "draws.msgpack", full)
    back = load_draws(saved, template=conj.template)
    assert back.method == "sgld"
    chex.assert_trees_all_equal(back.params, full.params)
    assert set(back.info) == set(full.info)
    for k, v in full.info.items():
        np.testing.assert_array_equal(back.info[k], v)


def tiny_events(num, seed):
    """x (num, 2), c (num, 1): ring-like events r ~ N(c, 0.1), φ ~ U(0, 2π)."""
    k_c, k_r, k_phi = jax.random.split(jax.random.key(seed), 3)
    c = jax.random.uniform(k_c, (num, 1), minval=1.0, maxval=2.0)
    r = c[:, 0] + 0.1 * jax.random.normal(k_r, (num,))
    phi = jax.random.uniform(k_phi, (num,), maxval=2 * np.pi)
    return jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi)], -1), c


def test_sgld_cnf_runs_on_a_tiny_field(tiny_field):
    field, params = tiny_field
    x, c = tiny_events(64, 0)
    held = holdout_set(*tiny_events(32, 1))
    keys = jax.random.split(jax.random.key(5), 2)
    draws = sample_sgld_cnf(keys, field, stack(params, 2), stack(x, 2), stack(c, 2),
                            step_size=1e-5, num_samples=3, thinning=2, num_burnin=2,
                            batch_size=16, temperature=np.array([1.0, 2.0]), progress=False,
                            holdout=held)
    for a, b in zip(jax.tree_util.tree_leaves(draws.params), jax.tree_util.tree_leaves(params),
                    strict=True):
        assert a.shape == (2, 3) + b.shape and np.all(np.isfinite(a))
    assert draws.info["loss"].shape == (2, 3) and np.all(np.isfinite(draws.info["loss"]))
    # the held-out loss of every draw is the flow-matching loss with the held-out noise
    noisy = with_cfm_noise(held.key, held.x, held.c)
    loss = jax.jit(jax.vmap(jax.vmap(lambda p: cfm_loss_from_noise(field, p, *noisy))))
    np.testing.assert_allclose(draws.info["holdout_loss"], loss(draws.params), rtol=1e-4)
    for unit in split_units(draws):
        assert unit.info["holdout_curve"].shape == (4,)
        np.testing.assert_array_equal(unit.info["holdout_epochs"], [0, 4, 6, 8])


@pytest.mark.slow
def test_sghmc_cnf_runs_on_a_tiny_field(tiny_field):
    field, params = tiny_field
    x, c = tiny_events(64, 0)
    one = sample_sghmc_cnf(jax.random.key(6), field, params, x, c, step_size=1e-3,
                           num_samples=2, thinning=1, num_burnin=0, batch_size=32,
                           num_integration_steps=3, progress=False)
    assert one.method == "sghmc" and one.num_draws == 2
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(params),
                    strict=True):
        assert a.shape == (2,) + b.shape and np.all(np.isfinite(a))


def test_registered():
    assert {"sgld", "sghmc"} <= set(driver.ALGORITHMS)


@pytest.mark.parametrize("bad,match", [
    (dict(step_size=0.0), "step_size must be a finite number > 0, got 0.0"),
    (dict(step_size=np.array([1e-3, -1.0])), r"step_size\[1\] must be"),
    (dict(thinning=0), "thinning must be a positive integer, got 0"),
    (dict(batch_size=25), "batch_size=25 exceeds the number of points N=24"),
    (dict(temperature=0.0), "temperature must be"),
    (dict(num_burnin=-1), "num_burnin must be an integer >= 0, got -1"),
    (dict(num_samples=0), "num_samples must be a positive integer"),
    (dict(cycle_length=0), "cycle_length must be a positive integer, got 0"),
])
def test_bad_settings_raise_one_line(conj, bad, match):
    kw = dict(step_size=1e-3, num_samples=2, thinning=1, progress=False) | bad
    with pytest.raises(ValueError, match=match) as err:
        sample_sgld(jax.random.key(0), conj.template, mean_loss, (conj.x, conj.y), **kw)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="friction"):
        sample_sghmc(jax.random.key(0), conj.template, mean_loss, (conj.x, conj.y),
                     step_size=1e-3, num_samples=2, friction=-1.0, progress=False)
