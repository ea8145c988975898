"""binning's bucket-table bin lookup equals numpy's searchsorted / histogramdd on hard edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesiamp_jax.evaluation import binning

EDGES = {
    "quantile r (±inf ends)": binning.quantile_binning(50).r,
    "uniform phi": binning.quantile_binning(7).phi,
    "geometric": np.geomspace(1e-3, 1e3, 40),
    "two edges in one bucket": np.array([0.0, 1e-6, 2e-6, 0.5, 1.0]),  # forces the fallback
    "one finite edge": np.array([-np.inf, 0.0, np.inf]),
    "no finite edge": np.array([-np.inf, np.inf]),
}


def _values(edges, rng):
    e32 = edges.astype(np.float32)
    finite = e32[np.isfinite(e32)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (-1.0, 1.0)
    span = max(hi - lo, 1.0)
    v = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, 20_000).astype(np.float32)
    near = np.concatenate([finite, np.nextafter(finite, -np.inf), np.nextafter(finite, np.inf)])
    v = np.concatenate([v, near, [np.inf, -np.inf, np.nan]]).astype(np.float32)
    tiny = np.finfo(np.float32).tiny  # XLA on a CPU flushes subnormals to zero; numpy does not
    return v[~((v != 0) & (np.abs(v) < tiny))]


@pytest.mark.parametrize("name", list(EDGES))
def test_position_equals_numpy_searchsorted(name):
    e = EDGES[name].astype(np.float32)
    v = _values(e, np.random.default_rng(len(name)))
    got = np.asarray(jax.jit(binning._position)(jnp.asarray(v), jnp.asarray(e)))
    expected = np.searchsorted(e, v, side="right")
    ok = ~np.isnan(v)
    np.testing.assert_array_equal(got[ok], expected[ok])


def test_histogram_equals_histogramdd_on_edge_values():
    b = binning.product_binning([EDGES["geometric"], EDGES["two edges in one bucket"]],
                                np.full((39, 4), 1 / 156))
    rng = np.random.default_rng(0)
    v = np.stack([_values(b.edges[0], rng)[:20_000], _values(b.edges[1], rng)[:20_000]], -1)
    v[:100, 0] = b.edges[0][rng.integers(0, 40, 100)]  # on the edges
    e32 = [e.astype(np.float32).astype(np.float64) for e in b.edges]
    expected, _ = np.histogramdd(v.astype(np.float64), bins=e32)
    np.testing.assert_array_equal(binning.histogram(v, b), expected.astype(int))
