"""A user's own flax module as the vector field (``field.ModuleField``): a second architecture
(residual tanh MLP) trains, samples, has a normalised density and runs through the evaluation;
the adapter's densities match closed forms (identity flow, linear flow)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import LinearField

from bayesiamp_jax import datasets, evaluation, flow, training
from bayesiamp_jax.evaluation import histogram_polar, quantile_binning
from bayesiamp_jax.field import Field, ModuleField
from bayesiamp_jax.integrate import Solver

RK4 = Solver("rk4", 20)


class ResidualTanh(nn.Module):
    """v(t, x, c): Dense → (h + Dense(tanh h)) × blocks → Dense; ``zero_output`` zeroes the
    last layer (v ≡ 0 at initialisation: the identity flow)."""

    width: int = 16
    blocks: int = 2
    zero_output: bool = False

    @nn.compact
    def __call__(self, t, x, c):
        h = nn.Dense(self.width)(jnp.concatenate([jnp.cos(jnp.pi * t)[..., None], x, c], -1))
        for _ in range(self.blocks):
            h = h + nn.Dense(self.width)(jnp.tanh(h))
        init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
        return nn.Dense(x.shape[-1], kernel_init=init)(jnp.tanh(h))


class Affine(nn.Module):
    """v = A x + b (time- and condition-independent): the conftest ``LinearField``."""

    @nn.compact
    def __call__(self, t, x, c):
        return nn.Dense(x.shape[-1])(x)


FIELD = ModuleField(ResidualTanh(), data_dim=2, cond_dim=1)


@pytest.fixture(scope="module")
def trained(ring_train):
    # tanh saturates on the ring's |x| ~ 5: a larger step than the reference's 1e-3
    result = training.fit(jax.random.PRNGKey(3), FIELD, ring_train.x, ring_train.c, 40,
                          batch_size=500, chunk_epochs=40, progress=False,
                          optimizer=training.adam(1e-2))
    return result.state.params, result.losses


def test_protocol_hash_and_params():
    assert isinstance(FIELD, Field)
    assert not hasattr(FIELD, "velocity_and_divergence")  # flow uses the autodiff divergence
    assert FIELD == ModuleField(ResidualTanh(), 2, 1)
    assert hash(FIELD) == hash(ModuleField(ResidualTanh(), 2, 1))
    assert FIELD != ModuleField(ResidualTanh(width=8), 2, 1)
    params = FIELD.init(jax.random.key(0))
    # (4 + 1)·16 + 2 · (16 + 1)·16 + (16 + 1)·2 weights, counted by hand
    assert FIELD.num_params() == 5 * 16 + 2 * 17 * 16 + 17 * 2
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) == FIELD.num_params()
    # one point, a batch, t per point and a broadcast condition agree
    x = jax.random.normal(jax.random.key(1), (5, 2))
    t = jnp.linspace(0.0, 1.0, 5)
    v = FIELD(params, t, x, jnp.full((5, 1), 4.0))
    assert v.shape == (5, 2)
    np.testing.assert_allclose(FIELD(params, t, x, jnp.array([4.0])), v, rtol=1e-6)
    np.testing.assert_allclose(FIELD(params, t[2], x[2], jnp.array([4.0])), v[2], rtol=1e-6)


def test_bad_modules_and_inputs_raise():
    class Listy(nn.Module):
        widths: list

        def __call__(self, t, x, c):
            return x

    with pytest.raises(TypeError, match="hashable"):
        ModuleField(Listy([4]), 2, 1)
    with pytest.raises(TypeError, match="flax.linen.Module"):
        ModuleField(lambda t, x, c: x, 2, 1)
    with pytest.raises(ValueError, match="cond_dim"):
        ModuleField(ResidualTanh(), 2, -1)
    params = FIELD.init(jax.random.key(0))
    with pytest.raises(ValueError, match="c is required"):
        FIELD(params, 0.5, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        FIELD(params, 0.5, jnp.zeros((3, 3)), jnp.zeros((3, 1)))
    wrong = ModuleField(ResidualTanh(), data_dim=3, cond_dim=1)
    with pytest.raises(ValueError, match=r"params\[.Dense_0.\]\[.kernel.\] has shape \(4, 16\)"):
        flow.decode(wrong, params, jnp.zeros((3, 3)), jnp.zeros((3, 1)))


def test_identity_flow_has_the_standard_normal_density():
    # zero output layer: v ≡ 0, so decode is the identity and log p = log N(x; 0, I) exactly
    field = ModuleField(ResidualTanh(zero_output=True), 2, 1)
    params = field.init(jax.random.key(4))
    x = 2.0 * jax.random.normal(jax.random.key(5), (64, 2))
    c = jnp.full((64, 1), 4.0)
    np.testing.assert_allclose(flow.decode(field, params, x, c, RK4), x, atol=1e-6)
    expected = scipy.stats.norm.logpdf(np.asarray(x, np.float64)).sum(-1)
    np.testing.assert_allclose(flow.log_prob(field, params, x, c, RK4), expected, atol=1e-5)


def test_linear_module_matches_matrix_exponential(linear_field):
    # the same linear flow as conftest's LinearField, written as a flax module: the density
    # by the autodiff divergence equals the closed form log N(E x + …) + tr A
    _, lin_params, A, b = linear_field
    field = ModuleField(Affine(), 2, 0)
    params = {"Dense_0": {"kernel": lin_params["A"].T, "bias": lin_params["b"]}}
    x = 2.0 * jax.random.normal(jax.random.key(6), (64, 2))
    np.testing.assert_allclose(flow.encode(field, params, x, None, RK4),
                               LinearField.encode(x, A, b), atol=2e-5)
    np.testing.assert_allclose(flow.log_prob(field, params, x, None, RK4),
                               LinearField.log_prob(x, A, b), atol=3e-5)


def test_unconditional_module_trains_with_c_none():
    # cond_dim = 0: the module gets c = None; c=None and an empty (N, 0) c are the same data
    field = ModuleField(Affine(), 2, 0)
    x = jax.random.normal(jax.random.key(12), (100, 2))
    kw = dict(batch_size=50, chunk_epochs=3, progress=False)
    a = training.fit(jax.random.key(13), field, x, None, 3, **kw)
    b = training.fit(jax.random.key(13), field, x, jnp.zeros((100, 0)), 3, **kw)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert flow.sample(jax.random.key(14), field, a.state.params, jnp.zeros((7, 0))).shape == (7, 2)


def test_autodiff_divergence_matches_finite_difference_trace():
    params = FIELD.init(jax.random.key(7))
    x = jax.random.normal(jax.random.key(8), (16, 2))
    c = jnp.full((16, 1), 4.0)
    v, div = flow.velocity_and_divergence(FIELD, params, 0.3, x, c)
    np.testing.assert_allclose(v, FIELD(params, 0.3, x, c), rtol=1e-6)
    h, trace = 1e-2, 0.0
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        # central difference, error O(h²) ≈ 1e-4 × third derivative
        trace = trace + (FIELD(params, 0.3, x + e, c)[:, i] - FIELD(params, 0.3, x - e, c)[:, i])
    np.testing.assert_allclose(div, trace / (2 * h), atol=2e-3)


def test_trains_samples_and_density_integrates_to_one(trained, ring_train):
    params, losses = trained
    assert losses.shape == (40,) and np.all(np.isfinite(losses))
    # the loss of v ≡ 0 is E|(1 − σ_min) z − x|²/d = (1 − σ_min)² + E|x|²/2: training beats it
    zero_loss = (1 - flow.SIGMA_MIN) ** 2 + float(np.mean(np.sum(ring_train.x**2, -1))) / 2
    assert np.mean(losses[-5:]) < 0.6 * zero_loss < losses[0]
    c = jnp.full((4000, 1), 4.0)
    x = flow.sample(jax.random.key(9), FIELD, params, c, RK4)
    assert x.shape == (4000, 2) and np.all(np.isfinite(x))
    # noise has mean radius sqrt(π/2) ≈ 1.25; the ring's is 4 + 1 = 5: samples moved outwards
    assert float(jnp.mean(jnp.linalg.norm(x, axis=-1))) > 3.5
    h = 0.25
    g = np.arange(-10.0, 10.0, h) + h / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    lp = flow.log_prob(FIELD, params, jnp.asarray(grid), jnp.full((grid.shape[0], 1), 4.0), RK4)
    mass = float(np.sum(np.exp(np.asarray(lp, np.float64))) * h * h)
    assert mass == pytest.approx(1.0, abs=0.02)


def test_evaluate_runs_on_a_module_field(trained):
    params, _ = trained
    draws = 5
    posterior = jax.tree_util.tree_map(lambda a: jnp.stack([a] * draws), params)
    key, n = jax.random.key(10), 400
    plan = evaluation.Plan(calibration_bins=(3,), num_samples=n, scaled_bins=(3,),
                           samples_per_cell=20, chunk_size=256, closure_repeats=5,
                           differential_samples=0)
    result = evaluation.evaluate(key, FIELD, posterior, datasets.ring_problem(), plan,
                                 num_train=2000, progress=False)
    same = result.same_noise["3x3"]
    assert set(result.scaled) == {"3x3"} and result.fit is None  # one binning: no fit
    # identical draws with the same noise: zero spread, N_eq infinite
    assert np.all(np.isinf(same.amplification.n_eq))
    # the same-noise histogram equals decode + histogram of the same noise, done separately
    hist = evaluation.histogram_same_noise(
        jax.random.split(key, 4)[0], FIELD, posterior, [3], n, chunk_size=256, progress=False)
    points = evaluation.generate_samples(jax.random.split(key, 4)[0], FIELD, params, n)
    expected = histogram_polar(points, quantile_binning(3))
    np.testing.assert_array_equal(hist.counts[0][0, 0], expected)
    np.testing.assert_allclose(hist.fractions[0], np.broadcast_to(expected / n, (1, draws, 3, 3)))
    # fresh noise per draw: a finite spread over draws
    scaled = result.scaled["3x3"]
    assert scaled.num_samples == 20 * 9
    assert np.all(np.isfinite(scaled.amplification.n_eq)) and np.isfinite(scaled.calibration.mad)
