"""The vector field against an independent numpy forward pass; shapes, broadcasting, config."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesiamp_jax import flow
from bayesiamp_jax.integrate import Solver
from bayesiamp_jax.network import VectorField, time_embedding


@pytest.fixture(scope="module")
def field_and_params():
    field = VectorField()
    return field, field.init(jax.random.PRNGKey(0))


def numpy_forward(params, t, x, c, num_frequencies=3):
    """Reference MLP in float64: [cos kπt, sin kπt, x, c] → ELU layers → linear."""
    k = np.arange(1, num_frequencies + 1)
    h = np.concatenate([np.cos(np.pi * k * t), np.sin(np.pi * k * t), x, c])
    layers = sorted(params, key=lambda name: int(name.split("_")[-1]))
    for i, name in enumerate(layers):
        h = h @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"])
        if i < len(layers) - 1:
            h = np.where(h > 0, h, np.expm1(h))
    return h


def test_reference_architecture_has_2498_parameters(field_and_params):
    field, params = field_and_params
    assert field.num_params() == 2498
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 2498
    shapes = sorted(p["kernel"].shape for p in params.values())
    assert shapes == sorted([(9, 32), (32, 32), (32, 32), (32, 2)])


def test_time_embedding_values():
    t = jnp.array([0.0, 0.25, 1.0])
    emb = np.asarray(time_embedding(t, 3))
    s2 = math.sqrt(0.5)
    want = np.array([
        [1, 1, 1, 0, 0, 0],
        [s2, 0, -s2, s2, 1, s2],
        [-1, 1, -1, 0, 0, 0],
    ])
    np.testing.assert_allclose(emb, want, atol=1e-6)


def test_field_matches_numpy_forward(field_and_params):
    field, params = field_and_params
    x = np.array([[0.3, -1.2], [4.0, 2.5]])
    c = np.array([[4.0], [1.5]])
    t = np.array([0.1, 0.77])
    got = np.asarray(field(params, t, x, c))
    want = np.stack([numpy_forward(params, t[i], x[i], c[i]) for i in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_broadcasting_over_leading_axes_equals_a_loop(field_and_params):
    field, params = field_and_params
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    c = np.full((3, 4, 1), 4.0, np.float32)
    t = rng.uniform(size=(3, 4)).astype(np.float32)
    out = np.asarray(field(params, t, x, c))
    assert out.shape == (3, 4, 2)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(out[i, j], field(params, t[i, j], x[i, j], c[i, j]),
                                       rtol=1e-5, atol=1e-6)
    # a scalar t and a single shared c broadcast over the batch
    np.testing.assert_allclose(field(params, 0.3, x, jnp.array([4.0])),
                               field(params, jnp.full((3, 4), 0.3), x, c), rtol=1e-6)


def test_vmap_over_weight_draws_equals_a_loop(field_and_params):
    field, _ = field_and_params
    draws = [field.init(k) for k in jax.random.split(jax.random.PRNGKey(3), 4)]
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *draws)
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 2))
    c = jnp.full((5, 1), 4.0)
    out = jax.vmap(lambda p: field(p, 0.5, x, c))(stacked)
    assert out.shape == (4, 5, 2)
    for s in range(4):
        np.testing.assert_allclose(out[s], field(draws[s], 0.5, x, c), rtol=1e-5, atol=1e-6)


def random_params_like(field, seed):
    """Parameters of the right shapes filled by numpy (no initialiser compilation)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(field.init, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32) * 0.5, shapes)


def test_configurable_widths_depth_and_embedding():
    field = VectorField(data_dim=3, cond_dim=0, hidden=(5, 7, 4, 6), num_frequencies=2)
    params = random_params_like(field, 5)
    w = [4 + 3, 5, 7, 4, 6, 3]
    assert field.num_params() == sum((a + 1) * b for a, b in zip(w[:-1], w[1:], strict=True))
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == field.num_params()
    x = np.array([0.1, 0.2, -0.3])
    got = field(params, 0.4, jnp.asarray(x))
    want = numpy_forward(params, 0.4, x, np.zeros(0), num_frequencies=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_matmul_precision_is_explicit(field_and_params):
    """Default is true float32 ("highest"); it appears on every dot of the traced program."""
    field, params = field_and_params
    assert field.precision == "highest"
    jaxpr = str(jax.make_jaxpr(lambda p: field(p, 0.5, jnp.ones((3, 2)), jnp.ones((3, 1))))(params))
    assert jaxpr.count("dot_general") == 4
    assert jaxpr.count("Precision.HIGHEST") >= 4
    fast = VectorField(precision="default")
    jaxpr = str(jax.make_jaxpr(lambda p: fast(p, 0.5, jnp.ones((3, 2)), jnp.ones((3, 1))))(params))
    assert "HIGHEST" not in jaxpr


def test_field_is_hashable_static_config():
    assert hash(VectorField()) == hash(VectorField(hidden=[32, 32, 32]))
    assert VectorField() != VectorField(hidden=(16,))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(data_dim=0), "data_dim must be a positive integer, got 0"),
        (dict(cond_dim=-1), "cond_dim must be an integer >= 0, got -1"),
        (dict(hidden=(32, 0)), r"hidden\[1\] must be a positive integer, got 0"),
        (dict(num_frequencies=-2), "num_frequencies must be an integer >= 0, got -2"),
        (dict(precision="tf32"), "precision must be one of .* got 'tf32'"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VectorField(**kwargs)


def test_bad_call_raises(field_and_params):
    field, params = field_and_params
    with pytest.raises(ValueError, match=r"x must have shape \(..., 2\).*got shape \(4, 3\)"):
        field(params, 0.5, jnp.ones((4, 3)), jnp.ones((4, 1)))
    with pytest.raises(ValueError, match="c is required: this field has cond_dim=1"):
        field(params, 0.5, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"c must have shape \(..., 1\).*got shape \(4, 2\)"):
        field(params, 0.5, jnp.ones((4, 2)), jnp.ones((4, 2)))


@pytest.mark.parametrize("hidden", [(32, 32, 32), (8,)])
def test_fused_divergence_equals_autodiff_trace_and_its_gradients(hidden):
    field = VectorField(hidden=hidden)
    params = field.init(jax.random.PRNGKey(3))
    x = jax.random.normal(jax.random.PRNGKey(4), (64, 2)) * 3.0
    c = jnp.full((64, 1), 4.0)
    t = jnp.linspace(0.0, 1.0, 64)
    v, div = field.velocity_and_divergence(params, t, x, c)
    jac = jax.vmap(jax.jacfwd(lambda y, s, cc: field(params, s, y, cc)))(x, t, c)
    np.testing.assert_allclose(v, field(params, t, x, c), atol=1e-6)
    np.testing.assert_allclose(div, jnp.trace(jac, axis1=1, axis2=2), atol=1e-5)
    solver = Solver("rk4", 4, checkpoint=True)

    def total(f):
        return jax.value_and_grad(lambda p: jnp.sum(flow.log_prob(f, p, x, c, solver)))(params)

    (a, ga), (b, gb) = total(field), total(flow.AutodiffDivergence(field))
    assert float(a) == pytest.approx(float(b), rel=1e-5)
    chex.assert_trees_all_close(ga, gb, rtol=1e-3, atol=1e-3)
