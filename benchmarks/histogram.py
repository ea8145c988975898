"""Histogramming into the n × n truth-quantile grid, and generation + histogramming over S draws.

``histogram``: ``size.hist_points`` truth points into ``size.hist_bins``² cells with
- ``numpy``: the reference (polar map + ``np.histogram2d``; the baseline of this figure),
- ``jax``: the project's ``evaluation.binning.accumulate`` (searchsorted + scatter-add),
- ``jax_searchsorted`` / ``jax_cdf``: ``benchmarks.fast`` (bincount; CDF instead of search).

``gen_hist``: S = ``size.draws`` weight draws × ``size.draw_samples`` samples, RK4 with
``max(size.fixed_steps)`` steps, the same noise for every draw, counts (S, n²) with
- ``jax``: the project's ``evaluation.generate.histogram_same_noise``,
- ``jax_pallas``: the same with ``Solver(backend="pallas")`` (fused kernel; interpret mode on a
  CPU),
- ``jax_simple``: decode every draw's samples at once (vmap) then bin (``fast``),
- ``jax_chunked_cdf``: ``fast.draw_histograms_chunked``,
- ``torch``: PyTorch RK4 per draw + the numpy histogram.
Run ``python -m benchmarks.histogram --size tiny``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import Solver, data
from benchmarks import fast
from benchmarks.common import record, time_host, time_jax, time_torch
from benchmarks.floor import field_flops, floor
from benchmarks.numpy_ref import histogram_numpy


def _hist_floor(ctx, n, seconds):
    # polar map (hypot, atan2 ≈ 30 operations) and two bin look-ups per point; read 8 bytes
    return floor(40.0 * n, 8.0 * n, ctx.device, seconds)


def _project_evaluation():
    """The project's evaluation modules, or the reason they cannot be imported."""
    try:
        from bayesiamp_jax.evaluation import binning, generate
    except ImportError as err:  # evaluation is optional for these benchmarks
        return None, None, f"bayesiamp_jax.evaluation not importable: {err}"
    return binning, generate, None


def bench_histogram(ctx) -> list[dict]:
    ev, _, why = _project_evaluation()
    n, bins = ctx.size.hist_points, ctx.size.hist_bins
    x = data.sample_ring(ctx.key(40), n).x
    edges = data.quantile_edges(bins)
    r_in = jnp.asarray(edges.r[1:-1], jnp.float32)
    phi_in = jnp.asarray(edges.phi[1:-1], jnp.float32)
    reps = ctx.size.repeats
    recs = []

    xn = np.asarray(x)
    t = time_host(histogram_numpy, xn, edges, repeats=reps)
    reference = t["output"]
    recs.append(record("histogram", "numpy", t, unit="histogram", points=n, bins=bins,
                       **_hist_floor(ctx, n, t["median_s"])))

    variants = []
    if ev is None:
        recs.append({"name": "histogram", "impl": "jax", "skipped": why})
    else:
        (dev_edges,) = ev.device_edges([ev.quantile_binning(bins)])

        def project(x, e):
            values = jnp.stack(data.to_polar(x), axis=-1)  # (n, 2): r, φ
            return ev.accumulate(jnp.zeros(bins * bins, jnp.int32), values,
                                 jnp.ones(x.shape[0], bool), (e,))

        variants.append(("jax", project, (x, dev_edges)))
    variants += [
        ("jax_searchsorted", lambda x, a, b: fast.histogram_searchsorted(x, a, b, bins),
         (x, r_in, phi_in)),
        ("jax_cdf", lambda x: fast.histogram_cdf(x, bins), (x,)),
    ]
    for impl, fn, args in variants:
        t = time_jax(fn, *args, repeats=reps)
        diff = int(np.abs(np.asarray(t["output"]) - reference).sum())
        recs.append(record("histogram", impl, t, unit="histogram", points=n, bins=bins,
                           moved_vs_numpy=diff, **_hist_floor(ctx, n, t["median_s"])))
    return recs


def fake_posterior(ctx, num_draws, scale=0.01):
    """S draws around the trained params (θ + scale · ε): the cost does not depend on them."""
    params = ctx.trained_params()
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(ctx.key(50), len(leaves))
    drawn = [leaf + scale * jax.random.normal(k, (num_draws,) + leaf.shape)
             for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, drawn)


def bench_gen_hist(ctx) -> list[dict]:
    _, generate, why = _project_evaluation()
    s, m, bins = ctx.size.draws, ctx.size.draw_samples, ctx.size.hist_bins
    steps = max(ctx.size.fixed_steps)
    solver = Solver("rk4", steps)
    draws = fake_posterior(ctx, s)
    chunk = min(ctx.size.chunk, m)
    z = jax.random.normal(ctx.key(51), (m, 2))
    c = jnp.full((m, 1), 4.0)
    edges = data.quantile_edges(bins)
    r_in = jnp.asarray(edges.r[1:-1], jnp.float32)
    phi_in = jnp.asarray(edges.phi[1:-1], jnp.float32)
    reps = max(1, ctx.size.repeats // 2)
    flops = s * m * 4 * steps * field_flops(ctx.field)
    common = {"unit": "all draws", "solver": f"rk4-{steps}", "draws": s, "samples": m,
              "bins": bins}

    def rec(impl, t, **extra):
        secs = t["median_s"]
        return record("gen_hist", impl, t, samples_per_s=s * m / secs, **common,
                      **extra, **floor(flops, s * bins * bins * 4, ctx.device, secs))

    recs = []
    if generate is None:
        recs.append({"name": "gen_hist", "impl": "jax", "skipped": why})
    else:
        t = time_host(lambda: generate.histogram_same_noise(
            ctx.key(52), ctx.field, draws, [bins], m, solver=solver, chunk_size=chunk,
            progress=False).counts[0], repeats=reps)
        recs.append(rec("jax", t, chunk=chunk))
        project = np.asarray(t["output"])
        fused = Solver("rk4", steps, backend="pallas")  # the fused kernel, interpret mode here
        t = time_host(lambda: generate.histogram_same_noise(
            ctx.key(52), ctx.field, draws, [bins], m, solver=fused, chunk_size=chunk,
            progress=False).counts[0], repeats=reps)
        recs.append(rec("jax_pallas", t, chunk=chunk,
                        moved_vs_project=int(np.abs(np.asarray(t["output"]) - project).sum()),
                        note="Pallas fused kernel in interpret mode (CPU)"))
    t = time_jax(lambda p, z, c, a, b: fast.draw_histograms_simple(ctx.field, p, z, c, a, b,
                                                                   solver, bins),
                 draws, z, c, r_in, phi_in, repeats=reps)
    simple = np.asarray(t["output"])
    recs.append(rec("jax_simple", t))
    t = time_jax(lambda p, z, c: fast.draw_histograms_chunked(ctx.field, p, z, c, solver, bins,
                                                              chunk),
                 draws, z, c, repeats=reps)
    moved = int(np.abs(np.asarray(t["output"]) - simple).sum())
    recs.append(rec("jax_chunked_cdf", t, chunk=chunk, moved_vs_simple=moved))
    if ctx.baseline:
        recs.append(_torch_gen_hist(ctx, draws, z, c, steps, edges, rec))
    return recs


def _torch_gen_hist(ctx, draws, z, c, steps, edges, rec):
    import torch

    from benchmarks import torch_ref

    s = jax.tree_util.tree_leaves(draws)[0].shape[0]
    fields = [ctx.torch_field(jax.tree_util.tree_map(lambda a, i=i: a[i], draws))
              for i in range(s)]
    zt, ct = torch.as_tensor(np.array(z)), torch.as_tensor(np.array(c))

    def run():
        return np.stack([histogram_numpy(torch_ref.decode_rk4(f, zt, ct, steps).numpy(),
                                                   edges) for f in fields])

    return rec("torch", time_torch(run, repeats=max(1, ctx.size.repeats // 2)))


BENCHMARKS = {"histogram": bench_histogram, "gen_hist": bench_gen_hist}

if __name__ == "__main__":
    from benchmarks.runner import main

    main(BENCHMARKS, prog="python -m benchmarks.histogram", description=__doc__)
