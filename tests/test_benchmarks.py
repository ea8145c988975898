"""Benchmarks: every fast path agrees with its simple reference; every benchmark runs at the tiny
size; the PyTorch baseline (when installed) computes the same numbers as the project.

No timed assertions. References: numpy's histogram2d, flow.decode, closed forms, and the
independently written PyTorch implementation.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax import Solver, VectorField, data, flow
from benchmarks import fast, floor
from benchmarks.common import get_size, time_jax, torch_available
from benchmarks.context import Context
from benchmarks.numpy_ref import histogram_numpy

FAKE_DEVICE = {"peak_gflops": 10.0, "bandwidth_gbs": 10.0}
SOLVER = Solver("rk4", 4)


@pytest.fixture(scope="module")
def field():
    return VectorField()


@pytest.fixture(scope="module")
def params(field):
    return field.init(jax.random.PRNGKey(0))


# shapes as in the tiny preset, so that the benchmarks below reuse these compilations
TINY = get_size("tiny")
NUM_DRAWS = TINY.draws


@pytest.fixture(scope="module")
def draws(params):
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(leaf + 0.05 * rng.standard_normal((NUM_DRAWS,) + leaf.shape),
                                 jnp.float32), params)


@pytest.fixture(scope="module")
def noise():
    n = TINY.gen_samples
    z = jax.random.normal(jax.random.PRNGKey(2), (n, 2))
    return z, jnp.full((n, 1), 4.0)


# --- fast paths against their references ------------------------------------------------------


def test_decode_chunked_matches_decode(field, params, noise):
    z, c = noise
    simple = flow.decode(field, params, z, c, SOLVER)
    chunked = fast.decode_chunked(field, params, z, c, solver=SOLVER, chunk=TINY.chunk)
    np.testing.assert_allclose(chunked, simple, atol=2e-5, rtol=1e-5)
    padded = fast.decode_chunked(field, params, z[:1000], c[:1000], solver=SOLVER, chunk=384)
    np.testing.assert_allclose(padded, simple[:1000], atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        fast.decode_chunked(field, params, z, c, solver=SOLVER, chunk=0)


def test_histograms_match_numpy():
    n, bins = TINY.hist_points, TINY.hist_bins
    x = data.sample_ring(jax.random.PRNGKey(3), n).x
    edges = data.quantile_edges(bins)
    ref = histogram_numpy(np.asarray(x), edges)
    assert ref.sum() == n
    by_cdf = np.asarray(fast.histogram_cdf(x, bins))
    by_search = np.asarray(fast.histogram_searchsorted(
        x, jnp.asarray(edges.r[1:-1], jnp.float32), jnp.asarray(edges.phi[1:-1], jnp.float32),
        bins))
    for counts in (by_cdf, by_search):
        assert counts.sum() == n
        assert np.abs(counts - ref).sum() <= 4  # float32 rounding at an edge may move a point
    # truth cells are equiprobable: the counts are multinomial(n, 1/bins²)
    chi2 = np.sum((ref - n / bins**2) ** 2 / (n / bins**2))
    assert scipy.stats.chi2.sf(chi2, bins**2 - 1) > 1e-4


def test_draw_histograms_chunked_matches_simple(field, draws, noise):
    z, c = (a[: TINY.draw_samples] for a in noise)
    bins = TINY.hist_bins
    edges = data.quantile_edges(bins)
    r_in = jnp.asarray(edges.r[1:-1], jnp.float32)
    phi_in = jnp.asarray(edges.phi[1:-1], jnp.float32)
    simple = np.asarray(fast.draw_histograms_simple(field, draws, z, c, r_in, phi_in, SOLVER,
                                                    bins))
    chunked = np.asarray(fast.draw_histograms_chunked(field, draws, z, c, SOLVER, bins,
                                                      TINY.chunk))
    assert simple.shape == chunked.shape == (NUM_DRAWS, bins**2)
    assert np.abs(simple - chunked).sum() <= 2 * NUM_DRAWS
    padded = np.asarray(fast.draw_histograms_chunked(field, draws, z, c, SOLVER, bins, 300))
    assert np.abs(padded - chunked).sum() <= 2 * NUM_DRAWS and padded.sum() == chunked.sum()
    for s in range(NUM_DRAWS):
        x = flow.decode(field, jax.tree_util.tree_map(lambda a, s=s: a[s], draws), z, c, SOLVER)
        assert np.abs(histogram_numpy(np.asarray(x), edges) - simple[s]).sum() <= 2


# --- floors and timing helpers -----------------------------------------------------------------


def test_field_flops_closed_form(field):
    biases = sum(field.hidden) + field.data_dim
    dense = 2 * (field.num_params() - biases) + biases  # 2 per multiply-add, 1 per bias
    assert floor.field_flops(field) == dense + sum(field.hidden) + 2 * field.num_frequencies
    assert floor.field_flops(field) == 5000  # 9 → 32 → 32 → 32 → 2


def test_floor_fraction():
    device = {"peak_gflops": 2.0, "bandwidth_gbs": 4.0}
    compute = floor.floor(4e9, 4e9, device, seconds=4.0)
    assert compute["floor_s"] == pytest.approx(2.0)
    assert compute["bound"] == "compute" and compute["fraction_of_peak"] == pytest.approx(0.5)
    memory = floor.floor(1e9, 16e9, device, seconds=8.0)
    assert memory["bound"] == "memory" and memory["fraction_of_peak"] == pytest.approx(0.5)


def test_time_jax_returns_the_result_and_repeats():
    t = time_jax(lambda a: jnp.sum(a**2), jnp.arange(4.0), repeats=3)
    assert float(t["output"]) == 14.0
    assert len(t["times_s"]) == 3 and t["min_s"] <= t["median_s"]


def test_get_size_rejects_unknown():
    with pytest.raises(ValueError, match="size must be one of"):
        get_size("huge")


# --- every benchmark runs at the tiny size ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_context(params):
    size = dataclasses.replace(get_size("tiny"), repeats=1)
    ctx = Context(size, device=FAKE_DEVICE, baseline=False)
    ctx._trained = params  # skip pretraining: costs do not depend on the weights
    return ctx


@pytest.mark.parametrize("name", ["fm_epoch", "nuts_grad", "generation", "histogram",
                                  "gen_hist", "field_anatomy", "epoch_anatomy", "quick_preset"])
def test_benchmark_runs_tiny(tiny_context, name):
    from benchmarks.run import registry

    records = registry()[name](tiny_context)
    assert records
    for r in records:
        json.dumps(r)
        if "skipped" in r:
            continue
        assert r["seconds"] > 0 and math.isfinite(r["seconds"])
        if "fraction_of_peak" in r:
            assert r["fraction_of_peak"] > 0
    if name == "generation":
        by = {(r["impl"], r["solver"]): r for r in records if r["name"] == "generation"}
        # the chunked fast path gives the simple path's samples, hence its error
        assert by[("jax_chunked", "rk4-4")]["max_err"] == pytest.approx(
            by[("jax", "rk4-4")]["max_err"], rel=1e-3, abs=1e-5)
        assert by[("jax", "dopri5")]["max_err"] < by[("jax", "rk4-4")]["max_err"]
        # the evaluation's default: 60 Adams–Bashforth steps, 3 of them RK4 starting steps
        assert by[("jax", "ab4-60")]["evals"] == 60 + 3 * 3
        assert by[("jax", "ab4-60")]["max_err"] < by[("jax", "rk4-4")]["max_err"]
    if name == "histogram":
        assert all(r["moved_vs_numpy"] <= 4 for r in records if r["impl"].startswith("jax")
                   and "moved_vs_numpy" in r)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vi_epoch", "adammcmc_step"])
def test_sampler_benchmark_runs_tiny(tiny_context, name):
    from benchmarks.run import registry

    (rec, *_) = registry()[name](tiny_context)
    assert rec["seconds"] > 0


def test_runner_writes_json(tmp_path, tiny_context, monkeypatch):
    from benchmarks import run

    monkeypatch.setattr("benchmarks.context.measure_device", lambda: FAKE_DEVICE)
    out = tmp_path / "r.json"
    run.main(["--size", "tiny", "--only", "quick_preset", "--output", str(out),
              "--no-baseline"])
    report = json.loads(out.read_text())
    assert report["config"]["size"]["name"] == "tiny"
    assert report["environment"]["versions"]["jax"] == jax.__version__
    assert report["records"][0]["name"] == "quick_preset"
    with pytest.raises(ValueError, match="only must name"):
        run.run("tiny", ["nope"], baseline=False, device=FAKE_DEVICE)


# --- the PyTorch baseline computes the same numbers -------------------------------------------

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch/zuko not installed")


@pytest.fixture(scope="module")
def torch_field(params):
    pytest.importorskip("torch")
    from benchmarks.torch_ref import TorchField

    return TorchField().load_jax(params)


@needs_torch
def test_torch_field_and_divergence_match_jax(field, params, torch_field, noise):
    import torch

    z, c = noise
    t = jax.random.uniform(jax.random.PRNGKey(4), (z.shape[0],))
    v = field(params, t, z, c)
    jac = jax.vmap(jax.jacfwd(lambda y, s, cc: field(params, s, y, cc)))(z, t, c)
    args = [torch.as_tensor(np.array(a)) for a in (t, z, c)]
    vt, div = torch_field.velocity_and_divergence(*args)
    np.testing.assert_allclose(vt.detach().numpy(), v, atol=1e-5)
    np.testing.assert_allclose(div.detach().numpy(), jnp.trace(jac, axis1=1, axis2=2),
                               atol=1e-5)


@needs_torch
def test_torch_log_prob_and_decode_match_jax(field, params, torch_field, noise):
    import torch

    from benchmarks import torch_ref

    z, c = noise
    zt, ct = torch.as_tensor(np.array(z)), torch.as_tensor(np.array(c))
    lp = flow.log_prob(field, params, z, c, Solver("rk4", 8))
    np.testing.assert_allclose(torch_ref.log_prob(torch_field, zt, ct, 8).detach().numpy(), lp,
                               rtol=1e-4, atol=1e-4)
    tight = flow.decode(field, params, z, c, Solver("rk4", 256))
    np.testing.assert_allclose(torch_ref.decode_dopri5(torch_field, zt, ct).numpy(), tight,
                               atol=1e-3)


@needs_torch
def test_torch_proposal_density_matches_scipy():
    import torch

    from benchmarks.torch_ref import _log_q

    rng = np.random.default_rng(0)
    x, mean, u = (rng.standard_normal(5) for _ in range(3))
    sigma, sigma_dir = 0.3, 2.0
    cov = sigma**2 * np.eye(5) + sigma_dir**2 * np.outer(u, u)
    expected = scipy.stats.multivariate_normal(mean, cov).logpdf(x) + 2.5 * math.log(2 * math.pi)
    got = _log_q(*(torch.as_tensor(a) for a in (x, mean, u)), sigma, sigma_dir)
    assert float(got) == pytest.approx(expected, rel=1e-10)


@needs_torch
def test_torch_kl_matches_closed_form():
    import torch

    from benchmarks.torch_ref import BayesField

    torch.manual_seed(0)
    f = BayesField()
    expected = 0.0
    for m, r in zip(f.mu, f.rho, strict=True):
        m, s = m.detach().numpy(), np.log1p(np.exp(r.detach().numpy()))
        expected += np.mean(np.log(1 / s) + (s**2 + m**2) / 2 - 0.5)
    assert float(f.kl_mean_per_tensor().detach()) == pytest.approx(expected, rel=1e-5)


@needs_torch
def test_baseline_ratios(tiny_context):
    from benchmarks.run import ratios, registry

    ctx = dataclasses.replace(tiny_context, baseline=True)
    ctx._trained = tiny_context._trained
    records = registry()["nuts_grad"](ctx)
    torch_recs = {r["name"]: r for r in records if r["impl"] == "torch"}
    assert set(torch_recs) == {"nuts_grad"}
    jax_nuts = next(r for r in records if r["name"] == "nuts_grad" and r["impl"] == "jax")
    # same potential (N · L_CFM + Gaussian prior) from both implementations
    assert torch_recs["nuts_grad"]["potential"] == pytest.approx(jax_nuts["potential"], rel=1e-4)
    rs = ratios(records)
    assert [r["name"] for r in rs] == ["nuts_grad"]
    assert all(r["speedup"] > 0 for r in rs)
