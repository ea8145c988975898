"""CNF transport, densities and gradients against closed-form flows and numerical integrals."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GaussianMorphField, LinearField

from bayesiamp_jax import flow
from bayesiamp_jax.integrate import Solver

RK4 = Solver("rk4", 20)
DOPRI = Solver("dopri5", rtol=1e-6, atol=1e-7)
SOLVERS = [pytest.param(RK4, id="rk4"), pytest.param(DOPRI, id="dopri5")]


@pytest.fixture(scope="module")
def points():
    """64 points around the Gaussian target and their conditions."""
    x = jax.random.normal(jax.random.PRNGKey(10), (64, 2)) * 2.0
    return x, jnp.full((64, 1), 4.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_gaussian_morph_samples_and_log_prob_are_exact(gaussian_morph, points, solver):
    """decode(z) = μ + s z exactly; sample moments; encode; log p = log N(x; μ, s²)."""
    field, params, mu, s = gaussian_morph
    n = 20_000
    c_many = jnp.ones((n, 1))
    key = jax.random.PRNGKey(12)
    xs = np.asarray(flow.sample(key, field, params, c_many, solver))
    z = np.asarray(jax.random.normal(key, (n, 2)))  # the noise ``sample`` draws from its key
    np.testing.assert_allclose(xs, mu + s * z, atol=5e-5)
    assert np.all(np.abs(xs.mean(0) - mu) < 4 * s / np.sqrt(n))
    assert np.all(np.abs(xs.std(0) - s) < 4 * s / np.sqrt(2 * n))
    x, c = points
    lp = flow.log_prob(field, params, x, c, solver)
    np.testing.assert_allclose(lp, GaussianMorphField.log_prob(x, mu, s), atol=2e-5, rtol=1e-6)


def test_sample_by_number_unconditional_and_one_condition(gaussian_morph):
    """num_samples: an unconditional field (c None) and one condition for all points both give
    μ + s z for the key's noise z (the exact flow), n rows."""
    import dataclasses

    field, params, mu, s = gaussian_morph
    key = jax.random.PRNGKey(13)
    z = np.asarray(jax.random.normal(key, (500, 2)))
    free = dataclasses.replace(field, cond_dim=0)
    np.testing.assert_allclose(flow.sample(key, free, params, num_samples=500, solver=RK4),
                               mu + s * z, atol=5e-5)
    np.testing.assert_allclose(flow.sample(key, field, params, jnp.ones(1), RK4, num_samples=500),
                               mu + s * z, atol=5e-5)
    with pytest.raises(ValueError, match="num_samples is required when c is None"):
        flow.sample(key, free, params)
    with pytest.raises(ValueError, match=r"c must have shape \(n, cond_dim\) .* got shape \(1,\)"):
        flow.sample(key, field, params, jnp.ones(1))
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        flow.sample(key, free, params, num_samples=0)


def test_gaussian_morph_encode(gaussian_morph, points):
    field, params, mu, s = gaussian_morph
    x, c = points
    np.testing.assert_allclose(flow.encode(field, params, x, c, RK4), (x - mu) / s, atol=2e-5)


def test_linear_field_log_prob_matches_matrix_exponential(linear_field, points):
    solver = RK4
    field, params, A, b = linear_field
    x, c = points
    np.testing.assert_allclose(
        flow.encode(field, params, x, c, solver), LinearField.encode(x, A, b), atol=2e-5
    )
    np.testing.assert_allclose(
        flow.log_prob(field, params, x, c, solver), LinearField.log_prob(x, A, b), atol=3e-5
    )


@pytest.mark.parametrize("rademacher", [True, False], ids=["rademacher", "gaussian"])
def test_hutchinson_mean_and_variance_match_closed_form(linear_field, rademacher):
    """εᵀAε has mean tr A; its variance is Σ_{i<j}(A_ij + A_ji)² (+ 2 Σ A_ii² for Gaussian ε)."""
    field, params, A, b = linear_field
    n = 4096
    x = jnp.broadcast_to(jnp.array([0.3, -0.7]), (n, 2))
    c = jnp.ones((n, 1))
    est = np.asarray(
        flow.log_prob_hutchinson(jax.random.PRNGKey(13), field, params, x, c, RK4, rademacher)
    )
    exact = LinearField.log_prob(np.array([[0.3, -0.7]]), A, b)[0]
    var = (A[0, 1] + A[1, 0]) ** 2 + (0.0 if rademacher else 2 * np.sum(np.diag(A) ** 2))
    assert abs(est.mean() - exact) < 4 * np.sqrt(var / n)
    assert est.var() == pytest.approx(var, rel=0.1)


def test_hutchinson_is_unbiased_for_trained_cnf(trained_cnf):
    n = 2048
    x = jnp.broadcast_to(jnp.array([4.3, 1.2]), (n, 2))
    c = jnp.full((n, 1), 4.0)
    exact = flow.log_prob(trained_cnf.field, trained_cnf.params, x[:1], c[:1], RK4)[0]
    est = np.asarray(flow.log_prob_hutchinson(
        jax.random.PRNGKey(14), trained_cnf.field, trained_cnf.params, x, c, RK4
    ))
    assert est.std() > 0  # the estimator is random for a non-trivial Jacobian
    assert abs(est.mean() - float(exact)) < 4 * est.std() / np.sqrt(n)


def test_encode_decode_roundtrip_trained_cnf(trained_cnf):
    field, params = trained_cnf.field, trained_cnf.params
    x, c = trained_cnf.x[:256], trained_cnf.c[:256]
    solver = Solver("rk4", 40)
    back = flow.decode(field, params, flow.encode(field, params, x, c, solver), c, solver)
    np.testing.assert_allclose(back, x, atol=2e-3)
    # an untrained (random) field is smooth: the round trip is tighter
    rand = field.init(jax.random.PRNGKey(15))
    back = flow.decode(field, rand, flow.encode(field, rand, x, c, solver), c, solver)
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_trained_cnf_density_integrates_to_one(trained_cnf):
    h = 0.2
    g = np.arange(-10.0, 10.0, h) + h / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    c = jnp.full((grid.shape[0], 1), 4.0)
    lp = flow.log_prob(trained_cnf.field, trained_cnf.params, jnp.asarray(grid), c, RK4)
    mass = float(np.sum(np.exp(np.asarray(lp, np.float64))) * h * h)
    assert mass == pytest.approx(1.0, abs=0.02)


def test_log_prob_gradient_matches_closed_form(gaussian_morph, points):
    """d/dμ Σ log N(x; μ, s²) = Σ (x − μ)/s²; d/d log s = Σ ((x − μ)²/s² − 1)."""
    field, params, mu, s = gaussian_morph
    x, c = points
    xn = np.asarray(x, np.float64)
    want_mu = ((xn - mu) / s**2).sum(0)
    want_log_s = ((xn - mu) ** 2 / s**2 - 1).sum(0)
    solver = Solver("rk4", 20, checkpoint=True)
    grad = jax.grad(lambda p: flow.log_prob(field, p, x, c, solver).sum())(params)
    np.testing.assert_allclose(grad["mu"], want_mu, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(grad["log_s"], want_log_s, rtol=1e-4, atol=1e-3)


def test_log_prob_gradient_matches_finite_differences(tiny_field, points):
    field, params = tiny_field
    x, c = points[0][:16], points[1][:16]
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    loss = jax.jit(lambda f, sv: flow.log_prob(field, unravel(f), x, c, sv).mean(),
                   static_argnums=1)
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    plain, ckpt = Solver("rk4", 10, checkpoint=False), Solver("rk4", 10, checkpoint=True)
    g_plain, g_ckpt = np.asarray(grad(flat, plain)), np.asarray(grad(flat, ckpt))
    np.testing.assert_allclose(g_ckpt, g_plain, rtol=1e-5, atol=1e-6)
    # central differences along random unit directions (float32: step 1e-2, smooth loss)
    rng = np.random.default_rng(0)
    eps = 1e-2
    for _ in range(3):
        d = rng.normal(size=flat.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        fd = (float(loss(flat + eps * d, plain)) - float(loss(flat - eps * d, plain))) / (2 * eps)
        assert fd == pytest.approx(float(g_ckpt @ d), rel=2e-2, abs=2e-3)


def test_cfm_loss_matches_reference_convention(linear_field):
    """y = (1 − t) x + (σ_min + (1 − σ_min) t) z, u = (1 − σ_min) z − x, mean of (v(y) − u)²."""
    field, params, A, b = linear_field
    x = np.array([[1.0, 2.0], [-3.0, 0.5], [0.2, 0.1]])
    t = np.array([0.2, 0.9, 0.0])
    z = np.array([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.7]])
    for sm in (flow.SIGMA_MIN, 0.1):
        y = (1 - t[:, None]) * x + (sm + (1 - sm) * t[:, None]) * z
        want = np.mean((y @ A.T + b - ((1 - sm) * z - x)) ** 2)
        xj, tj, zj = (jnp.asarray(a, jnp.float32) for a in (x, t, z))
        got = flow.cfm_loss_from_noise(field, params, xj, None, tj, zj, sm)
        assert float(got) == pytest.approx(want, rel=1e-5)
    # default sigma_min is the reference's 1e-4
    assert flow.SIGMA_MIN == 1e-4


def test_cfm_loss_draws_uniform_t_and_normal_z():
    x = jnp.zeros((50_000, 2))
    t, z = flow.draw_cfm_noise(jax.random.PRNGKey(16), x)
    assert t.shape == (50_000,) and z.shape == x.shape
    assert float(t.min()) >= 0.0 and float(t.max()) < 1.0
    assert abs(float(t.mean()) - 0.5) < 4 * np.sqrt(1 / 12 / 50_000)
    assert abs(float(z.var()) - 1.0) < 0.02


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, p: flow.decode(f, p, jnp.ones(2), None), r"z must have shape \(n, d\)"),
        (lambda f, p: flow.encode(f, p, jnp.array([[1.0, jnp.nan]]), None), "x contains 1"),
        (lambda f, p: flow.log_prob(f, p, jnp.array([[jnp.inf, 0.0]]), None), "x contains 1"),
        (lambda f, p: flow.sample(jax.random.PRNGKey(0), f, p, jnp.array([[jnp.nan]])),
         "c contains 1"),
        (lambda f, p: flow.cfm_loss(jax.random.PRNGKey(0), f, p, jnp.ones((2, 2)), None, 2.0),
         "sigma_min must lie in"),
        (lambda f, p: flow.decode(f, p, jnp.ones((3, 2)), None, "rk4"), "solver must be"),
    ],
)
def test_bad_inputs_raise(gaussian_morph, call, match):
    field, params, *_ = gaussian_morph
    with pytest.raises((ValueError, TypeError), match=match):
        call(field, params)
