"""Fused Pallas generation + binning against the plain XLA path, for a lent GPU.

    python -m benchmarks.gpu_fused [--samples 10000000] [--solver rk4] [--steps 20]
                                   [--chunk 2097152] [--block 256] [--output fused_gpu.json]

Two draws (a trained field and a perturbed copy) × ``--samples`` points, ``--solver`` (a
fixed-step one; ``--solver ab4 --steps 60`` is the evaluation's default) with ``--steps``
steps, the same noise, one 50 × 50 quantile grid, through ``evaluation.generate``:
``Solver(solver, steps)`` (plain: decode, polar map, scatter-add) and
``Solver(solver, steps, backend="pallas")`` (fused kernel). Prints the medians (3 timed calls
after a warm-up), samples per second, the fraction of the FP32 FLOP floor (5,000 FLOPs per
point and evaluation against ``--peak-tflops``, default the datasheet's 67 for an H200/H100),
and the number of points that changed cell between the two (float rounding only). On a CPU
(interpret mode) use small sizes, e.g. ``--samples 4096 --chunk 2048 --steps 4``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from bayesiamp_jax import Solver, VectorField, fit, sample_ring
from bayesiamp_jax.evaluation.generate import histogram_same_noise

FLOPS_PER_EVAL = 5_000


def _time(fn, repeats=3):
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--solver", default="rk4", help="a fixed-step solver name")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=2**21)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--peak-tflops", type=float, default=67.0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    field = VectorField()
    key = jax.random.PRNGKey(0)
    ring = sample_ring(jax.random.fold_in(key, 1), 10_000)
    params = fit(jax.random.fold_in(key, 2), field, ring.x, ring.c, args.epochs,
                 batch_size=1000, progress=False).state.params
    draws = jax.tree_util.tree_map(lambda a: np.stack([a, 1.01 * np.asarray(a)]), params)
    results = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
               "args": vars(args)}
    counts = {}
    for name, solver in (("plain", Solver(args.solver, args.steps)),
                         ("pallas", Solver(args.solver, args.steps, backend="pallas"))):
        def run(solver=solver):
            return histogram_same_noise(jax.random.fold_in(key, 3), field, draws, [50],
                                        args.samples, solver=solver, chunk_size=args.chunk,
                                        progress=False).counts[0]

        out, times = _time(run)
        counts[name] = np.asarray(out)
        med = statistics.median(times)
        flops = 2 * args.samples * solver.num_evals * FLOPS_PER_EVAL
        results[name] = {"median_s": med, "times_s": times,
                         "samples_per_s": 2 * args.samples / med,
                         "fraction_of_fp32_peak": flops / med / (args.peak_tflops * 1e12)}
        print(f"{name:7s} median {med:.4f} s  {2 * args.samples / med:.3g} samples/s  "
              f"fraction of FP32 peak {results[name]['fraction_of_fp32_peak']:.3f}", flush=True)
    moved = int(np.abs(counts["plain"] - counts["pallas"]).sum())
    results["moved_points"] = moved
    results["speedup_pallas"] = results["plain"]["median_s"] / results["pallas"]["median_s"]
    print(f"speed-up of the fused kernel {results['speedup_pallas']:.2f}x; "
          f"points in another cell: {moved} of {2 * args.samples}")
    if args.output:
        from bayesiamp_jax.checkpoint import atomic_write_json

        atomic_write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
