"""The evaluation's chunking, before and after even chunks (``generate.chunk_for``), side by side.

Every draw decodes whole chunks of points. Before, a draw of n points used chunks of the next
power of two up to ``chunk_size`` (2**15 on a CPU), so the quick preset's 40,000 calibration
points decoded 65,536 and its scaled groups (20 points per cell of 2 × 2 … 30 × 30) 51,840 for
33,080 asked; now the fewest chunks of at most ``chunk_size`` are split evenly and rounded up to
256 points (40,448 and 34,304). The counts do not depend on it (the noise is indexed by point).

For the quick preset's study on the ring (32 × 3 field, d = 2) and on the CMS Z → ee pair-frame
events (the file defaults: 128 × 3, d = 5, with its preprocessing and observables), one round
times ``histogram_same_noise`` of two draws at every sample size one evaluated label generates
(the calibration's and each scaled group's, RK4-8, the calibration binnings) with the old rule
(``chunk_for`` replaced for the call) and with the new one, back to back; after a warm-up round
(the compilations), the median over rounds of each and of the per-round ratio old / new, and the
counts of both compared. Writes JSON.

    python -m benchmarks.chunking [--rounds 5] [--out benchmarks/results/cpu_chunking.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax.evaluation import generate
from benchmarks.common import environment
from experiments import budget
from experiments import config as cfgmod
from experiments.data import field_from_config, problem_from_config
from experiments.evaluate import evaluation_plan

FILE = ["data.name=file", "data.path=benchmarks/open_data/zee_pair_events.npz",
        "data.reference=benchmarks/open_data/zee_pair_reference.npz", "data.num_train=4000",
        "data.observable=benchmarks.open_data.zee:PAIR_MASS_PT",
        "data.preprocess=logit:60:120,log,standardise,logit:-1:1,periodic:0:2pi"]
NEW_RULE = generate.chunk_for


def old_rule(num_samples: int, chunk_size: int) -> int:
    """The chunk before: the next power of two of the draw's size, at most ``chunk_size``."""
    return min(chunk_size, 1 << max(num_samples - 1, 1).bit_length())


def label_sizes(cfg) -> list[int]:
    """Points per draw of one label: the calibration's, then every scaled group's."""
    return [cfg.evaluation.calib_samples, *budget.scaled_sizes(cfg.evaluation)]


def study(cfg):
    """One evaluated label's generation with the study's field, problem and plan: a function
    of the chunk rule returning the counts of every size."""
    field, problem, plan = field_from_config(cfg), problem_from_config(cfg), evaluation_plan(cfg)
    bins = [problem.binning(int(b)) for b in plan.calibration_bins]
    params = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf, leaf]),
                                    field.init(jax.random.key(0)))

    def run(rule):
        generate.chunk_for = rule
        try:
            return [generate.histogram_same_noise(
                jax.random.key(1), field, params, bins, n, c=problem.condition,
                solver=plan.solver, chunk_size=plan.chunk_size, progress=False,
                observable=problem.flow_observable).counts for n in label_sizes(cfg)]
        finally:
            generate.chunk_for = NEW_RULE

    return run


def _timed(run, rule):
    t0 = time.perf_counter()
    out = run(rule)
    return time.perf_counter() - t0, out


def measure(name, cfg, rounds: int) -> dict:
    run = study(cfg)
    _, old_counts = _timed(run, old_rule)  # warm-up: the compilations of both rules
    _, new_counts = _timed(run, NEW_RULE)
    same = all(np.array_equal(a, b) for group_a, group_b in zip(old_counts, new_counts,
                                                                 strict=True)
               for a, b in zip(group_a, group_b, strict=True))
    old, new = [], []
    for _ in range(rounds):
        old.append(_timed(run, old_rule)[0])
        new.append(_timed(run, NEW_RULE)[0])
    ratios = [o / n for o, n in zip(old, new, strict=True)]
    e = cfg.evaluation
    return {"study": name, "sizes": label_sizes(cfg), "chunk_size": e.chunk_size,
            "decoded_old": sum(-(-n // old_rule(n, e.chunk_size)) * old_rule(n, e.chunk_size)
                               for n in label_sizes(cfg)),
            "decoded_new": sum(generate.decoded_points(n, e.chunk_size)
                               for n in label_sizes(cfg)),
            "draws": 2, "rounds": rounds, "old_s": old, "new_s": new,
            "old_median_s": statistics.median(old), "new_median_s": statistics.median(new),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "counts_equal": bool(same)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/cpu_chunking.json")
    a = p.parse_args(argv)
    rows = [measure("ring (quick)", cfgmod.resolve("quick", []), a.rounds),
            measure("CMS Z -> ee pair frame (quick, file defaults)",
                    cfgmod.resolve("quick", FILE), a.rounds)]
    for r in rows:
        print(f"{r['study']}: decoded {r['decoded_old']} -> {r['decoded_new']} points per draw; "
              f"old {r['old_median_s']:.2f} s, new {r['new_median_s']:.2f} s, ratio "
              f"{r['ratio_median']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}); counts "
              f"equal: {r['counts_equal']}")
    with open(a.out, "w") as f:
        json.dump({"environment": environment(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
