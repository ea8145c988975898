"""Evaluation stage: generated histograms of every posterior, calibration, amplification, closure.

Per method label (all runs together), ``bayesiamp_jax.evaluation.evaluate`` done in its parts:

1. same-noise histograms (``evaluation.calib_samples`` points per draw, the same noise for every
   draw, run and method) at ``calib_bins`` and the fine ``deviation_bins`` grid, in one pass;
2. scaled histograms (``scaled_factor · n²`` fresh points per draw) at ``scaled_bins``;
3. calibration (coverage curves, MAD, MAD_r, MAD_φ, deviation per radial bin), amplification
   per run, the power-law fit on ``fit_bins`` and the Jensen–Shannon closure.

Raw histograms go to ``histograms/<label>/`` (same_noise.npz, scaled.npz; generation is
resumable there, a finished histogram set is reused), the report's summary to
``results/<label>.json`` (atomic; an existing summary means the label is done). Figures and the
report are drawn from these files only. Command line: ``python -m experiments.evaluate
--output OUTDIR [--preset ...]`` (runs the earlier stages first when needed).
"""

from __future__ import annotations

import json

import jax
import numpy as np

from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.checkpoint import atomic_write_json
from bayesiamp_jax.integrate import Solver
from experiments import config as cfgmod
from experiments.data import field_from_config, purpose_key
from experiments.train import load_run_draws

CLOSURE_REPEATS = 100


def results_path(study, label):
    return study.path("results", f"{label}.json")


def histograms_dir(study, label):
    return study.outdir / "histograms" / label


def histograms_path(study, label, mode):
    """Raw histograms of one label: mode "same_noise" or "scaled"."""
    return histograms_dir(study, label) / f"{mode}.npz"


def load_histograms(path) -> ev.PosteriorHistograms:
    return ev.load_histograms(path)


def evaluation_key(cfg):
    """One key for every label: the same noise for every draw, run and method."""
    return purpose_key(cfg.seed, 0, "evaluation")


def calibration_bins(cfg) -> list[int]:
    return sorted(set(cfg.evaluation.calib_bins) | {cfg.evaluation.deviation_bins})


def evaluate_label(study, label: str, progress: bool = True) -> dict:
    """Generate, analyse and save one label (``bayesiamp_jax.evaluation.evaluate``)."""
    cfg = study.cfg
    runs = [load_run_draws(study, label, r) for r in range(cfg.num_runs)]
    sizes = {d.num_draws for d in runs}
    if len(sizes) != 1:
        raise ValueError(f"{label}: runs have different numbers of draws {sorted(sizes)}")
    result = _evaluate(study, label, runs, progress)
    method, hyper = next((m, h) for m, lab, h in cfgmod.method_grid(cfg) if lab == label)
    summary = summarise(cfg, result)
    summary.update(method=method, hyper=hyper, num_runs=cfg.num_runs,
                   num_draws=runs[0].num_draws)
    atomic_write_json(results_path(study, label), summary)
    return summary


def _evaluate(study, label, runs, progress) -> ev.EvaluationResult:
    """``bayesiamp_jax.evaluation.evaluate`` in its parts (same keys), so that each finished
    histogram set is kept and reused on resume and no bulky per-cell JSON is written."""
    cfg, e = study.cfg, study.cfg.evaluation
    out = histograms_dir(study, label)
    out.mkdir(parents=True, exist_ok=True)
    key = evaluation_key(cfg)
    k_same, k_scaled, _, _ = jax.random.split(key, 4)  # as ``ev.evaluate`` splits its key
    field = field_from_config(cfg)
    common = dict(c=cfg.data.r_mean, solver=Solver(e.solver, num_steps=e.solver_steps),
                  chunk_size=e.chunk_size, progress=progress)

    def histograms(mode, make):
        path = histograms_path(study, label, mode)
        if path.is_file():
            return ev.load_histograms(path)
        hist = make(checkpoint_path=out / f"{mode}.partial.npz", **common)
        ev.save_histograms(path, hist)
        return hist

    same = histograms("same_noise", lambda **kw: ev.histogram_same_noise(
        k_same, field, runs, calibration_bins(cfg), e.calib_samples, **kw))
    scaled = None
    if e.scaled:
        scaled = histograms("scaled", lambda **kw: ev.histogram_scaled(
            k_scaled, field, runs, sorted(e.scaled_bins), e.scaled_factor, **kw))
    return ev.analyse_saved(key, same, scaled, cfg.data.num_train,
                            fit_bins=list(e.fit_bins), closure_repeats=CLOSURE_REPEATS)


def reanalyse(study, label: str) -> ev.EvaluationResult:
    """The ``EvaluationResult`` of a label from its saved histograms (no generation)."""
    cfg = study.cfg
    scaled = histograms_path(study, label, "scaled")
    return ev.analyse_saved(
        evaluation_key(cfg), load_histograms(histograms_path(study, label, "same_noise")),
        load_histograms(scaled) if scaled.is_file() else None, cfg.data.num_train,
        fit_bins=list(cfg.evaluation.fit_bins), closure_repeats=CLOSURE_REPEATS)


def _f(v) -> float:
    return float(np.asarray(v))


def summarise(cfg, result: ev.EvaluationResult) -> dict:
    """The report's per-label numbers (JSON-able) from an ``EvaluationResult``."""
    e = cfg.evaluation
    out = {"mad": {}, "mad_r": {}, "mad_phi": {}, "coverage": {}, "mad_scaled": {},
           "amplification": {}, "n_eq": {}, "closure": {}, "deviation_r": {}}
    for res in result.same_noise.values():
        n, cal = res.shape[0], res.calibration
        key = str(n)
        if n in e.calib_bins:
            out["mad"][key], out["mad_r"][key] = _f(cal.mad), _f(cal.mad_r)
            out["mad_phi"][key] = _f(cal.mad_phi)
            out["coverage"][key] = {"nominal": np.asarray(cal.levels).tolist(),
                                    "empirical": np.asarray(cal.curve).tolist()}
        if n == e.deviation_bins:
            out["deviation_r"] = {"n": n, "r_edges": [float(x) for x in res.r_edges],
                                  "deviation": np.asarray(cal.deviation_r).tolist()}
    source = result.scaled or result.same_noise
    for res in source.values():
        key = str(res.shape[0])
        out["amplification"][key] = np.asarray(res.amplification.amplification).tolist()
        out["n_eq"][key] = np.asarray(res.amplification.n_eq).tolist()
        if result.scaled:
            cal = res.calibration
            out["mad_scaled"][key] = {"mad": _f(cal.mad), "mad_r": _f(cal.mad_r),
                                      "mad_phi": _f(cal.mad_phi)}
        clo = res.closure
        truth = np.asarray(clo.jsd_truth, float)
        out["closure"][key] = {"model": float(np.mean(clo.jsd_model)),
                               "truth": float(np.nanmean(truth)) if np.isfinite(truth).any()
                               else float("nan"),
                               "model_per_run": np.asarray(clo.jsd_model).tolist(),
                               "truth_std": float(np.nanstd(truth)) if np.isfinite(truth).any()
                               else float("nan")}
    fit = result.fit if result.scaled else ev.fit_scaled(result.same_noise, list(e.fit_bins))
    nan = float("nan")
    out["fit"] = ({"a": nan, "a_err": nan, "b": nan, "b_err": nan} if fit is None else
                  {"a": _f(fit.a), "a_err": _f(fit.a_err), "b": _f(fit.b),
                   "b_err": _f(fit.b_err), "n_cells": np.asarray(fit.n_cells).tolist()})
    return out


def load_results(study) -> dict:
    """{label: summary} of every enabled label with results on disk."""
    out = {}
    for _, label, _ in cfgmod.method_grid(study.cfg):
        p = results_path(study, label)
        if p.is_file():
            out[label] = json.loads(p.read_text())
    return out


def evaluate_all(study, progress: bool = True) -> None:
    for _, label, _ in cfgmod.method_grid(study.cfg):
        if results_path(study, label).is_file():
            study.log.info("evaluate: %s already done", label)
            continue
        s = evaluate_label(study, label, progress)
        largest = max(s["amplification"], key=int)
        study.log.info("evaluate: %s MAD %s, amplification at %s×%s: %s, fit b = %.3g ± %.2g",
                       label, {k: round(v, 4) for k, v in s["mad"].items()}, largest, largest,
                       np.round(s["amplification"][largest], 3).tolist(), s["fit"]["b"],
                       s["fit"]["b_err"])


def main(argv=None):
    from experiments.paper import main as paper_main

    return paper_main(argv, only="evaluate")


if __name__ == "__main__":
    main()
