"""The host conveniences ``evaluation.histogram`` / ``histogram_polar`` against numpy.

A user who histograms in a loop (bootstrap, pseudo-experiments) calls these once per sample:
each call must reuse one compilation (per shape of the points and of the edges) and cost about
what numpy's ``histogram2d`` costs. For every size, ``--repeats`` calls on fresh points of the
same shape (drawn before timing) are timed after one warm-up call; the JSON holds the median
and minimum wall time per call, the compilations counted during the timed calls (``jax
.monitoring``'s backend-compile events; 0 is the claim) and the ratio to numpy:

- ``histogram_polar``: Cartesian points (n, 2) -> polar map + n × n ring quantile grid, against
  ``np.hypot`` / ``np.arctan2`` + ``np.histogram2d`` (``benchmarks.numpy_ref.histogram_numpy``);
- ``histogram``: observable values (n, 2) on the same grid, against ``np.histogram2d``.

Run ``python -m benchmarks.histogram_host [--points 10000 100000] [--bins 10] [--out F.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np

from bayesiamp_jax.evaluation import binning
from benchmarks.common import environment
from benchmarks.numpy_ref import histogram_numpy

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts XLA backend compilations (one ``jax.monitoring`` event per compiled program)."""

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        if event == COMPILE_EVENT:
            self.count += 1


def _time(fn, inputs, counter: CompileCounter) -> dict:
    """Median / min wall seconds of fn(inputs[i]) for i >= 1 after the warm-up fn(inputs[0])."""
    t0 = time.perf_counter()
    fn(inputs[0])
    first = time.perf_counter() - t0
    before = counter.count
    times = []
    for x in inputs[1:]:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times), "min_s": min(times),
            "times_s": times, "compilations_after_first": counter.count - before}


def run(points=(10_000, 100_000), bins: int = 10, repeats: int = 51, seed: int = 0) -> dict:
    counter = CompileCounter()
    b = binning.quantile_binning(bins)
    rng = np.random.default_rng(seed)
    numpy_edges = binning.data.QuantileEdges(b.r.astype(np.float32).astype(np.float64),
                                             b.phi.astype(np.float32).astype(np.float64))
    rows = []
    for n in points:
        xs = [(rng.normal(size=(n, 2)) * 5.0).astype(np.float32) for _ in range(repeats + 1)]
        vs = [np.stack([np.hypot(x[:, 0], x[:, 1]), rng.uniform(0, 2 * np.pi, n)], -1)
              .astype(np.float32) for x in xs]
        cases = {
            "histogram_polar": (lambda x: binning.histogram_polar(x, b),
                                lambda x: histogram_numpy(x, numpy_edges), xs),
            "histogram": (lambda v: binning.histogram(v, b),
                          lambda v: np.histogram2d(v[:, 0], v[:, 1], bins=numpy_edges)[0], vs),
        }
        for name, (ours, ref, inputs) in cases.items():
            same = all(np.array_equal(np.asarray(ours(x)).reshape(-1),
                                      np.asarray(ref(x)).reshape(-1)) for x in inputs[:3])
            t_ours, t_ref = _time(ours, inputs, counter), _time(ref, inputs, counter)
            rows.append({"function": name, "points": n, "bins": f"{bins}x{bins}",
                         "jax": t_ours, "numpy": t_ref,
                         "ratio_median": t_ours["median_s"] / t_ref["median_s"],
                         "counts_equal_numpy": bool(same)})
    return {"benchmark": "histogram_host", "repeats": repeats, "environment": environment(),
            "results": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=51)
    parser.add_argument("--out", default=None, help="JSON file (default: stdout)")
    args = parser.parse_args(argv)
    result = run(tuple(args.points), args.bins, args.repeats)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    for r in result["results"]:
        print(f"{r['function']:16s} n={r['points']:>7d} jax {r['jax']['median_s'] * 1e3:8.3f} ms"
              f"  numpy {r['numpy']['median_s'] * 1e3:8.3f} ms  ratio {r['ratio_median']:5.2f}"
              f"  compilations {r['jax']['compilations_after_first']}"
              f"  equal {r['counts_equal_numpy']}", file=sys.stderr)


if __name__ == "__main__":
    main()
