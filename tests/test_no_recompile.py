"""Public functions a user calls in a loop compile once per shape and static configuration.

Every test calls a function once, then again with new data of the same shapes (new points, new
keys, new edges, new weights) and counts XLA compilations during the second call through
``jax.monitoring``'s backend-compile events (one per compiled program, eager ops included):
the claim is zero. The histogram conveniences are also compared with numpy's ``histogram2d`` /
``histogramdd`` (the independent answer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GaussianMorphField

from bayesiamp_jax import Solver, data, datasets, flow, observables
from bayesiamp_jax.evaluation import binning, generate_samples

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
SOLVER = Solver("rk4", 4)


@pytest.fixture(scope="module")
def compiled():
    """The names of the programs compiled since the last ``clear()``."""
    names = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield names
    jax.monitoring.unregister_event_duration_listener(listener)


def second_call(compiled, fn, make):
    """fn(*make(0)), then fn(*make(1)) with new data of the same shapes: (its output, the
    programs compiled during the second call)."""
    jax.block_until_ready(fn(*make(0)))
    compiled.clear()
    out = jax.block_until_ready(fn(*make(1)))
    return out, list(compiled)


def _points(seed, n=10_000):
    return (np.random.default_rng(seed).normal(size=(n, 2)) * 5.0).astype(np.float32)


def _far_from_edges(r, phi, b, tol=1e-4):
    """Points whose float64 polar coordinates are further than ``tol`` (relative) from every
    edge: float32 rounding cannot move them into another cell."""
    ok = np.ones(r.shape, bool)
    for v, e in ((r, b.r), (phi, b.phi)):
        e = e[np.isfinite(e)]
        ok &= np.min(np.abs(v[:, None] - e[None]), axis=1) > tol * np.maximum(1.0, np.abs(v))
    return ok


def test_histogram_polar_compiles_once_and_equals_numpy(compiled):
    # new points and new edges (another r_mean) of the same shapes: no compilation
    bins = [binning.quantile_binning(10, r_mean) for r_mean in (4.0, 3.0)]
    out, names = second_call(compiled, binning.histogram_polar,
                             lambda i: (_points(i), bins[i]))
    assert names == []
    # independent answer: numpy's polar map in float64 and histogram2d, on points away from
    # the edges (float32 and float64 polar maps agree on their cells there)
    x = _points(1)
    r, phi = np.hypot(*x.astype(np.float64).T), np.arctan2(x[:, 1], x[:, 0].astype(np.float64))
    phi = np.mod(phi, 2 * np.pi)
    keep = _far_from_edges(r, phi, bins[1])
    assert keep.mean() > 0.99
    expected, _, _ = np.histogram2d(r[keep], phi[keep], bins=[bins[1].r, bins[1].phi])
    np.testing.assert_array_equal(binning.histogram_polar(x[keep], bins[1]), expected)
    assert out.sum() == len(x)  # r edges ±inf: every point is counted once


def test_histogram_compiles_once_and_equals_histogramdd(compiled):
    rng = np.random.default_rng(5)

    def make(i):  # 3 observable values, edges of shapes (6, 5, 4) with new values each call
        edges = [np.sort(rng.uniform(-2, 2, k)) for k in (6, 5, 4)]
        b = binning.product_binning(edges, np.full((5, 4, 3), 1 / 60))
        v = rng.normal(size=(3000, 3)).astype(np.float32)
        v[:50, 0] = edges[0][rng.integers(0, 6, 50)]  # on the edges (the last one closed)
        return v, b

    _, names = second_call(compiled, binning.histogram, make)
    assert names == []
    v, b = make(2)
    e32 = [e.astype(np.float32).astype(np.float64) for e in b.edges]
    expected, _ = np.histogramdd(v.astype(np.float64), bins=e32)
    counts = binning.histogram(v, b)
    assert counts.dtype.kind == "i"
    np.testing.assert_array_equal(counts, expected.astype(int))


def _key(i):
    return jax.random.key(i)


HOST_FUNCTIONS = {
    "data.sample_ring": (data.sample_ring, lambda i: (_key(i), 500)),
    "data.sample_ring_varying": (data.sample_ring_varying, lambda i: (_key(i), 500)),
    "datasets.sample_shell": (datasets.sample_shell, lambda i: (_key(i), 500, 3)),
    "data.to_polar": (data.to_polar, lambda i: (jnp.asarray(_points(i, 500)),)),
    "data.truth_log_prob": (data.truth_log_prob, lambda i: (jnp.asarray(_points(i, 500)),)),
    "datasets.shell_log_prob": (datasets.shell_log_prob,
                                lambda i: (jnp.asarray(_points(i, 600)).reshape(400, 3),)),
    "observables.values(Polar)": (observables.values,
                                  lambda i: (observables.Polar(), _points(i, 500))),
    "observables.values(RadiusCosine)": (
        observables.values,
        lambda i: (observables.RadiusCosine(), _points(i, 600).reshape(200, 6))),
}


@pytest.mark.parametrize("name", list(HOST_FUNCTIONS))
def test_host_function_compiles_once(compiled, name):
    fn, make = HOST_FUNCTIONS[name]
    _, names = second_call(compiled, fn, make)
    assert names == [], f"{name} compiled {names} on its second call"


def _morph_params(i):
    return GaussianMorphField.params([1.0 + i, -2.0], [0.5, 2.0 - 0.5 * i])


FIELD = GaussianMorphField()
C = jnp.full((64, 1), 4.0)
FLOW_FUNCTIONS = {
    "flow.sample": (lambda k, p: flow.sample(k, FIELD, p, C, SOLVER)),
    "flow.decode": (lambda k, p: flow.decode(FIELD, p, jax.random.normal(k, (64, 2)), C, SOLVER)),
    "flow.encode": (lambda k, p: flow.encode(FIELD, p, jax.random.normal(k, (64, 2)), C, SOLVER)),
    "flow.log_prob": (lambda k, p: flow.log_prob(FIELD, p, jax.random.normal(k, (64, 2)), C,
                                                  SOLVER)),
    "flow.log_prob_hutchinson": (lambda k, p: flow.log_prob_hutchinson(
        k, FIELD, p, jax.random.normal(k, (64, 2)), C, SOLVER)),
    "flow.cfm_loss": (lambda k, p: flow.cfm_loss(k, FIELD, p, jax.random.normal(k, (64, 2)), C)),
    "evaluation.generate_samples": (lambda k, p: generate_samples(k, FIELD, p, 64, c=4.0,
                                                                  solver=SOLVER)),
}


@pytest.mark.parametrize("name", list(FLOW_FUNCTIONS))
def test_flow_function_compiles_once(compiled, name):
    # new key and new weights of the same shapes; the exact morph's decode is μ + s ⊙ z
    out, names = second_call(compiled, FLOW_FUNCTIONS[name], lambda i: (_key(i), _morph_params(i)))
    assert names == [], f"{name} compiled {names} on its second call"
    assert np.all(np.isfinite(np.asarray(out)))
