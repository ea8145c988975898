"""The posterior families of issue 24 in the study: configuration, cost, the held-out choice of
the knob, and one tiny study with every family (draws, resume, report, ``bayesiamp compare``).

Answers known without the code under test: the field evaluations counted by hand from the
settings, the label ``select_knob``'s rule must pick from hand-made verdicts and scales, the
stage seconds written into the markers, and the report's own numbers (compare.json must repeat
them, not recompute them).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiments import budget, cli
from experiments import config as cfgmod
from experiments.report import family, label_costs, label_seconds, select_by_holdout

NEW = cfgmod.NEW_METHODS


# ----------------------------------------------------------------------------- configuration


def test_new_families_are_off_in_every_preset():
    """The presets' method grids are what they were before issue 24 (the quick report stays
    the same) and every new section is disabled."""
    before = {"quick": ["vi_k10", "adammcmc_sigma0.1"], "tiny": ["vi_k10", "adammcmc_sigma0.1"],
              "replicate": ["vi_k10", "adammcmc_sigma0.1"],
              "paper": ["vi_k1", "vi_k5", "vi_k10", "vi_k50", "vi_k100", "adammcmc_sigma0.01",
                        "adammcmc_sigma0.05", "adammcmc_sigma0.1", "adammcmc_sigma0.5"]}
    for name, labels in before.items():
        cfg = cfgmod.resolve(name)
        assert [label for _, label, _ in cfgmod.method_grid(cfg)] == labels
        assert not any(getattr(cfg, m).enabled for m in NEW)


def test_labels_hypers_and_resolved_sizes():
    cfg = cfgmod.resolve("quick", [*(f"{m}.enabled=true" for m in NEW),
                                   "laplace.structures=diag,last_layer",
                                   "sgld.temperatures=1,2.5", "ensemble.num_members=7"])
    grid = [(m, label, h) for m, label, h in cfgmod.method_grid(cfg) if m in NEW]
    assert grid == [("laplace", "laplace_diag_T1", 1.0), ("laplace", "laplace_last_layer_T1", 1.0),
                    ("ensemble", "ensemble_m7", None), ("bootstrap", "bootstrap_m10", None),
                    ("sgld", "sgld_T1", 1.0), ("sgld", "sgld_T2.5", 2.5),
                    ("sghmc", "sghmc_T1", 1.0), ("swag", "swag_T1", 1.0)]
    # -1: the deterministic section's epochs and batch size (quick: 300, 1000)
    assert cfgmod.num_epochs(cfg, "ensemble") == 300 and cfgmod.batch_size(cfg, "sgld") == 1000
    assert [cfgmod.num_draws(cfg, m) for m in NEW] == [20, 7, 10, 20, 20, 20]
    assert family("sgld_T2.5", 2.5) == "sgld" and family("laplace_last_layer_T1", 1.0) == \
        "laplace_last_layer" and family("ensemble_m7", None) == "ensemble_m7"
    # the CLI's --method takes every family
    from experiments.paper import build_parser

    assert build_parser().parse_args(["--method", "swag", "--method", "laplace"]).method == [
        "swag", "laplace"]


@pytest.mark.parametrize("assignments, match", [
    (["laplace.structures=kfac"], r"laplace.structures\[0\] must be one of"),
    (["laplace.prior_precision=0"], "laplace.prior_precision must be > 0, or < 0"),
    (["laplace.num_points=-2"], r"laplace.num_points must be 0 \(all\) or a positive integer"),
    (["sgld.temperatures=1,1"], "sgld.temperatures must be distinct"),
    (["sgld.temperatures=0"], r"sgld.temperatures\[0\] must be a finite number > 0"),
    (["sgld.step_size=-1e-5"], "sgld.step_size must be a finite number > 0"),
    (["sghmc.friction=-1"], "sghmc.friction must be a finite number >= 0"),
    (["swag.rank=50", "swag.num_epochs=40"], "swag.rank=50 exceeds swag.num_epochs=40"),
    (["bootstrap.resampling=jackknife"], "bootstrap.resampling must be one of"),
    (["ensemble.num_members=1"], "ensemble.num_members must be >= 2"),
    (["ensemble.num_epochs=0"], r"ensemble.num_epochs must be -1 \(deterministic's\) or a "
                                "positive integer, got 0"),
    (["swag.batch_size=20000"], "swag.batch_size=20000 exceeds data.num_train=10000"),
    (["deterministic.enabled=false", "adammcmc.enabled=false"],
     "laplace.enabled=true needs deterministic.enabled=true"),
])
def test_bad_settings_are_one_line_errors(assignments, match):
    section = assignments[0].split(".")[0]
    enable = [] if section == "deterministic" else [f"{section}.enabled=true"]
    with pytest.raises(cfgmod.ConfigError, match=match) as err:
        cfgmod.resolve("quick", [*enable, "laplace.enabled=true", *assignments])
    assert "\n" not in str(err.value)


def test_compare_command_refuses_bad_families_in_one_line(capsys):
    for bad in ("nope", "vi,laplace,kfac", ""):
        assert cli.main(["compare", "--preset", "tiny", "--families", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--families must be comma-separated methods" in err
    # every family on, the others off, the user's --set last
    status = cli.main(["compare", "--preset", "tiny", "--families", "vi,sgld",
                       "--set", "sgld.temperatures=1,3", "--show-config", "json"])
    shown = json.loads(capsys.readouterr().out)
    assert status == 0 and shown["sgld"]["enabled"] and shown["vi"]["enabled"]
    assert not shown["adammcmc"]["enabled"] and not shown["laplace"]["enabled"]
    assert shown["sgld"]["temperatures"] == [1.0, 3.0]
    cli.main(["compare", "--preset", "tiny", "--families", "laplace", "--show-config", "json"])
    assert json.loads(capsys.readouterr().out)["laplace"]["structures"] == ["diag", "last_layer"]


# ----------------------------------------------------------------------------- cost, selection


def test_unit_cost_counts_field_evaluations_from_the_settings():
    cfg = cfgmod.resolve("quick", [*(f"{m}.enabled=true" for m in NEW), "data.num_train=2000",
                                   "laplace.num_points=500", "ensemble.num_members=4",
                                   "sgld.num_burnin=30", "sgld.num_samples=5", "sgld.thinning=3",
                                   "sgld.batch_size=100", "sghmc.num_integration_steps=7",
                                   "swag.num_epochs=12"])
    fm = 300 * 2000 * 3  # the deterministic pretraining: epochs x N x 3
    expected = {"laplace": 500 * (1 + 2 * 2), "ensemble": 4 * 300 * 2000 * 3,
                "bootstrap": 10 * 300 * 2000 * 3, "sgld": (30 + 5 * 3) * 100 * 3,
                "sghmc": (20 + 20 * 2) * 7 * 1000 * 3, "swag": 12 * 2000 * 3,
                "vi": 500 * 2000 * 6, "adammcmc": (20 * 4 + 5) * 2 * 500 * 8 * 36}
    for m, evals in expected.items():
        u = budget.unit_cost(cfg, m)
        assert u["field_evals"] == evals, m
        assert u["pretrain_field_evals"] == (fm if m in cfgmod.FROM_DETERMINISTIC else 0), m
        assert u["formula"]
    work = budget.work(cfg)
    assert work["sgld"]["field_evals"] == expected["sgld"] * cfg.num_runs
    assert work["laplace"]["field_evals"] == expected["laplace"]


def _report(methods, timings):
    return {"timings": timings, "methods": methods}


def test_label_costs_split_the_stage_and_add_the_pretraining():
    cfg = cfgmod.resolve("quick", ["sgld.enabled=true", "sgld.temperatures=1,2", "num_runs=3",
                                   "ensemble.enabled=true"])
    methods = {"sgld_T1": {"method": "sgld"}, "sgld_T2": {"method": "sgld"},
               "ensemble_m10": {"method": "ensemble"}, "vi_k10": {"method": "vi"}}
    report = _report(methods, {"deterministic": 10.0, "train_sgld": 8.0, "train_ensemble": 30.0})
    seconds, costs = label_seconds(report), label_costs(report, cfg)
    assert seconds["sgld_T1"]["train_s"] == 4.0 and seconds["sgld_T1"]["seconds"] == 14.0
    assert seconds["ensemble_m10"]["seconds"] == 30.0 and seconds["ensemble_m10"]["pretrain_s"] == 0
    assert seconds["vi_k10"]["seconds"] is None  # no train_vi marker: unknown, not zero
    assert costs["sgld_T2"]["field_evals"] == 3 * budget.unit_cost(cfg, "sgld")["field_evals"]


def _ho(verdict, scale, sparse=False, cells="5"):
    return {"same_noise": {cells: {"verdict": verdict, "scale": scale, "sparse": sparse}},
            "scaled": {}}


def test_select_by_holdout_picks_the_consistent_knob_closest_to_one():
    methods = {
        "sgld_T1": {"method": "sgld", "hyper": 1.0, "holdout": _ho("over-confident", 3.0)},
        "sgld_T2": {"method": "sgld", "hyper": 2.0, "holdout": _ho("consistent", 1.4)},
        "sgld_T4": {"method": "sgld", "hyper": 4.0, "holdout": _ho("consistent", 0.8)},
        "swag_T1": {"method": "swag", "hyper": 1.0, "holdout": _ho("over-confident", 5.0)},
        "swag_T3": {"method": "swag", "hyper": 3.0, "holdout": _ho("under-confident", 0.5)},
        "vi_k10": {"method": "vi", "hyper": 10.0, "holdout": {
            "same_noise": {"5": {"verdict": "consistent", "scale": 1.0, "sparse": False},
                           "50": {"verdict": "over-confident", "scale": 2.0, "sparse": True}}}},
        "ensemble_m10": {"method": "ensemble", "hyper": None},  # no held-out check
    }
    sel = select_by_holdout(methods)
    assert sel["sgld"]["chosen"] == "sgld_T4"  # |log 0.8| < |log 1.4|
    assert sel["swag"]["chosen"] == "swag_T3"  # none consistent: |log 0.5| < |log 5|
    assert sel["vi"]["labels"]["vi_k10"]["binning"] == "5"  # the sparse 50 x 50 is not read
    assert "ensemble_m10" not in sel


# ----------------------------------------------------------------------------- one tiny study

TINY = ["data.num_train=200", "deterministic.num_epochs=4", "deterministic.chunk_epochs=2",
        "vi.num_epochs=4", "vi.chunk_epochs=2", "evaluation.calib_bins=4",
        "evaluation.deviation_bins=4", "evaluation.scaled_bins=2,4", "evaluation.fit_bins=2,4",
        "evaluation.calib_samples=2000", "evaluation.classifier_events=0",
        "evaluation.scaled_shared=true",
        "evaluation.differential_samples=0", "figures.label_sets=none",
        "laplace.num_draws=6", "laplace.num_points=100",
        "ensemble.num_members=6", "bootstrap.num_members=6", "bootstrap.chunk_epochs=2",
        "ensemble.chunk_epochs=2",
        "sgld.num_samples=6", "sgld.thinning=2", "sgld.num_burnin=2",
        "sghmc.num_samples=6", "sghmc.thinning=1", "sghmc.num_burnin=1",
        "sghmc.num_integration_steps=2",
        "swag.num_epochs=4", "swag.rank=2", "swag.num_draws=6"]
FAMILIES = ",".join(NEW)  # VI and AdamMCMC: tests/test_experiments.py


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """``bayesiamp compare --preset tiny`` with every new family, then the same study once
    more through ``run_pipeline`` (a resume)."""
    from experiments.paper import run_pipeline

    out = tmp_path_factory.mktemp("compare")
    argv = ["compare", "--preset", "tiny", "--families", FAMILIES, "--no-progress",
            "-o", str(out), *[a for s in TINY for a in ("--set", s)]]
    assert cli.main(argv) == 0
    cfg = cfgmod.load(out / "config.json")
    again = run_pipeline(cfg, out, progress=False)
    return out, cfg, again


@pytest.mark.slow  # the tiny study with every family: ~100 s CPU (docs/testing.md)
def test_every_family_runs_end_to_end(compared):
    out, cfg, _ = compared
    report = json.loads((out / "report.json").read_text())
    labels = [label for _, label, _ in cfgmod.method_grid(cfg)]
    assert set(labels) >= {"laplace_diag_T1", "laplace_last_layer_T1", "ensemble_m6",
                           "bootstrap_m6", "sgld_T1", "sghmc_T1", "swag_T1"}
    assert sorted(report["methods"]) == sorted(labels)
    for label, m in report["methods"].items():
        assert m["num_draws"] == 6 and np.isfinite(list(m["mad"].values())).all(), label
        assert m["cost"]["field_evals"] > 0 and "seconds" not in m["cost"], label  # clock-free
        if m["method"] in cfgmod.FROM_DETERMINISTIC:
            assert label_seconds(report)[label]["pretrain_s"] == report["timings"]["deterministic"]
    assert {f"train_{m}" for m in NEW} <= set(report["timings"])
    md = (out / "report.md").read_text()
    assert "## Cost per label" in md and "`swag_T1`" in md


@pytest.mark.slow  # the tiny study with every family: ~100 s CPU (docs/testing.md)
def test_draws_round_trip_and_start_at_the_deterministic_params(compared):
    from bayesiamp_jax.posteriors.draws import load_draws, save_draws
    from experiments.train import draws_path

    out, cfg, again = compared
    for m, label, _ in cfgmod.method_grid(cfg):
        for r in range(cfg.num_runs):
            path = draws_path(again, label, r)
            d = load_draws(path)
            assert d.num_draws == 6 and d.method == m, (label, r)
            copy = path.with_name(f"copy{r}.msgpack")
            save_draws(copy, d)
            e = load_draws(copy)
            copy.unlink()
            for a, b in zip(jax.tree_util.tree_leaves(d.params),
                            jax.tree_util.tree_leaves(e.params), strict=True):
                np.testing.assert_array_equal(a, b)
            assert sorted(d.info) == sorted(e.info)
    # the runs differ (own data and keys); the ensemble's members differ from each other
    d0 = load_draws(draws_path(again, "ensemble_m6", 0)).params
    d1 = load_draws(draws_path(again, "ensemble_m6", 1)).params
    leaf0, leaf1 = jax.tree_util.tree_leaves(d0)[0], jax.tree_util.tree_leaves(d1)[0]
    assert not np.allclose(leaf0, leaf1) and not np.allclose(leaf0[0], leaf0[1])


@pytest.mark.slow  # the tiny study with every family: ~100 s CPU (docs/testing.md)
def test_a_second_invocation_retrains_nothing(compared):
    _, _, again = compared
    assert again.ran == ["report"]
    assert {"data", "deterministic", "evaluate", "figures",
            *(f"train_{m}" for m in NEW)} <= set(again.skipped)


@pytest.mark.slow  # the tiny study with every family: ~100 s CPU (docs/testing.md)
def test_compare_repeats_the_report_numbers(compared):
    out, cfg, _ = compared
    report = json.loads((out / "report.json").read_text())
    summary = json.loads((out / "compare.json").read_text())
    rows = {r["label"]: r for r in summary["rows"]}
    assert list(rows) == [label for _, label, _ in cfgmod.method_grid(cfg)]  # grid order
    for label, m in report["methods"].items():
        r = rows[label]
        assert r["mad"] == m["mad"] and r["num_draws"] == m["num_draws"]
        largest = r["binning"]
        assert r["amplification_paper"] == pytest.approx(np.mean(m["amplification"][largest]))
        corr = m.get("amplification_corrected") or {}
        if largest in corr:
            assert r["amplification"] == pytest.approx(np.mean(corr[largest]))
        assert r["seconds"] == label_seconds(report)[label]["seconds"] > 0
        assert r["field_evals"] == m["cost"]["field_evals"] + m["cost"]["pretrain_field_evals"]
        assert r["holdout_verdict"] == (m.get("holdout") or {}).get("verdict")
        assert (r["ess_median"] is not None) == (m["method"] in cfgmod.CHAIN_METHODS)
        sel = report["selection"].get(r["family"], {})
        assert r["chosen"] == (sel.get("chosen") == label)
        assert r["holdout_scale"] == sel.get("labels", {}).get(label, {}).get("scale")
    md = (out / "compare.md").read_text()
    assert all(f"`{label}`" in md for label in rows)
    assert (out / "figures" / "compare.png").stat().st_size > 1000
