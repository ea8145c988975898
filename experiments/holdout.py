"""Held-out check of one evaluated label: the study's side of ``evaluation.holdout``.

The held-out events (``experiments.data.load_holdout``, never trained on) are histogrammed in
every binning of the label's same-noise and scaled histograms and compared with the posterior
(``evaluation.holdout.holdout_check``); the compact, JSON-ready result goes into the label's
``results/<label>.json`` as ``holdout``:

    num_holdout, alpha
    same_noise / scaled: {binning key: {width, width_err, chi2, ndf, p_value, verdict, scale,
        scale_err, mad, mad_recalibrated, visible, reach, pull_counts, pull_edges}}
    amplification_recalibrated: {scaled key: [R]}  corrected amplification / s² of that binning
        (absent where s ≥ ``MAX_SCALE``: ``scale_unbounded``, no widening explains the
        deviations — the model is mismodelled, not merely over-confident)
    verdict: the verdict of the calibration binnings taken together (the worst of them)
"""

from __future__ import annotations

import numpy as np

from bayesiamp_jax import observables
from bayesiamp_jax.evaluation.generate import SCALED
from bayesiamp_jax.evaluation.holdout import MIN_DRAWS, holdout_check, holdout_counts
from bayesiamp_jax.evaluation.summary import binning_key

PULL_EDGES = np.linspace(-6.0, 6.0, 49)
# a scale beyond this is no spread problem: deviations in cells without model spread (a
# mismodelled distribution) that no widening explains; no recalibrated number is given
MAX_SCALE = 100.0
SEVERITY = {"consistent": 0, "under-confident": 1, "over-confident": 2}


def holdout_values(problem, holdout) -> np.ndarray:
    """The observable of every held-out event, (N_ho, k) float64 (physical quantities)."""
    return np.asarray(observables.values(problem.observable, holdout.x), np.float64)


def check_histograms(histograms, values, alpha: float) -> dict:
    """{binning key: HoldoutCheck} of every binning of ``histograms`` (PosteriorHistograms);
    the null of the width test is the closed-form finite-S gamma (``holdout_check``)."""
    out = {}
    fresh = histograms.mode == SCALED
    for b, frac, n in zip(histograms.binnings, histograms.fractions, histograms.num_samples,
                          strict=True):
        out[binning_key(b)] = holdout_check(
            frac, holdout_counts(values, b), num_generated=int(n), fresh=fresh, alpha=alpha,
            num_holdout=int(values.shape[0]))  # events outside the grid count as in h = c/N
    return out


def _finite(v) -> float | None:
    v = float(np.asarray(v))
    return v if np.isfinite(v) else None


def compact(check) -> dict:
    """One ``HoldoutCheck`` as plain numbers (no per-cell arrays but a pull histogram)."""
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
            "pull_counts": counts.tolist(), "pull_edges": PULL_EDGES.tolist()}


def summarise_checks(same: dict, scaled: dict, summary: dict, num_holdout: int,
                     alpha: float) -> dict:
    """The label's ``holdout`` entry from the checks of both histogram kinds and the label's
    evaluation summary (for the recalibrated amplification N_eq / s²)."""
    out = {"num_holdout": int(num_holdout), "alpha": float(alpha),
           "same_noise": {k: compact(c) for k, c in same.items()},
           "scaled": {k: compact(c) for k, c in scaled.items()}}
    corrected = summary.get("amplification_corrected") or {}
    recal = {}
    for k, c in scaled.items():
        s = float(c.scale)
        if k in corrected and np.isfinite(s) and 0 < s < MAX_SCALE:
            recal[k] = [float(a) / s**2 for a in corrected[k]]
    out["amplification_recalibrated"] = recal
    verdicts = [c.verdict for c in same.values()] or [c.verdict for c in scaled.values()]
    out["verdict"] = max(verdicts, key=SEVERITY.get) if verdicts else None
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
