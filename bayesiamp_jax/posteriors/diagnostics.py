"""Sampler diagnostics a numpyro or blackjax user expects, for draws of R runs × S draws.

Each run is treated as one chain of S draws (runs use different training data, so they are
never pooled): ``effective_sample_size`` and ``split_gelman_rubin`` of numpyro per run and
quantity, summarised over quantities (e.g. the cells of a histogram) by their median and worst
value. ``draws_diagnostics`` gathers what a study reports per method label: ESS / split R-hat of
the chains' losses (when the draws carry one loss per draw) and of generated bin fractions,
mean acceptance and the number of divergences.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin


def chain_statistics(x) -> dict:
    """ESS and split R-hat of ``x`` (R, S, ...) with run r one chain of S draws.

    Returns {"ess": {"median", "q05", "undefined"}, "split_rhat": {"median", "max"}} over runs
    and quantities; needs S >= 4. numpyro's estimator of short chains can return ESS <= 0 (or
    NaN without spread): such values count as "undefined" and are left out of the median and
    the 5 % quantile "q05".
    """
    x = np.asarray(x, np.float64)
    if x.ndim < 2 or x.shape[1] < 4:
        raise ValueError(f"x must have shape (runs, draws >= 4, ...), got shape {x.shape}")
    with warnings.catch_warnings():  # constant quantities divide by a zero variance
        warnings.simplefilter("ignore", RuntimeWarning)
        ess = np.stack([effective_sample_size(run[None]) for run in x]).reshape(-1)
        rhat = np.stack([split_gelman_rubin(run[None]) for run in x]).reshape(-1)
    ok = ess[np.isfinite(ess) & (ess > 0)]
    nan = float("nan")
    return {"ess": {"median": float(np.median(ok)) if ok.size else nan,
                    "q05": float(np.percentile(ok, 5)) if ok.size else nan,
                    "undefined": int(ess.size - ok.size)},
            "split_rhat": {"median": _nan(np.nanmedian, rhat), "max": _nan(np.nanmax, rhat)}}


def _nan(fn, a) -> float:
    return float(fn(a)) if np.isfinite(a).any() else float("nan")


def draws_diagnostics(runs, fractions: dict | None = None) -> dict:
    """Diagnostics of R runs of ``PosteriorDraws`` (JSON-ready dict).

    fractions: optional {name: bin fractions (R, S, n_r, n_φ)} (e.g. the same-noise histograms)
    whose cells get ``chain_statistics``. Keys: "num_draws", "bin_fractions" {name: ...},
    "loss" (when every run's info holds a per-draw "loss"), "acceptance" (mean per run, from
    "acceptance_rate" or "accept_prob") and "divergences" (per run, from "diverging").
    """
    runs = list(runs)
    num_draws = runs[0].num_draws
    out = {"num_draws": int(num_draws)}
    if num_draws >= 4:
        out["bin_fractions"] = {name: chain_statistics(f) for name, f in (fractions or {}).items()}
        losses = [np.asarray(d.info.get("loss", ()), float).reshape(-1) for d in runs]
        if all(loss.size == num_draws for loss in losses):
            out["loss"] = chain_statistics(np.stack(losses)[..., None])
    for key in ("acceptance_rate", "accept_prob"):
        if all(key in d.info for d in runs):
            out["acceptance"] = [float(np.mean(d.info[key])) for d in runs]
    if all("diverging" in d.info for d in runs):
        out["divergences"] = [int(np.sum(d.info["diverging"])) for d in runs]
    return out
