"""The regression study's analysis, report and figures (``experiments.regression_report`` /
``experiments.regression_figures``) on hand-made predictions whose numbers are known in closed
form."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax.evaluation.figures import STYLE
from bayesiamp_jax.regression import ResponseToy
from experiments.regression_figures import plot_coverage, plot_study
from experiments.regression_report import (
    METHODS,
    build_report,
    evaluate_predictions,
    evaluation_sets,
    report_markdown,
)

D, T = 0.01, 0.02  # half-spread of the two draws' means; half-spread of the two replicas


@pytest.fixture(scope="module")
def study():
    """Two draws with means μ ± D·s and noise σ_true on every input set (s = 1 at the smallest
    N, (N / N_0)^-1/2 above), replicas μ ± T·s: σ_stat = D·s, σ_syst = σ_true, truth T·s·√2."""
    toy = ResponseToy()
    sets = evaluation_sets(toy, jax.random.key(1), jax.random.key(2), 600, 200)

    def pair(x, half):
        e = np.asarray(x)[:, 0]
        mu, sd = np.asarray(toy.mean(e)), np.asarray(toy.std(e))
        return np.stack([mu + half, mu - half]), np.stack([sd**2, sd**2])

    sizes = (100, 400)
    results, truths = {m: {} for m in METHODS}, {}
    for n in sizes:
        s = (n / sizes[0]) ** -0.5
        pred = {name: pair(x, D * s) for name, x in
                (("test", sets.test.x), ("val", sets.val.x), ("grid", sets.grid))}
        truths[n] = {name: pair(x, T * s)[0] for name, x in
                     (("test", sets.test.x), ("grid", sets.grid))}
        for m in METHODS:
            entry = evaluate_predictions(pred, sets, truths[n]["test"], 2.0,
                                         np.random.default_rng(0))
            results[m][n] = {**entry, "setting": 1.0}
    return toy, sets, results, {m: {} for m in METHODS}, truths, sizes


def test_evaluation_of_hand_made_draws_has_the_closed_form_numbers(study):
    toy, sets, results, _, _, sizes = study
    r = results["vi"][sizes[0]]
    assert r["median_stat"] == pytest.approx(D, rel=1e-4)
    assert r["mean_syst_over_truth"] == pytest.approx(1.0, rel=1e-5)
    assert r["rms_bias"] == pytest.approx(0.0, abs=1e-6)
    assert r["stat_ratio"]["median"] == pytest.approx(D / (T * np.sqrt(2)), rel=1e-4)
    assert r["stat_ratio"]["q16"] == pytest.approx(r["stat_ratio"]["q84"], rel=1e-4)
    # held-out log-likelihood of N(μ, σ_true² + D²), written out with scipy
    e = np.asarray(sets.val.x)[:, 0]
    ll = scipy.stats.norm.logpdf(np.asarray(sets.val.y), np.asarray(toy.mean(e)),
                                 np.sqrt(np.asarray(toy.std(e)) ** 2 + D**2))
    assert r["heldout_loglik"] == pytest.approx(ll.mean(), rel=1e-5)
    assert r["_test_stat"].shape == r["_test_total"].shape == (600,)


def test_report_slopes_agreement_and_markdown(study):
    toy, sets, results, rule, truths, sizes = study
    config = {"sizes": list(sizes), "flag_factor": 2.0, "gap_lo": toy.gap_lo,
              "gap_hi": toy.gap_hi, "gap_efficiency": toy.gap_efficiency, "hidden": [8],
              "num_steps": 1, "prior_scale": 1.0, "num_draws": 2, "num_members": 2,
              "space": "weight", "measure_batch": False, "num_measurement": 0,
              "num_test": 600, "num_validation": 200, "num_replicas": 2}
    rep = build_report(config, 7, results, rule, truths, sets, {}, {"vi_default_N100": 1.0},
                       ["coverage"])
    # σ_stat and the replica truth fall as N^-1/2 by construction
    assert rep["methods"]["vi"]["stat_slope_vs_N"] == pytest.approx(-0.5, abs=1e-4)
    assert rep["replica_truth_slope_vs_N"] == pytest.approx(-0.5, abs=1e-4)
    assert rep["replica_truth"]["100"]["median_spread"] == pytest.approx(T * np.sqrt(2),
                                                                         rel=1e-4)
    agree = rep["agreement_at_largest_N"]
    assert (agree["N"], agree["settings"]) == (400, "default")
    assert agree["median_total_ratio_bnn_over_re"] == 1.0  # the same entry for both methods
    crit = rep["done_criteria"]["vi_stat_ratio_to_replica"]
    assert crit["value"] == pytest.approx(0.3536, rel=1e-3) and crit["met"] is False  # < 0.7
    assert "rule" not in rep["methods"]["vi"] and "_test_stat" not in str(rep)
    md = report_markdown(rep)
    assert md.startswith("# Uncertainty-aware regression")
    assert "| 100 | 0.0283 |" in md and "Figures: coverage" in md


def test_figures_are_drawn_in_the_evaluation_style(study):
    toy, sets, results, rule, truths, _ = study
    figures = plot_study(toy, sets, results, rule, truths, 2.0)
    assert list(figures) == ["prediction_vs_input", "stat_ratio_vs_size",
                             "uncertainty_vs_size", "pulls", "coverage", "bnn_vs_re_scatter",
                             "uncertainty_spectrum"]
    alone = plot_coverage(results, rule)  # outside plot_study the style still applies
    for fig in (*figures.values(), alone):
        assert fig.axes[0].xaxis.label.get_fontfamily() == [STYLE["font.family"]]
