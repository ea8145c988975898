"""Compact summary of an ``EvaluationResult``: every number of the report, no per-cell arrays.

``summarise(result)`` is a JSON-ready dict (a few kB even for 500 × 500 grids) keyed by the
number of bins per dimension n as a string ("50"; the label "20x40" for a non-square grid):

    mad, mad_r, mad_phi: {n: float}              same-noise binnings
    coverage: {n: {"nominal": [L], "empirical": [L]}}
    deviation_r: {"n", "r_edges", "deviation"}   signed coverage deviation per radial bin
    mad_scaled: {n: {"mad", "mad_r", "mad_phi"}} scaled binnings (absent: {})
    amplification, n_eq: {n: [R floats]}         scaled binnings (same-noise without scaled)
    closure: {n: {"model", "model_per_run", "truth", "truth_std", "truth_quantiles"}}
    cell_amplification: {"n", "r_edges", "mean", "quantiles"}  run-mean per-cell amplification
        over φ per radial bin (mean and 16/50/84 % quantiles)
    fit: {"a", "a_err", "b", "b_err", "n_cells"}  (NaN when there is no fit)
    averaging: {n: {"regions", "amplification_model", "amplification_true" ([R]),
        "misspecification_share" ([R], Σσ²_mis/Σσ²_true)}}  averaging amplification of the
        slices of the first observable (scaled binnings with fresh noise)
    differential: {value name: {"n_equiv_median", "amplification_median", "indistinguishable",
        "statistic_mean", "p_value_median" ([R]), "null_median", ...}}  KS (with a truth sampler)
    observables: names of the binned values (e.g. ["r", "phi"]); "r_edges" and the per-radial
        entries refer to the first of them
    scaled binnings with fresh noise also: amplification_corrected, n_eq_corrected,
        n_eq_corrected_err (jackknife), corrected_model_share, corrected_unresolved
        ({n: [R]}) and fit_corrected: the generation-noise-corrected N_eq (``amplification``)

The figures of ``bayesiamp_jax.evaluation.figures`` are drawn from this summary, so a study can
be plotted from its small result files alone.
"""

from __future__ import annotations

import warnings

import numpy as np

QUANTILES = (16.0, 50.0, 84.0)


def binning_key(res) -> str:
    """"50" for a 50 × 50 grid, "20x40" / "5x5x5" / "7x1" (one value) otherwise."""
    shape = tuple(res.shape)
    if len(shape) == 2 and shape[0] == shape[1]:
        return str(shape[0])
    return "x".join(map(str, shape if len(shape) > 1 else shape + (1,)))


def key_cells(key: str) -> int:
    """Number of cells of a summary key: "50" -> 2500, "20x40" -> 800, "7x1" -> 7."""
    if "x" in key:
        return int(np.prod([int(n) for n in key.split("x")]))
    return int(key) ** 2


def key_panel(key: str) -> str:
    """A summary key as a panel title: "50" -> "50×50", "20x40" -> "20×40"."""
    return key.replace("x", "×") if "x" in key else f"{key}×{key}"


def _f(v) -> float:
    return float(np.asarray(v))


def _pick(results: dict, n: int | str | None, default: str | None = None):
    """The binning with key ``n`` (if given and present), else ``default``, else the largest."""
    by_key = {binning_key(r): r for r in results.values()}
    if n is not None and str(n) in by_key:
        return by_key[str(n)]
    if default is not None and default in results:
        return results[default]
    return max(results.values(), key=lambda r: int(np.prod(r.shape)))


def summarise(result, deviation_bins: int | str | None = None,
              cell_bins: int | str | None = None) -> dict:
    """The compact summary (see module docstring) of an ``EvaluationResult``.

    deviation_bins: same-noise binning of ``deviation_r`` (default: the largest);
    cell_bins: scaled binning of ``cell_amplification`` (default: 200 × 200 if present, else the
    largest).
    """
    out = {"mad": {}, "mad_r": {}, "mad_phi": {}, "coverage": {}, "mad_scaled": {},
           "amplification": {}, "n_eq": {}, "closure": {}, "deviation_r": {},
           "cell_amplification": {}}
    for res in result.same_noise.values():
        key, cal = binning_key(res), res.calibration
        out["mad"][key], out["mad_r"][key] = _f(cal.mad), _f(cal.mad_r)
        out["mad_phi"][key] = _f(cal.mad_phi)
        out["coverage"][key] = {"nominal": np.asarray(cal.levels).tolist(),
                                "empirical": np.asarray(cal.curve).tolist()}
    if result.same_noise:
        res = _pick(result.same_noise, deviation_bins)
        out["deviation_r"] = {"n": res.shape[0], "r_edges": [float(x) for x in res.r_edges],
                              "deviation": np.asarray(res.calibration.deviation_r).tolist()}
    source = result.scaled or result.same_noise
    for res in source.values():
        key = binning_key(res)
        out["amplification"][key] = np.asarray(res.amplification.amplification).tolist()
        out["n_eq"][key] = np.asarray(res.amplification.n_eq).tolist()
        corr = getattr(res, "amplification_corrected", None)
        if corr is not None:  # generation-noise-corrected (evaluation.amplification)
            out.setdefault("amplification_corrected", {})[key] = np.asarray(
                corr.amplification).tolist()
            out.setdefault("n_eq_corrected", {})[key] = np.asarray(corr.n_eq).tolist()
            out.setdefault("n_eq_corrected_err", {})[key] = np.asarray(corr.n_eq_err).tolist()
            out.setdefault("corrected_model_share", {})[key] = np.asarray(
                corr.model_share).tolist()
            out.setdefault("corrected_unresolved", {})[key] = np.asarray(
                corr.num_unresolved).tolist()
        avg = getattr(res, "averaging", None)
        if avg is not None:  # successor paper: slices of the first observable
            share = np.asarray(avg.misspecification_var).sum(axis=1) / np.asarray(
                avg.true_var).sum(axis=1)
            out.setdefault("averaging", {})[key] = {
                "regions": int(np.size(avg.truth)),
                "amplification_model": np.asarray(avg.amplification_model).tolist(),
                "amplification_true": np.asarray(avg.amplification_true).tolist(),
                "misspecification_share": share.tolist()}
        if result.scaled:
            cal = res.calibration
            out["mad_scaled"][key] = {"mad": _f(cal.mad), "mad_r": _f(cal.mad_r),
                                      "mad_phi": _f(cal.mad_phi)}
        out["closure"][key] = _closure(res.closure)
    if source:
        res = _pick(source, cell_bins, default="200x200")
        cell = np.asarray(res.amplification.cell_amplification, float).mean(axis=0)
        cell = np.where(np.isfinite(cell), cell, np.nan)
        with warnings.catch_warnings():  # radial bins without a finite cell give NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, q = np.nanmean(cell, axis=1), np.nanpercentile(cell, QUANTILES, axis=1)
        out["cell_amplification"] = {"n": res.shape[0],
                                     "r_edges": [float(x) for x in res.r_edges],
                                     "mean": mean.tolist(), "quantiles": q.tolist()}
    diff = getattr(result, "differential", None)
    if diff:
        out["differential"] = {name: ks_summary(ks) for name, ks in diff.items()}
    names = next((r.names for r in (*result.same_noise.values(), *result.scaled.values())
                  if getattr(r, "names", None)), None)
    if names is not None:
        out["observables"] = list(names)
    out["fit"] = _fit(result.fit)
    if "amplification_corrected" in out:
        out["fit_corrected"] = _fit(getattr(result, "fit_corrected", None))
    return out


def ks_summary(ks) -> dict:
    """A ``KSAmplification`` with arrays (..., S) (S draws) as plain numbers: medians over
    draws of n_equiv and amplification (inf: indistinguishable from the truth at these sample
    sizes), mean KS statistic, median p-value — lists per run for (R, S), floats for (S,)."""
    n_eq = np.asarray(ks.n_equiv, float)
    return {"n_equiv_median": np.median(n_eq, axis=-1).tolist(),
            "amplification_median": np.median(np.asarray(ks.amplification, float),
                                              axis=-1).tolist(),
            "indistinguishable": np.mean(np.isinf(n_eq), axis=-1).tolist(),
            "statistic_mean": np.mean(np.asarray(ks.statistic), axis=-1).tolist(),
            "p_value_median": np.median(np.asarray(ks.p_value), axis=-1).tolist(),
            "null_median": float(ks.null_median), "num_generated": int(ks.num_generated),
            "num_reference": int(ks.num_reference)}


def _fit(fit) -> dict:
    nan = float("nan")
    return ({"a": nan, "a_err": nan, "b": nan, "b_err": nan} if fit is None else
            {"a": _f(fit.a), "a_err": _f(fit.a_err), "b": _f(fit.b), "b_err": _f(fit.b_err),
             "n_cells": np.asarray(fit.n_cells).tolist()})


def _closure(clo) -> dict:
    truth = np.asarray(clo.jsd_truth, float)
    finite = np.isfinite(truth).any()
    return {"model": float(np.mean(clo.jsd_model)),
            "truth": float(np.nanmean(truth)) if finite else float("nan"),
            "model_per_run": np.asarray(clo.jsd_model).tolist(),
            "truth_std": float(np.nanstd(truth)) if finite else float("nan"),
            "truth_quantiles": (np.nanpercentile(truth, QUANTILES).tolist() if finite
                                else [float("nan")] * len(QUANTILES))}
