"""Can an amplification be trusted? The reasons, in words, from a label's compact summary.

``assess(summary, key)`` reads one binning's claim (the generation-noise-corrected
amplification where present) and everything the study measured about it, and returns a
``Trust``: ``trusted`` is False as soon as one reason applies. The reasons and their levels:

- held-out verdict (``evaluation.holdout``; of the binning itself where its check is
  reliable, else of the same-noise binning nearest in cells): *over-confident* — the posterior
  spread is smaller than the deviations from events never trained on, so N_eq is overstated
  (by ≈ s²);
  *under-confident* — N_eq is understated; no held-out events — the claim is unchecked;
- the claimed N_eq exceeds what the held-out can check (its own error is larger than the claimed
  model error: N_eq > N_held-out, ``reach``);
- the model's share ρ of the draws' spread below ``MIN_MODEL_SHARE`` (0.2): generation noise
  dominates and the corrected estimator is no longer within a few % (``amplification`` doc);
- a chain that has not mixed: median ESS of the bin fractions below ``MIN_ESS_FRACTION`` · S or a
  median split R-hat above ``MAX_RHAT`` (numpyro's diagnostics, over the cells of a binning):
  the draws understate the spread. Only for draws that are a Markov chain: the methods of
  ``INDEPENDENT_DRAWS`` draw independently (VI, Laplace, SWAG: from a fitted distribution;
  ensembles: independent members), where an ESS below S is the estimator's noise (S = 6–20),
  not autocorrelation; unknown methods are checked;
- training not converged (``convergence``: the held-out loss still falls at the end).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MIN_MODEL_SHARE = 0.2
MIN_POINTS_PER_CELL = 200
MIN_ESS_FRACTION = 0.5
INDEPENDENT_DRAWS = ("vi", "laplace", "swag", "ensemble", "bootstrap", "repulsive")
MAX_RHAT = 1.1


class Trust(NamedTuple):
    """``trusted``: no reason against the claim; ``reasons``: each one in words; ``verdict``:
    the held-out verdict used (None: unchecked); ``model_share``: ρ̂ (mean over runs; None)."""

    trusted: bool
    reasons: tuple
    verdict: str | None = None
    model_share: float | None = None


def _mean(values) -> float | None:
    a = np.asarray(values, np.float64).ravel()
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _cells(key: str) -> int:
    return int(np.prod([int(n) for n in key.split("x")])) if "x" in key else int(key) ** 2


def _reliable(entry: dict, fresh: bool = True) -> bool:
    """A check is read where it holds: not ``sparse`` (too few events per cell for Gaussian
    pulls), and, with fresh noise per draw, at least ``MIN_POINTS_PER_CELL`` generated points
    per cell and draw (``evaluation.holdout``: false alarms 12–15 % at 20, ≈ 7 % at 200)."""
    if entry.get("sparse"):
        return False
    return not fresh or entry.get("points_per_cell", np.inf) >= MIN_POINTS_PER_CELL


def holdout_entry(summary: dict, key: str) -> dict | None:
    """The held-out check of binning ``key``: the scaled one if present with at least
    ``MIN_POINTS_PER_CELL`` generated points per cell and draw, else the same-noise one,
    else the reliable check of the binning with the nearest number of cells."""
    ho = summary.get("holdout")
    if not ho:
        return None
    scaled = (ho.get("scaled") or {}).get(key)
    if scaled is not None and _reliable(scaled):
        return scaled
    same = (ho.get("same_noise") or {}).get(key)
    if same is not None and _reliable(same, fresh=False):
        return same
    cands = {k: v for k, v in (ho.get("same_noise") or {}).items()
             if _reliable(v, fresh=False)} | {
        k: v for k, v in (ho.get("scaled") or {}).items() if _reliable(v)}
    if not cands:
        return scaled if scaled is not None else same
    if not cands:
        return None
    near = min(cands, key=lambda k: abs(np.log(_cells(k)) - np.log(_cells(key))))
    return cands[near]


def assess(summary: dict, key: str, *, num_train: int | None = None,
           converged: bool | None = None) -> Trust:
    """Reasons not to trust the amplification of binning ``key`` of one label's summary.

    ``num_train``: training events per run (for the held-out reach); ``converged``: the
    convergence flag of the label's training (None: not measured)."""
    reasons = []
    entry = holdout_entry(summary, key)
    verdict = None if entry is None else entry.get("verdict")
    amps = (summary.get("amplification_corrected") or {}).get(key) or \
        (summary.get("amplification") or {}).get(key)
    amp = _mean(amps) if amps is not None else None
    skipped = (summary.get("holdout") or {}).get("skipped")
    if entry is None:
        reasons.append(f"unchecked: {skipped}" if skipped else
                       "unchecked: no held-out events (data.num_holdout=0 or none left)")
    else:
        width, scale = entry.get("width"), entry.get("scale")
        if verdict == "over-confident":
            p = entry.get("p_value")
            what = (f"over-confident on held-out events (pull width {width:.2g}"
                    + (f", p = {p:.2g}" if p is not None else "") + ")"
                    if width is not None else "over-confident on held-out events")
            reasons.append(what + (f": N_eq overstated ≈ {scale**2:.2g}×" if scale else
                                   ": deviations where the model claims no spread "
                                   "(mismodelled; no recalibration repairs it)"))
        elif verdict == "under-confident":
            reasons.append("under-confident on held-out events: N_eq understated"
                           + (f" ≈ {1 / scale**2:.2g}×" if scale else ""))
        reach = entry.get("reach")
        if reach is not None and amp is not None and num_train:
            if amp * num_train > reach:
                reasons.append(f"claim N_eq ≈ {amp * num_train:.3g} exceeds what the "
                               f"{summary.get('holdout', {}).get('num_holdout', '?')} held-out "
                               f"events can check (≈ {reach:.3g})")
    share = (summary.get("corrected_model_share") or {}).get(key)
    share = _mean(share) if share is not None else None
    if share is not None and share < MIN_MODEL_SHARE:
        reasons.append(f"model share ρ = {share:.2g} < {MIN_MODEL_SHARE}: generation noise "
                       "dominates the spread, the corrected N_eq is unreliable (more samples "
                       "per cell)")
    reasons += _mixing(summary)
    if converged is False:
        reasons.append("training not converged: the held-out loss still falls (train longer)")
    return Trust(not reasons, tuple(reasons), verdict, share)


def _mixing(summary: dict) -> list[str]:
    if summary.get("method") in INDEPENDENT_DRAWS:
        return []
    diag = summary.get("diagnostics") or {}
    s = diag.get("num_draws") or summary.get("num_draws")
    worst = None
    for key, stats in (diag.get("bin_fractions") or {}).items():
        ess = (stats.get("ess") or {}).get("median")
        rhat = (stats.get("split_rhat") or {}).get("median")  # the max over many cells
        # exceeds 1.1 by chance even for independent draws (VI: 1.44 over 2,500 cells, S = 20)
        bad = (s and ess is not None and ess < MIN_ESS_FRACTION * s) or \
            (rhat is not None and rhat > MAX_RHAT)
        if bad and worst is None:
            worst = (key, ess, rhat)
    if worst is None:
        return []
    key, ess, rhat = worst
    return [f"chain not mixed (bins {key}: median ESS {ess:.3g} of {s} draws, median split "
            f"R-hat {rhat:.3g}): the draws understate the posterior spread"]
