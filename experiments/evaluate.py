"""Evaluation stage: ``bayesiamp_jax.evaluation.evaluate`` for every selected method label.

Per label (all runs together) the library call generates the same-noise and scaled histograms into
``histograms/<label>/`` (resumable there through its ``*.partial.g<g>.msgpack`` checkpoints) and
analyses them; this stage stores the compact ``evaluation.summarise`` of the result, the label's
metadata and its sampler diagnostics in ``results/<label>.json``. A results file whose
``fingerprint`` matches the label's configuration means the label is done, so labels are evaluated
one after another and a later invocation with more methods adds only the new ones. Figures and the
report are drawn from these files only.

With several processes every one calls the library for every label (the generation shares the
(run, draw) axis and all-gathers the counts); process 0 writes ``histograms/<label>/`` and the
results, process I > 0 keeps its generation checkpoints in ``process<I>/histograms/<label>/``
(removed when the label is done).

The evaluation never trains: a missing or damaged draws file of a finished training stage is
trained again by the study runner before this stage (``experiments.paper`` calls
``experiments.train.repair_draws``); here it is the stage's one-line error. A damaged
``histograms/<label>/*.npz`` is deleted with the label's histograms and the label evaluated
again, with a warning naming the file. The sampler diagnostics and the held-out check use the
histograms the library call returns (``result.histograms``); the files are for the figures and
for resuming.
"""

from __future__ import annotations

import shutil

from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_json
from bayesiamp_jax.evaluation.calibration import mad_floor
from bayesiamp_jax.evaluation.summary import binning_key, key_cells, key_panel
from bayesiamp_jax.evaluation.trust import assess
from bayesiamp_jax.integrate import Solver, StepsExhaustedError
from bayesiamp_jax.posteriors.diagnostics import draws_diagnostics
from experiments import config as cfgmod
from experiments import convergence, distributed
from experiments.data import field_from_config, load_holdout, problem_from_config, purpose_key
from experiments.holdout import MIN_PER_CELL, classifier_summary, holdout_summary
from experiments.marginals import marginals_summary
from experiments.report import converged
from experiments.stages import StudyError, read_json
from experiments.train import load_run_draws

CLOSURE_REPEATS = 100


def results_path(study, label):
    return study.path("results", f"{label}.json")


def histograms_dir(study, label):
    return study.outdir / "histograms" / label


def histograms_path(study, label, mode):
    """Raw histograms of one label: mode "same_noise" or "scaled"."""
    return histograms_dir(study, label) / f"{mode}.npz"


def evaluation_key(cfg):
    """One key for every label: the same noise for every draw, run and method."""
    return purpose_key(cfg.seed, 0, "evaluation")


def calibration_bins(cfg) -> list[int]:
    return sorted(set(cfg.evaluation.calib_bins) | {cfg.evaluation.deviation_bins})


def label_fingerprint(cfg, train_fingerprint: str) -> str:
    """What a label's results depend on: its training stage and the evaluation settings."""
    return cfgmod.fingerprint(train_fingerprint, cfg.evaluation)


def evaluation_plan(cfg) -> ev.Plan:
    """The library's ``evaluation.Plan`` of the study's ``evaluation`` settings."""
    e = cfg.evaluation
    return ev.Plan(
        calibration_bins=calibration_bins(cfg), num_samples=e.calib_samples,
        scaled_bins=sorted(e.scaled_bins) if e.scaled else (), samples_per_cell=e.scaled_factor,
        shared_sample=e.scaled_shared, fit_bins=list(e.fit_bins),
        solver=Solver(e.solver, num_steps=e.solver_steps), chunk_size=e.chunk_size,
        closure_repeats=CLOSURE_REPEATS, differential_samples=e.differential_samples)


def evaluate_label(study, method: str, label: str, hyper, fingerprint: str,
                   progress: bool = True) -> dict | None:
    """Evaluate one label with the library and save its summary; returns the summary (None on
    a process other than 0 of a study over several processes). A damaged histogram file of the
    label is deleted with the label's histograms and the label is evaluated once more."""
    try:
        return _evaluate_label(study, method, label, hyper, fingerprint, progress)
    except DamagedFileError as e:
        folder = histograms_dir(study, label)
        if not (distributed.process_count() == 1 and str(folder) in str(e)):
            raise
        study.log.warning("evaluate: %s; deleting %s and evaluating %s again",
                          str(e).split(";")[0], folder, label)
        shutil.rmtree(folder, ignore_errors=True)
    except (FloatingPointError, StepsExhaustedError) as e:  # the generation diverged or its
        raise StudyError(f"stage evaluate: {label}: {e}") from None  # solver ran out of steps
    return _evaluate_label(study, method, label, hyper, fingerprint, progress)


def _evaluate_label(study, method, label, hyper, fingerprint, progress):
    cfg, e = study.cfg, study.cfg.evaluation
    main = distributed.is_main()
    output_dir = histograms_dir(study, label) if main else (
        distributed.scratch_dir(study.outdir) / "histograms" / label)
    runs = [load_run_draws(study, label, r) for r in range(cfg.num_runs)]
    sizes = {d.num_draws for d in runs}
    if len(sizes) != 1:
        raise ValueError(f"{label}: runs have different numbers of draws {sorted(sizes)}")
    problem = problem_from_config(cfg)._replace(holdout=load_holdout(study))
    field, plan = field_from_config(cfg), evaluation_plan(cfg)
    result = ev.evaluate(evaluation_key(cfg), field, runs, problem, plan,
                         num_train=cfg.data.num_train, progress=progress, output_dir=output_dir)
    if not main:
        shutil.rmtree(output_dir, ignore_errors=True)
        return None
    summary = {"method": method, "hyper": hyper, "num_runs": cfg.num_runs,
               "num_draws": runs[0].num_draws}
    summary |= ev.summarise(result, deviation_bins=e.deviation_bins)
    same = result.histograms["same_noise"]  # the raw histograms, not read back from disk
    fractions = {binning_key(b): f for b, f in zip(same.binnings, same.fractions, strict=True)
                 if b.shape[0] in e.calib_bins}
    summary["diagnostics"] = draws_diagnostics(runs, fractions)
    # the MAD a perfectly calibrated ensemble reaches with this S, R and number of cells
    summary["mad_floor"] = {n: mad_floor(runs[0].num_draws, cfg.num_runs, key_cells(n)).mean
                            for n in summary["mad"] if n.isdigit() and int(n) in e.calib_bins}
    held_out = problem.holdout
    if held_out is not None:  # the calibration checked on events never trained on
        scaled = result.histograms.get("scaled")
        summary["holdout"] = holdout_summary(same, scaled, problem, held_out, summary,
                                             e.holdout_alpha)
        if e.classifier_events:  # a check that sees every dimension, not only the histograms
            try:
                summary["classifier"] = classifier_summary(
                    purpose_key(cfg.seed, 0, "classifier"), field, runs, problem, held_out,
                    num_train=cfg.data.num_train, num_events=e.classifier_events,
                    num_retrain=e.classifier_retrain, alpha=e.holdout_alpha, solver=plan.solver)
            except ValueError as err:  # e.g. too few held-out events for its three splits
                study.log.warning("evaluate: %s: classifier test skipped: %s", label, err)
                summary["classifier"] = {"skipped": str(err)}
    summary["marginals"] = marginals_summary(
        purpose_key(cfg.seed, 0, "marginals"), field, runs, problem, held_out,
        c=problem.condition, solver=plan.solver)
    summary["fingerprint"] = fingerprint
    atomic_write_json(results_path(study, label), summary)
    return summary


def load_result(study, label) -> dict | None:
    """The saved summary of ``label`` (None if absent or unreadable)."""
    res = read_json(results_path(study, label))
    return res if isinstance(res, dict) else None


def load_results(study, labels=None) -> dict:
    """{label: summary} of ``labels`` (default: every enabled label) with results on disk."""
    if labels is None:
        labels = [label for _, label, _ in cfgmod.method_grid(study.cfg)]
    out = {}
    for label in labels:
        res = load_result(study, label)
        if res is not None:
            out[label] = res
        elif results_path(study, label).is_file():  # never a report that silently lacks it
            raise DamagedFileError(f"results file {str(results_path(study, label))!r} is "
                                   "damaged (not a JSON summary); delete it and "
                                   "stages/evaluate.json to evaluate the label again")
    return out


def evaluate_all(study, units, progress: bool = True) -> None:
    """Evaluate every (method, label, hyper, fingerprint) of ``units`` not done yet."""
    judged = {name: {str(r): d for r, d in runs.items()}  # process 0 writes the files
              for name, runs in convergence.load(study).items()} if distributed.is_main() else {}
    for method, label, hyper, fingerprint in units:
        saved = load_result(study, label)
        # with several processes, process 0's view decides (the others follow it)
        if not distributed.agree(saved is None or saved.get("fingerprint") != fingerprint):
            study.log.info("evaluate: %s already done", label)
            continue
        if saved is not None and distributed.is_main():  # other settings; partial histograms
            # check their own signature
            study.log.info("evaluate: %s was evaluated with other settings; redoing it", label)
            shutil.rmtree(histograms_dir(study, label), ignore_errors=True)
            results_path(study, label).unlink(missing_ok=True)
        s = evaluate_label(study, method, label, hyper, fingerprint, progress)
        if s is None:
            continue
        largest = max(s["amplification"], key=key_cells)
        amps = (s.get("amplification_corrected") or s["amplification"])[largest]
        trust = assess(s, largest, num_train=study.cfg.data.num_train,
                       converged=converged(label, method, judged,
                                           cfgmod.pretrained_methods(study.cfg)))
        study.log.info("evaluate: %s MAD %s, %samplification at %s: %s (held-out: %s, model "
                       "share %s), fit b = %.3g ± %.2g", label,
                       {k: round(v, 4) for k, v in s["mad"].items()},
                       "corrected " if s.get("amplification_corrected") else "",
                       key_panel(largest), [round(v, 3) for v in amps],
                       trust.verdict or "unchecked",
                       "–" if trust.model_share is None else f"{trust.model_share:.2g}",
                       s["fit"]["b"], s["fit"]["b_err"])
        ho = s.get("holdout") or {}
        sparse = sorted({k for kind in ("same_noise", "scaled")
                         for k, c in (ho.get(kind) or {}).items()
                         if c.get("holdout_per_cell", 1e9) < MIN_PER_CELL}, key=key_cells)
        if sparse:
            study.log.warning("evaluate: the %d held-out events give fewer than %d per cell at "
                              "%s: the held-out check of these binnings is not used",
                              ho["num_holdout"], MIN_PER_CELL, ", ".join(map(key_panel, sparse)))
        if not trust.trusted:
            study.log.warning("evaluate: %s: the amplification at %s cannot be trusted: %s",
                              label, key_panel(largest), "; ".join(trust.reasons))
