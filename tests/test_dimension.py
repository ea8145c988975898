"""The dimension study's collected rows (``evaluation.trend_rows``) on hand-made reports.

Known answers: every number of a row is one of the report's entries or a run mean that is
computed by hand here; the trust verdict follows the reasons the report's entries imply (an
over-confident held-out check; an unconverged pretraining of a method that starts from it).
"""

from __future__ import annotations

import math

import pytest

from bayesiamp_jax.evaluation.trend import trend_markdown, trend_rows
from experiments import config as cfgmod
from experiments import dimension


def _check(verdict, scale, *, points=400.0, holdout=100.0):
    return {"verdict": verdict, "scale": scale, "scale_err": 0.1, "width": 1.5,
            "p_value": 1e-5, "reach": 8000.0, "points_per_cell": points,
            "holdout_per_cell": holdout, "sparse": min(points, holdout) < 25}


def _summary(method, verdict, scale, recal):
    return {
        "method": method,
        "mad": {"5": 0.2, "10": 0.3, "50": 0.1},
        "mad_floor": {"5": 0.07, "10": 0.05, "50": 0.04},
        "amplification": {"2": [9.0, 9.0], "10": [2.0, 4.0]},
        "n_eq": {"2": [9e3, 9e3], "10": [2e3, 4e3]},
        "amplification_corrected": {"2": [9.0, 9.0], "10": [6.0, 10.0]},
        "n_eq_corrected": {"2": [9e3, 9e3], "10": [6e3, 1e4]},
        "averaging": {"10": {"amplification_model": [0.5, 0.7], "amplification_true": [0.1, 0.3],
                             "misspecification_share": [0.2, 0.4]}},
        "holdout": {"verdict": verdict, "amplification_recalibrated": {"10": recal},
                    # the scaled 10 x 10 check has 20 points per cell and draw: not read
                    "same_noise": {"10": _check(verdict, scale), "50": _check(
                        "under-confident", 0.5, points=16.0, holdout=4.0)},
                    "scaled": {"10": _check("over-confident", 5.0, points=20.0)},
                    "num_holdout": 10000},
    }


@pytest.fixture(scope="module")
def rows():
    report = {
        "config": {"data": {"num_train": 1000}},
        "methods": {"vi_k10": _summary("vi", "over-confident", 2.0, [1.5, 2.5]),
                    "adammcmc_sigma0.1": _summary("adammcmc", "consistent", 1.0, [8.0])},
        "convergence": {"deterministic": {"0": {"not_converged": True}},
                        "vi_k10": {"0": {"not_converged": False}},
                        "adammcmc_sigma0.1": {"0": {"not_converged": False}}},
        "trained_epochs": {"deterministic": {"0": 1000, "1": 1400},
                           "vi_k10": {"0": 5000, "1": 6000}, "adammcmc_sigma0.1": {"0": 85}},
    }
    old = {"methods": {"vi_k10": {k: v for k, v in _summary("vi", None, 1.0, []).items()
                                  if k != "holdout"}}}
    return trend_rows({6: report, 2: old}, pretrained=cfgmod.FROM_DETERMINISTIC)


def test_rows_read_mad_holdout_recalibration_and_epochs(rows):
    vi, amc, old = rows
    assert (vi["x"], vi["label"], amc["label"], old["x"]) == (6, "vi_k10", "adammcmc_sigma0.1", 2)
    assert (vi["mad_10"], vi["mad_floor_10"], vi["mad_50"], vi["mad_floor_50"]) == \
        (0.3, 0.05, 0.1, 0.04)
    assert (vi["mad"], vi["mad_bins"]) == (0.1, "50")  # the largest binning with a floor
    assert (vi["holdout_verdict"], vi["holdout_scale"], vi["holdout_scale_err"]) == \
        ("over-confident", 2.0, 0.1)
    assert vi["n_cells"] == 100  # largest scaled binning 10 x 10
    assert vi["amplification"] == pytest.approx(3.0)
    assert vi["amplification_corrected"] == pytest.approx(8.0)
    assert vi["amplification_recalibrated"] == pytest.approx(2.0)  # mean of 1.5, 2.5
    assert vi["recal_scale"] == 2.0  # the same-noise check: the scaled one has 20 points/cell
    assert (vi["averaging_model"], vi["averaging_true"]) == (pytest.approx(0.6),
                                                            pytest.approx(0.2))
    assert vi["epochs"] == pytest.approx(5500.0)
    assert math.isnan(vi["epochs_pretrain"])  # VI does not start from the deterministic fit
    assert (amc["epochs"], amc["epochs_pretrain"]) == (85.0, pytest.approx(1200.0))
    assert old["holdout_verdict"] is None and math.isnan(old["holdout_scale"])
    assert math.isnan(old["epochs"]) and math.isnan(old["amplification_recalibrated"])


def test_trust_verdict_names_the_reasons_the_report_implies(rows):
    vi, amc, old = rows
    # over-confident at s = 2; claimed N_eq 8,000 = the held-out reach: not beyond it
    assert vi["trusted"] is False and len(vi["trust_reasons"]) == 1
    assert vi["trust_reasons"][0].startswith("over-confident")
    assert "≈ 4×" in vi["trust_reasons"][0]  # s² = 4
    # consistent, but its flow-matching pretraining is flagged "train longer"
    assert amc["trusted"] is False
    assert [r.split(":")[0] for r in amc["trust_reasons"]] == ["training not converged"]
    assert old["trusted"] is False and old["trust_reasons"][0].startswith("unchecked")


def test_markdown_and_figure_panels_show_the_new_columns(rows):
    text = trend_markdown(rows)
    assert "| 6 | vi_k10 | — / 5500 | 0.2 (0.07) | 0.3 (0.05) | 0.1 (0.04) | " \
           "over-confident (s = 2 ± 0.1) | over-confident |" in text
    assert "| 6 | adammcmc_sigma0.1 | 1200 / 85 |" in text
    assert "| 8 | 2 (2) |" in text and "no: over-confident |" in text
    assert "no: not converged |" in text
    panels = dimension.panels(rows)
    assert list(panels)[:2] == ["MAD 10×10 (dashed: floor)", "MAD 50×50 (dashed: floor)"]
    assert panels["MAD 50×50 (dashed: floor)"] == ("mad_50", "mad_floor_50")
    assert all(all(k in rows[0] for k in ([v] if isinstance(v, str) else v))
               for v in panels.values())
