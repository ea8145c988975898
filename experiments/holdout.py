"""Held-out check of one evaluated label: the study's side of ``evaluation.holdout``.

The held-out events (``experiments.data.load_holdout``, never trained on) are histogrammed in
every binning of the label's same-noise and scaled histograms and compared with the posterior
(``evaluation.holdout.holdout_check``); the compact, JSON-ready result goes into the label's
``results/<label>.json`` as ``holdout``:

    num_holdout, alpha
    same_noise / scaled: {binning key: {width, width_err, chi2, ndf, p_value, verdict, scale,
        scale_err, mad, mad_recalibrated, visible, reach, pull_counts, pull_edges}}
    classifier (``classifier_summary``, a separate entry of the results): AUC of generated
        vs held-out events with its p-value and verdict, and the KS amplification on the
        learned likelihood ratio beside the one of each coordinate
    amplification_recalibrated: {scaled key: [R]}  corrected amplification / s², s of the check
        the binning's verdict reads (``trust.holdout_entry``: its own where reliable)
        (absent where s ≥ ``MAX_SCALE``: ``scale_unbounded``, no widening explains the
        deviations — the model is mismodelled, not merely over-confident)
    verdict: the worst verdict of the calibration binnings that are not sparse (fewer than
        ``MIN_PER_CELL`` generated points or held-out events per cell)
"""

from __future__ import annotations

import jax
import numpy as np

from bayesiamp_jax import observables
from bayesiamp_jax.evaluation.classifier import (
    classifier_test,
    lr_ks_amplification,
    marginal_ks_amplification,
)
from bayesiamp_jax.evaluation.generate import SCALED, generate_samples, stack_runs
from bayesiamp_jax.evaluation.holdout import MIN_DRAWS, holdout_check, holdout_counts
from bayesiamp_jax.evaluation.summary import binning_key, ks_summary
from bayesiamp_jax.evaluation.trust import holdout_entry

PULL_EDGES = np.linspace(-6.0, 6.0, 49)
# a scale beyond this is no spread problem: deviations in cells without model spread (a
# mismodelled distribution) that no widening explains; no recalibrated number is given
MAX_SCALE = 100.0
# fewer generated points or held-out events per cell than this: the pulls are not Gaussian
# (the quick preset's 50 x 50 grid, 4 held-out events and 16 points per cell, reads
# "under-confident" where the exact truth calls it calibrated); such binnings are marked sparse
MIN_PER_CELL = 25.0
SEVERITY = {"consistent": 0, "under-confident": 1, "over-confident": 2}


def holdout_values(problem, holdout) -> np.ndarray:
    """The observable of every held-out event, (N_ho, k) float64 (physical quantities)."""
    return np.asarray(observables.values(problem.observable, holdout.x), np.float64)


def check_histograms(histograms, values, alpha: float) -> dict:
    """{binning key: (HoldoutCheck, generated points per cell and draw)} of every binning of
    ``histograms`` (PosteriorHistograms); the null of the width test is the closed-form
    finite-S gamma (``holdout_check``)."""
    out = {}
    fresh = histograms.mode == SCALED
    for b, frac, n in zip(histograms.binnings, histograms.fractions, histograms.num_samples,
                          strict=True):
        out[binning_key(b)] = (holdout_check(
            frac, holdout_counts(values, b), num_generated=int(n), fresh=fresh, alpha=alpha,
            num_holdout=int(values.shape[0])),  # events outside the grid count as in h = c/N
            int(n) / b.num_cells, values.shape[0] / b.num_cells)
    return out


def _finite(v) -> float | None:
    v = float(np.asarray(v))
    return v if np.isfinite(v) else None


def compact(check, points_per_cell: float, holdout_per_cell: float) -> dict:
    """One ``HoldoutCheck`` as plain numbers (no per-cell arrays but a pull histogram), with
    the generated points and held-out events per cell (``sparse`` below ``MIN_PER_CELL``:
    the Gaussian pulls of the check no longer hold)."""
    pulls = np.asarray(check.pulls, np.float64).ravel()
    pulls = pulls[np.isfinite(pulls)]
    counts, _ = np.histogram(np.clip(pulls, PULL_EDGES[0], PULL_EDGES[-1]), PULL_EDGES)
    return {"width": _finite(check.width), "width_err": _finite(check.width_err),
            "chi2": _finite(check.chi2), "ndf": int(check.ndf),
            "p_value": _finite(check.p_value), "verdict": str(check.verdict),
            "scale": _finite(check.scale) if float(check.scale) < MAX_SCALE else None,
            "scale_err": _finite(check.scale_err) if float(check.scale) < MAX_SCALE else None,
            "scale_unbounded": bool(not float(check.scale) < MAX_SCALE),
            "mad": _finite(check.coverage.mad),
            "mad_recalibrated": _finite(check.recalibrated.mad),
            "visible": _finite(check.visible), "reach": _finite(check.reach),
            "points_per_cell": float(points_per_cell),
            "holdout_per_cell": float(holdout_per_cell),
            "sparse": bool(min(points_per_cell, holdout_per_cell) < MIN_PER_CELL),
            "pull_counts": counts.tolist(), "pull_edges": PULL_EDGES.tolist()}


def summarise_checks(same: dict, scaled: dict, summary: dict, num_holdout: int,
                     alpha: float) -> dict:
    """The label's ``holdout`` entry from the checks of both histogram kinds and the label's
    evaluation summary (for the recalibrated amplification N_eq / s²)."""
    out = {"num_holdout": int(num_holdout), "alpha": float(alpha),
           "same_noise": {k: compact(*c) for k, c in same.items()},
           "scaled": {k: compact(*c) for k, c in scaled.items()}}
    corrected = summary.get("amplification_corrected") or {}
    recal = {}
    for k in scaled:  # s of the check the verdict of binning k reads (``trust.holdout_entry``)
        entry = holdout_entry({"holdout": out}, k)
        s = None if entry is None else entry.get("scale")
        if k in corrected and s is not None and np.isfinite(s) and 0 < s < MAX_SCALE:
            recal[k] = [float(a) / s**2 for a in corrected[k]]
    out["amplification_recalibrated"] = recal
    dense = [c for c in out["same_noise"].values() if not c["sparse"]] or [
        c for c in out["scaled"].values() if not c["sparse"]]
    out["verdict"] = max((c["verdict"] for c in dense), key=SEVERITY.get) if dense else None
    return out


def holdout_summary(same_hist, scaled_hist, problem, holdout, summary: dict,
                    alpha: float) -> dict:
    """The label's ``holdout`` entry (see module doc); with fewer than ``MIN_DRAWS`` draws
    per run {"skipped": reason} (the width test's finite-S null needs them)."""
    values = holdout_values(problem, holdout)
    draws = (same_hist or scaled_hist).counts[0].shape[1]
    if draws < MIN_DRAWS:
        return {"num_holdout": int(values.shape[0]), "alpha": float(alpha), "verdict": None,
                "skipped": f"{draws} draws per run, fewer than the {MIN_DRAWS} the held-out "
                           "check needs"}
    same = check_histograms(same_hist, values, alpha) if same_hist else {}
    scaled = check_histograms(scaled_hist, values, alpha) if scaled_hist else {}
    return summarise_checks(same, scaled, summary, values.shape[0], alpha)


def _features(x, c) -> np.ndarray:
    """Classifier inputs: the events, with their conditions where these vary (a constant
    condition, like the ring's r_mean, carries no information)."""
    x = np.asarray(x, np.float32)
    c = None if c is None else np.asarray(c, np.float32).reshape(x.shape[0], -1)
    if c is None or c.shape[1] == 0 or np.all(np.ptp(c, axis=0) == 0):
        return x
    return np.concatenate([x, c], axis=1)


def generate_physical(key, field, params, problem, cond, num_draws, per_draw, solver):
    """(S, per_draw, d) events of run 0's S draws in physical units (``problem.transform``
    inverted); event i of draw s is generated at row s·per_draw + i of the conditions ``cond``
    (N, k), cycled (None: an unconditional field), so events and conditions pair up."""
    rows = []
    for s in range(num_draws):
        p = jax.tree_util.tree_map(lambda a, s=s: np.asarray(a)[0, s], params)
        c = None if cond is None else np.resize(cond, (num_draws * per_draw, cond.shape[1]))[
            s * per_draw:(s + 1) * per_draw]
        x = generate_samples(key, field, p, per_draw, c=c, solver=solver, draw_index=s)
        rows.append(np.asarray(x if problem.transform is None else problem.transform.inverse(x)))
    return np.stack(rows)


def classifier_summary(key, field, runs, problem, held_out, *, num_train: int,
                       num_events: int, num_retrain: int, alpha: float, solver) -> dict:
    """The classifier two-sample test of run 0's posterior-predictive events (every draw
    generating its share) against the held-out events, and the KS differential amplification
    on its learned log likelihood ratio next to the one on each coordinate (fresh events per
    draw, held-out events of the test split): ``evaluation.classifier``."""
    params = stack_runs(runs[:1])
    num_draws = jax.tree_util.tree_leaves(params)[0].shape[1]
    n_ho = int(held_out.x.shape[0])
    n = n_ho if num_events < 0 else min(num_events, n_ho)
    per_draw = -(-n // num_draws)
    k_gen, k_fresh, k_test, k_ks = jax.random.split(key, 4)
    ho = _features(held_out.x, held_out.c)[:n]
    cond = None if held_out.c.shape[-1] == 0 else np.asarray(held_out.c, np.float32)
    paired = None if cond is None else np.resize(cond, (num_draws * per_draw, cond.shape[1]))

    def features(k):  # (S, per_draw, F): generated events with their held-out conditions
        x = generate_physical(k, field, params, problem, cond, num_draws, per_draw, solver)
        return _features(x.reshape(num_draws * per_draw, -1), paired).reshape(
            num_draws, per_draw, -1)

    gen = features(k_gen)
    test = classifier_test(k_test, gen.reshape(-1, gen.shape[-1])[:n], ho, alpha=alpha,
                           num_retrain=num_retrain)
    fresh = features(k_fresh)
    reference = ho[test.reference_test_index]
    lr = lr_ks_amplification(k_ks, test.log_ratio, fresh, reference, num_train=num_train)
    marg = marginal_ks_amplification(k_ks, fresh, reference, num_train=num_train)
    names = [f"x{j}" for j in range(gen.shape[-1] - (ho.shape[1] - held_out.x.shape[1]))] + [
        f"c{j}" for j in range(ho.shape[1] - held_out.x.shape[1])]
    return {"auc": float(test.auc), "p_value": float(test.p_value),
            "reject": bool(test.reject), "alpha": float(test.alpha),
            "critical_auc": float(test.critical_auc),
            "p_value_retrained": _finite(test.p_value_retrained),
            "num_retrain": int(num_retrain), "num_events": [int(n), int(n)],
            "test_events": list(map(int, test.num_test)), "run": 0,
            "lr_ks": ks_summary(lr), "marginal_ks": {nm: ks_summary(k) for nm, k in
                                                     zip(names, marg, strict=True)}}

