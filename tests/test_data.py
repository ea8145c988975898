"""The Gamma ring toy against its closed-form distribution (independent of the sampler)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax import data

N = 200_000


def gamma2_cdf(g):
    """CDF of Gamma(shape 2, rate 2) in closed form: 1 − e^{−2g}(1 + 2g) for g ≥ 0."""
    g = np.maximum(np.asarray(g, np.float64), 0.0)
    return 1.0 - np.exp(-2.0 * g) * (1.0 + 2.0 * g)


@pytest.fixture(scope="module")
def ring():
    sample = data.sample_ring(jax.random.PRNGKey(0), N)
    r, phi = (np.asarray(v, np.float64) for v in data.to_polar(sample.x))
    return sample, r, phi


def test_ring_shapes_and_condition(ring):
    sample, _, _ = ring
    assert sample.x.shape == (N, 2) and sample.c.shape == (N, 1)
    assert sample.x.dtype == jnp.float32
    assert np.all(np.asarray(sample.c) == 4.0)


def test_ring_radius_moments_and_edge(ring):
    _, r, _ = ring
    assert r.min() >= 4.0 - 1e-5
    assert abs(r.mean() - 5.0) < 4 * math.sqrt(0.5 / N)
    # var of the sample variance of Gamma(2, rate 2): (μ4 − σ⁴)/n with μ4 = 3·2·(2+2)/16 = 1.5
    assert abs(r.var() - 0.5) < 4 * math.sqrt((1.5 - 0.25) / N)


def test_ring_radius_distribution_is_gamma(ring):
    _, r, _ = ring
    assert scipy.stats.kstest(r - 4.0, gamma2_cdf).pvalue > 1e-3


def test_ring_angle_is_uniform_and_independent_of_radius(ring):
    _, r, phi = ring
    assert phi.min() >= 0.0 and phi.max() < 2 * math.pi
    assert scipy.stats.kstest(phi / (2 * math.pi), "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(r, phi)[0, 1]) < 4 / math.sqrt(N)


def test_quantile_edges_match_closed_form_cdf():
    for n in (1, 5, 50):
        edges = data.quantile_edges(n)
        assert edges.r.shape == (n + 1,) and edges.phi.shape == (n + 1,)
        assert edges.r[0] == -np.inf and edges.r[-1] == np.inf
        np.testing.assert_allclose(gamma2_cdf(edges.r[1:-1] - 4.0), np.arange(1, n) / n,
                                   atol=1e-12)
        np.testing.assert_allclose(edges.phi, 2 * np.pi * np.arange(n + 1) / n)
        np.testing.assert_allclose(data.radial_cdf(edges.r[1:-1]), np.arange(1, n) / n)
    # the median of Gamma(2, rate 2) solves 1 − e^{−2g}(1 + 2g) = 1/2: g ≈ 0.8391735
    assert data.quantile_edges(2).r[1] == pytest.approx(4.8391735, abs=1e-6)


def test_quantile_cells_hold_equal_truth_mass(ring):
    """Each of the n² cells holds 1/n² of a large truth sample (chi-square test)."""
    _, r, phi = ring
    n = 5
    edges = data.quantile_edges(n)
    counts, _, _ = np.histogram2d(r, phi, bins=(edges.r, edges.phi))
    assert counts.sum() == N
    assert scipy.stats.chisquare(counts.ravel()).pvalue > 1e-3


def test_truth_density_is_normalised_and_matches_formula():
    h = 0.02
    g = np.arange(-12.0, 12.0, h) + h / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    p = np.exp(np.asarray(data.truth_log_prob(jnp.asarray(grid)), np.float64))
    assert p.sum() * h * h == pytest.approx(1.0, abs=2e-3)
    # p(x) = 4 (r − 4) e^{−2(r − 4)} / (2π r) at r = 4.5, and zero inside the ring
    x = jnp.array([[4.5 * math.cos(1.0), 4.5 * math.sin(1.0)], [1.0, 2.0]])
    lp = np.asarray(data.truth_log_prob(x))
    assert lp[0] == pytest.approx(math.log(4 * 0.5 * math.exp(-1.0) / (2 * math.pi * 4.5)),
                                  abs=1e-5)
    assert lp[1] == -np.inf


def test_varying_r_mean_sampler():
    n = 100_000
    sample = data.sample_ring_varying(jax.random.PRNGKey(3), n)
    c = np.asarray(sample.c[:, 0], np.float64)
    r, _ = data.to_polar(sample.x)
    g = np.asarray(r, np.float64) - c
    assert c.min() >= 1.0 and c.max() <= 6.0
    # Triangular(1, 6, mode 6): mean 13/3, var (1 + 36 + 36 − 6 − 6 − 36)/18 = 25/18
    assert abs(c.mean() - 13 / 3) < 4 * math.sqrt(25 / 18 / n)
    tri = scipy.stats.triang(c=1.0, loc=1.0, scale=5.0)
    assert scipy.stats.kstest(c, tri.cdf).pvalue > 1e-3
    # the radius offset is Gamma(2, rate 2) around each point's own r_mean
    assert g.min() >= -1e-5
    assert scipy.stats.kstest(g, gamma2_cdf).pvalue > 1e-3


def test_sampler_is_jittable_and_deterministic():
    key = jax.random.PRNGKey(7)
    eager = data.sample_ring(key, 64)
    jitted = jax.jit(data.sample_ring, static_argnums=1)(key, 64)
    np.testing.assert_array_equal(eager.x, jitted.x)
    np.testing.assert_array_equal(eager.x, data.sample_ring(key, 64).x)
    assert not np.array_equal(eager.x, data.sample_ring(jax.random.PRNGKey(8), 64).x)
    # r_mean can be traced: the same key shifts every radius by the change in r_mean
    shifted = jax.jit(data.sample_ring, static_argnums=1)(key, 64, 6.0)
    r0, r2 = np.asarray(data.to_polar(eager.x)[0]), np.asarray(data.to_polar(shifted.x)[0])
    np.testing.assert_allclose(r2 - r0, 2.0, atol=1e-5)


def test_to_polar_known_points():
    x = jnp.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -1.0], [1.0, -1e-9]])
    r, phi = data.to_polar(x)
    np.testing.assert_allclose(r, [1, 2, 3, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(phi[:4], [0, math.pi / 2, math.pi, 3 * math.pi / 2], atol=1e-6)
    assert 0.0 <= float(phi[4]) < 2 * math.pi


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: data.sample_ring(jax.random.PRNGKey(0), 0), "num_samples must be a positive"),
        (lambda: data.sample_ring(jax.random.PRNGKey(0), 2.5), "num_samples must be a positive"),
        (lambda: data.sample_ring(jax.random.PRNGKey(0), 5, -1.0), "r_mean must be a finite"),
        (lambda: data.sample_ring(jax.random.PRNGKey(0), 5, float("nan")), "r_mean must be"),
        (lambda: data.sample_ring_varying(jax.random.PRNGKey(0), 5, 3.0, 2.0, 6.0),
         "need low <= mode <= high"),
        (lambda: data.quantile_edges(0), "num_bins must be a positive integer, got 0"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("fn", [data.to_polar, data.truth_log_prob])
def test_polar_maps_refuse_points_that_are_not_2d(fn):
    # (5, 3) points once gave a silent answer from the first two coordinates
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\).*\(5, 3\)"):
        fn(jnp.ones((5, 3)))
