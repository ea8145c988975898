"""Report stage: assemble report.json (schema-checked) and report.md from a study's files."""

from __future__ import annotations

from experiments import budget, convergence, runtime
from experiments import config as cfgmod
from experiments.evaluate import load_results
from experiments.figures import figure_paths
from experiments.report import label_costs, select_by_holdout, validate_report, write_report


def build(study, labels=None) -> dict:
    """report.json's content for ``labels`` (default: every enabled label with results)."""
    cfg = study.cfg
    results = load_results(study, labels)
    for r in results.values():
        r.pop("fingerprint", None)  # bookkeeping of the evaluate stage, not a result
    timings = study.timings()
    timings.pop("report", None)
    timings["total"] = sum(timings.values())
    report = {
        "preset": cfg.preset,
        "config": cfgmod.to_dict(cfg),
        "timings": timings,
        "versions": runtime.versions(),
        "device": runtime.device_info(),
        "estimate_s": runtime.estimate_seconds(cfg),
        "methods": results,
    }
    for label, cost in label_costs(report, cfg).items():  # field evaluations; the seconds
        results[label]["cost"] = cost  # come from the timings (report.label_seconds)
    report["selection"] = select_by_holdout(results)  # the knob the held-out check picks
    judged = convergence.load(study)  # held-out loss curves of every training
    if judged:
        report["convergence"] = {name: {str(r): d for r, d in runs.items()}
                                 for name, runs in judged.items()}
    plan = budget.for_report(study.outdir, timings)
    if plan is not None:  # predicted (before the run) vs measured seconds per stage
        report["budget"] = plan
    e = cfg.evaluation
    validate_report(report, calib_bins=e.calib_bins,
                    scaled_bins=e.scaled_bins if e.scaled else e.calib_bins,
                    num_runs=cfg.num_runs)
    return report


def write(study, labels=None) -> dict:
    report = build(study, labels)
    write_report(study.outdir, report, figure_paths(study))
    study.log.info("report: %s", study.outdir / "report.md")
    return report
