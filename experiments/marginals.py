"""Generated vs reference marginals of every observable value: the first figure of a study.

Per draw s of run 0 the posterior generates ``num_events`` events (``generate_samples`` with
fresh noise per draw, via ``experiments.holdout.generate_physical``; mapped back to physical
units with ``problem.transform.inverse`` when the study preprocesses), and each observable
value j is histogrammed on ``num_bins`` equal bins between the 0.5 % and 99.5 % quantiles of
the reference (ring/shell: of exact truth events); events outside the edges are dropped, so the
fractions are of all events and sum to at most one. Over draws the fractions f_s,b give the
posterior band

    lo, mid, hi = 16, 50, 84 % quantiles of f_s,b over s,   σ_post = (hi − lo) / 2,

compared with the reference fractions r_b (the truth stand-in) and the held-out fractions
h_b = n_b / N (``experiments.data.load_holdout``) with binomial error σ_h = √(h_b(1 − h_b)/N).
Per bin

    pull_b = (h_b − mid_b) / √(σ_post² + σ_h²)

(σ_post includes the generation noise of num_events events per draw), so a model whose band
covers the held-out law gives pulls of width ≈ 1. The JSON-ready result is the label's
``summary["marginals"]``.
"""

from __future__ import annotations

import jax
import numpy as np

from bayesiamp_jax import observables
from bayesiamp_jax.evaluation.generate import stack_runs
from experiments.holdout import generate_physical

NUM_BINS = 40
NUM_EVENTS = 10_000  # generated events per draw
QUANTILES = (0.005, 0.995)


def edges_of(values: np.ndarray, num_bins: int = NUM_BINS) -> list[np.ndarray]:
    """Equal-width edges per value between the ``QUANTILES`` of ``values`` (n, k)."""
    out = []
    for j in range(values.shape[1]):
        lo, hi = np.quantile(values[:, j], QUANTILES)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        out.append(np.linspace(lo, hi, num_bins + 1))
    return out


def fractions(values: np.ndarray, edges: list[np.ndarray]) -> list[np.ndarray]:
    """Per value j: the fraction of the n events in every bin of ``edges[j]`` (num_bins,)."""
    n = max(values.shape[0], 1)
    return [np.histogram(values[:, j], e)[0] / n for j, e in enumerate(edges)]


def band(per_draw: np.ndarray) -> np.ndarray:
    """(3, B): the 16, 50, 84 % quantiles over draws of (S, B) fractions."""
    return np.quantile(per_draw, [0.16, 0.5, 0.84], axis=0)


def pulls(mid, lo, hi, held, num_holdout: int) -> np.ndarray:
    """Per-bin pulls of the held-out fractions against the posterior band (module doc)."""
    var = ((hi - lo) / 2) ** 2 + held * (1 - held) / num_holdout
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, (held - mid) / np.sqrt(var), np.nan)


def truth_values(problem, key, num_events: int) -> np.ndarray:
    """The observable of the truth stand-in: the reference events, or fresh exact events."""
    if problem.values is not None:
        return np.asarray(problem.values, np.float64)
    if problem.reference is not None:
        return np.asarray(observables.values(problem.observable, problem.reference.x), np.float64)
    return np.asarray(problem.truth_sampler(key, num_events), np.float64)


def marginals_summary(key, field, runs, problem, held_out, *, c, solver,
                      num_events: int = NUM_EVENTS, num_bins: int = NUM_BINS) -> dict:
    """``summary["marginals"]``: {names, edges, num_draws, num_events, reference, band
    (3, B per value), holdout, holdout_err, pulls, pull_width, num_holdout} of run 0's draws
    (plain lists; holdout entries None without held-out events)."""
    k_gen, k_truth = jax.random.split(key)
    params = stack_runs(runs[:1])
    num_draws = int(jax.tree_util.tree_leaves(params)[0].shape[1])
    truth = truth_values(problem, k_truth, max(num_events, 100_000))
    edges = edges_of(truth, num_bins)
    # one physical sample per draw at the study's conditions (none, the toy's scalar for every
    # event, or the per-point conditions cycled), as rows of an (S·num_events, k) array
    total, k = num_draws * num_events, int(getattr(field, "cond_dim", 0))
    cond = None  # (the evaluation refuses a conditional field without conditions before)
    if k and c is not None:
        arr = np.asarray(c, np.float32)
        cond = (np.resize(arr, (total, k)) if arr.ndim == 2 else
                np.broadcast_to(arr.reshape(1, -1), (total, k)))
    gen = generate_physical(k_gen, field, params, problem, cond, num_draws, num_events, solver)
    per_draw = [np.stack(f) for f in zip(*(fractions(np.asarray(
        observables.values(problem.observable, g), np.float64), edges) for g in gen),
        strict=True)]
    names = list(problem.observable.names)
    out = {"names": names, "edges": [e.tolist() for e in edges], "num_draws": num_draws,
           "num_events": int(num_events), "reference": [f.tolist() for f in fractions(truth,
                                                                                      edges)],
           "num_reference": int(truth.shape[0]), "band": [band(f).tolist() for f in per_draw],
           "holdout": None, "holdout_err": None, "pulls": None, "pull_width": None,
           "num_holdout": 0}
    if held_out is not None and held_out.x.shape[0] > 0:
        values = np.asarray(observables.values(problem.observable, held_out.x), np.float64)
        n_ho = int(values.shape[0])
        held = fractions(values, edges)
        pl = [pulls(*band(f)[[1, 0, 2]], h, n_ho)
              for f, h in zip(per_draw, held, strict=True)]
        out |= {"holdout": [h.tolist() for h in held],
                "holdout_err": [np.sqrt(h * (1 - h) / n_ho).tolist() for h in held],
                "pulls": [np.where(np.isfinite(p), p, None).tolist() for p in pl],
                "pull_width": [float(np.nanstd(p)) if np.isfinite(p).any() else None
                               for p in pl],
                "num_holdout": n_ho}
    return out
