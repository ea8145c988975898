"""Evaluation: posterior-batched generation into histograms, calibration, amplification, figures.

One call from weight draws to all numbers of the paper, one call to all figures::

    from bayesiamp_jax import evaluation as ev

    from bayesiamp_jax import datasets

    problem = datasets.ring_problem()      # observable, grids, conditions, truth (or reference)
    plan = ev.Plan(                        # what is generated and how it is analysed
        calibration_bins=(5, 10, 50), num_samples=10_000_000,     # same noise for every draw
        scaled_bins=(2, 3, 4, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 200, 500),
        samples_per_cell=1000,                                     # 1000 · n² fresh per draw
        fit_bins=(15, 20, 30, 40, 50, 70, 100, 200),
        solver=Solver("rk4", 20), chunk_size=2**15,   # use 2**21..2**23 on a GPU
    )
    result = ev.evaluate(
        key, field, posterior, problem, plan,  # posterior: PosteriorDraws / (S, ...) / R runs
        num_train=10_000,
        output_dir=None,                   # or a folder: histograms, results.json, resumable
    )                                      # -> EvaluationResult
    result.histograms["same_noise"]                       # the raw PosteriorHistograms
    result.same_noise["50x50"].calibration.mad            # BinningResult per label
    result.scaled["200x200"].calibration.deviation_r      # signed coverage deviation per r bin
    result.scaled["100x100"].amplification.amplification  # (R,) N_eq / N_train per run
    result.fit.a, result.fit.b, result.fit.a_err, result.fit.b_err
    summary = ev.summarise(result)                        # compact JSON-ready numbers
    ev.save_results("results.json", result)               # that summary as JSON
    figs = ev.plot_all(result, train_x=x_train)           # dict name -> matplotlib Figure
    figs = ev.plot_summary(summary)                       # the same figures from the summary
    figs = ev.plot_comparison({"k=1": summary_k1, "k=10": summary_k10})  # side by side

Building blocks: ``histogram_same_noise`` / ``histogram_scaled`` -> ``PosteriorHistograms``
(counts (R, S, n_r, n_φ) per binning; ``save_histograms`` / ``load_histograms``), ``analyse``
and ``analyse_saved`` (numbers from saved histograms), ``calibrate``, ``amplification``,
``fit_power_law``, ``closure``, ``jensen_shannon`` and the plotting functions in ``figures``.
"""

from bayesiamp_jax.binning import (
    Binning,
    as_binnings,
    exact_quantile_binning,
    histogram,
    histogram_polar,
    make_binning,
    product_binning,
    quantile_binning,
    reference_quantile_binning,
    ring_cell_probabilities,
)
from bayesiamp_jax.evaluation.amplification import (
    Amplification,
    Closure,
    CorrectedCells,
    PowerLawFit,
    amplification,
    cell_equivalent_events,
    closure,
    corrected_cells,
    equivalent_events,
    fit_power_law,
    jackknife_equivalent_events,
    jackknife_error,
    jensen_shannon,
)
from bayesiamp_jax.evaluation.calibration import (
    NOMINAL_LEVELS,
    Calibration,
    calibrate,
    central_interval,
    gaussian_interval,
    interval_coverage,
    pulls,
)
from bayesiamp_jax.evaluation.classifier import (
    ClassifierConfig,
    classifier_test,
    lr_ks_amplification,
)
from bayesiamp_jax.evaluation.figures import (
    plot_all,
    plot_amplification,
    plot_closure,
    plot_comparison,
    plot_coverage_curves,
    plot_coverage_deviation,
    plot_holdout,
    plot_losses,
    plot_mad,
    plot_marginals,
    plot_scan,
    plot_summary,
    plot_training_data,
    plot_trend,
    save_figure,
)
from bayesiamp_jax.evaluation.generate import (
    PosteriorHistograms,
    generate_samples,
    histogram_same_noise,
    histogram_scaled,
    stack_runs,
)
from bayesiamp_jax.evaluation.holdout import HoldoutCheck, holdout_check, select_knob
from bayesiamp_jax.evaluation.pipeline import (
    CALIBRATION_BINS,
    FIT_BINS,
    SCALED_BINS,
    BinningResult,
    EvaluationResult,
    analyse,
    analyse_saved,
    evaluate,
    fit_scaled,
    load_histograms,
    load_results,
    save_histograms,
    save_results,
    to_dict,
)
from bayesiamp_jax.evaluation.plan import Plan, check_plan
from bayesiamp_jax.evaluation.regions import (
    KSAmplification,
    RegionAmplification,
    averaging_amplification,
    ks_amplification,
    ks_null_median,
    region_fractions,
)
from bayesiamp_jax.evaluation.summary import summarise
from bayesiamp_jax.evaluation.trend import trend_markdown, trend_rows

__all__ = [
    "CALIBRATION_BINS",
    "FIT_BINS",
    "NOMINAL_LEVELS",
    "SCALED_BINS",
    "Amplification",
    "Binning",
    "BinningResult",
    "Calibration",
    "ClassifierConfig",
    "Closure",
    "CorrectedCells",
    "EvaluationResult",
    "HoldoutCheck",
    "KSAmplification",
    "Plan",
    "PosteriorHistograms",
    "PowerLawFit",
    "RegionAmplification",
    "amplification",
    "analyse",
    "analyse_saved",
    "as_binnings",
    "averaging_amplification",
    "calibrate",
    "check_plan",
    "classifier_test",
    "cell_equivalent_events",
    "closure",
    "central_interval",
    "corrected_cells",
    "equivalent_events",
    "evaluate",
    "fit_power_law",
    "fit_scaled",
    "gaussian_interval",
    "generate_samples",
    "exact_quantile_binning",
    "histogram",
    "histogram_polar",
    "histogram_same_noise",
    "histogram_scaled",
    "holdout_check",
    "interval_coverage",
    "jackknife_equivalent_events",
    "jackknife_error",
    "jensen_shannon",
    "ks_amplification",
    "lr_ks_amplification",
    "ks_null_median",
    "load_histograms",
    "load_results",
    "make_binning",
    "product_binning",
    "plot_all",
    "plot_amplification",
    "plot_closure",
    "plot_comparison",
    "plot_coverage_curves",
    "plot_coverage_deviation",
    "plot_holdout",
    "plot_marginals",
    "plot_losses",
    "plot_mad",
    "plot_scan",
    "plot_summary",
    "plot_trend",
    "plot_training_data",
    "pulls",
    "quantile_binning",
    "reference_quantile_binning",
    "region_fractions",
    "ring_cell_probabilities",
    "save_figure",
    "save_histograms",
    "save_results",
    "select_knob",
    "stack_runs",
    "summarise",
    "trend_markdown",
    "trend_rows",
    "to_dict",
]
