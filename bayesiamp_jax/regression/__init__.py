"""Second use case: uncertainty-aware regression (heteroscedastic Bayesian network).

Toy with known truth (``toy``), the mean/variance network (``network``, on the project's one
MLP of ``bayesiamp_jax.network``), weight posteriors by VI and repulsive ensembles
(``methods``), the replica truth (``replicas``), the stat/syst decomposition (``uncertainty``),
recalibration (``calibration``) and calibration diagnostics (``diagnostics``; pulls and interval
coverage are ``bayesiamp_jax.evaluation.calibration``'s). The study built on them — its
analysis, report and figures — is ``experiments.regression``.
"""

from bayesiamp_jax.regression.diagnostics import (
    PullSummary,
    coverage_mad,
    gaussian_coverage,
    pull_summary,
)
from bayesiamp_jax.regression.methods import fit_repulsive_regression, fit_vi_regression
from bayesiamp_jax.regression.network import RegressionNet, gaussian_nll, nll_loss_fn
from bayesiamp_jax.regression.toy import RegressionSample, ResponseToy
from bayesiamp_jax.regression.uncertainty import (
    Decomposition,
    decompose,
    predict_draws,
    predictive_uncertainty,
)

__all__ = [
    "Decomposition",
    "PullSummary",
    "RegressionNet",
    "RegressionSample",
    "ResponseToy",
    "coverage_mad",
    "decompose",
    "fit_repulsive_regression",
    "fit_vi_regression",
    "gaussian_coverage",
    "gaussian_nll",
    "nll_loss_fn",
    "predict_draws",
    "predictive_uncertainty",
    "pull_summary",
]
