"""Project vs baseline, interleaved call by call: ratios that a shared, loaded CPU cannot skew.

    python -m benchmarks.interleaved [--rounds 7] [--torch-threads 1] [--output results.json]

``benchmarks.run`` times all JAX repeats, then all PyTorch repeats; when other processes
come and go, the two see different machines. Here every round times one call of each
implementation back to back, and the figure is the median over rounds of the per-round
ratio baseline / project (the speed-up), with its min–max. Units (size ``cpu``): the
flow-matching epoch, RK4-8 and RK4-20 generation of 50,000 samples (``flow.decode`` vs
``torch_ref.decode_rk4``), the evaluation's default Adams–Bashforth 4 with 60 steps against the
baseline's RK4-20 (equal histogram accuracy, ``benchmarks.solver_study``), and histogramming
2·10⁶ points into 50 × 50 cells (the project's ``binning.accumulate`` vs numpy). PyTorch runs
with ``--torch-threads`` intra-op threads (default 1, the faster setting in the
``benchmarks.run`` probes on the Zen 2 machine; it took 2 on the Zen 3 one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t0, time.process_time() - c0


def units(ctx):
    """name -> (project callable, baseline callable, per): times are divided by ``per``."""
    import torch

    from bayesiamp_jax import Solver, data, flow
    from bayesiamp_jax.evaluation import binning
    from bayesiamp_jax.evaluation.generate import DEFAULT_SOLVER
    from bayesiamp_jax.training import adam, build_epochs, flow_matching_loss_fn, init_train_state
    from benchmarks import torch_ref
    from benchmarks.numpy_ref import histogram_numpy

    out = {}
    ring = ctx.train_data()
    opt = adam()
    epochs = build_epochs(flow_matching_loss_fn(ctx.field), opt, 1000)
    run = jax.jit(lambda k, s, x, c: epochs(k, s, x, c, 10))
    state = init_train_state(ctx.field.init(ctx.key(3)), opt)
    tfield = torch_ref.TorchField()
    topt = torch_ref.adam(tfield.parameters())
    xt, ct = torch.as_tensor(np.array(ring.x)), torch.as_tensor(np.array(ring.c))
    gen = torch.Generator().manual_seed(0)
    out["fm_epoch"] = (lambda: run(ctx.key(4), state, ring.x, ring.c),
                       lambda: [torch_ref.fm_epoch(tfield, topt, xt, ct, 1000, gen)
                                for _ in range(10)], 10)
    params = ctx.trained_params()
    z = jax.random.normal(ctx.key(10), (50_000, 2))
    c = jnp.full((50_000, 1), 4.0)
    tf = ctx.torch_field()
    zt, ctt = torch.as_tensor(np.array(z)), torch.as_tensor(np.array(c))
    for steps in (8, 20):
        solver = Solver("rk4", steps)
        out[f"generation rk4-{steps}"] = (
            lambda s=solver: flow.decode(ctx.field, params, z, c, s),
            lambda k=steps: torch_ref.decode_rk4(tf, zt, ctt, k), 1)
    # the evaluation's default against the baseline's RK4-20: equal histogram accuracy
    # (benchmarks.solver_study), 69 vs 80 field evaluations per sample
    default = DEFAULT_SOLVER
    out[f"generation {default.name}-{default.num_steps} (default) vs torch rk4-20"] = (
        lambda: flow.decode(ctx.field, params, z, c, default),
        lambda: torch_ref.decode_rk4(tf, zt, ctt, 20), 1)
    x = data.sample_ring(ctx.key(40), 2_000_000).x
    b = binning.quantile_binning(50)
    (e,) = binning.device_edges([b])
    hist = jax.jit(lambda x, e: binning.accumulate(
        jnp.zeros(2500, jnp.int32), jnp.stack(data.to_polar(x), axis=-1),
        jnp.ones(x.shape[0], bool), (e,)))
    xn = np.asarray(x)
    edges = data.quantile_edges(50)
    out["histogram 2e6 -> 50x50"] = (lambda: hist(x, e), lambda: histogram_numpy(xn, edges), 1)
    return out


def main(argv=None):
    import torch

    from benchmarks.common import environment, sized
    from benchmarks.context import Context

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="PyTorch intra-op threads (benchmarks.run probes 1 and 2)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    ctx = Context(sized("cpu"), device={"peak_gflops": float("nan"), "bandwidth_gbs": 1.0})
    report = {"environment": environment(), "rounds": args.rounds,
              "torch_threads": args.torch_threads, "units": {}}
    for name, (proj, base, per) in units(ctx).items():
        _timed(proj), _timed(base)  # compile / warm up
        rows = []
        for _ in range(args.rounds):
            (pw, pc), (bw, bc) = _timed(proj), _timed(base)
            rows.append({"project_s": pw / per, "baseline_s": bw / per, "project_cpu_s": pc / per,
                         "baseline_cpu_s": bc / per, "speedup": bw / pw,
                         "load": os.getloadavg()[0]})
        sp = [r["speedup"] for r in rows]
        summary = {"speedup_median": statistics.median(sp), "speedup_min": min(sp),
                   "speedup_max": max(sp),
                   "project_median_s": statistics.median(r["project_s"] for r in rows),
                   "baseline_median_s": statistics.median(r["baseline_s"] for r in rows),
                   "cpu_time_speedup_median": statistics.median(
                       r["baseline_cpu_s"] / r["project_cpu_s"] for r in rows),
                   "rounds": rows}
        report["units"][name] = summary
        print(f"{name:26s} project {summary['project_median_s'] * 1e3:9.2f} ms  baseline "
              f"{summary['baseline_median_s'] * 1e3:9.2f} ms  speed-up "
              f"{summary['speedup_median']:.2f}x ({min(sp):.2f}–{max(sp):.2f}); CPU-time "
              f"speed-up {summary['cpu_time_speedup_median']:.2f}x", flush=True)
    report["environment"]["load_average_at_end"] = list(os.getloadavg())
    if args.output:
        from bayesiamp_jax.checkpoint import atomic_write_json

        atomic_write_json(args.output, report)
    return report


if __name__ == "__main__":
    main()
