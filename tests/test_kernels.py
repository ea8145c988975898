"""The fused Pallas generation + binning kernel (interpret mode) against the plain XLA path.

The plain path is ``flow.decode`` + ``data.to_polar`` + ``binning.accumulate``; the kernel must
give the same counts, cell for cell, for every fixed-step solver and schedule it supports.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesiamp_jax import Solver, VectorField, data, flow
from bayesiamp_jax.evaluation.binning import (
    accumulate,
    device_edges,
    make_binning,
    quantile_binning,
)
from bayesiamp_jax.kernels import fused_counts
from bayesiamp_jax.kernels.fused_generation import kernel_velocity, split_params

FIELD = VectorField(hidden=(16, 16))
C = jnp.array([4.0])


@pytest.fixture(scope="module")
def params():
    """Random-init weights, scaled up so that the flow bends (a nontrivial field)."""
    p = FIELD.init(jax.random.PRNGKey(3))
    return jax.tree_util.tree_map(lambda a: 2.0 * a, p)


def _plain_counts(params, z, solver, binnings):
    x = flow.decode(FIELD, params, z, C, solver)
    r, phi = data.to_polar(x)
    total = sum(b.num_cells for b in binnings)
    return np.asarray(accumulate(jnp.zeros(total, jnp.int32), jnp.stack([r, phi], axis=-1),
                                 jnp.ones(r.shape, bool), device_edges(binnings)))


def test_kernel_velocity_is_the_field(params):
    key_x, key_t = jax.random.split(jax.random.PRNGKey(0))
    x = 3.0 * jax.random.normal(key_x, (64, 2))
    for t in jax.random.uniform(key_t, (3,)):
        v = kernel_velocity(FIELD, t, (x[:, 0], x[:, 1]), split_params(FIELD, params, C))
        np.testing.assert_allclose(np.stack(v, -1), FIELD(params, t, x, C), atol=2e-6,
                                   rtol=1e-5)


@pytest.mark.parametrize("solver", [Solver("rk4", 4), Solver("dp5", 2, power=0.7),
                                    Solver("ab4", 6)], ids=["rk4-4", "dp5-2-p0.7", "ab4-6"])
def test_fused_counts_equal_plain_path(params, solver):
    """600 points (not a multiple of the 256-point block), a quantile grid and a finite grid
    that drops points outside it: equal counts in every cell."""
    z = jax.random.normal(jax.random.PRNGKey(1), (600, 2))
    binnings = [quantile_binning(5),
                make_binning(np.linspace(0.0, 3.0, 7), np.linspace(0.5, 5.0, 4))]
    plain = _plain_counts(params, z, solver, binnings)
    fused = np.asarray(fused_counts(FIELD, params, z, C, device_edges(binnings), solver,
                                    block=256, interpret=True))
    assert plain[:25].sum() == 600 and 0 < plain[25:].sum() < 600  # the finite grid drops some
    np.testing.assert_array_equal(fused, plain)


def test_fused_counts_reject_adaptive_solver(params):
    with pytest.raises(ValueError, match="solver.name"):
        fused_counts(FIELD, params, jnp.zeros((4, 2)), C, device_edges([quantile_binning(3)]),
                     Solver("dopri5"), interpret=True)


def test_generation_with_pallas_backend_equals_default(params):
    """``evaluation.generate`` with ``Solver(backend="pallas")`` gives the default's counts
    (2 draws, 300 samples in chunks of 256: the second chunk is partly masked)."""
    from bayesiamp_jax.evaluation.generate import histogram_same_noise

    draws = jax.tree_util.tree_map(lambda a: jnp.stack([a, 0.9 * a]), params)
    solver = Solver("rk4", 3)
    common = dict(num_samples=300, chunk_size=256, progress=False)
    plain = histogram_same_noise(jax.random.PRNGKey(5), FIELD, draws, [4, 6], solver=solver,
                                 **common)
    fused = histogram_same_noise(jax.random.PRNGKey(5), FIELD, draws, [4, 6],
                                 solver=Solver("rk4", 3, backend="pallas"), **common)
    for a, b in zip(plain.counts, fused.counts, strict=True):
        assert a.sum() == 2 * 300
        np.testing.assert_array_equal(a, b)
