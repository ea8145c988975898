"""Generation-noise-corrected N_eq at few samples per cell against the paper's at 1,000.

On the same posterior draws (a finished study's ``draws/<label>/run0.msgpack``), for the scaled
binnings n × n in ``--bins``:

- ``paper``: the paper's protocol, ``--paper-per-cell`` (1,000) · n² fresh points per draw and
  binning, and its estimator Σ μ²/σ² (ddof 0, generation noise counted);
- ``corrected@1000``: the generation-noise-corrected estimator on the same histograms;
- ``corrected@k``: one shared fresh sample of k · max n² points per draw for all binnings
  (``histogram_scaled(shared=True)``), k in ``--per-cell``.

Errors are delete-one jackknives over draws; differences to ``corrected@1000`` are paired (the
same draws, so the draws' own sampling noise cancels) with the jackknife of the difference.
The cost is the generated points per draw and the measured generation seconds. Output: JSON
(``--output``). Run ``python -m benchmarks.estimators --study /tmp/baseline_quick``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import bayesiamp_jax as bj
from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.posteriors.draws import load_draws
from benchmarks.common import environment


def _jackknife(estimate, frac, truth):
    """(S, R) leave-one-out values of ``estimate(frac, truth)`` over the draw axis."""
    return np.stack([estimate(np.delete(frac, i, axis=1), truth) for i in range(frac.shape[1])])


def _paired(a_full, a_loo, b_full, b_loo):
    """Difference a − b with the jackknife error of the difference (paired over draws)."""
    d = float(np.mean(a_full - b_full))
    err = float(np.mean(ev.jackknife_error(a_loo - b_loo)))
    return {"difference": d, "error": err, "z": d / err if err > 0 else float("nan")}


def _histograms(key, field, draws, bins, per_cell, shared, solver, chunk):
    t0 = time.perf_counter()
    hist = ev.histogram_scaled(key, field, draws, bins, per_cell, solver=solver,
                               chunk_size=chunk, progress=False, shared=shared)
    seconds = time.perf_counter() - t0
    per_draw = (max(hist.num_samples) if shared else sum(hist.num_samples))
    return hist, {"seconds": seconds, "points_per_draw": int(per_draw)}


def run(study: Path, labels, bins, per_cells, paper_per_cell, solver_steps, chunk, seed):
    field = bj.VectorField()
    template = field.init(jax.random.key(0))
    solver = bj.Solver("rk4", num_steps=solver_steps)
    key = jax.random.key(seed)
    out = {"study": str(study), "bins": list(bins), "per_cell": list(per_cells),
           "paper_per_cell": paper_per_cell, "solver": repr(solver),
           "environment": environment(), "labels": {}}
    for li, label in enumerate(labels):
        draws = load_draws(study / "draws" / label / "run0.msgpack", template)
        k_label = jax.random.fold_in(key, li)
        paper_hist, paper_cost = _histograms(jax.random.fold_in(k_label, 0), field, draws, bins,
                                             paper_per_cell, False, solver, chunk)
        entry = {"num_draws": draws.num_draws, "cost": {"paper": paper_cost}, "bins": {}}
        shared = {}
        for i, k in enumerate(per_cells):
            shared[k], entry["cost"][f"corrected@{k}"] = _histograms(
                jax.random.fold_in(k_label, i + 1), field, draws, bins, k, True, solver, chunk)
        for j, b in enumerate(paper_hist.binnings):
            truth, n_gen = b.truth, paper_hist.num_samples[j]
            frac = paper_hist.fractions[j]
            paper = ev.equivalent_events(frac, truth)
            paper_loo = _jackknife(ev.equivalent_events, frac, truth)
            ref = ev.equivalent_events(frac, truth, n_gen)
            ref_loo = ev.jackknife_equivalent_events(frac, truth, n_gen)
            cc = ev.corrected_cells(frac, truth, n_gen)
            row = {"n_cells": b.num_cells,
                   "paper": {"n_eq": float(paper.mean()),
                             "error": float(ev.jackknife_error(paper_loo).mean()),
                             "points_per_cell": paper_per_cell},
                   f"corrected@{paper_per_cell}": {
                       "n_eq": float(ref.mean()),
                       "error": float(ev.jackknife_error(ref_loo).mean()),
                       "model_share": float(np.mean(cc.model_share)),
                       "unresolved": int(cc.num_unresolved.sum()),
                       "minus_paper": _paired(ref, ref_loo, paper, paper_loo)}}
            for k in per_cells:
                h = shared[k]
                fk, nk = h.fractions[j], h.num_samples[j]
                est = ev.equivalent_events(fk, truth, nk)
                loo = ev.jackknife_equivalent_events(fk, truth, nk)
                ck = ev.corrected_cells(fk, truth, nk)
                row[f"corrected@{k}"] = {
                    "n_eq": float(est.mean()), "error": float(ev.jackknife_error(loo).mean()),
                    "points_per_cell": nk / b.num_cells,
                    "model_share": float(np.mean(ck.model_share)),
                    "unresolved": int(ck.num_unresolved.sum()),
                    "minus_corrected_paper_size": _paired(est, loo, ref, ref_loo),
                    "minus_paper": _paired(est, loo, paper, paper_loo)}
            entry["bins"][str(b.shape[0])] = row
        out["labels"][label] = entry
        print(json.dumps({label: entry}, indent=1), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("/tmp/baseline_quick"))
    p.add_argument("--labels", default="vi_k10,adammcmc_sigma0.1")
    p.add_argument("--bins", default="10,20,30")
    p.add_argument("--per-cell", default="25,50,100")
    p.add_argument("--paper-per-cell", type=int, default=1000)
    p.add_argument("--solver-steps", type=int, default=8)
    p.add_argument("--chunk", type=int, default=2**15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/cpu_estimators.json"))
    a = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    out = run(a.study, a.labels.split(","), ints(a.bins), ints(a.per_cell), a.paper_per_cell,
              a.solver_steps, a.chunk, a.seed)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
