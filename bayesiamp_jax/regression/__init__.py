"""Second use case: uncertainty-aware regression (heteroscedastic Bayesian network).

Toy with known truth (``toy``), the mean/variance network (``network``), weight posteriors by VI
and repulsive ensembles (``methods``), the stat/syst decomposition (``uncertainty``) and
calibration diagnostics (``diagnostics``); the study's analysis and report (``report``) and its
figures (``figures``).
"""

from bayesiamp_jax.regression.diagnostics import (
    PullSummary,
    coverage_mad,
    interval_coverage,
    pull_summary,
    pulls,
)
from bayesiamp_jax.regression.figures import plot_study
from bayesiamp_jax.regression.methods import fit_repulsive_regression, fit_vi_regression
from bayesiamp_jax.regression.network import RegressionNet, gaussian_nll, nll_loss_fn
from bayesiamp_jax.regression.report import (
    METHODS,
    EvaluationSets,
    build_report,
    evaluate_predictions,
    evaluation_sets,
    final_loss,
    predictions,
    ratio_summary,
    report_markdown,
)
from bayesiamp_jax.regression.toy import RegressionSample, ResponseToy
from bayesiamp_jax.regression.uncertainty import (
    Decomposition,
    decompose,
    predict_draws,
    predictive_uncertainty,
)

__all__ = [
    "METHODS",
    "Decomposition",
    "EvaluationSets",
    "PullSummary",
    "RegressionNet",
    "RegressionSample",
    "ResponseToy",
    "build_report",
    "coverage_mad",
    "decompose",
    "evaluate_predictions",
    "evaluation_sets",
    "final_loss",
    "fit_repulsive_regression",
    "fit_vi_regression",
    "gaussian_nll",
    "interval_coverage",
    "nll_loss_fn",
    "plot_study",
    "predict_draws",
    "predictions",
    "predictive_uncertainty",
    "pull_summary",
    "pulls",
    "ratio_summary",
    "report_markdown",
]
