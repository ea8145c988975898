"""VI's start (vi.init, vi.init_rho), its file-data defaults and its stage: the guide's means
at each run's flow-matching fit. Answers known without the code under test: Adam moves a weight
by at most about its rate per step, so one epoch of 4 steps at 1e-3 leaves the means within
~4e-3 of where they started; the reference's random means lie ~0.1 from any fit."""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
import pytest

from experiments import config as cfgmod
from experiments import data as datamod
from experiments.deterministic import load_deterministic, train_deterministic
from experiments.paper import fingerprints
from experiments.stages import Study
from experiments.train import load_run_draws, train_vi

FILE = ["data.name=file", "data.path=benchmarks/open_data/zee_pair_events.npz",
        "data.reference=benchmarks/open_data/zee_pair_reference.npz"]


def test_vi_start_defaults_per_data():
    """Ring and shell: the reference (random means, rho -3, 500 quick epochs, constant rate);
    file data: from the fit, rho -6, 1,500 epochs (the quick and paper presets' 500 and 250,000
    stand for it), cosine; random without deterministic training; explicit values kept."""
    ring = cfgmod.resolve("quick", []).vi
    assert (ring.init, ring.init_rho, ring.num_epochs, ring.learning_rate_schedule) == (
        "random", -3.0, 500, "constant")
    for preset in ("quick", "paper"):
        file = cfgmod.resolve(preset, FILE).vi
        assert (file.init, file.init_rho, file.num_epochs, file.learning_rate_schedule) == (
            "deterministic", -6.0, 1_500, "cosine")
    alone = cfgmod.resolve("quick", FILE + ["deterministic.enabled=false",
                                            "adammcmc.enabled=false"]).vi
    assert (alone.init, alone.init_rho) == ("random", -3.0)
    own = cfgmod.resolve("quick", FILE + ["vi.init=random", "vi.init_rho=-4",
                                          "vi.num_epochs=700"]).vi
    assert (own.init, own.init_rho, own.num_epochs) == ("random", -4.0, 700)
    assert cfgmod.resolve("quick", ["vi.init=deterministic"]).vi.init_rho == -6.0
    assert cfgmod.pretrained_methods(cfgmod.resolve("quick", FILE))[-1] == "vi"
    assert "vi" not in cfgmod.pretrained_methods(cfgmod.resolve("quick", []))


@pytest.mark.parametrize("bad, name", [
    (["vi.init=fit"], "vi.init"),
    (["vi.init_rho=nan"], "vi.init_rho"),
    (["vi.init=deterministic", "deterministic.enabled=false", "adammcmc.enabled=false"],
     "vi.init=deterministic needs deterministic.enabled=true"),
])
def test_vi_start_errors_are_one_line(bad, name):
    with pytest.raises(ValueError, match=name) as e:
        cfgmod.resolve("quick", bad)
    assert "\n" not in str(e.value)


def test_reference_start_keeps_fingerprints_and_fit_start_follows_the_fit():
    """The reference start hashes as the VI section did before the settings existed; from the
    fit, the VI stage's fingerprint changes with the deterministic training."""
    ring = cfgmod.resolve("quick", [])
    new = ("learning_rate_schedule", "final_learning_rate_fraction", "init", "init_rho")
    d = {k: v for k, v in cfgmod.to_dict(ring.vi).items() if k not in new}
    assert cfgmod.fingerprint(ring.vi) == hashlib.sha256(
        json.dumps([d], sort_keys=True).encode()).hexdigest()[:12]
    longer = cfgmod.resolve("quick", ["deterministic.num_epochs=400"])
    assert fingerprints(longer)["train_vi"] == fingerprints(ring)["train_vi"]
    fit = ["vi.init=deterministic"]
    assert fingerprints(cfgmod.resolve("quick", fit))["train_vi"] != fingerprints(
        cfgmod.resolve("quick", fit + ["deterministic.num_epochs=400"]))["train_vi"]


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("init", ["deterministic", "random"])
def test_vi_stage_starts_at_each_runs_fit(tmp_path, init):
    """Two runs, one VI epoch (4 steps at 1e-3), sigma ~ 1e-4: from the fit each run's draws stay
    within 1e-2 of its own run's fit (not the other run's); from random they do not."""
    cfg = cfgmod.resolve("tiny", [f"vi.init={init}", "vi.init_rho=-9", "vi.num_epochs=1",
                                  "adammcmc.enabled=false"])
    study = Study(tmp_path, cfg)
    datamod.make_data(study)
    train_deterministic(study, progress=False)
    train_vi(study, progress=False)
    fits, _ = load_deterministic(study)
    for r in range(cfg.num_runs):
        fit = _flat(jax.tree_util.tree_map(lambda leaf, r=r: leaf[r], fits))
        other = _flat(jax.tree_util.tree_map(lambda leaf, r=r: leaf[1 - r], fits))
        draws = load_run_draws(study, "vi_k10", r)
        mean = np.mean([_flat(draws.draw(s)) for s in range(draws.num_draws)], axis=0)
        if init == "deterministic":
            assert np.max(np.abs(mean - fit)) < 1e-2
            assert np.median(np.abs(mean - other)) > 1e-2
        else:
            assert np.median(np.abs(mean - fit)) > 3e-2
